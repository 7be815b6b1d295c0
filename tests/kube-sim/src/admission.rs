//! What the API server and the scheduler do to an object as it is written: defaults, Secret
//! `stringData`, Service address allocation, pod scheduling onto a node and pod IPs.
//!
//! These functions run inside the store's lock, so an allocation and the write that records it
//! happen together; a failed write releases what it took.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::alloc::{AllocError, Allocators};
use crate::error::{ApiError, FieldError};
use crate::meta;
use crate::resources::Kind;
use crate::selector::{LabelSelector, labels_match, selector_from_object};

/// What admission may read and change besides the object.
pub struct AdmissionContext<'a> {
    /// The address pools.
    pub allocators: &'a mut Allocators,
    /// The cluster's nodes, for scheduling.
    pub nodes: Vec<Arc<Value>>,
    /// The round-robin position for scheduling.
    pub next_node: &'a mut usize,
    /// Pod IPs by pod UID.
    pub pod_ips: &'a mut HashMap<String, Ipv4Addr>,
}

fn invalid(kind: Kind, name: &str, field: String, value: Value, error: AllocError) -> ApiError {
    ApiError::Invalid {
        kind,
        name: name.to_string(),
        causes: vec![FieldError::invalid(field, value, error.to_string())],
    }
}

/// Applies defaults and allocations to a new object.
pub fn admit_create(
    kind: Kind,
    object: &mut Value,
    context: &mut AdmissionContext<'_>,
) -> Result<(), ApiError> {
    match kind {
        Kind::Pod => {
            default_pod_spec(object.get_mut("spec"));
            schedule_pod(object, context);
            Ok(())
        }
        Kind::Service => admit_service(object, None, context),
        Kind::Secret => {
            fold_string_data(object);
            if object.get("type").is_none_or(Value::is_null) {
                object["type"] = json!("Opaque");
            }
            Ok(())
        }
        Kind::Namespace => {
            let name = meta::name(object).to_string();
            let labels = meta::object_mut(object, "metadata").entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(labels) = labels {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            object["spec"] = json!({"finalizers": ["kubernetes"]});
            object["status"] = json!({"phase": "Active"});
            Ok(())
        }
        Kind::Deployment => {
            let spec = meta::object_mut(object, "spec");
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            spec.entry("strategy").or_insert(json!({
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}
            }));
            default_pod_spec(object.pointer_mut("/spec/template/spec"));
            object["status"] = json!({});
            Ok(())
        }
        Kind::StatefulSet => {
            default_stateful_set(object);
            object["status"] = json!({"replicas": 0, "availableReplicas": 0});
            Ok(())
        }
        Kind::Job => {
            default_job(object);
            object["status"] = json!({});
            Ok(())
        }
        Kind::Node
        | Kind::ConfigMap
        | Kind::Event
        | Kind::ServiceAccount
        | Kind::NetworkPolicy
        | Kind::Role
        | Kind::RoleBinding
        | Kind::ClusterRole
        | Kind::ClusterRoleBinding => Ok(()),
    }
}

/// Carries allocations and immutable fields over an update.
pub fn admit_update(
    kind: Kind,
    old: &Value,
    new: &mut Value,
    context: &mut AdmissionContext<'_>,
) -> Result<(), ApiError> {
    match kind {
        Kind::Service => admit_service(new, Some(old), context),
        Kind::Secret => {
            fold_string_data(new);
            Ok(())
        }
        Kind::Pod => {
            // The binding is immutable once made; a PUT that omits it keeps the old node.
            if let Some(node) = old.pointer("/spec/nodeName").cloned() {
                meta::object_mut(new, "spec").insert("nodeName".into(), node);
            }
            default_pod_spec(new.get_mut("spec"));
            Ok(())
        }
        Kind::Deployment => {
            default_pod_spec(new.pointer_mut("/spec/template/spec"));
            let spec = meta::object_mut(new, "spec");
            spec.entry("replicas").or_insert(json!(1));
            Ok(())
        }
        Kind::StatefulSet => {
            default_stateful_set(new);
            Ok(())
        }
        Kind::Job => {
            default_job(new);
            Ok(())
        }
        Kind::Namespace => {
            if let Some(spec) = old.get("spec") {
                new["spec"] = spec.clone();
            }
            Ok(())
        }
        Kind::Node
        | Kind::ConfigMap
        | Kind::Event
        | Kind::ServiceAccount
        | Kind::NetworkPolicy
        | Kind::Role
        | Kind::RoleBinding
        | Kind::ClusterRole
        | Kind::ClusterRoleBinding => Ok(()),
    }
}

