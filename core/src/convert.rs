//! Conversions between the wire types of `hydroplane.v1` and the domain model. Wire input that
//! the domain cannot represent becomes a [`Violation`](crate::spec::Violation) with its field path,
//! reported together with the spec's own violations. (The server's own types, such as its watch
//! events, are converted in the server's `grpc::convert`.)

use crate::proto;
use crate::spec::labels::LabelSelector;
use crate::spec::validation::limits::MAX_MEMORY_MIB;
use crate::spec::{
    CheckAction, ContainerSpec, EnvironmentVariable, HealthCheck, InvalidSpec, PortMapping, ProcessDetail,
    ProcessInfo, ProcessSpec, ProcessStatus, Protocol, ResourceSpec, RestartPolicy, SecretReference,
    SocketAddress, Transition, ValidSpec, ValueOrSecret, Violations,
};

/// Converts a wire spec into a validated domain spec, reporting every problem (of the wire and
/// of the rules) at once.
pub fn spec_from_proto(spec: Option<proto::ProcessSpec>) -> Result<ValidSpec, InvalidSpec> {
    let mut violations = Violations::default();
    let Some(spec) = spec else {
        violations.add("spec", "is required");
        return Err(violations.into_result().unwrap_err());
    };
    let container = match spec.container {
        Some(container) => container_from_proto(container, &mut violations),
        None => {
            violations.add("container", "is required");
            ContainerSpec { image_uri: "-".to_owned(), ..Default::default() }
        }
    };
    let restart_policy = restart_policy_from_proto(spec.restart_policy, &mut violations);
    let readiness = spec.readiness.map(|check| health_from_proto(check, "readiness", &mut violations));
    let liveness = spec.liveness.map(|check| health_from_proto(check, "liveness", &mut violations));
    let spec = ProcessSpec {
        process_name: spec.process_name,
        group: spec.group,
        container,
        has_public_ip: spec.has_public_ip,
        labels: spec.labels,
        restart_policy,
        readiness,
        liveness,
        max_run_seconds: spec.max_run_seconds.map(u64::from),
    };
    violations.and(spec.validate())
}

fn restart_policy_from_proto(value: i32, violations: &mut Violations) -> RestartPolicy {
    match proto::RestartPolicy::try_from(value) {
        Ok(proto::RestartPolicy::Unspecified | proto::RestartPolicy::Always) => RestartPolicy::Always,
        Ok(proto::RestartPolicy::OnFailure) => RestartPolicy::OnFailure,
        Ok(proto::RestartPolicy::Never) => RestartPolicy::Never,
        Err(_) => {
            violations.add("restart_policy", format!("must be ALWAYS, ON_FAILURE or NEVER, got {value}"));
            RestartPolicy::Always
        }
    }
}

fn restart_policy_to_proto(policy: RestartPolicy) -> proto::RestartPolicy {
    match policy {
        RestartPolicy::Always => proto::RestartPolicy::Always,
        RestartPolicy::OnFailure => proto::RestartPolicy::OnFailure,
        RestartPolicy::Never => proto::RestartPolicy::Never,
    }
}

fn health_from_proto(check: proto::HealthCheck, path: &str, violations: &mut Violations) -> HealthCheck {
    use proto::health_check::Action;
    let action = match check.action {
        Some(Action::HttpGet(get)) => CheckAction::HttpGet {
            port: i64::from(get.port),
            path: if get.path.is_empty() { "/".to_owned() } else { get.path },
        },
        Some(Action::TcpSocket(tcp)) => CheckAction::TcpSocket { port: i64::from(tcp.port) },
        Some(Action::Exec(exec)) => CheckAction::Exec { command: exec.command },
        None => {
            violations.add(path, "needs one of `http_get`, `tcp_socket` or `exec`");
            CheckAction::TcpSocket { port: 1 }
        }
    };
    HealthCheck {
        action,
        period_seconds: check.period_seconds.unwrap_or(HealthCheck::DEFAULT_PERIOD_SECONDS),
        timeout_seconds: check.timeout_seconds.unwrap_or(HealthCheck::DEFAULT_TIMEOUT_SECONDS),
        failure_threshold: check.failure_threshold.unwrap_or(HealthCheck::DEFAULT_FAILURE_THRESHOLD),
    }
}

