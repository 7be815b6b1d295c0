//! Object validation with the API server's rules and messages: DNS-1123 names, label syntax,
//! container and service ports, required fields.
//!
//! Every check returns [`FieldError`]s naming the field path, which the API turns into a
//! 422 Invalid whose `details.causes` a client can read.

use std::collections::HashSet;

use hydroplane_core::spec::labels::{label_key_rule, label_value_rule};
use serde_json::Value;

use crate::error::FieldError;
use crate::resources::Kind;

const DNS1123_LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MESSAGE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label_chars(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Why `text` is not an RFC 1123 label, if it is not.
pub fn dns1123_label_error(text: &str) -> Option<String> {
    if text.len() > 63 {
        Some("must be no more than 63 characters".to_string())
    } else if !is_label_chars(text) {
        Some(DNS1123_LABEL_MESSAGE.to_string())
    } else {
        None
    }
}

/// Why `text` is not an RFC 1123 subdomain, if it is not.
pub fn dns1123_subdomain_error(text: &str) -> Option<String> {
    if text.len() > 253 {
        Some("must be no more than 253 characters".to_string())
    } else if !text.split('.').all(is_label_chars) {
        Some(DNS1123_SUBDOMAIN_MESSAGE.to_string())
    } else {
        None
    }
}

/// Why `text` is not an RFC 1035 label (what Service names must be), if it is not.
pub fn dns1035_label_error(text: &str) -> Option<String> {
    if text.len() > 63 {
        Some("must be no more than 63 characters".to_string())
    } else if !is_label_chars(text) || !text.as_bytes()[0].is_ascii_lowercase() {
        Some(DNS1035_LABEL_MESSAGE.to_string())
    } else {
        None
    }
}

/// Why `text` is not an IANA service name (a named port), if it is not.
pub fn port_name_error(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if text.len() > 15 {
        Some("must be no more than 15 characters".to_string())
    } else if !bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        || bytes.first() == Some(&b'-')
        || bytes.last() == Some(&b'-')
        || text.contains("--")
    {
        Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string())
    } else if !bytes.iter().any(u8::is_ascii_lowercase) {
        Some("must contain at least one letter (a-z)".to_string())
    } else {
        None
    }
}

fn check_port_number(field: String, value: Option<&Value>, errors: &mut Vec<FieldError>) {
    match value {
        None | Some(Value::Null) => errors.push(FieldError::required(field, "")),
        Some(value) => match value.as_i64() {
            Some(port) if (1..=65535).contains(&port) => {}
            _ => errors.push(FieldError::invalid(
                field,
                value.clone(),
                "must be between 1 and 65535, inclusive",
            )),
        },
    }
}

fn check_protocol(field: String, value: Option<&Value>, errors: &mut Vec<FieldError>) {
    if let Some(value) = value
        && !matches!(value.as_str(), Some("TCP" | "UDP" | "SCTP"))
    {
        errors.push(FieldError::not_supported(field, value.clone(), &["SCTP", "TCP", "UDP"]));
    }
}

