//! Whose an existing object is: checked before any pod, Secret, claim or namespace of the
//! same name is reused or deleted. Names are unique per (user, server), but an object made by
//! an earlier version (a 32-bit name hash), by another hub in the namespace, or by hand may
//! still carry the name; only an object whose annotations name this server (and whose hub
//! label is this hub's) is ours.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::config::KubeSpawnerConfig;
use super::manifest::{
    ANNOTATION_HUB_SERVERNAME, ANNOTATION_HUB_USERNAME, ANNOTATION_SERVER, ANNOTATION_USER,
    LABEL_HUB, hub_labels,
};
use crate::ServerId;

/// What must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// The user and the server (pods, Secrets, per-server claims).
    Server,
    /// The user only (a claim shared by the user's servers).
    User,
    /// The user, when the object names one (namespaces an operator may have made).
    UserIfNamed,
}

/// The server an object belongs to, from our annotations (KubeSpawner's must agree).
pub(super) fn owner_of(meta: &ObjectMeta) -> Option<ServerId> {
    let a = meta.annotations.as_ref()?;
    let user = a.get(ANNOTATION_USER)?;
    let name = a.get(ANNOTATION_SERVER).cloned().unwrap_or_default();
    if a.get(ANNOTATION_HUB_USERNAME).is_some_and(|u| u != user)
        || a.get(ANNOTATION_HUB_SERVERNAME).is_some_and(|s| *s != name)
    {
        return None;
    }
    Some(ServerId {
        user: user.clone(),
        name,
    })
}

/// Why an existing object is not `server`'s (for the hub's log; the user is told less), or
/// `None` when it is.
pub(super) fn foreign(
    config: &KubeSpawnerConfig,
    meta: &ObjectMeta,
    server: &ServerId,
    scope: Scope,
) -> Option<String> {
    let annotations = meta.annotations.clone().unwrap_or_default();
    let named_user = annotations
        .get(ANNOTATION_USER)
        .or(annotations.get(ANNOTATION_HUB_USERNAME));
    if scope == Scope::UserIfNamed {
        return match named_user {
            Some(u) if *u != server.user => Some(format!("it belongs to user {u:?}")),
            _ => None,
        };
    }
    let ours = hub_labels(config).remove(LABEL_HUB);
    let theirs = meta.labels.as_ref().and_then(|l| l.get(LABEL_HUB)).cloned();
    if theirs != ours {
        return Some(format!(
            "its label {LABEL_HUB} is {theirs:?}, not this hub's {ours:?}"
        ));
    }
    let Some(owner) = owner_of(meta) else {
        return Some(match named_user {
            None => format!("it has no {ANNOTATION_USER} annotation"),
            Some(_) => {
                format!("its {ANNOTATION_USER} and {ANNOTATION_HUB_USERNAME} annotations disagree")
            }
        });
    };
    if owner.user != server.user {
        return Some(format!("it belongs to user {:?}", owner.user));
    }
    if scope == Scope::Server && owner.name != server.name {
        return Some(format!("it belongs to server {owner}"));
    }
    None
}
