//! The domain model: what a process is ([`ProcessSpec`]), what the server knows of one
//! ([`ProcessInfo`]), and the rules a spec must follow ([`ProcessSpec::validate`]).
//!
//! Architecture invariant: this module knows no I/O and no protobuf. The gRPC layer converts wire
//! types into these, and runtimes only ever see these.
//!
//! The serde shape is the Python Hydroplane's JSON process spec, so its files load unchanged, with
//! two additions: `env[].secret` as an alternative spelling of a secret-valued `env[].value`, and
//! `cpu_vcpu` as a number or a decimal string. Unknown fields are errors (Hydroplane silently
//! dropped them, so a misplaced `node_selector` did nothing).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// What to run and how to expose it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// The unique name of the process (a DNS-1123 label).
    pub process_name: String,
    /// The group the process belongs to, if any (a DNS-1123 label).
    #[serde(default)]
    pub group: Option<String>,
    /// The container to run.
    pub container: ContainerSpec,
    /// Whether the process's ports are reachable from outside the runtime's private network.
    #[serde(default)]
    pub has_public_ip: bool,
}

/// The container of a process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image to run; the local runtime keeps it for the record only.
    pub image_uri: String,
    /// The command to run, as an argument vector (no shell).
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: Vec<String>,
    /// Environment variables given to the process.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: Vec<EnvironmentVariable>,
    /// Ports the process listens on.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<PortMapping>,
    /// Resources to reserve for the process.
    #[serde(default)]
    pub resource_request: Option<ResourceSpec>,
    /// Resources the process may use at most.
    #[serde(default)]
    pub resource_limit: Option<ResourceSpec>,
    /// Node labels required to run the process (Kubernetes runtimes).
    #[serde(default, deserialize_with = "null_as_default")]
    pub node_selector: BTreeMap<String, String>,
    /// The image registry user name.
    #[serde(default)]
    pub username: Option<ValueOrSecret>,
    /// The image registry password, from the secret store.
    #[serde(default)]
    pub password: Option<SecretReference>,
}

/// An environment variable of a process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "EnvironmentVariableJson", into = "EnvironmentVariableJson")]
pub struct EnvironmentVariable {
    /// The variable's name.
    pub name: String,
    /// Where its value comes from.
    pub value: ValueOrSecret,
}

/// The JSON shape of an environment variable: Hydroplane's `value` (a string or a secret
/// reference), or our `secret`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentVariableJson {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<ValueOrSecret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<SecretReference>,
}

impl TryFrom<EnvironmentVariableJson> for EnvironmentVariable {
    type Error = String;

    fn try_from(json: EnvironmentVariableJson) -> Result<Self, Self::Error> {
        let value = match (json.value, json.secret) {
            (Some(value), None) => value,
            (None, Some(secret)) => ValueOrSecret::Secret(secret),
            (None, None) => {
                return Err(format!("env var `{}` needs a `value` or a `secret`", json.name));
            }
            (Some(_), Some(_)) => {
                return Err(format!("env var `{}` has both `value` and `secret`; give one", json.name));
            }
        };
        Ok(EnvironmentVariable { name: json.name, value })
    }
}

impl From<EnvironmentVariable> for EnvironmentVariableJson {
    fn from(var: EnvironmentVariable) -> Self {
        match var.value {
            ValueOrSecret::Value(value) => EnvironmentVariableJson {
                name: var.name,
                value: Some(ValueOrSecret::Value(value)),
                secret: None,
            },
            ValueOrSecret::Secret(secret) => {
                EnvironmentVariableJson { name: var.name, value: None, secret: Some(secret) }
            }
        }
    }
}

/// A literal string, or a reference to one in the secret store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValueOrSecret {
    /// A literal value.
    Value(String),
    /// A value held in the secret store.
    Secret(SecretReference),
}

