//! Waiting for a pod to run, with kube-runtime watches on the pod and on its events, turning
//! them into progress messages (image downloads report their duration as they go).

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use kube::{Api, Client, ResourceExt};
use tokio::time::{Instant, MissedTickBehavior};

use super::objects::Made;
use super::progress::{PodCheck, Reading, check_pod, read_event};
use crate::{ProgressEvent, ProgressSink};

/// When the wait ends without the pod running.
pub(super) struct Limits<'a> {
    /// The start's deadline.
    pub(super) deadline: Instant,
    /// The start's whole timeout (for the message).
    pub(super) total: Duration,
    /// Set when the start is cancelled.
    pub(super) cancel: &'a mut tokio::sync::watch::Receiver<bool>,
}

/// Why the pod is not running.
pub(super) enum Stopped {
    /// The start was cancelled.
    Cancelled,
    /// A readable reason naming the cause and the setting to change.
    Failed(String),
}

/// How often a running image download is reported.
const PULL_REPORT_EVERY: Duration = Duration::from_secs(2);

/// Progress moves from 15 % (pod created) towards 90 % (the hub's readiness check takes over).
struct Meter<'a> {
    sink: &'a ProgressSink,
    percent: u8,
    last: String,
}

impl Meter<'_> {
    fn say(&mut self, message: String) {
        if message == self.last {
            return;
        }
        self.percent = (self.percent + 10).min(90);
        self.sink
            .send(ProgressEvent::new(self.percent, message.clone()));
        self.last = message;
    }
}

/// Wait until pod `pod` (that uid) runs with an IP; returns the IP.
pub(super) async fn wait_ready(
    client: &Client,
    pod: &Made,
    limits: Limits<'_>,
    progress: &ProgressSink,
) -> Result<String, Stopped> {
    let (ns, name, uid) = (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_str());
    let Limits {
        deadline,
        total: timeout,
        cancel,
    } = limits;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let mut pod_stream = watcher::watcher(
        pods,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff()
    .boxed();
    let mut event_stream = watcher::watcher(
        events,
        watcher::Config::default().fields(&format!("involvedObject.name={name}")),
    )
    .default_backoff()
    .applied_objects()
    .boxed();

    let started = Instant::now();
    let deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(PULL_REPORT_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut meter = Meter {
        sink: progress,
        percent: 15,
        last: String::new(),
    };
    let mut pulling: Option<(String, Instant)> = None;
    let mut seen: HashSet<(String, Option<i32>)> = HashSet::new();
    let mut events_open = true;

    loop {
        tokio::select! {
            Ok(_) = cancel.wait_for(|c| *c) => return Err(Stopped::Cancelled),
            () = &mut deadline => {
                let secs = timeout.as_secs();
                return Err(Stopped::Failed(match &pulling {
                    Some((image, since)) => format!(
                        "the image {image} was still downloading after {} s and the server did not \
                         start within {secs} s: raise the spawner's `start_timeout_secs`, or pre-pull \
                         the image on the nodes",
                        since.elapsed().as_secs()
                    ),
                    None => format!(
                        "the server did not start within {secs} s (last step: {}): raise the \
                         spawner's `start_timeout_secs`, or choose a smaller profile if the cluster \
                         is full",
                        if meter.last.is_empty() { "waiting for the cluster" } else { &meter.last }
                    ),
                }));
            }
            _ = ticker.tick() => {
                if let Some((image, since)) = &pulling {
                    let secs = since.elapsed().as_secs();
                    if secs > 0 {
                        meter.say(format!("Downloading image {image} ({secs} s so far)"));
                    }
                }
            }
            ev = pod_stream.next() => {
                let pod = match ev {
                    Some(Ok(WatchEvent::Apply(p) | WatchEvent::InitApply(p))) => p,
                    Some(Ok(WatchEvent::Delete(p))) if p.uid().as_deref() == Some(uid) => {
                        return Err(Stopped::Failed("the pod was deleted while starting (by an \
                                    operator, or the node went away); start the server again"
                                    .to_owned()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::warn!(pod = %name, error = %e, "pod watch error (retrying)");
                        continue;
                    }
                    None => {
                        return Err(Stopped::Failed(format!("the watch on pod {ns}/{name} ended")));
                    }
                };
                if pod.uid().as_deref() != Some(uid) {
                    continue;
                }
                match check_pod(&pod) {
                    PodCheck::Ready(ip) => {
                        tracing::info!(pod = %name, ip = %ip, secs = started.elapsed().as_secs_f64(), "pod running");
                        meter.say("Server is running; connecting".to_owned());
                        return Ok(ip);
                    }
                    PodCheck::Failed(reason) => return Err(Stopped::Failed(reason)),
                    PodCheck::Waiting => {}
                }
            }
            ev = event_stream.next(), if events_open => {
                let event = match ev {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        tracing::debug!(pod = %name, error = %e, "event watch error (retrying)");
                        continue;
                    }
                    None => { events_open = false; continue; }
                };
                if event.involved_object.uid.as_deref() != Some(uid)
                    || !seen.insert((event.name_any(), event.count))
                {
                    continue;
                }
                match read_event(&event) {
                    Reading::Say(m) => meter.say(m),
                    Reading::PullStarted(image) => {
                        meter.say(format!("Downloading image {image}"));
                        pulling = Some((image, Instant::now()));
                    }
                    Reading::PullDone(m) => {
                        pulling = None;
                        meter.say(m);
                    }
                    Reading::Mute => {}
                }
            }
        }
    }
}
