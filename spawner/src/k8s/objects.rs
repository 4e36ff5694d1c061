//! Creating, replacing and deleting a server's objects. An existing object of the same name
//! is reused or deleted only when its owner annotations name this server (see `owner`);
//! otherwise the start fails and nothing is touched.

use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use super::manifest::LABEL_SERVER;
use super::owner::{Scope, foreign};
use super::{KubeSpawner, is_status, launch};
use crate::{ProgressEvent, ProgressSink, ServerId, SpawnError};

/// One object a start created, by uid: deleted when the start fails, and only that
/// incarnation (a newer object of the same name is never touched).
#[derive(Debug, Clone)]
pub(super) struct Made {
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) uid: String,
}

impl Made {
    fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.meta();
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }
}

/// What a start has created so far.
#[derive(Debug, Default)]
pub(super) struct Created {
    pub(super) secret: Option<Made>,
    pub(super) pod: Option<Made>,
}

/// Delete parameters that only match the object with `uid`.
pub(super) fn by_uid(uid: &str) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// The start was cancelled (the hub gave up on it, or the user stopped it).
pub(super) fn cancelled(server: &ServerId) -> SpawnError {
    launch(
        server,
        "the start was cancelled; its pod and Secret were deleted",
    )
}

impl KubeSpawner {
    /// The start fails on an object that is not `server`'s: the details go to the log, the
    /// user learns that the name is taken (not by whom).
    fn refuse(&self, server: &ServerId, kind: &str, ns: &str, name: &str, why: &str) -> SpawnError {
        tracing::warn!(
            user = %server.user, server = %server.name, kind, namespace = %ns, name = %name,
            reason = %why,
            "refusing to reuse or delete an object that is not this server's"
        );
        launch(
            server,
            format!(
                "the {kind} {ns}/{name} already exists and belongs to another user, server or \
                 hub; it was neither reused nor deleted: ask an administrator to check its \
                 `stackhub.io/user` annotation"
            ),
        )
    }