/// A reference to a secret (or one key of a JSON-object secret) in the secret store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretReference {
    /// The secret's name in the store.
    pub secret_name: String,
    /// The key within a JSON-object secret, when only one value of it is meant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl fmt::Display for SecretReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "secret `{}` key `{}`", self.secret_name, key),
            None => write!(f, "secret `{}`", self.secret_name),
        }
    }
}

/// A port the process listens on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    /// The port the process listens on. Kept wide so that out-of-range input is reported by
    /// validation with its field path rather than by the parser.
    pub container_port: i64,
    /// The port the host should expose; defaults to `container_port` where the runtime honours it.
    #[serde(default)]
    pub host_port: Option<i64>,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
    /// An optional port name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A transport protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Parses the wire spelling (`tcp`, `udp`, case-insensitive; empty means tcp).
    pub fn parse(text: &str) -> Option<Protocol> {
        match text.to_ascii_lowercase().as_str() {
            "" | "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A request for, or a limit on, physical resources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// Abstract vCPUs.
    #[serde(default, deserialize_with = "decimal_or_string")]
    pub cpu_vcpu: Option<f64>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory_mib: Option<i64>,
}

/// Accepts `null` where a collection is expected, as Hydroplane's pydantic models did.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Accepts a number or a decimal string (`"0.25"`), as pydantic's `condecimal` did.
fn decimal_or_string<'de, D>(deserializer: D) -> Result<Option<f64>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(f64),
        Text(String),
    }
    match Option::<NumberOrString>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrString::Number(number)) => Ok(Some(number)),
        Some(NumberOrString::Text(text)) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|number| number.is_finite())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a decimal number"))),
    }
}

// === impl ProcessSpec: validation ===

/// One broken rule of a spec: the field's path and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field's path, e.g. `container.ports[1].container_port`.
    pub field: String,
    /// The rule, as a sentence fragment, e.g. `must be between 1 and 65535, got 0`.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// Every broken rule of one spec, reported together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid process spec:{}", display_violations(.0))]
pub struct InvalidSpec(pub Vec<Violation>);

fn display_violations(violations: &[Violation]) -> String {
    violations.iter().map(|violation| format!("\n  - {violation}")).collect()
}

/// Collects violations with their field paths.
#[derive(Default)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records that `field` breaks `rule`.
    pub fn add(&mut self, field: impl Into<String>, rule: impl Into<String>) {
        self.0.push(Violation { field: field.into(), rule: rule.into() });
    }

    /// Ok when nothing was recorded, otherwise every violation.
    pub fn into_result(self) -> Result<(), InvalidSpec> {
        if self.0.is_empty() { Ok(()) } else { Err(InvalidSpec(self.0)) }
    }
}

impl ProcessSpec {
    /// Checks every rule that a runtime (Kubernetes above all) would otherwise reject later, and
    /// reports all violations at once.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut violations = Violations::default();
        self.collect_violations(&mut violations);
        violations.into_result()
    }

    /// Adds this spec's violations to `violations`.
    pub fn collect_violations(&self, violations: &mut Violations) {
        check_dns_label(violations, "process_name", &self.process_name);
        if let Some(group) = &self.group {
            check_dns_label(violations, "group", group);
        }
        self.container.collect_violations(violations);
    }

    /// The fields in which `other` differs from this spec, for messages about a name that is
    /// taken by another spec.
    pub fn differing_fields(&self, other: &ProcessSpec) -> Vec<&'static str> {
        let (mine, theirs) = (&self.container, &other.container);
        [
            ("process_name", self.process_name != other.process_name),
            ("group", self.group != other.group),
            ("has_public_ip", self.has_public_ip != other.has_public_ip),
            ("container.image_uri", mine.image_uri != theirs.image_uri),
            ("container.command", mine.command != theirs.command),
            ("container.env", mine.env != theirs.env),
            ("container.ports", mine.ports != theirs.ports),
            ("container.resource_request", mine.resource_request != theirs.resource_request),
            ("container.resource_limit", mine.resource_limit != theirs.resource_limit),
            ("container.node_selector", mine.node_selector != theirs.node_selector),
            ("container.username", mine.username != theirs.username),
            ("container.password", mine.password != theirs.password),
        ]
        .into_iter()
        .filter_map(|(field, differs)| differs.then_some(field))
        .collect()
    }

    /// The names of the secrets this spec refers to, in order, without repeats.
    pub fn secret_references(&self) -> Vec<&SecretReference> {
        let mut seen = HashSet::new();
        let container = &self.container;
        let from_env = container.env.iter().filter_map(|var| match &var.value {
            ValueOrSecret::Secret(secret) => Some(secret),
            ValueOrSecret::Value(_) => None,
        });
        let from_username = container.username.iter().filter_map(|username| match username {
            ValueOrSecret::Secret(secret) => Some(secret),
            ValueOrSecret::Value(_) => None,
        });
        from_env
            .chain(from_username)
            .chain(container.password.iter())
            .filter(|secret| seen.insert(*secret))
            .collect()
    }
}