/// The API server's defaults for a StatefulSet.
fn default_stateful_set(object: &mut Value) {
    let spec = meta::object_mut(object, "spec");
    spec.entry("replicas").or_insert(json!(1));
    spec.entry("podManagementPolicy").or_insert(json!("OrderedReady"));
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    spec.entry("updateStrategy")
        .or_insert(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
    spec.entry("persistentVolumeClaimRetentionPolicy")
        .or_insert(json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
    default_pod_spec(object.pointer_mut("/spec/template/spec"));
}

/// The labels the API server puts on a Job's pod template, and so on every pod of the Job.
pub fn job_labels(name: &str, uid: &str) -> [(&'static str, String); 4] {
    [
        ("batch.kubernetes.io/controller-uid", uid.to_string()),
        ("batch.kubernetes.io/job-name", name.to_string()),
        ("controller-uid", uid.to_string()),
        ("job-name", name.to_string()),
    ]
}

/// The API server's defaults for a Job, and its generated selector: unless
/// `spec.manualSelector` is set, the template gets the Job's labels and the selector picks its
/// UID (a selector sent by a client round-tripping the object is kept).
fn default_job(object: &mut Value) {
    let name = meta::name(object).to_string();
    let uid = meta::uid(object).to_string();
    let manual = object.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
    let spec = meta::object_mut(object, "spec");
    spec.entry("completions").or_insert(json!(1));
    spec.entry("parallelism").or_insert(json!(1));
    spec.entry("backoffLimit").or_insert(json!(6));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    spec.entry("podReplacementPolicy").or_insert(json!("TerminatingOrFailed"));
    if !manual {
        spec.entry("selector")
            .or_insert(json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid.clone()}}));
        let template = spec.entry("template").or_insert_with(|| json!({}));
        let metadata = meta::metadata_mut(template);
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Value::Object(labels) = labels {
            for (key, value) in job_labels(&name, &uid) {
                labels.insert(key.to_string(), json!(value));
            }
        }
    }
    default_pod_spec(object.pointer_mut("/spec/template/spec"));
}

/// Returns a deleted object's addresses to their pools.
pub fn release(kind: Kind, object: &Value, context: &mut AdmissionContext<'_>) {
    match kind {
        Kind::Service => {
            if let Some(ip) =
                object.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|ip| ip.parse().ok())
            {
                context.allocators.cluster_ips.release(ip);
            }
            for port in node_ports(object) {
                context.allocators.node_ports.release(port);
            }
        }
        Kind::Pod => {
            if let Some(ip) = context.pod_ips.remove(meta::uid(object)) {
                context.allocators.pod_ips.release(ip);
            }
        }
        _ => {}
    }
}