fn health_to_proto(check: HealthCheck) -> proto::HealthCheck {
    use proto::health_check::Action;
    // Out-of-range ports travel as 0 so that the server's validation names the field.
    let port = |port: i64| u32::try_from(port).unwrap_or(0);
    let action = match check.action {
        CheckAction::HttpGet { port: number, path } => {
            Action::HttpGet(proto::HttpGetAction { port: port(number), path })
        }
        CheckAction::TcpSocket { port: number } => {
            Action::TcpSocket(proto::TcpSocketAction { port: port(number) })
        }
        CheckAction::Exec { command } => Action::Exec(proto::ExecAction { command }),
    };
    proto::HealthCheck {
        action: Some(action),
        period_seconds: Some(check.period_seconds),
        timeout_seconds: Some(check.timeout_seconds),
        failure_threshold: Some(check.failure_threshold),
    }
}

/// Converts a spec the server sent back (Describe's) into the domain's, for showing it in the
/// user's JSON shape. It was valid when it was started, so it is taken as it is: what the domain
/// cannot represent (never sent by this server) is left at its default.
pub fn stored_spec_from_proto(spec: proto::ProcessSpec) -> ProcessSpec {
    let mut ignored = Violations::default();
    ProcessSpec {
        process_name: spec.process_name,
        group: spec.group,
        container: spec
            .container
            .map(|container| container_from_proto(container, &mut ignored))
            .unwrap_or_default(),
        has_public_ip: spec.has_public_ip,
        labels: spec.labels,
        restart_policy: restart_policy_from_proto(spec.restart_policy, &mut ignored),
        readiness: spec.readiness.map(|check| health_from_proto(check, "readiness", &mut ignored)),
        liveness: spec.liveness.map(|check| health_from_proto(check, "liveness", &mut ignored)),
        max_run_seconds: spec.max_run_seconds.map(u64::from),
    }
}

fn container_from_proto(container: proto::ContainerSpec, violations: &mut Violations) -> ContainerSpec {
    let env = container
        .env
        .into_iter()
        .enumerate()
        .map(|(index, variable)| {
            let value = match variable.source {
                Some(proto::environment_variable::Source::Value(value)) => ValueOrSecret::Value(value),
                Some(proto::environment_variable::Source::Secret(secret)) => {
                    ValueOrSecret::Secret(secret_from_proto(secret))
                }
                None => {
                    violations.add(format!("container.env[{index}]"), "needs a `value` or a `secret`");
                    ValueOrSecret::Value(String::new())
                }
            };
            EnvironmentVariable { name: variable.name, value }
        })
        .collect();
    let ports = container
        .ports
        .into_iter()
        .enumerate()
        .map(|(index, port)| {
            let protocol = Protocol::parse(&port.protocol).unwrap_or_else(|| {
                violations.add(
                    format!("container.ports[{index}].protocol"),
                    format!("must be tcp or udp, got `{}`", port.protocol),
                );
                Protocol::Tcp
            });
            PortMapping {
                container_port: i64::from(port.container_port),
                host_port: port.host_port.map(i64::from),
                protocol,
                name: port.name,
            }
        })
        .collect();
    let username = container.username.and_then(|username| match username.source {
        Some(proto::value_or_secret::Source::Value(value)) => Some(ValueOrSecret::Value(value)),
        Some(proto::value_or_secret::Source::Secret(secret)) => {
            Some(ValueOrSecret::Secret(secret_from_proto(secret)))
        }
        None => None,
    });
    ContainerSpec {
        image_uri: container.image_uri,
        command: container.command,
        env,
        ports,
        resource_request: container
            .resource_request
            .map(|resources| resources_from_proto(resources, "container.resource_request", violations)),
        resource_limit: container
            .resource_limit
            .map(|resources| resources_from_proto(resources, "container.resource_limit", violations)),
        node_selector: container.node_selector.into_iter().collect(),
        username,
        password: container.password.map(secret_from_proto),
        working_dir: container.working_dir,
    }
}