impl ContainerSpec {
    fn collect_violations(&self, violations: &mut Violations) {
        if self.image_uri.trim().is_empty() {
            violations.add("container.image_uri", "must not be empty");
        } else if self.image_uri.chars().any(char::is_whitespace) {
            violations.add("container.image_uri", "must not contain whitespace");
        }
        if let Some(first) = self.command.first()
            && first.is_empty()
        {
            violations.add("container.command[0]", "the program must not be empty");
        }
        for (index, argument) in self.command.iter().enumerate() {
            if argument.contains('\0') {
                violations.add(format!("container.command[{index}]"), "must not contain NUL");
            }
        }

        let mut env_names = HashSet::new();
        for (index, var) in self.env.iter().enumerate() {
            let path = format!("container.env[{index}]");
            if !is_env_name(&var.name) {
                violations.add(
                    format!("{path}.name"),
                    format!(
                        "`{}` is not a valid variable name (letters, digits and '_', not starting \
                         with a digit)",
                        var.name
                    ),
                );
            } else if !env_names.insert(var.name.as_str()) {
                violations.add(format!("{path}.name"), format!("`{}` is given twice", var.name));
            }
            match &var.value {
                ValueOrSecret::Value(value) if value.contains('\0') => {
                    violations.add(format!("{path}.value"), "must not contain NUL");
                }
                ValueOrSecret::Value(_) => {}
                ValueOrSecret::Secret(secret) => {
                    check_secret_reference(violations, &format!("{path}.secret"), secret)
                }
            }
        }

        let mut container_ports = HashSet::new();
        let mut port_names = HashSet::new();
        for (index, port) in self.ports.iter().enumerate() {
            let path = format!("container.ports[{index}]");
            if check_port(violations, &format!("{path}.container_port"), port.container_port)
                && !container_ports.insert(port.container_port)
            {
                violations.add(
                    format!("{path}.container_port"),
                    format!("port {} is given twice", port.container_port),
                );
            }
            if let Some(host_port) = port.host_port {
                check_port(violations, &format!("{path}.host_port"), host_port);
            }
            if let Some(name) = &port.name {
                if let Err(rule) = check_port_name(name) {
                    violations.add(format!("{path}.name"), rule);
                } else if !port_names.insert(name.as_str()) {
                    violations.add(format!("{path}.name"), format!("`{name}` is given twice"));
                }
            }
        }

        if let Some(request) = &self.resource_request {
            request.collect_violations(violations, "container.resource_request");
        }
        if let Some(limit) = &self.resource_limit {
            limit.collect_violations(violations, "container.resource_limit");
        }
        if let (Some(request), Some(limit)) = (&self.resource_request, &self.resource_limit) {
            if let (Some(requested), Some(limited)) = (request.cpu_vcpu, limit.cpu_vcpu)
                && requested > limited
            {
                violations.add(
                    "container.resource_limit.cpu_vcpu",
                    format!("{limited} is below the requested {requested}"),
                );
            }
            if let (Some(requested), Some(limited)) = (request.memory_mib, limit.memory_mib)
                && requested > limited
            {
                violations.add(
                    "container.resource_limit.memory_mib",
                    format!("{limited} is below the requested {requested}"),
                );
            }
        }

        for (key, value) in &self.node_selector {
            let path = format!("container.node_selector[{key:?}]");
            if let Err(rule) = check_label_key(key) {
                violations.add(path.clone(), format!("key {rule}"));
            }
            if let Err(rule) = check_label_value(value) {
                violations.add(path, format!("value {rule}"));
            }
        }

        match &self.username {
            Some(ValueOrSecret::Secret(secret)) => {
                check_secret_reference(violations, "container.username", secret)
            }
            Some(ValueOrSecret::Value(username)) if username.is_empty() => {
                violations.add("container.username", "must not be empty")
            }
            _ => {}
        }
        if let Some(password) = &self.password {
            check_secret_reference(violations, "container.password", password);
        }
        if self.password.is_some() != self.username.is_some() {
            violations.add(
                if self.password.is_some() { "container.username" } else { "container.password" },
                "registry credentials need both `username` and `password`",
            );
        }
    }
}

