//! A process as a container: the body a spec is created from ([`create_body`]), the labels that
//! mark a container as Hydroplane's, and what a container's inspection says of the process
//! ([`Snapshot`], [`Snapshot::info`]).

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HealthConfig, HealthStatusEnum,
    HostConfig, PortBinding, RestartPolicy as EngineRestartPolicy, RestartPolicyNameEnum,
};
use compact_str::CompactString;
use zeroize::Zeroizing;

use crate::spec::{
    CheckAction, Labels, ProcessInfo, ProcessSpec, ProcessStatus, Protocol, RestartPolicy, SocketAddress,
};

/// The label naming the process a container runs (the Python Hydroplane's).
pub const PROCESS_LABEL: &str = "hydroplane/process-id";
/// The label naming the process's group (the Python Hydroplane's).
pub const GROUP_LABEL: &str = "hydroplane/group-id";
/// The label naming the network of the server that made the container: a server lists and
/// touches only the containers of its own network.
pub const NETWORK_LABEL: &str = "hydroplane/network";
/// The label holding the spec the container was made from (secret references only).
pub const SPEC_LABEL: &str = "hydroplane/spec";
/// The prefix of the spec's own labels on the container (`label.hydroplane/KEY`), as on
/// Kubernetes.
pub const USER_LABEL_PREFIX: &str = "label.hydroplane/";

/// The filters that select the containers of one server's network, and only those.
pub fn ours_filter(network: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{NETWORK_LABEL}={network}")])])
}

/// The image reference with a tag: the engine pulls every tag of a repository named without one.
pub fn image_with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') { image.to_owned() } else { format!("{image}:latest") }
}

/// The registry an image comes from, for its credentials (`docker.io` when it names none).
pub fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_owned()
        }
        _ => "docker.io".to_owned(),
    }
}

/// The engine's name of a port (`80/tcp`).
fn port_key(port: i64, protocol: Protocol) -> String {
    format!("{port}/{}", protocol.as_str())
}