fn resources_from_proto(
    resources: proto::ResourceSpec,
    path: &str,
    violations: &mut Violations,
) -> ResourceSpec {
    // A value beyond `i64` is named here with the rule it breaks and left out, so the field is
    // reported once, quoting what the caller sent.
    let memory_mib = resources.memory_mib.and_then(|memory| {
        i64::try_from(memory).ok().or_else(|| {
            violations.add(
                format!("{path}.memory_mib"),
                format!("must be between 1 and {MAX_MEMORY_MIB}, got {memory}"),
            );
            None
        })
    });
    ResourceSpec { cpu_vcpu: resources.cpu_vcpu, memory_mib }
}

fn secret_from_proto(secret: proto::SecretReference) -> SecretReference {
    SecretReference { secret_name: secret.secret_name, key: secret.key }
}

fn secret_to_proto(secret: SecretReference) -> proto::SecretReference {
    proto::SecretReference { secret_name: secret.secret_name, key: secret.key }
}

/// Converts a domain spec (for example one read from a JSON file) into its wire form.
pub fn spec_to_proto(spec: ProcessSpec) -> proto::ProcessSpec {
    let container = spec.container;
    let resources = |resources: ResourceSpec| proto::ResourceSpec {
        cpu_vcpu: resources.cpu_vcpu,
        // Negative values cannot travel as uint64; zero makes the server name the field.
        memory_mib: resources.memory_mib.map(|memory| u64::try_from(memory).unwrap_or(0)),
    };
    proto::ProcessSpec {
        process_name: spec.process_name,
        group: spec.group,
        has_public_ip: spec.has_public_ip,
        labels: spec.labels,
        restart_policy: restart_policy_to_proto(spec.restart_policy).into(),
        readiness: spec.readiness.map(health_to_proto),
        liveness: spec.liveness.map(health_to_proto),
        // A limit beyond the wire's range travels saturated, and validation names it.
        max_run_seconds: spec.max_run_seconds.map(|seconds| u32::try_from(seconds).unwrap_or(u32::MAX)),
        container: Some(proto::ContainerSpec {
            image_uri: container.image_uri,
            command: container.command,
            env: container
                .env
                .into_iter()
                .map(|variable| proto::EnvironmentVariable {
                    name: variable.name,
                    source: Some(match variable.value {
                        ValueOrSecret::Value(value) => proto::environment_variable::Source::Value(value),
                        ValueOrSecret::Secret(secret) => {
                            proto::environment_variable::Source::Secret(secret_to_proto(secret))
                        }
                    }),
                })
                .collect(),
            ports: container
                .ports
                .into_iter()
                .map(|port| proto::PortMapping {
                    // Out-of-range ports travel as 0 (or saturated) so that the server's
                    // validation names the field, rather than the client refusing silently.
                    container_port: u32::try_from(port.container_port).unwrap_or(0),
                    host_port: port.host_port.map(|host_port| u32::try_from(host_port).unwrap_or(0)),
                    protocol: port.protocol.as_str().to_owned(),
                    name: port.name,
                })
                .collect(),
            resource_request: container.resource_request.map(resources),
            resource_limit: container.resource_limit.map(resources),
            node_selector: container.node_selector.into_iter().collect(),
            username: container.username.map(|username| proto::ValueOrSecret {
                source: Some(match username {
                    ValueOrSecret::Value(value) => proto::value_or_secret::Source::Value(value),
                    ValueOrSecret::Secret(secret) => {
                        proto::value_or_secret::Source::Secret(secret_to_proto(secret))
                    }
                }),
            }),
            password: container.password.map(secret_to_proto),
            working_dir: container.working_dir,
        }),
    }
}

/// Converts a domain status into its wire form.
pub fn status_to_proto(status: ProcessStatus) -> proto::ProcessStatus {
    match status {
        ProcessStatus::Starting => proto::ProcessStatus::Starting,
        ProcessStatus::Running => proto::ProcessStatus::Running,
        ProcessStatus::Failed => proto::ProcessStatus::Failed,
        ProcessStatus::Exited => proto::ProcessStatus::Exited,
        ProcessStatus::Stopping => proto::ProcessStatus::Stopping,
    }
}