    /// The existing object `name` when it is `server`'s; the start's error otherwise.
    async fn existing<K>(
        &self,
        api: &Api<K>,
        server: &ServerId,
        kind: &str,
        name: &str,
        scope: Scope,
    ) -> Result<Option<K>, SpawnError>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| launch(server, format!("cannot read the {kind} {name}: {e}")))?;
        let Some(obj) = obj else {
            return Ok(None);
        };
        match foreign(&self.config, obj.meta(), server, scope) {
            Some(why) => Err(self.refuse(
                server,
                kind,
                &obj.meta().namespace.clone().unwrap_or_default(),
                name,
                &why,
            )),
            None => Ok(Some(obj)),
        }
    }

    pub(super) async fn ensure_namespace(
        &self,
        server: &ServerId,
        ns: &Namespace,
    ) -> Result<(), SpawnError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), ns).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => self
                .existing(
                    &api,
                    server,
                    "namespace",
                    &ns.name_any(),
                    Scope::UserIfNamed,
                )
                .await
                .map(|_| ()),
            Err(e) => Err(launch(
                server,
                format!("cannot create namespace {}: {e}", ns.name_any()),
            )),
        }
    }

    pub(super) async fn ensure_claim(
        &self,
        server: &ServerId,
        claim: &PersistentVolumeClaim,
        progress: &ProgressSink,
    ) -> Result<(), SpawnError> {
        let ns = claim.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), claim).await {
            Ok(_) => {
                progress.send(ProgressEvent::new(10, "Created your storage volume"));
                Ok(())
            }
            Err(e) if is_status(&e, 409) => {
                // A claim shared by the user's servers carries an empty server label.
                let shared = claim
                    .labels()
                    .get(LABEL_SERVER)
                    .is_none_or(String::is_empty);
                let scope = if shared { Scope::User } else { Scope::Server };
                let name = claim.name_any();
                match self
                    .existing(&api, server, "storage volume", &name, scope)
                    .await?
                {
                    Some(_) => {
                        progress.send(ProgressEvent::new(10, "Using your existing storage volume"));
                        Ok(())
                    }
                    None => Err(launch(
                        server,
                        format!("the storage volume {ns}/{name} vanished while starting"),
                    )),
                }
            }
            Err(e) => Err(launch(
                server,
                format!(
                    "cannot create the storage volume {}: {e}; check the spawner's \
                     `storage.storage_class` and `storage.size` settings",
                    claim.name_any()
                ),
            )),
        }
    }

    /// Create `obj`; an existing object of its name that is `server`'s (left by a crash or
    /// the previous start) is deleted by uid first, after at most `deadline` for it to go.
    async fn replace<K>(
        &self,
        api: &Api<K>,
        server: &ServerId,
        kind: &str,
        obj: &K,
        deadline: Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<K, SpawnError>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let create_err =
            |e: kube::Error| launch(server, format!("cannot create {kind} {name}: {e}"));
        match api.create(&PostParams::default(), obj).await {
            Ok(o) => return Ok(o),
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(create_err(e)),
        }
        if let Some(old) = self
            .existing(api, server, kind, &name, Scope::Server)
            .await?
        {
            tracing::info!(user = %server.user, server = %server.name, kind, name = %name, "replacing a stale object of this server");
            let uid = old.meta().uid.clone().unwrap_or_default();
            match api.delete(&name, &by_uid(&uid).grace_period(0)).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    return Err(launch(
                        server,
                        format!("cannot replace the stale {kind} {name}: {e}"),
                    ));
                }
            }
            // Wait for it to be gone (a pod's deletion can take its grace period).
            loop {
                match api.get_opt(&name).await {
                    Ok(Some(o)) if o.meta().uid.as_deref() == Some(uid.as_str()) => {}
                    Ok(_) => break,
                    Err(e) => {
                        return Err(launch(server, format!("cannot read {kind} {name}: {e}")));
                    }
                }
                if *cancel.borrow() {
                    return Err(cancelled(server));
                }
                if Instant::now() >= deadline {
                    return Err(launch(
                        server,
                        format!(
                            "the stale {kind} {name} was still terminating at the start timeout"
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        api.create(&PostParams::default(), obj)
            .await
            .map_err(create_err)
    }

    /// Create or replace the server's Secret (a new token each start).
    pub(super) async fn put_secret(
        &self,
        server: &ServerId,
        secret: &Secret,
        deadline: Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Made, SpawnError> {
        let api: Api<Secret> =
            Api::namespaced(self.client.clone(), &secret.namespace().unwrap_or_default());
        let made = self
            .replace(&api, server, "Secret", secret, deadline, cancel)
            .await?;
        Ok(Made::of(&made))
    }

    /// Create the pod; a stale pod of this server of the same name is deleted first.
    pub(super) async fn create_pod(
        &self,
        server: &ServerId,
        pod: &Pod,
        deadline: Instant,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Pod, SpawnError> {
        let api = self.pods(&pod.namespace().unwrap_or_default());
        self.replace(&api, server, "pod", pod, deadline, cancel)
            .await
    }

    /// Delete what a failed or cancelled start created (by uid; failures are logged).
    pub(super) async fn delete_created(&self, server: &ServerId, created: &Created) {
        if let Some(p) = &created.pod {
            let api = self.pods(&p.namespace);
            match api.delete(&p.name, &by_uid(&p.uid).grace_period(0)).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    tracing::error!(user = %server.user, server = %server.name, pod = %p.name, error = %e, "cannot delete the pod of a failed start");
                }
            }
        }
        if let Some(s) = &created.secret {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &s.namespace);
            match api.delete(&s.name, &by_uid(&s.uid)).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    tracing::error!(user = %server.user, server = %server.name, secret = %s.name, error = %e, "cannot delete the Secret of a failed start");
                }
            }
        }
    }

    /// Delete the Secret `name` when it is `server`'s (gone already is fine; another's is
    /// left alone and logged).
    pub(super) async fn delete_secret_of(
        &self,
        server: &ServerId,
        ns: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let Some(secret) = api.get_opt(name).await? else {
            return Ok(());
        };
        if let Some(why) = foreign(&self.config, &secret.metadata, server, Scope::Server) {
            tracing::warn!(user = %server.user, server = %server.name, namespace = %ns, secret = %name, reason = %why, "not deleting a Secret that is not this server's");
            return Ok(());
        }
        let uid = secret.uid().unwrap_or_default();
        match api.delete(name, &by_uid(&uid)).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