/// The container a spec runs as, on `network`, with its environment already resolved;
/// `engine_checks`: whether the engine runs a command readiness check as its healthcheck.
pub fn create_body(
    spec: &ProcessSpec,
    environment: &[(String, Zeroizing<String>)],
    network: &str,
    grace_seconds: u64,
    engine_checks: bool,
) -> ContainerCreateBody {
    let container = &spec.container;
    let mut labels = HashMap::from([
        (PROCESS_LABEL.to_owned(), spec.process_name.clone()),
        (NETWORK_LABEL.to_owned(), network.to_owned()),
        // The spec as stored holds secret references, never their values.
        (SPEC_LABEL.to_owned(), serde_json::to_string(spec).unwrap_or_default()),
    ]);
    if let Some(group) = &spec.group {
        labels.insert(GROUP_LABEL.to_owned(), group.clone());
    }
    for (key, value) in &spec.labels {
        labels.insert(format!("{USER_LABEL_PREFIX}{key}"), value.clone());
    }
    // Every address is the empty host address, as `docker run -p PORT:PORT` sends it: Podman 4's
    // netavark takes a literal `0.0.0.0` as one address no connection ever has.
    let host_ip = if spec.has_public_ip { "" } else { "127.0.0.1" };
    let mut bindings = HashMap::new();
    let mut exposed = Vec::new();
    for port in &container.ports {
        let key = port_key(port.container_port, port.protocol);
        exposed.push(key.clone());
        bindings.insert(
            key,
            Some(vec![PortBinding {
                host_ip: Some(host_ip.to_owned()),
                // Empty: a free port the engine chooses, reported in the socket addresses.
                host_port: Some(port.host_port.map(|port| port.to_string()).unwrap_or_default()),
            }]),
        );
    }
    let mib = |mib: i64| mib.saturating_mul(1024 * 1024);
    let limit = container.resource_limit.as_ref();
    let request = container.resource_request.as_ref();
    let memory = limit.and_then(|limit| limit.memory_mib).map(mib);
    let host_config = HostConfig {
        port_bindings: Some(bindings),
        network_mode: Some(network.to_owned()),
        memory,
        // No swap beyond the limit: a process over its memory limit is OOM-killed, as on Kubernetes.
        memory_swap: memory,
        nano_cpus: limit.and_then(|limit| limit.cpu_vcpu).map(|cpu| (cpu * 1e9) as i64),
        memory_reservation: request.and_then(|request| request.memory_mib).map(mib),
        cpu_shares: request.and_then(|request| request.cpu_vcpu).map(|cpu| ((cpu * 1024.0) as i64).max(2)),
        restart_policy: Some(EngineRestartPolicy {
            name: Some(match spec.restart_policy {
                RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
                RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                RestartPolicy::Never => RestartPolicyNameEnum::NO,
            }),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    let (entrypoint, cmd) = match container.command.split_first() {
        // The command replaces the image's entrypoint and its arguments, as on Kubernetes.
        Some((program, arguments)) => (Some(vec![program.clone()]), Some(arguments.to_vec())),
        None => (None, None),
    };
    ContainerCreateBody {
        image: Some(image_with_tag(&container.image_uri)),
        entrypoint,
        cmd,
        env: Some(environment.iter().map(|(name, value)| format!("{name}={}", value.as_str())).collect()),
        labels: Some(labels),
        working_dir: container.working_dir.clone(),
        exposed_ports: Some(exposed),
        healthcheck: if engine_checks { readiness_healthcheck(spec) } else { None },
        stop_timeout: i64::try_from(grace_seconds).ok(),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// The engine's healthcheck for a readiness check that runs a command; the other kinds are
/// probed by the server (see the runtime's module doc).
fn readiness_healthcheck(spec: &ProcessSpec) -> Option<HealthConfig> {
    let readiness = spec.readiness.as_ref()?;
    let CheckAction::Exec { command } = &readiness.action else { return None };
    let nanos = |seconds: u32| i64::from(seconds) * 1_000_000_000;
    let mut test = vec!["CMD".to_owned()];
    test.extend(command.iter().cloned());
    Some(HealthConfig {
        test: Some(test),
        interval: Some(nanos(readiness.period_seconds)),
        timeout: Some(nanos(readiness.timeout_seconds)),
        retries: Some(i64::from(readiness.failure_threshold)),
        // The first check runs one second after the start, then every period.
        start_period: Some(0),
        start_interval: None,
    })
}

/// The spec a container was made from, from its label.
pub fn spec_of(labels: &HashMap<String, String>) -> Option<ProcessSpec> {
    serde_json::from_str(labels.get(SPEC_LABEL)?).ok()
}

/// The state of a container's lifecycle, as the engine reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineState {
    /// Made, never started.
    Created,
    /// Running (or paused).
    Running,
    /// Between two runs, waiting for the engine's restart.
    Restarting,
    /// Ended.
    Exited,
    /// Being removed, or dead.
    Gone,
}

/// What one inspection of a container says about its process.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The container's id.
    pub id: String,
    /// The process's name (the container's label).
    pub process_name: String,
    /// The spec it was made from.
    pub spec: Option<ProcessSpec>,
    /// When the container was made.
    pub created: jiff::Timestamp,
    /// Its lifecycle state.
    pub state: EngineState,
    /// When its current (or last) run started, to tell runs apart.
    pub started_at: String,
    /// Whether the kernel killed it for its memory limit.
    pub oom_killed: bool,
    /// Its last exit code.
    pub exit_code: i64,
    /// Why the engine could not start it, if it could not.
    pub error: Option<String>,
    /// How often the engine restarted it.
    pub restart_count: u32,
    /// Its healthcheck's verdict, when it has one.
    pub health: Option<HealthStatusEnum>,
    /// Its address on the network.
    pub ip: Option<IpAddr>,
    /// Where its ports are published.
    pub addresses: Vec<SocketAddress>,
}

impl Snapshot {
    /// Reads an inspection; `None` for a container that is not a Hydroplane process.
    pub fn of(inspect: &ContainerInspectResponse, network: &str) -> Option<Snapshot> {
        let labels = inspect.config.as_ref()?.labels.as_ref()?;
        let process_name = labels.get(PROCESS_LABEL)?.clone();
        if labels.get(NETWORK_LABEL).map(String::as_str) != Some(network) {
            return None;
        }
        let spec = spec_of(labels);
        let state = inspect.state.clone().unwrap_or_default();
        let engine_state = match state.status {
            Some(ContainerStateStatusEnum::CREATED) => EngineState::Created,
            Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => {
                EngineState::Running
            }
            Some(ContainerStateStatusEnum::RESTARTING) => EngineState::Restarting,
            Some(ContainerStateStatusEnum::EXITED) => EngineState::Exited,
            _ => EngineState::Gone,
        };
        let settings = inspect.network_settings.as_ref();
        let ip = settings
            .and_then(|settings| settings.networks.as_ref())
            .and_then(|networks| networks.get(network))
            .and_then(|endpoint| endpoint.ip_address.as_deref())
            .and_then(|ip| ip.parse().ok());
        let published = settings.and_then(|settings| settings.ports.clone()).unwrap_or_default();
        let mut addresses = Vec::new();
        if let Some(spec) = &spec {
            for port in &spec.container.ports {
                let bindings = published.get(&port_key(port.container_port, port.protocol));
                // The IPv4 binding; an empty host address (Podman's answer for every address) is
                // 0.0.0.0.
                fn host_of(binding: &PortBinding) -> Option<&str> {
                    match binding.host_ip.as_deref() {
                        None | Some("") => Some("0.0.0.0"),
                        Some(ip) => ip.parse::<std::net::Ipv4Addr>().is_ok().then_some(ip),
                    }
                }
                let binding = bindings.and_then(|bindings| bindings.as_ref()).and_then(|bindings| {
                    bindings.iter().find_map(|binding| Some((binding, host_of(binding)?)))
                });
                let Some((host_port, host)) = binding.and_then(|(binding, host)| {
                    Some((binding.host_port.as_deref()?.parse::<u16>().ok()?, host))
                }) else {
                    continue;
                };
                addresses.push(SocketAddress {
                    host: CompactString::from(host),
                    port: host_port,
                    is_public: spec.has_public_ip,
                    dns_name: None,
                });
            }
        }
        let created = inspect
            .created
            .as_deref()
            .and_then(|created| created.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        Some(Snapshot {
            id: inspect.id.clone().unwrap_or_default(),
            process_name,
            spec,
            created,
            state: engine_state,
            started_at: state.started_at.unwrap_or_default(),
            oom_killed: state.oom_killed.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            error: state.error.filter(|error| !error.is_empty()),
            restart_count: inspect.restart_count.and_then(|count| u32::try_from(count).ok()).unwrap_or(0),
            health: state
                .health
                .and_then(|health| health.status)
                .filter(|status| !matches!(status, HealthStatusEnum::EMPTY | HealthStatusEnum::NONE)),
            ip,
            addresses,
        })
    }

    /// The TCP ports whose connections tell the process is ready when it has no readiness check
    /// of its own.
    pub fn tcp_ports(&self) -> Vec<u16> {
        let Some(spec) = &self.spec else { return Vec::new() };
        spec.container
            .ports
            .iter()
            .filter(|port| port.protocol == Protocol::Tcp)
            .filter_map(|port| u16::try_from(port.container_port).ok())
            .collect()
    }

    /// What the server tells of the process. `ready`: whether the server's own probe of this run
    /// passed (for a process without an engine healthcheck).
    pub fn info(&self, ready: bool, stopping: bool, deadline_exceeded: bool) -> ProcessInfo {
        let (status, reason, message, exit_code) = if stopping {
            (ProcessStatus::Stopping, None, None, None)
        } else if deadline_exceeded {
            let seconds = self.spec.as_ref().and_then(|spec| spec.max_run_seconds).unwrap_or(0);
            (
                ProcessStatus::Failed,
                Some("DeadlineExceeded"),
                Some(format!("stopped after max_run_seconds ({seconds} s)")),
                None,
            )
        } else {
            self.status()
        };
        let status = match status {
            ProcessStatus::Running if !self.is_ready(ready) => ProcessStatus::Starting,
            other => other,
        };
        let group = self.spec.as_ref().and_then(|spec| spec.group.as_deref()).map(CompactString::from);
        let labels = self.spec.as_ref().map(|spec| spec.labels.clone()).unwrap_or_default();
        ProcessInfo {
            process_name: CompactString::from(self.process_name.as_str()),
            group,
            socket_addresses: self.addresses.clone(),
            created: self.created,
            status,
            reason: reason.map(CompactString::from),
            message,
            restart_count: self.restart_count,
            exit_code,
            node: None,
            labels: Labels::new(labels),
        }
    }

    /// Whether the running container passes its check: the engine's healthcheck when it has one,
    /// else the server's probe.
    fn is_ready(&self, probed: bool) -> bool {
        match self.health {
            Some(health) => health == HealthStatusEnum::HEALTHY,
            None => probed,
        }
    }

    fn status(&self) -> (ProcessStatus, Option<&'static str>, Option<String>, Option<i32>) {
        let code = i32::try_from(self.exit_code).unwrap_or(-1);
        let memory = self
            .spec
            .as_ref()
            .and_then(|spec| spec.container.resource_limit.as_ref())
            .and_then(|limit| limit.memory_mib);
        let ended = || -> (ProcessStatus, Option<&'static str>, Option<String>, Option<i32>) {
            if self.oom_killed {
                let limit = memory.map_or(String::new(), |mib| format!(" of {mib} MiB"));
                return (
                    ProcessStatus::Failed,
                    Some("OOMKilled"),
                    Some(format!("killed for using more than its memory limit{limit} (exit code {code})")),
                    Some(code),
                );
            }
            if code == 0 {
                return (ProcessStatus::Exited, Some("Completed"), None, Some(0));
            }
            (ProcessStatus::Failed, Some("Error"), Some(format!("exited with code {code}")), Some(code))
        };
        match self.state {
            EngineState::Created => match &self.error {
                Some(error) => (ProcessStatus::Failed, Some("StartError"), Some(error.clone()), None),
                None => (ProcessStatus::Starting, None, None, None),
            },
            EngineState::Running => (ProcessStatus::Running, None, None, None),
            EngineState::Restarting => {
                let (_, reason, message, code) = ended();
                let message = message.unwrap_or_else(|| "exited".to_owned());
                (
                    ProcessStatus::Failed,
                    Some(if reason == Some("OOMKilled") { "OOMKilled" } else { "CrashLoopBackOff" }),
                    Some(format!("{message}; the engine restarts it (restart {})", self.restart_count + 1)),
                    code,
                )
            }
            EngineState::Exited => match &self.error {
                Some(error) if !self.oom_killed => {
                    (ProcessStatus::Failed, Some("StartError"), Some(error.clone()), Some(code))
                }
                _ => ended(),
            },
            EngineState::Gone => (
                ProcessStatus::Failed,
                Some("ContainerGone"),
                Some("the container is being removed".to_owned()),
                None,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_get_a_tag_and_a_registry() {
        assert_eq!(image_with_tag("nginx"), "nginx:latest");
        assert_eq!(image_with_tag("localhost:5000/a/b"), "localhost:5000/a/b:latest");
        assert_eq!(image_with_tag("ghcr.io/x/y:1"), "ghcr.io/x/y:1");
        assert_eq!(image_with_tag("a@sha256:00"), "a@sha256:00");
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:1/x"), "127.0.0.1:1");
        assert_eq!(registry_of("ghcr.io/hydro-project/x"), "ghcr.io");
    }

    #[test]
    fn the_body_carries_the_spec() {
        let spec: ProcessSpec = serde_json::from_value(serde_json::json!({
            "process_name": "web", "group": "g", "labels": {"tier": "front"},
            "container": {"image_uri": "nginx", "command": ["httpd", "-f"], "working_dir": "/w",
                "ports": [{"container_port": 80}, {"container_port": 53, "host_port": 5353, "protocol": "udp"}],
                "resource_limit": {"cpu_vcpu": 0.5, "memory_mib": 64}},
            "has_public_ip": true
        }))
        .unwrap();
        let environment = vec![("A".to_owned(), Zeroizing::new("1".to_owned()))];
        let body = create_body(&spec, &environment, "net", 5, true);
        assert_eq!(body.image.as_deref(), Some("nginx:latest"));
        assert_eq!(body.entrypoint, Some(vec!["httpd".to_owned()]));
        assert_eq!(body.cmd, Some(vec!["-f".to_owned()]));
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
        let labels = body.labels.unwrap();
        assert_eq!(labels[PROCESS_LABEL], "web");
        assert_eq!(labels[GROUP_LABEL], "g");
        assert_eq!(labels["label.hydroplane/tier"], "front");
        assert_eq!(spec_of(&labels), Some(spec.clone()));
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.nano_cpus, Some(500_000_000));
        let bindings = host.port_bindings.unwrap();
        let binding = |key: &str| bindings[key].as_ref().unwrap()[0].clone();
        assert_eq!(binding("80/tcp").host_ip.as_deref(), Some(""), "every address");
        assert_eq!(binding("80/tcp").host_port.as_deref(), Some(""));
        assert_eq!(binding("53/udp").host_port.as_deref(), Some("5353"));
    }
}
