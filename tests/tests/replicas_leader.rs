//! Replicas (issue 23): work that must happen once runs on one elected replica. Two real
//! `stackhub` processes on one PostgreSQL database: exactly one leads (`stackhub_leader`); a
//! managed service runs once, on the leader; the leader killed with SIGKILL, the other leads
//! within a bounded delay and starts the service; the survivor answers the sites' health; the
//! killed replica restarted follows and starts nothing twice.
//!
//! PostgreSQL: `STACKHUB_TEST_POSTGRES_URL` (an admin URL; `scripts/test` starts a server and
//! sets it). The test fails when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod hub_common;

use std::path::Path;
use std::time::{Duration, Instant};

use hub_common::{
    Replica, admin, free_ports, log_tail, postgres_database, scratch_dir, until, venv,
};
use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use sqlx::Executor;

/// The managed service: appends "PID PPID" to `$ONCE_FILE`, then runs until its parent (the
/// hub that started it) is gone (a hub killed with SIGKILL cannot stop it; in a pod it would
/// die with the pod).
const SERVICE: &str = "import os, time\n\
p = os.getppid()\n\
with open(os.environ['ONCE_FILE'], 'a') as f: f.write(f'{os.getpid()} {p}\\n')\n\
while os.getppid() == p: time.sleep(0.1)\n";

impl Replica {
    async fn start_with(dir: &Path, db_url: &str, config: &Path) -> Self {
        Self::start(dir, db_url, &["--config", config.to_str().unwrap()]).await
    }

    fn pid(&self) -> u32 {
        self.hub.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        log_tail(&self.dir.join("hub.log"))
    }

    async fn leads(&self, api: &Client) -> bool {
        let text = admin(api, Method::GET, format!("{}/hub/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        match text
            .lines()
            .find_map(|l| l.strip_prefix("stackhub_leader "))
        {
            Some("1") => true,
            Some("0") => false,
            other => panic!("stackhub_leader: {other:?}\n{text}"),
        }
    }

    async fn site(&self, api: &Client) -> Value {
        let r = admin(api, Method::GET, format!("{}/hub/api/sites", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let sites: Value = r.json().await.unwrap();
        sites[0].clone()
    }
}

/// The service's starts so far: (its pid, its parent's pid).
fn starts(file: &Path) -> Vec<(u32, u32)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (pid, ppid) = l.split_once(' ').unwrap();
            (pid.parse().unwrap(), ppid.parse().unwrap())
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_and_runs_the_managed_service_and_another_takes_over() {
    let (dir, _cleanup) = scratch_dir("replicas-leader");
    let (mut pg, db_name, url) = postgres_database(&dir).await;

    let once = dir.join("once.txt");
    let [gateway] = free_ports::<1>();
    let config = dir.join("stackhub.toml");
    std::fs::write(
        &config,
        format!(
            "[s3]\nhealth_interval_secs = 2\n\n\
             [[sites]]\nid = \"lumi\"\nname = \"LUMI\"\ngateway_url = \"http://127.0.0.1:{gateway}\"\n\n\
             [[services]]\nname = \"once\"\ncommand = [\"{python}\", \"-c\", {code}]\n\
             environment = {{ ONCE_FILE = \"{file}\" }}\n",
            python = venv().join("bin/python").display(),
            code = toml_string(SERVICE),
            file = once.display(),
        ),
    )
    .unwrap();

    let api = Client::new();
    let a = Replica::start_with(&dir.join("a"), url.as_str(), &config).await;
    let b = Replica::start_with(&dir.join("b"), url.as_str(), &config).await;
    assert!(a.leads(&api).await, "A started first on an empty database");
    assert!(!b.leads(&api).await, "two leaders");
    assert!(
        b.log()
            .contains("another replica leads: no start-up reconciliation"),
        "{}",
        b.log()
    );
    until(
        "the service starts on A",
        Duration::from_secs(20),
        || async { !starts(&once).is_empty() },
    )
    .await;
    // Given time to start elsewhere too, it still runs once, as A's child.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = starts(&once);
    assert_eq!(first.len(), 1, "started more than once: {first:?}");
    assert_eq!(first[0].1, a.pid(), "the service's parent is the leader");
    assert!(alive(first[0].0));
    // Both answer the sites' health: the leader's checks, which B reads (a check of B's own
    // would carry another time).
    let same = until("B answers A's health", Duration::from_secs(5), || async {
        let (sa, sb) = (a.site(&api).await, b.site(&api).await);
        assert_eq!(sb["available"], false, "{sb}");
        sa["checked_at"].is_string() && sa["checked_at"] == sb["checked_at"]
    })
    .await;
    eprintln!("B answered A's sites' health after {same:?}");

    // The leader killed with SIGKILL: B leads within a bounded delay and starts the service.
    let (a_dir, a_pid) = (a.dir.clone(), a.pid());
    let killed = Instant::now();
    drop(a);
    let takeover = until("B leads", Duration::from_secs(5), || async {
        b.leads(&api).await
    })
    .await;
    until(
        "the service starts on B",
        Duration::from_secs(10),
        || async { starts(&once).len() == 2 },
    )
    .await;
    let started = killed.elapsed();
    let second = starts(&once)[1];
    assert_eq!(second.1, b.pid(), "the service's parent is the new leader");
    until("A's service is gone", Duration::from_secs(5), || async {
        !alive(first[0].0)
    })
    .await;
    assert!(alive(second.0));
    assert!(b.log().contains("this replica leads"), "{}", b.log());
    eprintln!(
        "A (pid {a_pid}) killed: B led after {takeover:?}, its service started after {started:?}"
    );
    // The survivor answers the sites' health, and checks them now (every 2 s here).
    let before = b.site(&api).await["checked_at"].clone();
    let checked = until(
        "B's health is checked again",
        Duration::from_secs(5),
        || async {
            let site = b.site(&api).await;
            site["checked_at"].is_string() && site["checked_at"] != before
        },
    )
    .await;
    eprintln!("B's sites' health checked again after {checked:?}");

    // A restarted follows: the service does not start twice.
    let a = Replica::start_with(&a_dir, url.as_str(), &config).await;
    assert!(!a.leads(&api).await, "the restarted replica took the lead");
    assert!(b.leads(&api).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(starts(&once).len(), 2, "{:?}", starts(&once));
    assert!(alive(second.0));

    drop((a, b));
    let _ = pg
        .execute(format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)").as_str())
        .await;
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}
