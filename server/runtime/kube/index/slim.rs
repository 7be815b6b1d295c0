//! Slim watch types: Pods, Services, Nodes, StatefulSets and Jobs decoded with only the fields the index (and a
//! Start's answer) reads, so that a watch event costs a few allocations instead of a whole
//! k8s-openapi object (managedFields, the full PodSpec, every status field, annotations).
//!
//! Unknown fields are skipped by serde as they are read. Each type implements `kube::Resource`
//! with the same kind, group, version, plural and scope as its k8s-openapi type, so that
//! `Api<SlimPod>` and kube-runtime's `watcher` (list pages included) work as they do for `Pod`.
//! `Resource::meta()` must lend an `ObjectMeta`: it is filled from [`SlimMeta`]'s few fields
//! only, and of the labels only Hydroplane's and a process's own are kept ([`kept_label`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::Resource as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

#[cfg(doc)]
use super::super::manifests::KEEP_STATUS_FINALIZER;
use super::super::manifests::{MANAGED_BY_LABEL, USER_LABEL_DOMAIN};

/// The metadata the index reads of an object.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    #[serde(default, deserialize_with = "kept_labels")]
    labels: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    owner_references: Option<Vec<OwnerReference>>,
    /// Read for [`KEEP_STATUS_FINALIZER`]: a bare Pod that keeps it while being deleted was lost.
    finalizers: Option<Vec<String>>,
}

/// Decodes an object's metadata through [`SlimMeta`], so that what it skips is never
/// materialised.
fn slim_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let meta = SlimMeta::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        owner_references: meta.owner_references,
        finalizers: meta.finalizers,
        ..ObjectMeta::default()
    })
}

/// Whether the index keeps a label: Hydroplane's own (`hydroplane/...`, the managed-by label)
/// and a process's own, stored under [`USER_LABEL_DOMAIN`]. A Node's many labels are not.
pub fn kept_label(key: &str) -> bool {
    let Some((prefix, _)) = key.split_once('/') else { return false };
    prefix == "hydroplane"
        || key == MANAGED_BY_LABEL
        || prefix == USER_LABEL_DOMAIN
        || prefix.strip_suffix(USER_LABEL_DOMAIN).is_some_and(|rest| rest.ends_with('.'))
}

/// Decodes a label map keeping only the [`kept_label`]s: the others' values are skipped
/// unread.
fn kept_labels<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Labels;
    impl<'de> Visitor<'de> for Labels {
        type Value = Option<BTreeMap<String, String>>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a map of labels")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_map(Labels)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut labels = BTreeMap::new();
            while let Some(KeptKey(key)) = map.next_key()? {
                match key {
                    Some(key) => {
                        labels.insert(key, map.next_value::<String>()?);
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(Some(labels))
        }
    }
    deserializer.deserialize_option(Labels)
}

/// A label key, copied only when it is a [`kept_label`].
struct KeptKey(Option<String>);

impl<'de> Deserialize<'de> for KeptKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = KeptKey;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a label key")
            }

            fn visit_str<E>(self, key: &str) -> Result<KeptKey, E> {
                Ok(KeptKey(kept_label(key).then(|| key.to_owned())))
            }
        }
        deserializer.deserialize_str(Key)
    }
}

/// Implements `kube::Resource` for a slim type as its k8s-openapi type does.
macro_rules! resource_like {
    ($slim:ty, $full:ty) => {
        impl kube::Resource for $slim {
            type DynamicType = ();
            type Scope = <$full as k8s_openapi::Resource>::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full>::KIND)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full>::GROUP)
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full>::VERSION)
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(<$full>::URL_PATH_SEGMENT)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

// === Pod ===

/// A Pod, as much as the index reads of it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimPod {
    /// Name, uid, resourceVersion, kept labels, creation and deletion times.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// The parts of the Pod's spec the index reads.
    pub spec: Option<SlimPodSpec>,
    /// The parts of the Pod's status the index reads.
    pub status: Option<SlimPodStatus>,
}

resource_like!(SlimPod, Pod);

/// What the index reads of a PodSpec.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    /// The node the Pod is bound to.
    pub node_name: Option<String>,
    /// The containers (Hydroplane makes one).
    pub containers: Option<Vec<SlimContainer>>,
    /// The registry credentials' Secrets.
    pub image_pull_secrets: Option<Vec<SlimReference>>,
}

/// What the index reads of a container.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimContainer {
    /// The ports, counted only (each is skipped unread).
    pub ports: Option<Vec<IgnoredAny>>,
    /// The environment, for the Secrets it reads.
    pub env: Option<Vec<SlimEnvVar>>,
}

