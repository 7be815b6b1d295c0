//! The resource types the simulator serves, and what the API says about each one.
//!
//! [`Kind`] is the closed set of stored kinds; [`ResourceInfo`] carries the names used in
//! paths, discovery and error messages. Adding a kind means adding a variant and its entry here
//! (the access-control kinds keep theirs in [`crate::rbac`]).

use crate::rbac;

/// A stored kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 Namespace (cluster-scoped).
    Namespace,
    /// core/v1 Node (cluster-scoped).
    Node,
    /// core/v1 Pod.
    Pod,
    /// core/v1 Service.
    Service,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Event (read by `kubectl describe`).
    Event,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// batch/v1 Job.
    Job,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// rbac/v1 Role.
    Role,
    /// rbac/v1 RoleBinding.
    RoleBinding,
    /// rbac/v1 ClusterRole (cluster-scoped).
    ClusterRole,
    /// rbac/v1 ClusterRoleBinding (cluster-scoped).
    ClusterRoleBinding,
    /// networking.k8s.io/v1 NetworkPolicy: stored, not enforced (the simulator has no network).
    NetworkPolicy,
}

/// Static facts about one resource type.
#[derive(Debug)]
pub struct ResourceInfo {
    /// The `kind` of a single object.
    pub kind: &'static str,
    /// The plural used in paths.
    pub plural: &'static str,
    /// The singular name for discovery.
    pub singular: &'static str,
    /// The API group; empty for core.
    pub group: &'static str,
    /// The API version within the group.
    pub version: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Whether the kind has a `status` subresource.
    pub has_status: bool,
    /// Field selector labels accepted besides `metadata.name` and `metadata.namespace`.
    pub extra_field_labels: &'static [&'static str],
}

const NAMESPACE: ResourceInfo = ResourceInfo {
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    group: "",
    version: "v1",
    namespaced: false,
    short_names: &["ns"],
    has_status: true,
    extra_field_labels: &["status.phase"],
};
const NODE: ResourceInfo = ResourceInfo {
    kind: "Node",
    plural: "nodes",
    singular: "node",
    group: "",
    version: "v1",
    namespaced: false,
    short_names: &["no"],
    has_status: true,
    extra_field_labels: &["spec.unschedulable"],
};
const POD: ResourceInfo = ResourceInfo {
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["po"],
    has_status: true,
    extra_field_labels: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
};
const SERVICE: ResourceInfo = ResourceInfo {
    kind: "Service",
    plural: "services",
    singular: "service",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["svc"],
    has_status: true,
    extra_field_labels: &["spec.clusterIP", "spec.type"],
};
const SECRET: ResourceInfo = ResourceInfo {
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &[],
    has_status: false,
    extra_field_labels: &["type"],
};
const CONFIG_MAP: ResourceInfo = ResourceInfo {
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["cm"],
    has_status: false,
    extra_field_labels: &[],
};
const EVENT: ResourceInfo = ResourceInfo {
    kind: "Event",
    plural: "events",
    singular: "event",
    group: "",
    version: "v1",
    namespaced: true,
    short_names: &["ev"],
    has_status: false,
    extra_field_labels: &[
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ],
};
const DEPLOYMENT: ResourceInfo = ResourceInfo {
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    group: "apps",
    version: "v1",
    namespaced: true,
    short_names: &["deploy"],
    has_status: true,
    extra_field_labels: &[],
};
const STATEFUL_SET: ResourceInfo = ResourceInfo {
    kind: "StatefulSet",
    plural: "statefulsets",
    singular: "statefulset",
    group: "apps",
    version: "v1",
    namespaced: true,
    short_names: &["sts"],
    has_status: true,
    extra_field_labels: &[],
};
/// The API group of NetworkPolicy.
pub const NETWORKING_GROUP: &str = "networking.k8s.io";
const NETWORK_POLICY: ResourceInfo = ResourceInfo {
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    singular: "networkpolicy",
    group: NETWORKING_GROUP,
    version: "v1",
    namespaced: true,
    short_names: &["netpol"],
    has_status: false,
    extra_field_labels: &[],
};
const JOB: ResourceInfo = ResourceInfo {
    kind: "Job",
    plural: "jobs",
    singular: "job",
    group: "batch",
    version: "v1",
    namespaced: true,
    short_names: &[],
    has_status: true,
    extra_field_labels: &[],
};

