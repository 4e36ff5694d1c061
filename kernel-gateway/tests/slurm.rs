//! The Slurm launcher against a real single-node Slurm (Debian slurmctld/slurmd) running real
//! ipykernel jobs from the project venv, driven through the gateway's REST API and WebSocket.

mod common;
mod slurm_cluster;

use std::time::{Duration, Instant};

use common::Ws;
use hyper::{Method, StatusCode};
use kernel_gateway::launcher::slurm::sign;
use serde_json::{Value, json};
use slurm_cluster::{
    ALICE, Cluster, INSTANCE, JOB_NAME, free_ports, gateway_config, raw_post, start_gateway,
};
use stackhub_e2e::secrets::{SecretScan, descendants};

/// The gateway's state directory for one test, removed when the test ends.
struct StateDir(std::path::PathBuf);

impl std::ops::Deref for StateDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // slurmstepd of a job ending at that moment may still (re)create its output file.
        for _ in 0..10 {
            let _ = std::fs::remove_dir_all(&self.0);
            std::thread::sleep(Duration::from_millis(200));
            if !self.0.exists() {
                break;
            }
        }
    }
}

fn state_dir() -> StateDir {
    StateDir(std::env::temp_dir().join(format!(
        "stackhub-slurm-gw-{}",
        uuid::Uuid::new_v4().simple()
    )))
}

async fn start(gw: &common::Gateway, name: &str) -> (StatusCode, Value) {
    let (s, _, body) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(ALICE),
            Some(&json!({"name": name}).to_string()),
        )
        .await;
    (s, body)
}

