//! The local-process spawner with real child processes: environment, working directory, logs,
//! poll, and stop reaching the whole process group (SIGTERM, then SIGKILL after the grace
//! period). `jupyterhub-singleuser` itself needs a hub; the end-to-end test covers it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use spawner::{
    LocalProcessConfig, LocalProcessSpawner, ProgressSink, ServerId, SpawnError, SpawnRequest,
    Spawner, State, Status,
};

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "spawner-test-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn request(user: &str) -> SpawnRequest {
    let mut env = BTreeMap::new();
    env.insert("JUPYTERHUB_API_TOKEN".to_owned(), "secret-token".to_owned());
    SpawnRequest {
        server: ServerId {
            user: user.to_owned(),
            name: String::new(),
        },
        prefix: format!("/user/{user}/"),
        env,
        spec: spawner::LaunchSpec::default(),
    }
}

/// Live (non-zombie) processes in process group `pgid`.
fn live_in_group(pgid: i64) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
        if !zombie && fields.get(2).and_then(|s| s.parse::<i64>().ok()) == Some(pgid) {
            n += 1;
        }
    }
    n
}

fn spawner_with(dir: &Path, script: &str, grace: Duration) -> LocalProcessSpawner {
    let mut config = LocalProcessConfig::new(dir.join("venv"), dir);
    config.cmd = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    config.stop_grace = grace;
    LocalProcessSpawner::new(config)
}

async fn wait_for(path: &Path) -> String {
    for _ in 0..500 {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn start_poll_stop_kills_the_group() {
    let dir = temp_dir("group");
    // The "server" runs a child in its process group, then writes its environment: once
    // env.txt exists the child has been forked (writing it first raced with the fork).
    let script = "sleep 600 & \
                  echo \"$JUPYTERHUB_SERVICE_URL $JUPYTERHUB_API_TOKEN $HOME\" > env.txt; wait";
    let sp = spawner_with(&dir, script, Duration::from_secs(5));
    let spawned = sp
        .start(request("alice"), ProgressSink::discard())
        .await
        .unwrap();
    let pid = spawned.state.0["pid"].as_i64().unwrap();
    let port = spawned.state.0["port"].as_u64().unwrap();
    assert_eq!(spawned.url, format!("http://127.0.0.1:{port}"));
    let env = wait_for(&dir.join("users/alice/env.txt")).await;
    assert_eq!(
        env.trim(),
        format!(
            "http://127.0.0.1:{port}/user/alice/ secret-token {}",
            dir.join("users/alice").display()
        )
    );
    assert!(dir.join("logs/alice.log").exists());
    let id = request("alice").server;
    assert_eq!(sp.poll(&id, &spawned.state).await.unwrap(), Status::Running);
    assert!(
        live_in_group(pid) >= 2,
        "shell and its child run in their own group"
    );

    sp.stop(&id, &spawned.state, false).await.unwrap();
    assert!(matches!(
        sp.poll(&id, &spawned.state).await.unwrap(),
        Status::Exited(_)
    ));
    assert_eq!(live_in_group(pid), 0, "no orphaned process");
    // Stopping again is fine.
    sp.stop(&id, &spawned.state, false).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigkill_after_the_grace_period() {
    let dir = temp_dir("kill");
    let script = "trap '' TERM; echo up > up.txt; sleep 600 & wait; sleep 600";
    let sp = spawner_with(&dir, script, Duration::from_millis(300));
    let spawned = sp
        .start(request("bob"), ProgressSink::discard())
        .await
        .unwrap();
    let pid = spawned.state.0["pid"].as_i64().unwrap();
    wait_for(&dir.join("users/bob/up.txt")).await;
    let id = request("bob").server;
    let started = std::time::Instant::now();
    sp.stop(&id, &spawned.state, false).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited for the grace period"
    );
    assert_eq!(live_in_group(pid), 0, "SIGKILL reached the group");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn poll_of_unknown_or_bad_state() {
    let dir = temp_dir("poll");
    let sp = spawner_with(&dir, "true", Duration::from_secs(1));
    let id = request("carol").server;
    // A PID that is not ours (start time mismatch) counts as gone.
    let state = State(json!({"pid": std::process::id(), "port": 1, "start_time": 1}));
    assert_eq!(sp.poll(&id, &state).await.unwrap(), Status::Exited(None));
    sp.stop(&id, &state, false).await.unwrap();
    assert!(matches!(
        sp.poll(&id, &State(json!({"nope": 1}))).await,
        Err(SpawnError::BadState { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_profile_replaces_command_and_arguments() {
    let dir = temp_dir("override");
    let sp = spawner_with(
        &dir,
        "echo configured > which.txt; sleep 600",
        Duration::from_secs(5),
    );
    let mut req = request("carl");
    req.spec.cmd = Some(vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        "echo \"profile $0 $1\" > which.txt; sleep 600".to_owned(),
    ]);
    req.spec.args = Some(vec!["first".to_owned(), "second".to_owned()]);
    let spawned = sp.start(req, ProgressSink::discard()).await.unwrap();
    let which = wait_for(&dir.join("users/carl/which.txt")).await;
    // Running as root the spawner appends --allow-root after the arguments.
    assert_eq!(which.trim(), "profile first second");
    sp.stop(&request("carl").server, &spawned.state, true)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn another_replica_finds_a_launched_server_and_removes_orphans() {
    // Two spawners on one work root, as two hub replicas on one host: the second never saw the
    // first's start result, yet finds the server through the record it left.
    let dir = temp_dir("find");
    let script = "sleep 600";
    let first = spawner_with(&dir, script, Duration::from_secs(5));
    let other = spawner_with(&dir, script, Duration::from_secs(5));
    let alice = request("alice").server;
    let bob = request("bob").server;
    assert!(other.find(&alice).await.unwrap().is_none(), "nothing yet");
    let spawned = first
        .start(request("alice"), ProgressSink::discard())
        .await
        .unwrap();
    let found = other
        .find(&alice)
        .await
        .unwrap()
        .expect("found by the record");
    assert_eq!(found.url, spawned.url);
    assert_eq!(found.state.0, spawned.state.0);
    assert_eq!(
        other.poll(&alice, &found.state).await.unwrap(),
        Status::Running
    );
    let record = std::fs::read_to_string(
        std::fs::read_dir(dir.join("users/.servers"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(
        !record.contains("secret-token"),
        "no secret in the record: {record}"
    );

    // bob's server is an orphan (no hub row names it): removed; alice's is known: kept.
    let orphan = first
        .start(request("bob"), ProgressSink::discard())
        .await
        .unwrap();
    let bob_pid = orphan.state.0["pid"].as_i64().unwrap();
    let removed = other
        .remove_orphans(std::slice::from_ref(&alice))
        .await
        .unwrap();
    assert_eq!(removed, vec![bob.clone()]);
    assert_eq!(live_in_group(bob_pid), 0, "the orphan's group is gone");
    assert!(other.find(&bob).await.unwrap().is_none());
    assert_eq!(
        other.poll(&alice, &found.state).await.unwrap(),
        Status::Running
    );

    // A stopped server is not found again (its record goes with it).
    other.stop(&alice, &found.state, true).await.unwrap();
    assert!(other.find(&alice).await.unwrap().is_none());
    assert!(first.remove_orphans(&[]).await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
