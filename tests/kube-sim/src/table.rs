//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get` asks for with
//! `Accept: application/json;as=Table;...`, with the columns real servers print per kind.

use serde_json::{Value, json};

use crate::meta;
use crate::resources::Kind;

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Only `metadata`, as `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
    /// Nothing.
    None,
}

impl IncludeObject {
    /// Parses the `includeObject` query value.
    pub fn parse(value: Option<&str>) -> IncludeObject {
        match value {
            Some("Object") => IncludeObject::Object,
            Some("None") => IncludeObject::None,
            _ => IncludeObject::Metadata,
        }
    }
}

fn column(name: &str, kind: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": name, "priority": priority})
}

/// The column definitions for `kind`.
pub fn columns(kind: Kind) -> Value {
    let columns = match kind {
        Kind::Pod => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Status", "string", 0),
            column("Restarts", "string", 0),
            column("Age", "string", 0),
            column("IP", "string", 1),
            column("Node", "string", 1),
        ],
        Kind::Service => vec![
            column("Name", "string", 0),
            column("Type", "string", 0),
            column("Cluster-IP", "string", 0),
            column("External-IP", "string", 0),
            column("Port(s)", "string", 0),
            column("Age", "string", 0),
            column("Selector", "string", 1),
        ],
        Kind::Node => vec![
            column("Name", "string", 0),
            column("Status", "string", 0),
            column("Roles", "string", 0),
            column("Age", "string", 0),
            column("Version", "string", 0),
            column("Internal-IP", "string", 1),
            column("External-IP", "string", 1),
        ],
        Kind::Namespace => {
            vec![column("Name", "string", 0), column("Status", "string", 0), column("Age", "string", 0)]
        }
        Kind::Secret => vec![
            column("Name", "string", 0),
            column("Type", "string", 0),
            column("Data", "integer", 0),
            column("Age", "string", 0),
        ],
        Kind::Deployment => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Up-to-date", "integer", 0),
            column("Available", "integer", 0),
            column("Age", "string", 0),
        ],
        Kind::StatefulSet => vec![
            column("Name", "string", 0),
            column("Ready", "string", 0),
            column("Age", "string", 0),
            column("Containers", "string", 1),
            column("Images", "string", 1),
        ],
        Kind::Job => vec![
            column("Name", "string", 0),
            column("Status", "string", 0),
            column("Completions", "string", 0),
            column("Duration", "string", 0),
            column("Age", "string", 0),
            column("Containers", "string", 1),
            column("Images", "string", 1),
            column("Selector", "string", 1),
        ],
        Kind::ConfigMap
        | Kind::Event
        | Kind::ServiceAccount
        | Kind::NetworkPolicy
        | Kind::Role
        | Kind::RoleBinding
        | Kind::ClusterRole
        | Kind::ClusterRoleBinding => vec![column("Name", "string", 0), column("Age", "string", 0)],
    };
    Value::Array(columns)
}

/// A duration as kubectl prints ages: `45s`, `3m12s`, `25m`, `2h5m`, `30h`, `3d4h`, `12d`.
pub fn human_duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        let rest = seconds % 60;
        if rest == 0 { format!("{minutes}m") } else { format!("{minutes}m{rest}s") }
    } else if hours < 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        let rest = minutes % 60;
        if rest == 0 { format!("{hours}h") } else { format!("{hours}h{rest}m") }
    } else if hours < 48 {
        format!("{hours}h")
    } else if days < 8 {
        let rest = hours % 24;
        if rest == 0 { format!("{days}d") } else { format!("{days}d{rest}h") }
    } else {
        format!("{days}d")
    }
}

fn age(object: &Value) -> String {
    let created: Option<jiff::Timestamp> = meta::meta_str(object, "creationTimestamp").parse().ok();
    match created {
        Some(created) => human_duration(jiff::Timestamp::now().as_second() - created.as_second()),
        None => "<unknown>".to_string(),
    }
}

fn text(object: &Value, pointer: &str) -> String {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string()
}

fn or_none(text: String) -> String {
    if text.is_empty() { "<none>".to_string() } else { text }
}

/// The status column kubectl shows for a pod: waiting/terminated reasons win over the phase.
pub fn pod_status(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".to_string();
    }
    let mut reason = text(pod, "/status/reason");
    if reason.is_empty() {
        reason = text(pod, "/status/phase");
    }
    for status in pod.pointer("/status/containerStatuses").and_then(Value::as_array).into_iter().flatten() {
        if let Some(waiting) =
            status.pointer("/state/waiting/reason").and_then(Value::as_str).filter(|r| !r.is_empty())
        {
            reason = waiting.to_string();
        } else if let Some(terminated) = status.pointer("/state/terminated") {
            reason = match terminated.get("reason").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                Some(terminated_reason) => terminated_reason.to_string(),
                None => {
                    format!("ExitCode:{}", terminated.get("exitCode").and_then(Value::as_i64).unwrap_or(0))
                }
            };
        }
    }
    if reason.is_empty() { "Pending".to_string() } else { reason }
}

fn cells(kind: Kind, object: &Value) -> Vec<Value> {
    let name = json!(meta::name(object));
    match kind {
        Kind::Pod => {
            let statuses = object
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = object.pointer("/spec/containers").and_then(Value::as_array).map_or(0, Vec::len);
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses.iter().filter_map(|s| s["restartCount"].as_i64()).sum();
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(object)),
                json!(restarts.to_string()),
                json!(age(object)),
                json!(or_none(text(object, "/status/podIP"))),
                json!(or_none(text(object, "/spec/nodeName"))),
            ]
        }
        Kind::Service => {
            let service_type = text(object, "/spec/type");
            let ports: Vec<String> = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                        None => format!("{}/{protocol}", p["port"]),
                    }
                })
                .collect();
            let external =
                if service_type == "LoadBalancer" { "<pending>".to_string() } else { "<none>".to_string() };
            let selector: Vec<String> = object
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            vec![
                name,
                json!(service_type),
                json!(text(object, "/spec/clusterIP")),
                json!(external),
                json!(or_none(ports.join(","))),
                json!(age(object)),
                json!(or_none(selector.join(","))),
            ]
        }
        Kind::Node => {
            let address = |kind: &str| {
                object
                    .pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().find(|a| a["type"] == kind))
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            let ready = crate::controllers::nodes::node_ready(object);
            let mut status = if ready { "Ready".to_string() } else { "NotReady".to_string() };
            if object.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            vec![
                name,
                json!(status),
                json!("<none>"),
                json!(age(object)),
                json!(text(object, "/status/nodeInfo/kubeletVersion")),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
            ]
        }
        Kind::Namespace => vec![name, json!(text(object, "/status/phase")), json!(age(object))],
        Kind::Secret => {
            let count = object.get("data").and_then(Value::as_object).map_or(0, |d| d.len());
            vec![name, json!(text(object, "/type")), json!(count), json!(age(object))]
        }
        Kind::Deployment => {
            let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
            vec![
                name,
                json!(format!("{}/{}", number("/status/readyReplicas"), number("/spec/replicas"))),
                json!(number("/status/updatedReplicas")),
                json!(number("/status/availableReplicas")),
                json!(age(object)),
            ]
        }
        Kind::StatefulSet => {
            let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
            let (containers, images) = template_containers(object);
            vec![
                name,
                json!(format!("{}/{}", number("/status/readyReplicas"), number("/spec/replicas"))),
                json!(age(object)),
                json!(containers),
                json!(images),
            ]
        }
        Kind::Job => {
            let number = |pointer: &str| object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0);
            let (containers, images) = template_containers(object);
            let selector: Vec<String> = object
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            vec![
                name,
                json!(job_status(object)),
                json!(format!("{}/{}", number("/status/succeeded"), number("/spec/completions").max(1))),
                json!(job_duration(object)),
                json!(age(object)),
                json!(containers),
                json!(images),
                json!(or_none(selector.join(","))),
            ]
        }
        Kind::ConfigMap
        | Kind::Event
        | Kind::ServiceAccount
        | Kind::NetworkPolicy
        | Kind::Role
        | Kind::RoleBinding
        | Kind::ClusterRole
        | Kind::ClusterRoleBinding => vec![name, json!(age(object))],
    }
}

/// A workload template's container names and images, comma-separated, as `-o wide` prints them.
fn template_containers(object: &Value) -> (String, String) {
    let containers: Vec<&Value> = object
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let field = |key: &str| {
        containers.iter().map(|c| c[key].as_str().unwrap_or_default()).collect::<Vec<_>>().join(",")
    };
    (field("name"), field("image"))
}

/// The STATUS kubectl prints for a Job: the true terminal condition, else Running.
pub fn job_status(job: &Value) -> String {
    if job.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".to_string();
    }
    let conditions = job.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    let holds = |kind: &str| conditions.iter().any(|c| c["type"] == kind && c["status"] == "True");
    if holds("Complete") {
        "Complete".to_string()
    } else if holds("Failed") {
        "Failed".to_string()
    } else if holds("FailureTarget") {
        "FailureTarget".to_string()
    } else if job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        "Suspended".to_string()
    } else {
        "Running".to_string()
    }
}

/// How long a Job ran: from its start to its completion, or to now while it runs.
fn job_duration(job: &Value) -> String {
    let time = |pointer: &str| -> Option<jiff::Timestamp> { job.pointer(pointer)?.as_str()?.parse().ok() };
    let Some(start) = time("/status/startTime") else { return String::new() };
    let end = time("/status/completionTime").unwrap_or_else(jiff::Timestamp::now);
    human_duration(end.as_second() - start.as_second())
}

fn row(kind: Kind, object: &Value, include: IncludeObject) -> Value {
    let mut row = json!({"cells": cells(kind, object)});
    match include {
        IncludeObject::Object => row["object"] = object.clone(),
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
        IncludeObject::None => {}
    }
    row
}

/// A Table of `objects`, with list metadata.
pub fn table<'a>(
    kind: Kind,
    objects: impl Iterator<Item = &'a Value>,
    resource_version: u64,
    continue_token: Option<&str>,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = objects.map(|object| row(kind, object, include)).collect();
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(kind),
        "rows": rows,
    })
}

/// A one-row Table for a watch event; like real servers, only the first carries the columns.
pub fn watch_table(kind: Kind, object: &Value, with_columns: bool, include: IncludeObject) -> Value {
    let columns = if with_columns { columns(kind) } else { Value::Null };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": meta::meta_str(object, "resourceVersion")},
        "columnDefinitions": columns,
        "rows": [row(kind, object, include)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(190), "3m10s");
        assert_eq!(human_duration(1500), "25m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d");
        assert_eq!(human_duration(20 * 86400), "20d");
    }

    #[test]
    fn pod_status_prefers_container_reasons() {
        let pod = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status(&pod), "ImagePullBackOff");
        let oom = json!({"status": {"phase": "Running", "containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}});
        assert_eq!(pod_status(&oom), "OOMKilled");
        assert_eq!(pod_status(&json!({"status": {"phase": "Running"}})), "Running");
    }

    #[test]
    fn service_ports_show_node_ports() {
        let service = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let cells = cells(Kind::Service, &service);
        assert_eq!(cells[4], "80:30080/TCP");
    }
}
