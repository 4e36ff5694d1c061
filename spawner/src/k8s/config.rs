//! The Kubernetes spawner's cluster-wide settings: namespace mode, default image and command,
//! pull policy, uid/gid, storage. What differs per server (image, command, resources, node
//! selector, tolerations, storage) comes from the hub's profiles as a [`crate::LaunchSpec`].

use serde::{Deserialize, Serialize};

/// Where users' pods live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum NamespaceMode {
    /// Every pod in the hub's namespace.
    Hub {
        /// The namespace.
        namespace: String,
    },
    /// One namespace per user, `{prefix}{user}`, created on first start.
    PerUser {
        /// Prefix of the namespaces' names, e.g. `stackhub-`.
        prefix: String,
    },
}

impl Default for NamespaceMode {
    fn default() -> Self {
        Self::Hub {
            namespace: "default".to_owned(),
        }
    }
}

/// The `user_data` volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Give each user a PersistentVolumeClaim (kept across stops).
    pub enabled: bool,
    /// StorageClass; the cluster default when unset.
    pub storage_class: Option<String>,
    /// Requested size, a Kubernetes quantity.
    pub size: String,
    /// Access mode of the claim.
    pub access_mode: String,
    /// Where the volume is mounted in the container.
    pub mount_path: String,
    /// One claim per named server instead of one per user.
    pub per_named_server: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            storage_class: None,
            size: "10Gi".to_owned(),
            access_mode: "ReadWriteOnce".to_owned(),
            mount_path: "/home/jovyan/user_data".to_owned(),
            per_named_server: false,
        }
    }
}

/// Settings of [`KubeSpawner`](super::KubeSpawner).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KubeSpawnerConfig {
    /// This hub's id, a label value: a restarted hub finds its pods by it, and two hubs in one
    /// namespace never touch each other's pods.
    pub hub_id: String,
    /// Namespace per hub or per user.
    pub namespace: NamespaceMode,
    /// The single-user image unless the profile gives one.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`; Kubernetes' default when unset.
    pub image_pull_policy: Option<String>,
    /// Command run in the container unless the profile gives one.
    pub cmd: Vec<String>,
    /// Port the server listens on in the pod.
    pub port: u16,
    /// User id the container runs as (never 0).
    pub uid: i64,
    /// Group id (and `fsGroup` of the volume).
    pub gid: i64,
    /// Service account of the pods; none mounted when unset.
    pub service_account: Option<String>,
    /// Storage.
    pub storage: StorageConfig,
    /// Seconds from the start request until the pod runs (claim, Secret and pod created,
    /// scheduled, image pulled) before the start fails and its pod and Secret are deleted.
    /// The hub waits for a start at least this long (see [`Self::start_timeout`]).
    pub start_timeout_secs: u64,
    /// The extended resource GPUs are requested as, unless the profile names another.
    pub gpu_resource: String,
}

impl KubeSpawnerConfig {
    /// The longest a start takes, cleanup included: `start_timeout_secs` plus an allowance
    /// for the API calls that delete what a failed start created.
    pub fn start_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.start_timeout_secs) + CLEANUP_ALLOWANCE
    }
}

/// What a start may take beyond `start_timeout_secs` (API calls after the deadline and
/// deleting what it created).
pub const CLEANUP_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(20);

impl Default for KubeSpawnerConfig {
    fn default() -> Self {
        Self {
            hub_id: "stackhub".to_owned(),
            namespace: NamespaceMode::default(),
            image: "stackhub/singleuser:0.1.0".to_owned(),
            image_pull_policy: None,
            cmd: vec!["jupyterhub-singleuser".to_owned()],
            port: 8888,
            uid: 1000,
            gid: 100,
            service_account: None,
            storage: StorageConfig::default(),
            start_timeout_secs: 300,
            gpu_resource: "nvidia.com/gpu".to_owned(),
        }
    }
}