async fn model(gw: &common::Gateway, id: &str) -> Value {
    let (s, _, body) = gw
        .call(
            Method::GET,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

/// Waits until `pred(model)` holds.
async fn wait_model(
    gw: &common::Gateway,
    id: &str,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let m = model(gw, id).await;
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: last model {m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A status message with `execution_state` = `state` whose reason contains `needle`.
async fn wait_status(ws: &mut Ws, state: &str, needle: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = ws
            .next_json(left)
            .await
            .unwrap_or_else(|| panic!("no status {state} with {needle:?}"));
        let c = &msg["content"];
        if msg["msg_type"] == "status"
            && c["execution_state"] == state
            && c["reason"].as_str().is_some_and(|r| r.contains(needle))
        {
            return msg;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_job_runs_code_interrupts_restarts_in_place_and_shuts_down() {
    // Declared first, dropped last: the cluster (and its jobs writing there) stops first.
    let dir = state_dir();
    let cluster = Cluster::start();
    let mut config = gateway_config(&cluster, &dir, free_ports(1)[0]);
    // The job makes alice's working area itself and runs there.
    let work_root = dir.join("work");
    config.kernel_working_root = Some(work_root.clone());
    let (gw, _slurm) = start_gateway(config).await;

    let t0 = Instant::now();
    let (s, m) = start(&gw, "slurm").await;
    let start_ms = t0.elapsed().as_millis();
    assert_eq!(s, StatusCode::CREATED, "{m}");
    // Ready: the start-up handshake's leftover kernel_info replies may still show as busy.
    assert!(
        matches!(m["execution_state"].as_str(), Some("idle" | "busy")),
        "{m}"
    );
    let id = m["id"].as_str().unwrap().to_owned();
    let (job_id, state) = cluster.job_of(&id).expect("the kernel's job is in squeue");
    assert_eq!(state, "RUNNING");
    // The quota became the job's resources.
    let res = cluster.run("squeue", &["--noheader", "-j", &job_id, "--format=%C|%m"]);
    assert_eq!(res.trim(), "2|200M", "cpus|memory of job {job_id}");
    eprintln!("slurm kernel start (submit to ready): {start_ms} ms");

    let mut ws = gw.ws(ALICE, &id, "s1", false).await;
    let out = ws
        .execute("import os, socket; print(os.environ['SLURM_JOB_ID'], socket.gethostname())")
        .await;
    let host = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        out.stdout.trim(),
        format!("{job_id} {}", host.trim()),
        "the kernel runs inside job {job_id}"
    );
    let out = ws.execute("import os; print(os.getcwd())").await;
    assert_eq!(
        out.stdout.trim(),
        work_root.join("alice").display().to_string(),
        "the job runs in alice's working area"
    );

    // Secret hygiene: the kernel's message key, the call-back secret and the gateway's master
    // key appear in no job script, argument list of the job's processes, or job output.
    let out = ws
        .execute("import os; print(get_ipython().kernel.session.key.decode(), os.getpid(), os.getppid())")
        .await;
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    let [key, pid, ppid] = fields[..] else {
        panic!("kernel key and pids: {out:?}")
    };
    let (pid, ppid): (i64, i64) = (pid.parse().unwrap(), ppid.parse().unwrap());
    let mut scan = SecretScan::new();
    scan.add("the kernel's message key", key);
    let master = std::fs::read_to_string(dir.join("slurm/gateway.key")).unwrap();
    scan.add("the gateway's master key", &master);
    let job_pids = descendants(&[ppid]);
    assert!(job_pids.contains(&pid), "{job_pids:?}");
    for p in &job_pids {
        scan.add_environ(*p);
    }
    // The call-back secret and the S3 credentials reach the job over the call-back (one-time
    // token), not its environment: whatever secrets the job's processes do hold are added above.
    assert!(scan.len() >= 2, "the kernel key and the master key");
    let script = cluster.run("scontrol", &["write", "batch_script", &job_id, "-"]);
    assert!(script.contains("exec "), "the job script: {script}");
    scan.text(&format!("the job script of job {job_id}"), &script);
    assert!(scan.cmdlines(&job_pids) >= 2, "the job's argument lists");
    scan.logs_under(&cluster.dir);
    scan.logs_under(&dir);
    scan.assert_clean();

    // Interrupt (scancel --batch --signal=INT, forwarded by the launcher) keeps the namespace.
    assert_eq!(
        ws.execute("x = 41").await.reply_status.as_deref(),
        Some("ok")
    );
    let sleep_id = ws.submit("import time; time.sleep(60)").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (s, _, _) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/interrupt"),
            Some(ALICE),
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let out = ws.collect(&sleep_id, Duration::from_secs(20)).await;
    assert_eq!(out.error.as_deref(), Some("KeyboardInterrupt"), "{out:?}");
    assert_eq!(ws.execute("x + 1").await.result.as_deref(), Some("42"));

    // Restart inside the same job: fresh namespace, same SLURM_JOB_ID.
    let t0 = Instant::now();
    let (s, _, m) = gw
        .call(
            Method::POST,
            &format!("/api/kernels/{id}/restart"),
            Some(ALICE),
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    eprintln!("slurm in-place restart: {} ms", t0.elapsed().as_millis());
    assert!(
        ["idle", "busy"].contains(&m["execution_state"].as_str().unwrap()),
        "{m}"
    );
    let out = ws.execute("x").await;
    assert_eq!(out.error.as_deref(), Some("NameError"), "{out:?}");
    let out = ws
        .execute("import os; print(os.environ['SLURM_JOB_ID'])")
        .await;
    assert_eq!(
        out.stdout.trim(),
        job_id,
        "restart stayed in the allocation"
    );

    // Shutdown cancels the job.
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    cluster.wait_no_job(&id, Duration::from_secs(15)).await;
    assert!(
        std::fs::read_dir(dir.join("slurm/kernels"))
            .unwrap()
            .next()
            .is_none(),
        "kernel record removed"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_job_is_starting_with_slurm_reason_then_runs_and_profile_timeout_cancels() {
    // Declared first, dropped last: the cluster (and its jobs writing there) stops first.
    let dir = state_dir();
    let cluster = Cluster::start();
    let config = gateway_config(&cluster, &dir, free_ports(1)[0]);
    let (gw, _slurm) = start_gateway(config).await;

    // A takes both CPUs of the node.
    let (s, a) = start(&gw, "slurm").await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let a = a["id"].as_str().unwrap().to_owned();

    // B must queue: 201 at once, `starting`, with Slurm's reason and queue position.
    let (s, b) = start(&gw, "slurm-queued").await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["execution_state"], "starting");
    let b = b["id"].as_str().unwrap().to_owned();
    let mut ws = gw.ws(ALICE, &b, "s1", false).await;
    let m = wait_model(&gw, &b, Duration::from_secs(20), "pending reason", |m| {
        m["reason"]
            .as_str()
            .is_some_and(|r| r.contains("Resources"))
    })
    .await;
    assert_eq!(m["execution_state"], "starting");
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains("pending") && reason.contains("position 1"),
        "{reason}"
    );
    let (_, _, list) = gw
        .call(Method::GET, "/api/kernels", Some(ALICE), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    // The WebSocket client was told too.
    wait_status(&mut ws, "starting", "Resources", Duration::from_secs(5)).await;
    // A request sent while queued is held and answered once the kernel runs.
    let queued_msg = ws.submit("print('ran after the queue')").await;

    // Shutting down a queued kernel cancels its job at once.
    let (s, c) = start(&gw, "slurm-queued").await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let c = c["id"].as_str().unwrap().to_owned();
    wait_model(&gw, &c, Duration::from_secs(20), "C queued", |m| {
        m["reason"].as_str().is_some_and(|r| r.contains("pending"))
    })
    .await;
    let t0 = Instant::now();
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{c}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    cluster.wait_no_job(&c, Duration::from_secs(10)).await;

    // A profile with a 3 s launch timeout gives up on a job that cannot start, and cancels it.
    let t0 = Instant::now();
    let (s, err) = start(&gw, "slurm-short").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("within 3s") && msg.contains("pending"),
        "{msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(15));
    let ours: Vec<_> = cluster.active_jobs();
    assert_eq!(ours.len(), 2, "the timed-out job was cancelled: {ours:?}");

    // When A ends, B runs.
    let t0 = Instant::now();
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{a}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    wait_model(&gw, &b, Duration::from_secs(60), "B ready", |m| {
        m["execution_state"] == "idle"
    })
    .await;
    eprintln!(
        "queued kernel ready {} ms after the first job was shut down",
        t0.elapsed().as_millis()
    );
    let out = ws.collect(&queued_msg, Duration::from_secs(30)).await;
    assert_eq!(out.stdout, "ran after the queue\n");
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{b}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    cluster.wait_no_job(&b, Duration::from_secs(15)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scancel_from_outside_gives_a_dead_kernel_and_forged_callbacks_are_refused() {
    // Declared first, dropped last: the cluster (and its jobs writing there) stops first.
    let dir = state_dir();
    let cluster = Cluster::start();
    let config = gateway_config(&cluster, &dir, free_ports(1)[0]);
    let (gw, slurm) = start_gateway(config).await;
    let (s, m) = start(&gw, "slurm").await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let mut ws = gw.ws(ALICE, &id, "s1", false).await;
    assert_eq!(
        ws.execute("y = 7").await.reply_status.as_deref(),
        Some("ok")
    );

    // Call-backs: wrong secret -> 401, replay of a valid one -> 409, unknown kernel -> 404.
    let url = format!("{}/kernels/{id}/connection", slurm.callback_url());
    let body =
        json!({"version": 1, "kernel_id": id, "seq": 5, "ts": chrono::Utc::now().timestamp(),
        "ip": "127.0.0.1", "transport": "tcp", "shell_port": 1, "iopub_port": 2, "stdin_port": 3,
        "control_port": 4, "hb_port": 5, "signature_scheme": "hmac-sha256"})
        .to_string();
    let post = |url: String, sig: String, body: String| async move {
        let addr: std::net::SocketAddr = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let path = format!(
            "/{}",
            url.trim_start_matches("http://").split_once('/').unwrap().1
        );
        raw_post(addr, &path, &sig, &body).await
    };
    let forged = sign(b"not the kernel's secret", body.as_bytes());
    assert_eq!(post(url.clone(), forged, body.clone()).await, 401);
    assert_eq!(post(url.clone(), String::new(), body.clone()).await, 401);
    let secret = slurm.callback_secret(&id);
    let replay = body.replace("\"seq\":5", "\"seq\":1");
    assert_eq!(
        post(url.clone(), sign(&secret, replay.as_bytes()), replay).await,
        409,
        "seq 1 was already used"
    );
    let other = uuid::Uuid::new_v4().to_string();
    let url_other = url.replace(&id, &other);
    assert_eq!(
        post(url_other, sign(&secret, body.as_bytes()), body.clone()).await,
        404
    );
    // The kernel was not re-pointed.
    assert_eq!(ws.execute("y * 6").await.result.as_deref(), Some("42"));

    // Killed from outside: dead, with Slurm's word for it.
    let (job_id, _) = cluster.job_of(&id).unwrap();
    cluster.run("scancel", &[&job_id]);
    let m = wait_model(
        &gw,
        &id,
        Duration::from_secs(20),
        "dead after scancel",
        |m| m["execution_state"] == "dead",
    )
    .await;
    let reason = m["reason"].as_str().unwrap();
    assert!(
        reason.contains(&job_id) && reason.contains("CANCELLED"),
        "{reason}"
    );
    wait_status(&mut ws, "dead", "CANCELLED", Duration::from_secs(5)).await;

    // A job whose kernel fails: a clear error naming the job's end, not a hang.
    let t0 = Instant::now();
    let (s, err) = start(&gw, "slurm-broken").await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("died during start") && msg.contains("FAILED"),
        "{msg}"
    );
    assert!(t0.elapsed() < Duration::from_secs(30));
    eprintln!("failed kernel job: {msg}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_gateway_reattaches_running_kernels_and_cancels_orphans() {
    // Declared first, dropped last: the cluster (and its jobs writing there) stops first.
    let dir = state_dir();
    let cluster = Cluster::start();
    let config = gateway_config(&cluster, &dir, free_ports(1)[0]);
    let (gw, slurm) = start_gateway(config.clone()).await;
    let (s, m) = start(&gw, "slurm").await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let mut ws = gw.ws(ALICE, &id, "s1", false).await;
    assert_eq!(
        ws.execute("z = 42").await.reply_status.as_deref(),
        Some("ok")
    );
    drop(ws);
    drop(slurm);
    gw.stop().await;
    let (job_id, state) = cluster.job_of(&id).expect("the job outlived the gateway");
    assert_eq!(state, "RUNNING");

    // A job of this gateway instance without a record: an orphan.
    let orphan = cluster.run(
        "sbatch",
        &[
            "--parsable",
            &format!("--job-name={JOB_NAME}"),
            &format!("--comment=stackhub:{INSTANCE}:{}", uuid::Uuid::new_v4()),
            "--cpus-per-task=1",
            "--mem=10M",
            "--wrap=sleep 300",
        ],
    );
    let orphan = orphan.trim().to_owned();

    let (gw, _slurm) = start_gateway(config).await;
    let (_, _, list) = gw
        .call(Method::GET, "/api/kernels", Some(ALICE), None)
        .await;
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id.as_str());
    // Alive (the re-attach handshake's kernel_info may still show as a short `busy`).
    assert!(
        ["idle", "busy"].contains(&list[0]["execution_state"].as_str().unwrap()),
        "{list:?}"
    );
    wait_model(
        &gw,
        &id,
        Duration::from_secs(10),
        "idle after re-attach",
        |m| m["execution_state"] == "idle",
    )
    .await;
    let mut ws = gw.ws(ALICE, &id, "s2", false).await;
    assert_eq!(
        ws.execute("z").await.result.as_deref(),
        Some("42"),
        "same kernel, namespace kept"
    );
    assert_eq!(cluster.job_of(&id).unwrap().0, job_id);
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.active_jobs().iter().any(|(j, _, _)| *j == orphan) {
        assert!(
            Instant::now() < deadline,
            "orphan job {orphan} not cancelled"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    cluster.wait_no_job(&id, Duration::from_secs(15)).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_jobs_cannot_read_kernel_and_s3_secrets_from_the_job() {
    use hmac::{Hmac, Mac};
    // Declared first, dropped last: the cluster (and its jobs writing there) stops first.
    let dir = state_dir();
    let cluster = Cluster::start();
    let mut config = gateway_config(&cluster, &dir, free_ports(1)[0]);
    config.remote_site = true;
    let (gw, slurm) = start_gateway(config).await;

    // The gateway says it shares one Unix account between users (no submit_prefix).
    let (s, _, info) = gw.call(Method::GET, "/api", Some(ALICE), None).await;
    assert_eq!(s, StatusCode::OK, "{info}");
    let modes = info["unsafe_modes"].as_array().unwrap();
    assert!(
        modes
            .iter()
            .any(|m| m.as_str().unwrap().contains("submit_prefix"))
            && modes
                .iter()
                .any(|m| m.as_str().unwrap().contains("local launcher")),
        "{info}"
    );

    // A remote-site start carrying the user's S3 credentials, as the hub sends it.
    let s3_secret = format!("s3secret{}", uuid::Uuid::new_v4().simple());
    let session = format!("session{}", uuid::Uuid::new_v4().simple());
    let env = json!({
        "AWS_ACCESS_KEY_ID": "AKIAALICE",
        "AWS_SECRET_ACCESS_KEY": s3_secret,
        "AWS_SESSION_TOKEN": session,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_DEFAULT_REGION": "local",
        "STACKHUB_S3_BUCKET": "stackhub",
        "STACKHUB_S3_PREFIX": "users/alice/",
    });
    let (s, _, m) = gw
        .call(
            Method::POST,
            "/api/kernels",
            Some(ALICE),
            Some(&json!({"name": "slurm", "env": env}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    let id = m["id"].as_str().unwrap().to_owned();
    let (job_id, _) = cluster.job_of(&id).expect("the kernel's job is in squeue");
    // The kernel's message key, as the gateway derives it from its master key.
    let master = hex::decode(
        std::fs::read_to_string(dir.join("slurm/gateway.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&master).unwrap();
    mac.update(format!("kernel-key:{id}").as_bytes());
    let kernel_key = hex::encode(mac.finalize().into_bytes());
    let callback_secret = hex::encode(slurm.callback_secret(&id));
    let secrets = [
        ("kernel key", kernel_key.as_str()),
        ("call-back secret", callback_secret.as_str()),
        ("S3 secret key", s3_secret.as_str()),
        ("S3 session token", session.as_str()),
    ];

    // What another job of the same cluster can read: the batch script, the job's record
    // (with details), every process's argv, the job's output file.
    let script = cluster.run("scontrol", &["write", "batch_script", &job_id, "-"]);
    assert!(script.contains("stackhub-kernel-launcher"), "{script}");
    let record = cluster.run("scontrol", &["-dd", "show", "job", &job_id]);
    let mut scan = SecretScan::new();
    for (what, secret) in secrets {
        scan.add(what, secret);
    }
    scan.text("the job script", &script)
        .text("scontrol show job", &record)
        .file(&dir.join(format!("slurm/jobs/{job_id}.out")));
    // Every process on this (single-node) machine descends from pid 1.
    assert!(
        scan.cmdlines(&descendants(&[1])) > 0,
        "no argument list read"
    );
    scan.assert_clean();
    // The one-time token file is gone, and the hand-over cannot be replayed.
    let leftover: Vec<_> = std::fs::read_dir(dir.join("slurm/secrets"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftover.is_empty(), "token files left: {leftover:?}");
    let addr: std::net::SocketAddr = slurm
        .callback_url()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let status = raw_post(addr, &format!("/kernels/{id}/secrets"), "", "").await;
    assert_eq!(status, 404, "the secrets were handed over once");

    // The kernel still runs code and has its credentials.
    let mut ws = gw.ws(ALICE, &id, "s1", false).await;
    let out = ws
        .execute(&format!(
            "import os; print(os.environ['AWS_SECRET_ACCESS_KEY'] == '{s3_secret}', \
             os.environ['AWS_SESSION_TOKEN'] == '{session}', \
             'STACKHUB_SECRETS_FILE' in os.environ, 6 * 7)"
        ))
        .await;
    assert_eq!(out.stdout.trim(), "True True False 42", "{out:?}");
    let (s, _, _) = gw
        .call(
            Method::DELETE,
            &format!("/api/kernels/{id}"),
            Some(ALICE),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    cluster.wait_no_job(&id, Duration::from_secs(15)).await;
    gw.stop().await;
}
