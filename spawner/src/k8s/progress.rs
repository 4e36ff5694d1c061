//! Kubernetes events and pod status turned into messages a scientist can read, and the
//! failures that end a start, each naming its cause and the setting to change.

use k8s_openapi::api::core::v1::{Event, Pod};

/// What an event means for the start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// Show this message.
    Say(String),
    /// An image download began (the spawner then reports its duration as it goes).
    PullStarted(String),
    /// The image is there.
    PullDone(String),
    /// Not worth showing.
    Mute,
}

/// Strip a `docker.io/library/` style prefix and any digest noise for display.
fn short_image(image: &str) -> &str {
    image
        .strip_prefix("docker.io/library/")
        .or_else(|| image.strip_prefix("docker.io/"))
        .unwrap_or(image)
}

/// The quoted image in a kubelet message (`Pulling image "x"`).
fn quoted(message: &str) -> Option<&str> {
    let start = message.find('"')? + 1;
    let end = start + message[start..].find('"')?;
    Some(&message[start..end])
}

/// Read one event about the pod.
pub fn read_event(event: &Event) -> Reading {
    let reason = event.reason.as_deref().unwrap_or_default();
    let message = event.message.as_deref().unwrap_or_default();
    match reason {
        "Scheduled" => Reading::Say("A node was found for your server".to_owned()),
        "FailedScheduling" => Reading::Say(format!(
            "Waiting for a node with room for your server ({})",
            scheduling_cause(message)
        )),
        "TriggeredScaleUp" => Reading::Say(
            "Adding a node to the cluster for your server (this can take a few minutes)".to_owned(),
        ),
        "NotTriggerScaleUp" => Reading::Say(
            "No node type in the cluster can fit your server's resources; choose a smaller profile"
                .to_owned(),
        ),
        "Pulling" => {
            Reading::PullStarted(short_image(quoted(message).unwrap_or(message)).to_owned())
        }
        "Pulled" => {
            let image = short_image(quoted(message).unwrap_or_default()).to_owned();
            Reading::PullDone(if message.contains("already present") {
                format!("Image {image} is already on the node")
            } else {
                format!("Image {image} downloaded")
            })
        }
        "Created" => Reading::Say("Container created".to_owned()),
        "Started" => Reading::Say("Starting JupyterLab".to_owned()),
        "SuccessfulAttachVolume" => Reading::Say("Your storage volume is attached".to_owned()),
        "FailedAttachVolume" | "FailedMount" => {
            Reading::Say("Waiting for your storage volume to attach".to_owned())
        }
        "BackOff" if message.contains("pull") => {
            Reading::Say("Retrying the image download".to_owned())
        }
        _ => Reading::Mute,
    }
}

/// A short cause from a scheduler message such as
/// `0/3 nodes are available: 3 Insufficient memory.`
fn scheduling_cause(message: &str) -> String {
    let mut causes = Vec::new();
    for (needle, what) in [
        ("Insufficient cpu", "not enough free CPU"),
        ("Insufficient memory", "not enough free memory"),
        ("Insufficient nvidia.com/gpu", "no free GPU"),
        (
            "didn't match Pod's node affinity/selector",
            "no node matches the profile's node selector",
        ),
        ("untolerated taint", "nodes are reserved (taints)"),
        (
            "unbound immediate PersistentVolumeClaims",
            "the storage volume is not ready",
        ),
    ] {
        if message.contains(needle) {
            causes.push(what);
        }
    }
    if causes.is_empty() {
        "the cluster is busy".to_owned()
    } else {
        causes.join(", ")
    }
}

/// The pod's state as far as the start is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodCheck {
    /// Running with an IP: the hub can now wait for the server to answer.
    Ready(String),
    /// Not yet.
    Waiting,
    /// It will not come up: the message names the cause and the setting to change.
    Failed(String),
}

/// Judge the pod's status.
pub fn check_pod(pod: &Pod) -> PodCheck {
    let Some(status) = &pod.status else {
        return PodCheck::Waiting;
    };
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.as_deref())
        .unwrap_or("?");
    for cs in status.container_statuses.iter().flatten() {
        let state = cs.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let msg = w.message.as_deref().unwrap_or_default();
            match w.reason.as_deref().unwrap_or_default() {
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => {
                    return PodCheck::Failed(format!(
                        "the image {image} cannot be downloaded ({}): check the `image` setting of \
                         the spawner or of the chosen profile, and the registry's credentials",
                        first_line(msg)
                    ));
                }
                "CreateContainerConfigError" | "CreateContainerError" => {
                    return PodCheck::Failed(format!(
                        "the container cannot be created ({}): check the profile's `env` and \
                         the spawner's `cmd` settings",
                        first_line(msg)
                    ));
                }
                "CrashLoopBackOff" => {
                    return PodCheck::Failed(format!(
                        "JupyterLab exits right after starting ({}): check the image and the \
                         spawner's `cmd` setting; the pod's log has the details",
                        first_line(msg)
                    ));
                }
                _ => {}
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            return PodCheck::Failed(format!(
                "JupyterLab exited with code {} ({}): check the image and the spawner's `cmd` setting",
                t.exit_code,
                t.reason.as_deref().unwrap_or("no reason given")
            ));
        }
    }
    match status.phase.as_deref() {
        Some("Running") => match status.pod_ip.as_deref() {
            Some(ip) if !ip.is_empty() => PodCheck::Ready(ip.to_owned()),
            _ => PodCheck::Waiting,
        },
        Some("Failed" | "Succeeded") => PodCheck::Failed(format!(
            "the pod ended ({}: {})",
            status.reason.as_deref().unwrap_or("no reason"),
            status.message.as_deref().unwrap_or("no message")
        )),
        _ => PodCheck::Waiting,
    }
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or_default();
    if line.is_empty() { "no detail" } else { line }
}
