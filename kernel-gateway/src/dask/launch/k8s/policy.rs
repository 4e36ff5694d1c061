//! A cluster's NetworkPolicy: users run their own code on their scheduler and workers, so
//! nothing but the gateway and the cluster's own pods may reach them. Without it any pod
//! (another user's kernel or worker) could open the scheduler's comm port, its plain-HTTP
//! dashboard (task names, logs, the worker list) and its gateway API port, bypassing the
//! gateway's owner check and SNI proxy.
//!
//! The policy selects the cluster's pods (gateway and cluster labels) and admits ingress
//! - from the same cluster's pods, on any port (workers listen on ports they pick, and the
//!   scheduler and the workers connect to each other);
//! - from the gateway's pods (`dask.gateway_pod_labels` in `dask.gateway_namespace`), on the
//!   scheduler's ports only: comm (the SNI proxy), dashboard (the owner-only proxy) and the
//!   preload's API (scale calls).
//!
//! A per-cluster object is needed: a static policy cannot say "pods with my cluster label";
//! one admitting every Dask pod would let one user's workers reach another's scheduler.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label every namespace carries with its name (Kubernetes >= 1.22).
const NAMESPACE_NAME: &str = "kubernetes.io/metadata.name";

/// Who, besides a cluster's own pods, may reach it: the gateway's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewayPeer {
    /// The gateway pods' namespace.
    pub(crate) namespace: String,
    /// Their labels (all must match).
    pub(crate) labels: BTreeMap<String, String>,
}

/// The NetworkPolicy `metadata` names, selecting the pods labelled `cluster_labels`, admitting
/// each other and `gateway` on `scheduler_ports`.
pub(crate) fn network_policy(
    metadata: ObjectMeta,
    cluster_labels: &BTreeMap<String, String>,
    gateway: &GatewayPeer,
    scheduler_ports: &[u16],
) -> NetworkPolicy {
    let select = |labels: &BTreeMap<String, String>| LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    };
    let own = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(select(cluster_labels)),
            ..Default::default()
        }]),
        ports: None,
    };
    let from_gateway = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(select(&BTreeMap::from([(
                NAMESPACE_NAME.to_owned(),
                gateway.namespace.clone(),
            )]))),
            pod_selector: Some(select(&gateway.labels)),
            ..Default::default()
        }]),
        ports: Some(
            scheduler_ports
                .iter()
                .map(|p| NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(*p))),
                    protocol: Some("TCP".to_owned()),
                    ..Default::default()
                })
                .collect(),
        ),
    };
    NetworkPolicy {
        metadata,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(select(cluster_labels)),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![own, from_gateway]),
            ..Default::default()
        }),
    }
}