impl Kind {
    /// Every kind, in discovery order.
    pub const ALL: [Kind; 16] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Event,
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::Job,
        Kind::ServiceAccount,
        Kind::Role,
        Kind::RoleBinding,
        Kind::ClusterRole,
        Kind::ClusterRoleBinding,
        Kind::NetworkPolicy,
    ];

    /// The static facts about this kind.
    pub fn info(self) -> &'static ResourceInfo {
        match self {
            Kind::Namespace => &NAMESPACE,
            Kind::Node => &NODE,
            Kind::Pod => &POD,
            Kind::Service => &SERVICE,
            Kind::Secret => &SECRET,
            Kind::ConfigMap => &CONFIG_MAP,
            Kind::Event => &EVENT,
            Kind::Deployment => &DEPLOYMENT,
            Kind::StatefulSet => &STATEFUL_SET,
            Kind::Job => &JOB,
            Kind::ServiceAccount => &rbac::SERVICE_ACCOUNT,
            Kind::Role => &rbac::ROLE,
            Kind::RoleBinding => &rbac::ROLE_BINDING,
            Kind::ClusterRole => &rbac::CLUSTER_ROLE,
            Kind::ClusterRoleBinding => &rbac::CLUSTER_ROLE_BINDING,
            Kind::NetworkPolicy => &NETWORK_POLICY,
        }
    }

    /// The kind served at `group`/`version` under `plural`, if any.
    pub fn from_path(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| {
            let info = kind.info();
            info.group == group && info.version == version && info.plural == plural
        })
    }

    /// The kind whose `apiVersion` and `kind` are given, if any.
    pub fn from_type(api_version: &str, kind_name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.api_version() == api_version && kind.info().kind == kind_name)
    }

    /// The `apiVersion` of objects of this kind, e.g. `v1` or `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self.info().group {
            "" => "v1",
            rbac::GROUP => "rbac.authorization.k8s.io/v1",
            "batch" => "batch/v1",
            NETWORKING_GROUP => "networking.k8s.io/v1",
            _ => "apps/v1",
        }
    }

    /// The resource as error messages name it: `pods`, `deployments.apps`.
    pub fn qualified_resource(self) -> String {
        let info = self.info();
        if info.group.is_empty() {
            info.plural.to_string()
        } else {
            format!("{}.{}", info.plural, info.group)
        }
    }

    /// The `kind` of a list of these objects.
    pub fn list_kind(self) -> String {
        format!("{}List", self.info().kind)
    }

    /// The propagation policy of a delete that names none: batch/v1 Jobs orphan their pods
    /// (kept for compatibility by the API server, so clients must ask for Background or
    /// Foreground); every other kind deletes its dependents in the background.
    pub fn default_propagation(self) -> crate::store::Propagation {
        match self {
            Kind::Job => crate::store::Propagation::Orphan,
            _ => crate::store::Propagation::Background,
        }
    }

    /// Whether `label` may be used in a field selector for this kind.
    pub fn supports_field_label(self, label: &str) -> bool {
        label == "metadata.name"
            || (label == "metadata.namespace" && self.info().namespaced)
            || self.info().extra_field_labels.contains(&label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_types_round_trip() {
        for kind in Kind::ALL {
            let info = kind.info();
            assert_eq!(Kind::from_path(info.group, info.version, info.plural), Some(kind));
            assert_eq!(Kind::from_type(kind.api_version(), info.kind), Some(kind));
        }
        assert_eq!(Kind::from_path("", "v1", "deployments"), None);
        assert_eq!(Kind::from_path("rbac.authorization.k8s.io", "v1", "roles"), Some(Kind::Role));
        assert_eq!(Kind::ClusterRoleBinding.api_version(), "rbac.authorization.k8s.io/v1");
        assert_eq!(Kind::Role.qualified_resource(), "roles.rbac.authorization.k8s.io");
        assert_eq!(Kind::Job.api_version(), "batch/v1");
        assert_eq!(Kind::StatefulSet.api_version(), "apps/v1");
        assert_eq!(Kind::NetworkPolicy.api_version(), "networking.k8s.io/v1");
    }
}
