//! The domain model: what a process is ([`ProcessSpec`]), the rules a spec must follow
//! ([`validation`], which makes the [`ValidSpec`] every runtime takes), and what the server knows
//! of a process ([`info`]: [`ProcessInfo`] and its statuses).
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

pub mod info;
pub mod labels;
pub mod lifecycle;
pub mod validation;

#[cfg(test)]
mod tests;

pub use info::{HISTORY_LIMIT, Labels, ProcessDetail, ProcessInfo, ProcessStatus, SocketAddress, Transition};
pub use lifecycle::{CheckAction, HealthCheck, RestartPolicy};
pub use validation::{
    InvalidFields, InvalidSpec, ValidSpec, Violation, Violations, dns_label_rule, service_port_name,
};

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
    /// Labels to select the process by (Kubernetes' rules for keys and values).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What happens when the process ends or is lost (`always` when not given).
    #[serde(default, deserialize_with = "null_as_default")]
    pub restart_policy: RestartPolicy,
    /// The check that tells the process is ready; it is RUNNING only while this passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<HealthCheck>,
    /// The check that tells the process is alive; failing, it is restarted under its policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<HealthCheck>,
    /// The longest the process may run, in seconds, before it is stopped (`DeadlineExceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_seconds: Option<u64>,
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
    /// The absolute directory the command runs in; without it, the runtime's default.
    #[serde(default)]
    pub working_dir: Option<String>,
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

impl ProcessSpec {
    /// The fields in which `other` differs from this spec, for messages about a name that is
    /// taken by another spec.
    pub fn differing_fields(&self, other: &ProcessSpec) -> Vec<&'static str> {
        let (mine, theirs) = (&self.container, &other.container);
        [
            ("process_name", self.process_name != other.process_name),
            ("group", self.group != other.group),
            ("has_public_ip", self.has_public_ip != other.has_public_ip),
            ("labels", self.labels != other.labels),
            ("restart_policy", self.restart_policy != other.restart_policy),
            ("readiness", self.readiness != other.readiness),
            ("liveness", self.liveness != other.liveness),
            ("max_run_seconds", self.max_run_seconds != other.max_run_seconds),
            ("container.image_uri", mine.image_uri != theirs.image_uri),
            ("container.command", mine.command != theirs.command),
            ("container.env", mine.env != theirs.env),
            ("container.ports", mine.ports != theirs.ports),
            ("container.resource_request", mine.resource_request != theirs.resource_request),
            ("container.resource_limit", mine.resource_limit != theirs.resource_limit),
            ("container.node_selector", mine.node_selector != theirs.node_selector),
            ("container.username", mine.username != theirs.username),
            ("container.password", mine.password != theirs.password),
            ("container.working_dir", mine.working_dir != theirs.working_dir),
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
