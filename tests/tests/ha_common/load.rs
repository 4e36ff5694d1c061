//! A steady API load through the load balancer: `GET /hub/api/users/NAME` and
//! `GET /hub/api/users` in turn, one every ~20 ms, each retried once by the client; every
//! logical request's attempts are recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::ha_common::served_by;
use crate::hub_common::admin;

/// One try of a request: when it ended, whether it got a 200, and which replica answered (or
/// what went wrong).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub ended: Instant,
    pub ok: bool,
    pub detail: String,
}

/// A logical request: its path and its (one or two) attempts.
#[derive(Debug, Clone)]
pub struct Call {
    pub started: Instant,
    pub path: String,
    pub attempts: Vec<Attempt>,
}

impl Call {
    /// Failed even when retried.
    pub fn failed(&self) -> bool {
        !self.attempts.iter().any(|a| a.ok)
    }
}

/// The running load; [`Load::stop`] ends it and returns every call.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Call>>,
}

impl Load {
    pub fn start(base: String, user: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paths = [
            format!("/hub/api/users/{user}"),
            "/hub/api/users".to_owned(),
        ];
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut calls = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0usize.. {
                tick.tick().await;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let path = &paths[n % paths.len()];
                let mut call = Call {
                    started: Instant::now(),
                    path: path.clone(),
                    attempts: Vec::new(),
                };
                for _ in 0..2 {
                    let r = admin(&client, Method::GET, format!("{base}{path}"))
                        .send()
                        .await;
                    let attempt = match r {
                        Ok(r) => {
                            let status = r.status();
                            let replica = served_by(r.headers());
                            // The whole body: a reply cut off by the kill is a failure too.
                            match r.bytes().await {
                                Ok(_) if status == 200 => Attempt {
                                    ended: Instant::now(),
                                    ok: true,
                                    detail: replica,
                                },
                                Ok(_) => Attempt {
                                    ended: Instant::now(),
                                    ok: false,
                                    detail: format!("{status} from {replica}"),
                                },
                                Err(e) => Attempt {
                                    ended: Instant::now(),
                                    ok: false,
                                    detail: format!("body from {replica}: {e}"),
                                },
                            }
                        }
                        Err(e) => Attempt {
                            ended: Instant::now(),
                            ok: false,
                            detail: format!("{e}"),
                        },
                    };
                    let ok = attempt.ok;
                    call.attempts.push(attempt);
                    if ok {
                        break;
                    }
                }
                calls.push(call);
            }
            calls
        });
        Self { stop, task }
    }

    pub async fn stop(self) -> Vec<Call> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}