fn check_labels(path: &str, labels: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(labels) = labels else { return };
    let Some(labels) = labels.as_object() else {
        errors.push(FieldError::invalid(path, labels.clone(), "must be a map of strings"));
        return;
    };
    for (key, value) in labels {
        if label_key_rule(key).is_err() {
            errors.push(FieldError::invalid(path, key.as_str(), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        match value.as_str() {
            Some(text) if label_value_rule(text).is_ok() => {}
            _ => errors.push(FieldError::invalid(
                path,
                value.clone(),
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            )),
        }
    }
}

/// Checks the name rule of a kind: services use DNS-1035 labels, namespaces DNS-1123 labels,
/// everything else DNS-1123 subdomains.
pub fn name_error(kind: Kind, name: &str) -> Option<String> {
    match kind {
        Kind::Service => dns1035_label_error(name),
        Kind::Namespace => dns1123_label_error(name),
        _ => dns1123_subdomain_error(name),
    }
}

/// Validates a whole object of `kind` before it is stored.
pub fn validate(kind: Kind, object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        errors.push(FieldError::required("metadata.name", "name or generateName is required"));
    } else if let Some(detail) = name_error(kind, name) {
        errors.push(FieldError::invalid("metadata.name", name, detail));
    }
    check_labels("metadata.labels", object.pointer("/metadata/labels"), &mut errors);
    match kind {
        Kind::Pod => validate_pod_spec("spec", object.get("spec"), &mut errors),
        Kind::Service => validate_service_spec(object.get("spec"), &mut errors),
        Kind::Deployment => validate_deployment(object, &mut errors),
        Kind::StatefulSet => validate_stateful_set(object, &mut errors),
        Kind::Job => validate_job(object, &mut errors),
        Kind::Secret | Kind::ConfigMap => validate_data_keys(object, &mut errors),
        Kind::Role | Kind::RoleBinding | Kind::ClusterRole | Kind::ClusterRoleBinding => {
            crate::rbac::validate(kind, object, &mut errors)
        }
        Kind::Namespace | Kind::Node | Kind::Event | Kind::ServiceAccount | Kind::NetworkPolicy => {}
    }
    errors
}

fn validate_data_keys(object: &Value, errors: &mut Vec<FieldError>) {
    for field in ["data", "stringData", "binaryData"] {
        for key in object.get(field).and_then(Value::as_object).into_iter().flat_map(|m| m.keys()) {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid {
                errors.push(FieldError::invalid(
                    format!("{field}[{key}]"),
                    key.as_str(),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
    }
}

/// Validates a pod spec found at `path` (also used for deployment templates).
pub fn validate_pod_spec(path: &str, spec: Option<&Value>, errors: &mut Vec<FieldError>) {
    let containers = spec.and_then(|s| s.get("containers")).and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        errors.push(FieldError::required(format!("{path}.containers"), ""));
        return;
    };
    let mut names = HashSet::new();
    for (index, container) in containers.iter().enumerate() {
        let prefix = format!("{path}.containers[{index}]");
        match container.get("name").and_then(Value::as_str) {
            None | Some("") => errors.push(FieldError::required(format!("{prefix}.name"), "")),
            Some(name) => {
                if let Some(detail) = dns1123_label_error(name) {
                    errors.push(FieldError::invalid(format!("{prefix}.name"), name, detail));
                } else if !names.insert(name.to_string()) {
                    errors.push(FieldError::duplicate(format!("{prefix}.name"), name));
                }
            }
        }
        if container.get("image").and_then(Value::as_str).unwrap_or_default().trim().is_empty() {
            errors.push(FieldError::required(format!("{prefix}.image"), ""));
        }
        let mut port_names = HashSet::new();
        for (port_index, port) in
            container.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let port_path = format!("{prefix}.ports[{port_index}]");
            check_port_number(format!("{port_path}.containerPort"), port.get("containerPort"), errors);
            if let Some(host_port) = port.get("hostPort").filter(|p| !p.is_null() && p.as_i64() != Some(0)) {
                check_port_number(format!("{port_path}.hostPort"), Some(host_port), errors);
            }
            check_protocol(format!("{port_path}.protocol"), port.get("protocol"), errors);
            if let Some(name) = port.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                if let Some(detail) = port_name_error(name) {
                    errors.push(FieldError::invalid(format!("{port_path}.name"), name, detail));
                } else if !port_names.insert(name.to_string()) {
                    errors.push(FieldError::duplicate(format!("{port_path}.name"), name));
                }
            }
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            if let Some(value) = container.get(probe).filter(|p| !p.is_null()) {
                validate_probe(&format!("{prefix}.{probe}"), probe != "readinessProbe", value, errors);
            }
        }
        for (env_index, env) in
            container.get("env").and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            if env.get("name").and_then(Value::as_str).unwrap_or_default().is_empty() {
                errors.push(FieldError::required(format!("{prefix}.env[{env_index}].name"), ""));
            }
        }
    }
    if let Some(deadline) = spec.and_then(|s| s.get("activeDeadlineSeconds")).filter(|d| !d.is_null())
        && deadline.as_i64().is_none_or(|d| !(1..=2_147_483_647).contains(&d))
    {
        errors.push(FieldError::invalid(
            format!("{path}.activeDeadlineSeconds"),
            deadline.clone(),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    if let Some(policy) = spec.and_then(|s| s.get("restartPolicy"))
        && !matches!(policy.as_str(), Some("Always" | "OnFailure" | "Never"))
    {
        errors.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            policy.clone(),
            &["Always", "Never", "OnFailure"],
        ));
    }
}

/// A container probe as the API server checks it: exactly one handler (exec, httpGet,
/// tcpSocket or grpc), ports in range, counts not negative, and a successThreshold of 1 for
/// liveness and startup probes.
fn validate_probe(path: &str, must_succeed_once: bool, probe: &Value, errors: &mut Vec<FieldError>) {
    let mut handlers = 0;
    for handler in ["exec", "httpGet", "tcpSocket", "grpc"] {
        let Some(action) = probe.get(handler).filter(|h| !h.is_null()) else { continue };
        if handlers > 0 {
            errors.push(FieldError::forbidden(
                format!("{path}.{handler}"),
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        handlers += 1;
        if handler == "exec" {
            continue;
        }
        let port_path = format!("{path}.{handler}.port");
        match action.get("port") {
            Some(Value::String(name)) if handler != "grpc" => {
                if let Some(detail) = port_name_error(name) {
                    errors.push(FieldError::invalid(port_path, name.as_str(), detail));
                }
            }
            port => check_port_number(port_path, port, errors),
        }
    }
    if handlers == 0 {
        errors.push(FieldError::required(path, "must specify a handler type"));
    }
    for field in
        ["initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"]
    {
        if let Some(value) = probe.get(field).filter(|v| !v.is_null())
            && value.as_i64().is_none_or(|v| v < 0)
        {
            errors.push(FieldError::invalid(
                format!("{path}.{field}"),
                value.clone(),
                "must be greater than or equal to 0",
            ));
        }
    }
    if must_succeed_once
        && let Some(threshold) = probe.get("successThreshold").filter(|v| !v.is_null())
        && threshold.as_i64() != Some(1)
    {
        errors.push(FieldError::invalid(format!("{path}.successThreshold"), threshold.clone(), "must be 1"));
    }
}

fn validate_service_spec(spec: Option<&Value>, errors: &mut Vec<FieldError>) {
    let service_type = spec.and_then(|s| s.get("type")).and_then(Value::as_str).unwrap_or("ClusterIP");
    if !matches!(service_type, "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName") {
        errors.push(FieldError::not_supported(
            "spec.type",
            service_type,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec.and_then(|s| s.get("clusterIP")).and_then(Value::as_str) == Some("None");
    let ports = spec.and_then(|s| s.get("ports")).and_then(Value::as_array).cloned().unwrap_or_default();
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    let mut seen_ports = HashSet::new();
    for (index, port) in ports.iter().enumerate() {
        let prefix = format!("spec.ports[{index}]");
        let name = port.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            errors.push(FieldError::required(format!("{prefix}.name"), ""));
        } else if !name.is_empty() {
            if let Some(detail) = dns1123_label_error(name) {
                errors.push(FieldError::invalid(format!("{prefix}.name"), name, detail));
            } else if !names.insert(name.to_string()) {
                errors.push(FieldError::duplicate(format!("{prefix}.name"), name));
            }
        }
        check_port_number(format!("{prefix}.port"), port.get("port"), errors);
        check_protocol(format!("{prefix}.protocol"), port.get("protocol"), errors);
        let key = (
            port.get("port").and_then(Value::as_i64),
            port.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string(),
        );
        if key.0.is_some() && !seen_ports.insert(key) {
            errors.push(FieldError::duplicate(prefix.clone(), port.clone()));
        }
        match port.get("targetPort") {
            Some(Value::Number(number)) if !number.as_i64().is_some_and(|p| (1..=65535).contains(&p)) => {
                errors.push(FieldError::invalid(
                    format!("{prefix}.targetPort"),
                    number.clone(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Some(Value::String(target)) => {
                if let Some(detail) = port_name_error(target) {
                    errors.push(FieldError::invalid(format!("{prefix}.targetPort"), target.as_str(), detail));
                }
            }
            _ => {}
        }
        if let Some(node_port) = port.get("nodePort").filter(|p| !p.is_null() && p.as_i64() != Some(0)) {
            if service_type == "ClusterIP" {
                errors.push(FieldError::forbidden(
                    format!("{prefix}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                check_port_number(format!("{prefix}.nodePort"), Some(node_port), errors);
            }
        }
    }
}

fn validate_deployment(object: &Value, errors: &mut Vec<FieldError>) {
    let spec = object.get("spec");
    check_non_negative("spec.replicas", spec.and_then(|s| s.get("replicas")), errors);
    check_selector(spec, "deployment", errors);
    validate_pod_spec("spec.template.spec", spec.and_then(|s| s.pointer("/template/spec")), errors);
}

/// A count that must be 0 or more, when given.
fn check_non_negative(field: &str, value: Option<&Value>, errors: &mut Vec<FieldError>) {
    if let Some(value) = value.filter(|v| !v.is_null())
        && value.as_i64().is_none_or(|r| r < 0)
    {
        errors.push(FieldError::invalid(field, value.clone(), "must be greater than or equal to 0"));
    }
}

/// A workload's `spec.selector`: required, not empty, and matching the template's labels.
fn check_selector(spec: Option<&Value>, what: &str, errors: &mut Vec<FieldError>) {
    let selector = spec.and_then(|s| s.get("selector"));
    let template_labels = spec.and_then(|s| s.pointer("/template/metadata/labels"));
    match selector {
        None | Some(Value::Null) => errors.push(FieldError::required("spec.selector", "")),
        Some(selector) => {
            let parsed = crate::selector::selector_from_object(selector);
            if parsed.is_empty() {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    selector.clone(),
                    format!("empty selector is invalid for {what}"),
                ));
            } else if !crate::selector::labels_match(&parsed, template_labels) {
                errors.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    template_labels.cloned().unwrap_or(Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
}

/// The template's restart policy (`Always` when unset, as the API server defaults it before
/// validating) must be one of `allowed`.
fn check_template_restart_policy(spec: Option<&Value>, allowed: &[&str], errors: &mut Vec<FieldError>) {
    let policy = spec.and_then(|s| s.pointer("/template/spec/restartPolicy")).and_then(Value::as_str);
    let policy = policy.unwrap_or("Always");
    if !allowed.contains(&policy) {
        errors.push(FieldError::not_supported("spec.template.spec.restartPolicy", policy, allowed));
    }
}

fn validate_stateful_set(object: &Value, errors: &mut Vec<FieldError>) {
    let spec = object.get("spec");
    check_non_negative("spec.replicas", spec.and_then(|s| s.get("replicas")), errors);
    if let Some(policy) = spec.and_then(|s| s.get("podManagementPolicy")).filter(|p| !p.is_null())
        && !matches!(policy.as_str(), Some("OrderedReady" | "Parallel"))
    {
        errors.push(FieldError::not_supported(
            "spec.podManagementPolicy",
            policy.clone(),
            &["OrderedReady", "Parallel"],
        ));
    }
    check_selector(spec, "statefulset", errors);
    check_template_restart_policy(spec, &["Always"], errors);
    validate_pod_spec("spec.template.spec", spec.and_then(|s| s.pointer("/template/spec")), errors);
}

/// A Job: counts not negative, a positive deadline, a template that restarts OnFailure or
/// Never, and a selector matching the template when the client chose one (`manualSelector`);
/// otherwise the API server generates it.
fn validate_job(object: &Value, errors: &mut Vec<FieldError>) {
    let spec = object.get("spec");
    for field in ["completions", "parallelism", "backoffLimit"] {
        check_non_negative(&format!("spec.{field}"), spec.and_then(|s| s.get(field)), errors);
    }
    if let Some(deadline) = spec.and_then(|s| s.get("activeDeadlineSeconds")).filter(|d| !d.is_null())
        && deadline.as_i64().is_none_or(|d| d <= 0)
    {
        errors.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            deadline.clone(),
            "must be greater than 0",
        ));
    }
    let manual = spec.and_then(|s| s.get("manualSelector")).and_then(Value::as_bool) == Some(true);
    if manual {
        check_selector(spec, "job", errors);
    }
    check_template_restart_policy(spec, &["OnFailure", "Never"], errors);
    validate_pod_spec("spec.template.spec", spec.and_then(|s| s.pointer("/template/spec")), errors);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(kind: Kind, object: Value, expected_fields: &[&str]) {
        let fields: Vec<String> = validate(kind, &object).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, expected_fields, "{object}");
    }

    #[test]
    fn names_follow_dns_rules() {
        assert_eq!(dns1123_subdomain_error("web-1.example"), None);
        assert!(dns1123_subdomain_error("Web").is_some());
        assert!(dns1123_subdomain_error("-web").is_some());
        assert!(dns1123_label_error("a.b").is_some());
        assert!(dns1035_label_error("1web").is_some());
        assert_eq!(dns1035_label_error("web1"), None);
        assert!(dns1123_label_error(&"a".repeat(64)).is_some());
        assert_eq!(port_name_error("http"), None);
        assert!(port_name_error("80").is_some());
        assert!(port_name_error("a--b").is_some());
    }

    #[test]
    fn pods_need_containers_with_valid_ports() {
        let pod = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});
        check(Kind::Pod, pod(json!({"containers": [{"name": "c", "image": "i"}]})), &[]);
        check(Kind::Pod, pod(json!({})), &["spec.containers"]);
        check(
            Kind::Pod,
            pod(json!({"containers": [{"name": "C"}]})),
            &["spec.containers[0].name", "spec.containers[0].image"],
        );
        check(
            Kind::Pod,
            pod(
                json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 0}, {"containerPort": 70000}]}]}),
            ),
            &["spec.containers[0].ports[0].containerPort", "spec.containers[0].ports[1].containerPort"],
        );
        check(
            Kind::Pod,
            json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
            &["metadata.name"],
        );
    }

    #[test]
    fn probes_need_exactly_one_handler() {
        let pod = |probe: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "readinessProbe": probe.clone(), "livenessProbe": probe}]}});
        check(Kind::Pod, pod(json!({"httpGet": {"port": 8000, "path": "/"}, "periodSeconds": 1})), &[]);
        check(Kind::Pod, pod(json!({"tcpSocket": {"port": "http"}})), &[]);
        check(
            Kind::Pod,
            pod(json!({"periodSeconds": 1})),
            &["spec.containers[0].livenessProbe", "spec.containers[0].readinessProbe"],
        );
        check(
            Kind::Pod,
            pod(json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}})),
            &["spec.containers[0].livenessProbe.tcpSocket", "spec.containers[0].readinessProbe.tcpSocket"],
        );
        check(
            Kind::Pod,
            pod(json!({"httpGet": {"port": 0}, "successThreshold": 2})),
            &[
                "spec.containers[0].livenessProbe.httpGet.port",
                "spec.containers[0].livenessProbe.successThreshold",
                "spec.containers[0].readinessProbe.httpGet.port",
            ],
        );
    }

    #[test]
    fn services_need_named_ports_when_several() {
        let service = |spec: Value| json!({"metadata": {"name": "web"}, "spec": spec});
        check(Kind::Service, service(json!({"ports": [{"port": 80}]})), &[]);
        check(
            Kind::Service,
            service(json!({"ports": [{"port": 80}, {"port": 81}]})),
            &["spec.ports[0].name", "spec.ports[1].name"],
        );
        check(Kind::Service, service(json!({"ports": [{"port": 0, "name": "a"}]})), &["spec.ports[0].port"]);
        check(Kind::Service, service(json!({})), &["spec.ports"]);
        check(
            Kind::Service,
            service(json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]})),
            &["spec.ports[0].nodePort"],
        );
        check(
            Kind::Service,
            json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}}),
            &["metadata.name"],
        );
    }

    #[test]
    fn deployments_need_matching_selectors() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        check(
            Kind::Deployment,
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
            &[],
        );
        check(
            Kind::Deployment,
            json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "db"}}, "template": template}}),
            &["spec.template.metadata.labels"],
        );
    }
}