impl ResourceSpec {
    fn collect_violations(&self, violations: &mut Violations, path: &str) {
        if let Some(cpu) = self.cpu_vcpu
            && !(cpu.is_finite() && cpu >= 0.001)
        {
            violations.add(format!("{path}.cpu_vcpu"), format!("must be at least 0.001, got {cpu}"));
        }
        if let Some(memory) = self.memory_mib
            && memory <= 0
        {
            violations.add(format!("{path}.memory_mib"), format!("must be positive, got {memory}"));
        }
    }
}

fn check_secret_reference(violations: &mut Violations, path: &str, secret: &SecretReference) {
    if secret.secret_name.is_empty() {
        violations.add(format!("{path}.secret_name"), "must not be empty");
    }
    if secret.key.as_deref() == Some("") {
        violations.add(format!("{path}.key"), "must not be empty when given");
    }
}

/// Returns whether the port is in range, recording a violation when it is not.
fn check_port(violations: &mut Violations, path: &str, port: i64) -> bool {
    let in_range = (1..=65535).contains(&port);
    if !in_range {
        violations.add(path, format!("must be between 1 and 65535, got {port}"));
    }
    in_range
}

fn check_dns_label(violations: &mut Violations, path: &str, value: &str) {
    if let Err(rule) = dns_label_rule(value) {
        violations.add(path, rule);
    }
}

/// Checks a DNS-1123 label (RFC 1123), the rule Kubernetes applies to object names.
pub fn dns_label_rule(value: &str) -> Result<(), String> {
    let rule = "must be a DNS-1123 label: lower-case letters, digits and '-', starting and \
                ending with a letter or digit";
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 63 {
        return Err(format!("must be at most 63 characters, got {}", value.len()));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ends_ok = value.starts_with(allowed) && value.ends_with(allowed);
    if !ends_ok || !value.chars().all(|c| allowed(c) || c == '-') {
        return Err(format!("{rule}, got `{value}`"));
    }
    Ok(())
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks an IANA service name, the rule Kubernetes applies to port names.
fn check_port_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid port name: at most 15 lower-case letters, digits and '-', \
             with a letter, no '-' at either end or twice in a row"
        ))
    }
}

/// Checks a label key: an optional DNS subdomain prefix and '/', then a name of at most 63
/// characters.
fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid_prefix = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| dns_label_rule(part).is_ok());
        if !valid_prefix {
            return Err(format!("`{key}` has an invalid prefix: it must be a DNS subdomain"));
        }
    }
    if name.is_empty() {
        return Err(format!("`{key}` has an empty name"));
    }
    check_label_value(name).map_err(|rule| format!("`{key}`: {rule}"))
}