/// An env var, for the Secret it reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimEnvVar {
    /// Where the value comes from, when not inline.
    pub value_from: Option<SlimEnvVarSource>,
}

/// Where an env var's value comes from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimEnvVarSource {
    /// The Secret key it reads.
    pub secret_key_ref: Option<SlimReference>,
}

/// A reference to an object by name (a `secretKeyRef`, an image pull secret).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimReference {
    /// The object's name.
    #[serde(default)]
    pub name: String,
}

/// What the index reads of a PodStatus.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: Option<String>,
    /// Why the Pod is in this phase (`Evicted`).
    pub reason: Option<String>,
    /// A human-readable explanation of `reason`.
    pub message: Option<String>,
    /// The Pod's conditions (`PodScheduled`, `Ready`, ...).
    pub conditions: Option<Vec<SlimCondition>>,
    /// The containers' statuses (Hydroplane's Pods have one).
    pub container_statuses: Option<Vec<SlimContainerStatus>>,
}

/// A Pod condition.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimCondition {
    /// The condition's type.
    #[serde(rename = "type", default)]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Why, in a word.
    pub reason: Option<String>,
    /// Why, in a sentence.
    pub message: Option<String>,
}

/// What the index reads of a container status.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimContainerStatus {
    /// Whether the container passes its readiness check.
    #[serde(default)]
    pub ready: bool,
    /// How often it was restarted.
    #[serde(default)]
    pub restart_count: i32,
    /// What it is doing now.
    pub state: Option<SlimContainerState>,
    /// How its previous run ended.
    pub last_state: Option<SlimContainerState>,
}

/// A container's state: waiting or terminated (running carries nothing the index reads).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimContainerState {
    /// Waiting, and why.
    pub waiting: Option<SlimWaiting>,
    /// Terminated, and how.
    pub terminated: Option<SlimTerminated>,
}

/// A waiting container.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimWaiting {
    /// Why it waits (`ContainerCreating`, `CrashLoopBackOff`, ...).
    pub reason: Option<String>,
    /// Why, in a sentence.
    pub message: Option<String>,
}

/// A terminated container.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimTerminated {
    /// Why it ended (`Completed`, `OOMKilled`, ...).
    pub reason: Option<String>,
    /// How, in a sentence.
    pub message: Option<String>,
    /// Its exit code.
    #[serde(default)]
    pub exit_code: i32,
}

// === Service ===

/// A Service, as much as the index reads of it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimService {
    /// Name, uid, resourceVersion, kept labels and ownerReferences.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// The parts of the Service's spec the index reads.
    pub spec: Option<SlimServiceSpec>,
    /// The parts of the Service's status the index reads: a load balancer's address.
    pub status: Option<SlimServiceStatus>,
}

/// What the index reads of a ServiceStatus.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimServiceStatus {
    /// The load balancer, for a LoadBalancer Service.
    pub load_balancer: Option<SlimLoadBalancerStatus>,
}

/// A LoadBalancer Service's load balancer.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimLoadBalancerStatus {
    /// Its addresses, once the cloud's controller made it.
    pub ingress: Option<Vec<SlimLoadBalancerIngress>>,
}

/// One address of a load balancer: a hostname (AWS's NLB and ELB) or an IP.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimLoadBalancerIngress {
    /// Its IP.
    pub ip: Option<String>,
    /// Its DNS name.
    pub hostname: Option<String>,
}

resource_like!(SlimService, Service);

/// What the index reads of a ServiceSpec.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimServiceSpec {
    /// `ClusterIP`, `NodePort`, ...
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// The cluster IP (`None` for a headless Service).
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// The ports.
    pub ports: Option<Vec<SlimServicePort>>,
}

/// A Service port.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimServicePort {
    /// The Service's port.
    #[serde(default)]
    pub port: i32,
    /// The node port, for a NodePort Service.
    pub node_port: Option<i32>,
}

// === Node ===

/// A Node, as much as the index reads of it: its addresses.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNode {
    /// Name, uid and resourceVersion (a Node's labels are not kept).
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// The parts of the Node's status the index reads.
    pub status: Option<SlimNodeStatus>,
}

resource_like!(SlimNode, Node);

/// What the index reads of a NodeStatus.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNodeStatus {
    /// The node's addresses.
    pub addresses: Option<Vec<SlimNodeAddress>>,
}

/// A node address.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimNodeAddress {
    /// `ExternalIP`, `InternalIP`, `Hostname`, ...
    #[serde(rename = "type", default)]
    pub type_: String,
    /// The address.
    #[serde(default)]
    pub address: String,
}

// === StatefulSet and Job ===