/// A time as the wire's Timestamp.
pub fn timestamp_to_proto(time: jiff::Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: time.as_second(), nanos: time.subsec_nanosecond() }
}

/// Converts a process's detail (Describe's answer) into its wire form.
pub fn detail_to_proto(detail: ProcessDetail) -> proto::ProcessDetail {
    proto::ProcessDetail {
        process: Some(info_to_proto(&detail.process)),
        spec: detail.spec.map(spec_to_proto),
        history: detail.history.into_iter().map(transition_to_proto).collect(),
    }
}

fn transition_to_proto(transition: Transition) -> proto::Transition {
    proto::Transition {
        time: Some(timestamp_to_proto(transition.time)),
        status: status_to_proto(transition.status).into(),
        reason: transition.reason.map(Into::into),
        message: transition.message,
    }
}

/// Converts what the server knows of a process into its wire form (the table shares its
/// processes, so they are copied here, once per answer).
pub fn info_to_proto(info: &ProcessInfo) -> proto::ProcessInfo {
    proto::ProcessInfo {
        process_name: info.process_name.to_string(),
        group: info.group.as_deref().map(str::to_owned),
        socket_addresses: info.socket_addresses.iter().map(address_to_proto).collect(),
        created: Some(timestamp_to_proto(info.created)),
        status: status_to_proto(info.status).into(),
        reason: info.reason.as_deref().map(str::to_owned),
        message: info.message.clone(),
        restart_count: info.restart_count,
        exit_code: info.exit_code,
        node: info.node.as_deref().map(str::to_owned),
        labels: (*info.labels).clone(),
    }
}

fn address_to_proto(address: &SocketAddress) -> proto::SocketAddress {
    proto::SocketAddress {
        host: address.host.to_string(),
        port: u32::from(address.port),
        is_public: address.is_public,
        dns_name: address.dns_name.clone(),
    }
}

/// Parses a request's label selector; a bad one is a violation of `label_selector` naming the
/// position of the error. Unset or blank: no selector (every process).
pub fn selector_from_proto(selector: Option<&str>, violations: &mut Violations) -> Option<LabelSelector> {
    let selector = selector?;
    match LabelSelector::parse(selector) {
        Ok(selector) if selector.is_empty() => None,
        Ok(selector) => Some(selector),
        Err(error) => {
            violations.add("label_selector", error.to_string());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_problems_and_spec_problems_are_reported_together() {
        let spec = proto::ProcessSpec {
            process_name: "Bad".into(),
            container: Some(proto::ContainerSpec {
                image_uri: "i".into(),
                ports: vec![proto::PortMapping {
                    container_port: 80,
                    protocol: "sctp".into(),
                    ..Default::default()
                }],
                env: vec![proto::EnvironmentVariable { name: "A".into(), source: None }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let fields: Vec<String> =
            spec_from_proto(Some(spec)).unwrap_err().0.into_iter().map(|violation| violation.field).collect();
        assert_eq!(fields, ["container.env[0]", "container.ports[0].protocol", "process_name"]);
    }

    #[test]
    fn a_spec_survives_the_round_trip_through_the_wire() {
        let spec: ProcessSpec = serde_json::from_str(
            r#"{"process_name": "p", "group": "g", "has_public_ip": true,
                "labels": {"tier": "web", "example.com/team": ""}, "container": {
                "image_uri": "i", "command": ["a", "b"],
                "env": [{"name": "A", "value": "1"}, {"name": "B", "secret": {"secret_name": "s"}}],
                "ports": [{"container_port": 80, "host_port": 8080, "protocol": "udp", "name": "web"}],
                "resource_request": {"cpu_vcpu": 0.5, "memory_mib": 64},
                "resource_limit": {"cpu_vcpu": "1", "memory_mib": 128},
                "node_selector": {"zone": "a"},
                "username": "me", "password": {"secret_name": "registry", "key": "password"}}}"#,
        )
        .expect("parses");
        assert_eq!(spec_from_proto(Some(spec_to_proto(spec.clone()))).map(ValidSpec::into_inner), Ok(spec));
    }
}