/// Checks a label value: empty, or at most 63 alphanumerics, '-', '_' and '.', starting and
/// ending with an alphanumeric.
fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric();
    let valid = value.len() <= 63
        && value.starts_with(allowed)
        && value.ends_with(allowed)
        && value.chars().all(|c| allowed(c) || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{value}` must be at most 63 letters, digits, '-', '_' and '.', starting and \
             ending with a letter or digit"
        ))
    }
}

// === ProcessInfo ===

/// The lifecycle state of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProcessStatus {
    /// Accepted, not yet running.
    Starting,
    /// Running, and reachable where the runtime can tell.
    Running,
    /// Cannot run, or crashed; the info's `reason` says why.
    Failed,
    /// Ran to completion.
    Exited,
    /// Being stopped.
    Stopping,
}

impl ProcessStatus {
    /// Whether a `wait`ing Start has its answer once a process reaches this status.
    pub fn is_settled(self) -> bool {
        !matches!(self, ProcessStatus::Starting)
    }
}

/// Where a process can be reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketAddress {
    /// An IP address.
    pub host: String,
    /// A port number.
    pub port: u16,
    /// Whether it is reachable from outside the runtime's private network.
    pub is_public: bool,
    /// A DNS name for the same endpoint, when the runtime has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
}

/// What the server knows about one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process's name.
    pub process_name: String,
    /// Its group, if any.
    pub group: Option<String>,
    /// Where it can be reached.
    pub socket_addresses: Vec<SocketAddress>,
    /// When it was started.
    pub created: jiff::Timestamp,
    /// Its lifecycle state.
    pub status: ProcessStatus,
    /// A short machine-readable cause for FAILED or EXITED.
    pub reason: Option<String>,
    /// A human-readable explanation of `reason`.
    pub message: Option<String>,
    /// How often the runtime restarted it.
    pub restart_count: u32,
    /// Its exit code, once it has exited.
    pub exit_code: Option<i32>,
    /// The node it runs on, where the runtime has nodes.
    pub node: Option<String>,
}

impl ProcessInfo {
    /// A process just accepted: STARTING, with no address or detail yet.
    pub fn starting(spec: &ProcessSpec, created: jiff::Timestamp) -> ProcessInfo {
        ProcessInfo {
            process_name: spec.process_name.clone(),
            group: spec.group.clone(),
            socket_addresses: Vec::new(),
            created,
            status: ProcessStatus::Starting,
            reason: None,
            message: None,
            restart_count: 0,
            exit_code: None,
            node: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal_spec() -> ProcessSpec {
        ProcessSpec {
            process_name: "web".to_owned(),
            group: None,
            container: ContainerSpec { image_uri: "nginx".to_owned(), ..Default::default() },
            has_public_ip: false,
        }
    }

    #[track_caller]
    fn check(json: &str, expected: &[&str]) {
        let spec: ProcessSpec = serde_json::from_str(json).expect("test spec parses");
        let found: Vec<String> = match spec.validate() {
            Ok(()) => Vec::new(),
            Err(InvalidSpec(violations)) => violations.iter().map(Violation::to_string).collect(),
        };
        assert_eq!(found.len(), expected.len(), "violations: {found:#?}");
        for (found, expected) in found.iter().zip(expected) {
            assert!(found.starts_with(expected), "`{found}` should start with `{expected}`");
        }
    }

    #[test]
    fn hydroplane_nginx_example_loads_and_is_valid() {
        check(
            r#"{"process_name": "nginx", "container": {"image_uri": "nginxdemos/hello",
                "ports": [{"container_port": 80, "host_port": 8080, "protocol": "tcp"}]},
                "has_public_ip": true}"#,
            &[],
        );
    }

    #[test]
    fn every_violation_is_reported_with_its_path() {
        check(
            r#"{"process_name": "Web_1", "group": "-g", "container": {"image_uri": "",
                "ports": [{"container_port": 80}, {"container_port": 80}, {"container_port": 0},
                          {"container_port": 81, "host_port": 70000, "name": "Bad Name"}],
                "env": [{"name": "1X", "value": "a"}, {"name": "A", "value": "b"},
                        {"name": "A", "value": "c"}],
                "resource_request": {"cpu_vcpu": "0.5", "memory_mib": 512},
                "resource_limit": {"cpu_vcpu": 0.25, "memory_mib": 0}}}"#,
            &[
                "process_name: must be a DNS-1123 label",
                "group: must be a DNS-1123 label",
                "container.image_uri: must not be empty",
                "container.env[0].name: `1X` is not a valid variable name",
                "container.env[2].name: `A` is given twice",
                "container.ports[1].container_port: port 80 is given twice",
                "container.ports[2].container_port: must be between 1 and 65535, got 0",
                "container.ports[3].host_port: must be between 1 and 65535, got 70000",
                "container.ports[3].name: `Bad Name` is not a valid port name",
                "container.resource_limit.memory_mib: must be positive, got 0",
                "container.resource_limit.cpu_vcpu: 0.25 is below the requested 0.5",
                "container.resource_limit.memory_mib: 0 is below the requested 512",
            ],
        );
    }

    #[test]
    fn names_longer_than_63_characters_are_refused() {
        let mut spec = minimal_spec();
        spec.process_name = "a".repeat(64);
        let error = spec.validate().unwrap_err();
        assert_eq!(error.0[0].field, "process_name");
        assert!(error.0[0].rule.contains("at most 63"));
        spec.process_name = "a".repeat(63);
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn env_values_may_be_secrets_in_both_spellings() {
        let spec: ProcessSpec = serde_json::from_str(
            r#"{"process_name": "p", "container": {"image_uri": "i", "env": [
                {"name": "A", "value": {"secret_name": "s", "key": "k"}},
                {"name": "B", "secret": {"secret_name": "s", "key": "k"}},
                {"name": "C", "value": "literal"}]}}"#,
        )
        .expect("parses");
        let secret = SecretReference { secret_name: "s".into(), key: Some("k".into()) };
        assert_eq!(spec.container.env[0].value, ValueOrSecret::Secret(secret.clone()));
        assert_eq!(spec.container.env[1].value, ValueOrSecret::Secret(secret.clone()));
        assert_eq!(spec.container.env[2].value, ValueOrSecret::Value("literal".into()));
        assert_eq!(spec.secret_references(), vec![&secret]);
    }

    #[test]
    fn unknown_fields_are_errors_that_name_the_field() {
        let error = serde_json::from_str::<ProcessSpec>(
            r#"{"process_name": "p", "container": {"image_uri": "i", "nodeselector": {}}}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("unknown field `nodeselector`"), "{error}");
    }

    #[test]
    fn cpu_accepts_numbers_and_decimal_strings_only() {
        let parse = |cpu: &str| {
            serde_json::from_str::<ResourceSpec>(&format!(r#"{{"cpu_vcpu": {cpu}}}"#))
                .map(|resources| resources.cpu_vcpu)
                .map_err(|error| error.to_string())
        };
        assert_eq!(parse("0.25"), Ok(Some(0.25)));
        assert_eq!(parse(r#""0.25""#), Ok(Some(0.25)));
        assert!(parse(r#""a quarter""#).unwrap_err().contains("not a decimal number"));
    }

    #[test]
    fn node_selector_labels_follow_kubernetes_rules() {
        let mut spec = minimal_spec();
        spec.container.node_selector.insert("kubernetes.io/arch".into(), "amd64".into());
        assert_eq!(spec.validate(), Ok(()));
        spec.container.node_selector.insert("bad key!".into(), "-x".into());
        let error = spec.validate().unwrap_err();
        assert_eq!(error.0.len(), 2, "{error}");
        assert_eq!(error.0[0].field, "container.node_selector[\"bad key!\"]");
    }

    #[test]
    fn registry_credentials_come_in_pairs() {
        let mut spec = minimal_spec();
        spec.container.username = Some(ValueOrSecret::Value("me".into()));
        let error = spec.validate().unwrap_err();
        assert_eq!(error.0[0].field, "container.password");
    }
}