fn node_ports(service: &Value) -> Vec<u16> {
    service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .filter_map(|p| u16::try_from(p).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn fold_string_data(secret: &mut Value) {
    let Some(Value::Object(string_data)) = secret.as_object_mut().and_then(|s| s.remove("stringData")) else {
        return;
    };
    let data = meta::object_mut(secret, "data");
    for (key, value) in string_data {
        let text = value.as_str().unwrap_or_default();
        data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            None => "Always",
            Some((_, "latest")) => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// Fills the pod spec defaults the API server sets (restart policy, DNS policy, pull policy...).
pub fn default_pod_spec(spec: Option<&mut Value>) {
    let Some(Value::Object(spec)) = spec else { return };
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName").or_insert(json!("default-scheduler"));
    spec.entry("terminationGracePeriodSeconds").or_insert(json!(30));
    spec.entry("securityContext").or_insert(json!({}));
    spec.entry("enableServiceLinks").or_insert(json!(true));
    spec.entry("serviceAccountName").or_insert(json!("default"));
    spec.entry("serviceAccount").or_insert(json!("default"));
    spec.entry("priority").or_insert(json!(0));
    for field in ["containers", "initContainers"] {
        for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
            let Value::Object(container) = container else { continue };
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
            container.entry("imagePullPolicy").or_insert(json!(image_pull_policy(&image)));
            container.entry("terminationMessagePath").or_insert(json!("/dev/termination-log"));
            container.entry("terminationMessagePolicy").or_insert(json!("File"));
            container.entry("resources").or_insert(json!({}));
            for port in container.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                if let Value::Object(port) = port {
                    port.entry("protocol").or_insert(json!("TCP"));
                }
            }
        }
    }
}

fn node_is_schedulable(node: &Value, node_selector: &LabelSelector) -> bool {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    let cordoned = node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
    ready && !cordoned && labels_match(node_selector, node.pointer("/metadata/labels"))
}

/// Binds an unbound pod to a node, round-robin among the nodes that fit, or marks it
/// Unschedulable like the scheduler does when none fits.
pub(crate) fn schedule_pod(pod: &mut Value, context: &mut AdmissionContext<'_>) {
    let now = meta::now();
    // Only each container's name and image go into its status: the rest is not copied.
    let containers: Vec<(Value, Value)> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            (c.get("name").cloned().unwrap_or(Value::Null), c.get("image").cloned().unwrap_or(Value::Null))
        })
        .collect();
    let mut status = Map::new();
    status.insert("phase".into(), json!("Pending"));
    status.insert("qosClass".into(), json!("BestEffort"));
    let requested_node =
        pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
    let chosen = match requested_node {
        Some(node) => Some(node),
        None => {
            let selector = pod
                .pointer("/spec/nodeSelector")
                .and_then(Value::as_object)
                .map(|labels| selector_from_object(&json!({"matchLabels": labels})))
                .unwrap_or_default();
            let fitting: Vec<&Arc<Value>> =
                context.nodes.iter().filter(|n| node_is_schedulable(n, &selector)).collect();
            if fitting.is_empty() {
                None
            } else {
                let node = fitting[*context.next_node % fitting.len()];
                *context.next_node += 1;
                Some(meta::name(node).to_string())
            }
        }
    };
    match chosen {
        Some(node) => {
            meta::object_mut(pod, "spec").insert("nodeName".into(), json!(node));
            status.insert(
                "conditions".into(),
                json!([{"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now}]),
            );
            let waiting: Vec<Value> = containers
                .into_iter()
                .map(|(name, image)| {
                    json!({
                        "name": name,
                        "image": image,
                        "imageID": "",
                        "ready": false,
                        "started": false,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                        "lastState": {}
                    })
                })
                .collect();
            status.insert("containerStatuses".into(), json!(waiting));
            if let Ok(ip) = context.allocators.pod_ips.allocate() {
                context.pod_ips.insert(meta::uid(pod).to_string(), ip);
            }
        }
        None => {
            let total = context.nodes.len();
            status.insert(
                "conditions".into(),
                json!([{
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": format!("0/{total} nodes are available: {total} node(s) didn't match Pod's node affinity/selector. preemption: 0/{total} nodes are available: {total} Preemption is not helpful for scheduling."),
                    "lastProbeTime": null,
                    "lastTransitionTime": now
                }]),
            );
        }
    }
    pod["status"] = Value::Object(status);
}

/// Allocates a Service's ClusterIP and NodePorts, keeping those of `old` on update.
fn admit_service(
    service: &mut Value,
    old: Option<&Value>,
    context: &mut AdmissionContext<'_>,
) -> Result<(), ApiError> {
    // Only the name is needed for errors; the whole Service is not copied for it.
    let name = meta::name(service).to_string();
    let spec = meta::object_mut(service, "spec");
    let service_type = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    spec.insert("type".into(), json!(service_type));
    spec.entry("sessionAffinity").or_insert(json!("None"));
    spec.entry("internalTrafficPolicy").or_insert(json!("Cluster"));
    if service_type == "NodePort" || service_type == "LoadBalancer" {
        spec.entry("externalTrafficPolicy").or_insert(json!("Cluster"));
    }
    for port in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Value::Object(port) = port {
            port.entry("protocol").or_insert(json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                port.entry("targetPort").or_insert(number);
            }
        }
    }

    // ClusterIP: kept across updates, immutable once set.
    let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).and_then(Value::as_str).map(str::to_string);
    let requested_ip =
        spec.get("clusterIP").and_then(Value::as_str).filter(|ip| !ip.is_empty()).map(str::to_string);
    let mut newly_allocated_ip = None;
    let cluster_ip = match (&old_ip, requested_ip) {
        (Some(old_ip), None) => old_ip.clone(),
        (Some(old_ip), Some(requested)) => {
            if &requested != old_ip {
                return Err(ApiError::Invalid {
                    kind: Kind::Service,
                    name: name.clone(),
                    causes: vec![FieldError::invalid(
                        "spec.clusterIPs[0]",
                        requested.as_str(),
                        "may not change once set",
                    )],
                });
            }
            requested
        }
        (None, Some(requested)) if requested == "None" => requested,
        (None, Some(requested)) => {
            let address: Ipv4Addr = requested.parse().map_err(|_| ApiError::Invalid {
                kind: Kind::Service,
                name: name.clone(),
                causes: vec![FieldError::invalid(
                    "spec.clusterIPs[0]",
                    requested.as_str(),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )],
            })?;
            context.allocators.cluster_ips.allocate_specific(address).map_err(|e| {
                invalid(Kind::Service, &name, "spec.clusterIPs[0]".into(), json!(requested), e)
            })?;
            newly_allocated_ip = Some(address);
            requested
        }
        (None, None) => {
            let address = context
                .allocators
                .cluster_ips
                .allocate()
                .map_err(|e| invalid(Kind::Service, &name, "spec.clusterIP".into(), json!(""), e))?;
            newly_allocated_ip = Some(address);
            address.to_string()
        }
    };
    spec.insert("clusterIP".into(), json!(cluster_ip));
    spec.insert("clusterIPs".into(), json!([cluster_ip]));
    if cluster_ip != "None" {
        spec.insert("ipFamilies".into(), json!(["IPv4"]));
        spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
    }

    // NodePorts: requested ones are honoured, others reuse the old port for the same service
    // port or get a fresh one; ports no longer used go back to the pool.
    let old_ports: Vec<Value> =
        old.and_then(|o| o.pointer("/spec/ports")).and_then(Value::as_array).cloned().unwrap_or_default();
    let old_node_ports: Vec<u16> = old.map(node_ports).unwrap_or_default();
    let wants_node_ports = service_type == "NodePort" || service_type == "LoadBalancer";
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    let mut failure = None;
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for (index, port) in ports.iter_mut().enumerate() {
            let Value::Object(port) = port else { continue };
            if !wants_node_ports {
                port.remove("nodePort");
                continue;
            }
            let requested = port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0);
            let result = match requested {
                Some(requested) if u16::try_from(requested).is_ok_and(|p| old_node_ports.contains(&p)) => {
                    kept.push(requested as u16);
                    Ok(requested as u16)
                }
                Some(requested) => {
                    context.allocators.node_ports.allocate_specific(requested).inspect(|p| taken.push(*p))
                }
                None => {
                    let previous = old_ports
                        .iter()
                        .find(|o| {
                            o.get("port") == port.get("port") && o.get("protocol") == port.get("protocol")
                        })
                        .and_then(|o| o.get("nodePort"))
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok())
                        .filter(|p| !kept.contains(p));
                    match previous {
                        Some(previous) => {
                            kept.push(previous);
                            Ok(previous)
                        }
                        None => context.allocators.node_ports.allocate().inspect(|p| taken.push(*p)),
                    }
                }
            };
            match result {
                Ok(node_port) => {
                    port.insert("nodePort".into(), json!(node_port));
                }
                Err(error) => {
                    failure =
                        Some((format!("spec.ports[{index}].nodePort"), json!(requested.unwrap_or(0)), error));
                    break;
                }
            }
        }
    }
    if let Some((field, value, error)) = failure {
        for port in taken {
            context.allocators.node_ports.release(port);
        }
        if let Some(address) = newly_allocated_ip {
            context.allocators.cluster_ips.release(address);
        }
        if error == AllocError::Exhausted {
            // Not a field's fault: the API server answers an internal error (its own TODO says
            // so), with the allocator's words.
            return Err(ApiError::Internal(format!(
                "Internal error occurred: failed to allocate a nodePort: {error}"
            )));
        }
        return Err(invalid(Kind::Service, &name, field, value, error));
    }
    for port in old_node_ports {
        if !kept.contains(&port) {
            context.allocators.node_ports.release(port);
        }
    }
    if service.get("status").is_none() {
        service["status"] = json!({"loadBalancer": {}});
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, labels: Value) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
    }

    struct Fixture {
        allocators: Allocators,
        next_node: usize,
        pod_ips: HashMap<String, Ipv4Addr>,
        nodes: Vec<Arc<Value>>,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture {
                allocators: Allocators::default(),
                next_node: 0,
                pod_ips: HashMap::new(),
                nodes: vec![node("node-1", json!({"zone": "a"})), node("node-2", json!({"zone": "b"}))],
            }
        }

        fn context(&mut self) -> AdmissionContext<'_> {
            AdmissionContext {
                allocators: &mut self.allocators,
                nodes: self.nodes.clone(),
                next_node: &mut self.next_node,
                pod_ips: &mut self.pod_ips,
            }
        }
    }

    #[test]
    fn pods_are_scheduled_round_robin_and_respect_node_selectors() {
        let mut fixture = Fixture::new();
        let mut names = Vec::new();
        for index in 0..3 {
            let mut pod = json!({"metadata": {"name": format!("p{index}"), "uid": format!("u{index}")}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
            admit_create(Kind::Pod, &mut pod, &mut fixture.context()).unwrap();
            names.push(pod["spec"]["nodeName"].as_str().unwrap().to_string());
            assert_eq!(pod["status"]["phase"], "Pending");
            assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        }
        assert_eq!(names, ["node-1", "node-2", "node-1"]);
        assert_eq!(fixture.pod_ips.len(), 3);

        let mut picky = json!({"metadata": {"name": "x", "uid": "ux"}, "spec": {"nodeSelector": {"zone": "b"}, "containers": []}});
        admit_create(Kind::Pod, &mut picky, &mut fixture.context()).unwrap();
        assert_eq!(picky["spec"]["nodeName"], "node-2");

        let mut impossible = json!({"metadata": {"name": "y", "uid": "uy"}, "spec": {"nodeSelector": {"zone": "c"}, "containers": []}});
        admit_create(Kind::Pod, &mut impossible, &mut fixture.context()).unwrap();
        assert!(impossible["spec"].get("nodeName").is_none());
        assert_eq!(impossible["status"]["conditions"][0]["reason"], "Unschedulable");
    }

    #[test]
    fn node_ports_are_allocated_honoured_and_kept_on_update() {
        let mut fixture = Fixture::new();
        let mut first = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}, {"port": 81}]}});
        admit_create(Kind::Service, &mut first, &mut fixture.context()).unwrap();
        assert_eq!(first["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(first["spec"]["ports"][1]["targetPort"], 81);
        let allocated = first["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&allocated));
        assert!(first["spec"]["clusterIP"].as_str().unwrap().starts_with("10.9"));

        let mut clash = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}});
        let error = admit_create(Kind::Service, &mut clash, &mut fixture.context()).unwrap_err();
        assert_eq!(error.to_status()["details"]["causes"][0]["field"], "spec.ports[0].nodePort");

        let mut out_of_range = json!({"metadata": {"name": "c"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(admit_create(Kind::Service, &mut out_of_range, &mut fixture.context()).is_err());

        // An update that omits clusterIP and nodePorts keeps them.
        let mut update = json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
        admit_update(Kind::Service, &first, &mut update, &mut fixture.context()).unwrap();
        assert_eq!(update["spec"]["clusterIP"], first["spec"]["clusterIP"]);
        assert_eq!(update["spec"]["ports"], first["spec"]["ports"]);

        // Switching to ClusterIP gives the NodePorts back.
        let mut private = json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}});
        admit_update(Kind::Service, &update, &mut private, &mut fixture.context()).unwrap();
        assert!(private["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(fixture.allocators.node_ports.allocate_specific(30080), Ok(30080));
    }

    #[test]
    fn secrets_fold_string_data_into_data() {
        let mut fixture = Fixture::new();
        let mut secret = json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}, "data": {"a": "Yg=="}});
        admit_create(Kind::Secret, &mut secret, &mut fixture.context()).unwrap();
        assert_eq!(secret["data"], json!({"a": "Yg==", "k": "dg=="}));
        assert_eq!(secret["type"], "Opaque");
        assert!(secret.get("stringData").is_none());
    }
}