/// A StatefulSet, as much as the index reads of it: its metadata (a process's StatefulSet tells
/// only that the process exists; its Pod tells the rest).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimStatefulSet {
    /// Name, uid, resourceVersion, kept labels, creation and deletion times.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
}

resource_like!(SlimStatefulSet, StatefulSet);

/// A Job, as much as the index reads of it: its metadata and how it ended.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimJob {
    /// Name, uid, resourceVersion, kept labels, creation and deletion times.
    #[serde(default, deserialize_with = "slim_meta")]
    pub metadata: ObjectMeta,
    /// The parts of the Job's status the index reads.
    pub status: Option<SlimJobStatus>,
}

resource_like!(SlimJob, Job);

/// What the index reads of a JobStatus.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimJobStatus {
    /// The Job's conditions (`Complete`, `Failed`, ...).
    pub conditions: Option<Vec<SlimCondition>>,
    /// How many of its Pods failed (deleted, evicted or lost with their node included).
    #[serde(default)]
    pub failed: i32,
}

#[cfg(test)]
mod tests {
    use kube::Resource;

    use super::*;

    #[test]
    fn slim_types_address_the_same_resources_as_their_k8s_openapi_types() {
        assert_eq!(SlimPod::url_path(&(), Some("ns")), Pod::url_path(&(), Some("ns")));
        assert_eq!(SlimService::url_path(&(), Some("ns")), Service::url_path(&(), Some("ns")));
        assert_eq!(SlimNode::url_path(&(), None), Node::url_path(&(), None));
        assert_eq!(SlimPod::api_version(&()), "v1");
        assert_eq!(SlimNode::kind(&()), "Node");
        assert_eq!(SlimStatefulSet::url_path(&(), Some("ns")), StatefulSet::url_path(&(), Some("ns")));
        assert_eq!(SlimJob::url_path(&(), Some("ns")), Job::url_path(&(), Some("ns")));
        assert_eq!(SlimJob::api_version(&()), "batch/v1");
    }

    #[test]
    fn a_full_pod_decodes_to_what_the_index_reads_and_nothing_else() {
        let pod: SlimPod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "creationTimestamp": "2025-01-02T03:04:05Z",
                "labels": {"hydroplane/group-id": "g", "app.kubernetes.io/managed-by": "hydroplane",
                    "label.hydroplane/tier": "web", "example.com.label.hydroplane/team": "blue",
                    "pod-template-hash": "abc", "xlabel.hydroplane/no": "1"},
                "annotations": {"hydroplane/spec": "{\"big\": true}"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"nodeName": "n1", "imagePullSecrets": [{"name": "web-registry"}],
                "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                    "env": [{"name": "A", "value": "1"},
                        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "web-env", "key": "T"}}}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.9",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": null}],
                "containerStatuses": [{"name": "web", "ready": true, "restartCount": 2,
                    "state": {"running": {"startedAt": "2025-01-02T03:04:06Z"}},
                    "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }))
        .expect("a pod");
        let labels = pod.metadata.labels.as_ref().expect("labels");
        assert_eq!(
            labels.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "app.kubernetes.io/managed-by",
                "example.com.label.hydroplane/team",
                "hydroplane/group-id",
                "label.hydroplane/tier"
            ]
        );
        assert_eq!(pod.metadata.annotations, None, "annotations are not kept");
        assert_eq!(pod.metadata.managed_fields, None, "managedFields are not kept");
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        let container = &spec.containers.as_ref().expect("containers")[0];
        assert_eq!(container.ports.as_ref().map(Vec::len), Some(1));
        let status = pod.status.as_ref().expect("status");
        let container_status = &status.container_statuses.as_ref().expect("statuses")[0];
        assert_eq!(container_status.restart_count, 2);
        let last = container_status.last_state.as_ref().and_then(|state| state.terminated.as_ref());
        assert_eq!(last.map(|last| last.exit_code), Some(137));
    }

    #[test]
    fn nulls_and_missing_parts_decode_as_absent() {
        let pod: SlimPod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "labels": null},
            "spec": {"containers": [{"name": "p", "ports": null, "env": null}], "nodeName": null},
            "status": null
        }))
        .expect("a pod");
        assert_eq!(pod.metadata.labels, None);
        assert!(pod.status.is_none());
        let service: SlimService =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "s"}})).expect("a service");
        assert!(service.spec.is_none());
        let node: SlimNode = serde_json::from_value(serde_json::json!({"metadata": {"name": "n",
            "labels": {"kubernetes.io/hostname": "n"}}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}))
        .expect("a node");
        assert_eq!(node.metadata.labels, Some(BTreeMap::new()), "a Node's labels are not ours");
    }
}
