//! The rules a process spec must follow, checked all at once with every violation's field path.
//! [`ProcessSpec::validate`] is the only way to make a [`ValidSpec`], so a runtime cannot be
//! handed a spec nobody checked, and nothing checks one twice.
//!
//! The rules are what Kubernetes will accept, so a Start is refused before anything is created:
//! names, ports per protocol, quantities it can represent, and the [`limits`] on counts and sizes
//! (the whole spec must fit in the Pod annotation that holds it). Every check is linear in the
//! size of the spec, and the counts are checked first, so a huge spec is refused quickly.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;

use super::labels::{label_key_rule, label_value_rule};
use super::{
    CheckAction, ContainerSpec, HealthCheck, ProcessSpec, Protocol, ResourceSpec, SecretReference,
    ValueOrSecret,
};

/// The limits on counts and sizes of a spec, each named in the violation that breaks it.
pub mod limits {
    /// The most entries of `container.env`.
    pub const MAX_ENV_ENTRIES: usize = 4096;
    /// The longest value of one environment variable, in bytes (128 KiB).
    pub const MAX_ENV_VALUE_BYTES: usize = 128 << 10;
    /// The most entries of `container.ports`.
    pub const MAX_PORTS: usize = 256;
    /// The most arguments of `container.command`, the program included.
    pub const MAX_COMMAND_ARGUMENTS: usize = 1024;
    /// The most bytes of `container.command`, all arguments together (128 KiB).
    pub const MAX_COMMAND_BYTES: usize = 128 << 10;
    /// The most entries of `container.node_selector`.
    pub const MAX_NODE_SELECTOR_ENTRIES: usize = 64;
    /// The most labels of a process.
    pub const MAX_LABELS: usize = 64;
    /// The longest prefix of a process's label key: the Kubernetes runtime stores
    /// `example.com/tier` as `example.com.label.hydroplane/tier`, and a prefix may have 253
    /// characters in all.
    pub const MAX_LABEL_PREFIX_CHARACTERS: usize = 253 - ".label.hydroplane".len();
    /// The largest spec, as the JSON the Kubernetes runtime keeps in its Pod annotation
    /// (192 KiB; the API server allows 256 KiB for all of an object's annotations).
    pub const MAX_SPEC_JSON_BYTES: usize = 192 << 10;
    /// The most vCPUs a request or limit may name: a million cores, far beyond any node, and
    /// exact as a Kubernetes quantity in millicores.
    pub const MAX_CPU_VCPU: f64 = 1_000_000.0;
    /// The fewest vCPUs a request or limit may name: one millicore, Kubernetes' precision.
    pub const MIN_CPU_VCPU: f64 = 0.001;
    /// The most MiB a request or limit may name: 1 PiB (2^30 MiB), far beyond any node, and a
    /// quantity Kubernetes represents exactly.
    pub const MAX_MEMORY_MIB: i64 = 1 << 30;
    /// The longest run-time limit: Kubernetes keeps `activeDeadlineSeconds` in an int32 field of
    /// its own controllers' status arithmetic, so this is what every runtime can honour.
    pub const MAX_RUN_SECONDS: u64 = i32::MAX as u64;
    /// The longest pause between two health checks: a day.
    pub const MAX_CHECK_PERIOD_SECONDS: u32 = 86_400;
    /// The longest one health check may take: an hour.
    pub const MAX_CHECK_TIMEOUT_SECONDS: u32 = 3_600;
    /// The most failures in a row a health check may wait for.
    pub const MAX_CHECK_FAILURE_THRESHOLD: u32 = 1_000;
    /// The longest HTTP path of a health check.
    pub const MAX_CHECK_PATH_BYTES: usize = 2_048;
    /// The longest wait a Start may ask for (`wait_timeout`); hpctl checks `--timeout` against it.
    pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
}

use limits::*;

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

/// Every broken rule of a request's other fields (a name, a selector, a time), reported
/// together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid request:{}", display_violations(.0))]
pub struct InvalidFields(pub Vec<Violation>);

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

    /// Ok when nothing was recorded, otherwise every violation, for a request without a spec.
    pub fn into_fields_result(self) -> Result<(), InvalidFields> {
        if self.0.is_empty() { Ok(()) } else { Err(InvalidFields(self.0)) }
    }

    /// `result`, with these violations reported before its own, so that every problem of a
    /// request is reported at once.
    pub fn and<T>(mut self, result: Result<T, InvalidSpec>) -> Result<T, InvalidSpec> {
        match result {
            Ok(value) if self.0.is_empty() => Ok(value),
            Ok(_) => Err(InvalidSpec(self.0)),
            Err(InvalidSpec(later)) => {
                self.0.extend(later);
                Err(InvalidSpec(self.0))
            }
        }
    }
}

/// A spec that passed [`ProcessSpec::validate`]: what runtimes take.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec(ProcessSpec);

impl ValidSpec {
    /// The checked spec, to keep or hand on.
    pub fn into_inner(self) -> ProcessSpec {
        self.0
    }
}

impl std::ops::Deref for ValidSpec {
    type Target = ProcessSpec;

    fn deref(&self) -> &ProcessSpec {
        &self.0
    }
}

impl ProcessSpec {
    /// Checks every rule that a runtime (Kubernetes above all) would otherwise reject later, and
    /// reports all violations at once.
    pub fn validate(self) -> Result<ValidSpec, InvalidSpec> {
        let mut violations = Violations::default();
        self.collect_violations(&mut violations);
        violations.into_result().map(|()| ValidSpec(self))
    }

    /// Adds this spec's violations to `violations`.
    fn collect_violations(&self, violations: &mut Violations) {
        check_dns_label(violations, "process_name", &self.process_name);
        // A process with ports gets a Service of its name, and a Service name is a DNS-1035
        // label: it cannot start with a digit.
        if !self.container.ports.is_empty()
            && dns_label_rule(&self.process_name).is_ok()
            && self.process_name.starts_with(|c: char| c.is_ascii_digit())
        {
            violations.add(
                "process_name",
                format!(
                    "must start with a letter when the process has ports (its Service name is a \
                     DNS-1035 label), got `{}`",
                    self.process_name
                ),
            );
        }
        if let Some(group) = &self.group {
            check_dns_label(violations, "group", group);
        }
        let labels_ok = check_labels(violations, &self.labels);
        if let Some(readiness) = &self.readiness {
            check_health(violations, "readiness", readiness);
        }
        if let Some(liveness) = &self.liveness {
            check_health(violations, "liveness", liveness);
        }
        if let Some(seconds) = self.max_run_seconds
            && !(1..=MAX_RUN_SECONDS).contains(&seconds)
        {
            violations
                .add("max_run_seconds", format!("must be between 1 and {MAX_RUN_SECONDS}, got {seconds}"));
        }
        let counts_ok = self.container.check_counts(violations) && labels_ok;
        self.container.collect_violations(violations);
        // Encoding is linear too, but only worth doing for a spec whose counts are in range.
        if counts_ok {
            check_encoded_size(violations, self);
        }
    }
}

/// Checks a health check's action and timing.
fn check_health(violations: &mut Violations, path: &str, check: &HealthCheck) {
    match &check.action {
        CheckAction::HttpGet { port, path: http_path } => {
            check_port(violations, &format!("{path}.http_get.port"), *port);
            let field = format!("{path}.http_get.path");
            if !http_path.starts_with('/') {
                violations.add(field, format!("must start with `/`, got `{}`", shown(http_path)));
            } else if http_path.len() > MAX_CHECK_PATH_BYTES {
                violations.add(
                    field,
                    format!("must be at most {MAX_CHECK_PATH_BYTES} bytes, got {}", http_path.len()),
                );
            } else if http_path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                violations.add(
                    field,
                    format!("must not contain spaces or control characters, got `{}`", shown(http_path)),
                );
            }
        }
        CheckAction::TcpSocket { port } => {
            check_port(violations, &format!("{path}.tcp_socket.port"), *port);
        }
        CheckAction::Exec { command } => {
            let field = format!("{path}.exec.command");
            if command.is_empty() || command[0].is_empty() {
                violations.add(field, "must name a program");
            } else if command.len() > MAX_COMMAND_ARGUMENTS {
                violations.add(
                    field,
                    format!("must have at most {MAX_COMMAND_ARGUMENTS} arguments, got {}", command.len()),
                );
            } else if command.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
                violations
                    .add(field, format!("must be at most {MAX_COMMAND_BYTES} bytes in total (128 KiB)"));
            } else if command.iter().any(|argument| argument.contains('\0')) {
                violations.add(field, "must not contain NUL");
            }
        }
    }
    let mut in_range = |field: &str, value: u32, max: u32| {
        if !(1..=max).contains(&value) {
            violations.add(format!("{path}.{field}"), format!("must be between 1 and {max}, got {value}"));
        }
    };
    in_range("period_seconds", check.period_seconds, MAX_CHECK_PERIOD_SECONDS);
    in_range("timeout_seconds", check.timeout_seconds, MAX_CHECK_TIMEOUT_SECONDS);
    in_range("failure_threshold", check.failure_threshold, MAX_CHECK_FAILURE_THRESHOLD);
}

/// Checks a process's labels (Kubernetes' rules, and a prefix short enough to be stored under
/// ours); false when there are too many to check one by one.
fn check_labels(violations: &mut Violations, labels: &std::collections::BTreeMap<String, String>) -> bool {
    if labels.len() > MAX_LABELS {
        violations.add("labels", format!("must have at most {MAX_LABELS} entries, got {}", labels.len()));
        return false;
    }
    for (key, value) in labels {
        let path = format!("labels[{:?}]", shown(key));
        match label_key_rule(key) {
            Err(rule) => violations.add(path.clone(), format!("key `{}` {rule}", shown(key))),
            Ok(()) => {
                let prefix = key.split_once('/').map_or(0, |(prefix, _)| prefix.chars().count());
                if prefix > MAX_LABEL_PREFIX_CHARACTERS {
                    violations.add(
                        path.clone(),
                        format!(
                            "key `{}` must have a prefix of at most {MAX_LABEL_PREFIX_CHARACTERS} characters (Kubernetes stores it with `.label.hydroplane` added), got {prefix}",
                            shown(key)
                        ),
                    );
                }
            }
        }
        if let Err(rule) = label_value_rule(value) {
            violations.add(path, format!("value `{}` {rule}", shown(value)));
        }
    }
    true
}

fn check_encoded_size(violations: &mut Violations, spec: &ProcessSpec) {
    // Serializing plain data to JSON fails only for non-string map keys, which a spec has not.
    let size = serde_json::to_vec(spec).map_or(0, |json| json.len());
    if size > MAX_SPEC_JSON_BYTES {
        violations.add(
            "spec",
            format!("must be at most {MAX_SPEC_JSON_BYTES} bytes as JSON (192 KiB), got {size}"),
        );
    }
}

impl ContainerSpec {
    /// Checks the counts and total sizes; false when one is over its limit, in which case the
    /// entries are not checked one by one (a caller sending 100,000 of them gets one message).
    fn check_counts(&self, violations: &mut Violations) -> bool {
        let mut ok = true;
        let mut over = |field: &str, count: usize, limit: usize, what: &str| {
            if count > limit {
                violations.add(field, format!("must have at most {limit} {what}, got {count}"));
                ok = false;
            }
        };
        over("container.env", self.env.len(), MAX_ENV_ENTRIES, "entries");
        over("container.ports", self.ports.len(), MAX_PORTS, "entries");
        over("container.command", self.command.len(), MAX_COMMAND_ARGUMENTS, "arguments");
        over("container.node_selector", self.node_selector.len(), MAX_NODE_SELECTOR_ENTRIES, "entries");
        let command_bytes: usize = self.command.iter().map(String::len).sum();
        if command_bytes > MAX_COMMAND_BYTES {
            violations.add(
                "container.command",
                format!("must be at most {MAX_COMMAND_BYTES} bytes in total (128 KiB), got {command_bytes}"),
            );
            ok = false;
        }
        ok
    }

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
        let arguments = if self.command.len() > MAX_COMMAND_ARGUMENTS { 0 } else { self.command.len() };
        for (index, argument) in self.command.iter().enumerate().take(arguments) {
            if argument.contains('\0') {
                violations.add(format!("container.command[{index}]"), "must not contain NUL");
            }
        }
        if let Some(directory) = &self.working_dir {
            if !directory.starts_with('/') {
                violations
                    .add("container.working_dir", format!("`{}` is not an absolute path", shown(directory)));
            } else if directory.contains('\0') {
                violations.add("container.working_dir", "must not contain NUL");
            }
        }

        // A collection over its limit was reported as a count; its entries are not checked one by
        // one, so 100,000 of them make one message.
        let env: &[_] = if self.env.len() > MAX_ENV_ENTRIES { &[] } else { &self.env };
        let mut env_names = HashSet::with_capacity(env.len());
        for (index, var) in env.iter().enumerate() {
            let path = format!("container.env[{index}]");
            if !is_env_name(&var.name) {
                violations.add(
                    format!("{path}.name"),
                    format!(
                        "`{}` is not a valid variable name (letters, digits and '_', not starting \
                         with a digit)",
                        shown(&var.name)
                    ),
                );
            } else if !env_names.insert(var.name.as_str()) {
                violations.add(format!("{path}.name"), format!("`{}` is given twice", shown(&var.name)));
            }
            match &var.value {
                ValueOrSecret::Value(value) if value.len() > MAX_ENV_VALUE_BYTES => {
                    violations.add(
                        format!("{path}.value"),
                        format!("must be at most {MAX_ENV_VALUE_BYTES} bytes (128 KiB), got {}", value.len()),
                    );
                }
                ValueOrSecret::Value(value) if value.contains('\0') => {
                    violations.add(format!("{path}.value"), "must not contain NUL");
                }
                ValueOrSecret::Value(_) => {}
                ValueOrSecret::Secret(secret) => {
                    check_secret_reference(violations, &format!("{path}.secret"), secret)
                }
            }
        }

        // A port number may be given once per protocol (TCP 53 and UDP 53 is DNS), as Kubernetes
        // requires of a Service; the same goes for host ports.
        let ports: &[_] = if self.ports.len() > MAX_PORTS { &[] } else { &self.ports };
        let mut container_ports = HashSet::with_capacity(ports.len());
        let mut host_ports = HashSet::new();
        for (index, port) in ports.iter().enumerate() {
            let path = format!("container.ports[{index}]");
            if check_port(violations, &format!("{path}.container_port"), port.container_port)
                && !container_ports.insert((port.container_port, port.protocol))
            {
                violations.add(
                    format!("{path}.container_port"),
                    format!("port {} is given twice for {}", port.container_port, port.protocol.as_str()),
                );
            }
            if let Some(host_port) = port.host_port
                && check_port(violations, &format!("{path}.host_port"), host_port)
                && !host_ports.insert((host_port, port.protocol))
            {
                violations.add(
                    format!("{path}.host_port"),
                    format!("host port {host_port} is given twice for {}", port.protocol.as_str()),
                );
            }
        }
        // Every port of a Service has a name: the one given, or `<protocol>-<port>` (see the
        // Kubernetes manifests). The names must differ, so a given name may not be one that
        // another, unnamed port gets.
        // Each name, with whether it was given (two unnamed ports with one name are the same
        // port twice, reported above).
        let mut port_names: HashMap<String, bool> = HashMap::with_capacity(ports.len());
        for (index, port) in ports.iter().enumerate() {
            if let Some(name) = &port.name
                && let Err(rule) = check_port_name(name)
            {
                violations.add(format!("container.ports[{index}].name"), rule);
                continue;
            }
            let name = service_port_name(port.name.as_deref(), port.protocol, port.container_port);
            let given = port.name.is_some();
            let clash = match port_names.entry(name.clone()) {
                Entry::Occupied(mut earlier) => {
                    let both_unnamed = !given && !*earlier.get();
                    *earlier.get_mut() |= given;
                    !both_unnamed
                }
                Entry::Vacant(entry) => {
                    entry.insert(given);
                    false
                }
            };
            if clash {
                let field = if port.name.is_some() { "name" } else { "container_port" };
                violations.add(
                    format!("container.ports[{index}].{field}"),
                    format!("the Service port name `{name}` is given twice"),
                );
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

        let node_selector_entries =
            if self.node_selector.len() > MAX_NODE_SELECTOR_ENTRIES { 0 } else { self.node_selector.len() };
        for (key, value) in self.node_selector.iter().take(node_selector_entries) {
            let path = format!("container.node_selector[{:?}]", shown(key));
            if let Err(rule) = label_key_rule(key) {
                violations.add(path.clone(), format!("key `{}` {rule}", shown(key)));
            }
            if let Err(rule) = label_value_rule(value) {
                violations.add(path, format!("value `{}` {rule}", shown(value)));
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
        // NaN fails both comparisons, so it is refused with the rest.
        if let Some(cpu) = self.cpu_vcpu
            && !(MIN_CPU_VCPU..=MAX_CPU_VCPU).contains(&cpu)
        {
            violations.add(
                format!("{path}.cpu_vcpu"),
                format!("must be between {MIN_CPU_VCPU} and {MAX_CPU_VCPU}, got {cpu}"),
            );
        }
        if let Some(memory) = self.memory_mib
            && !(1..=MAX_MEMORY_MIB).contains(&memory)
        {
            violations.add(
                format!("{path}.memory_mib"),
                format!("must be between 1 and {MAX_MEMORY_MIB}, got {memory}"),
            );
        }
    }
}

/// The most characters of a value quoted in a violation.
const SHOWN_CHARACTERS: usize = 64;

/// A value as quoted in a violation: whole when short, else its start and its length, so that a
/// huge value makes a short message (and the message of a request stays near its size).
fn shown(value: &str) -> std::borrow::Cow<'_, str> {
    match value.char_indices().nth(SHOWN_CHARACTERS) {
        None => value.into(),
        Some((end, _)) => format!("{}... ({} bytes)", &value[..end], value.len()).into(),
    }
}

/// The name a Service port gets: the spec's name, or one made from the protocol and the port
/// (the rule of the Kubernetes manifests, which need a name once a Service has several ports).
pub fn service_port_name(name: Option<&str>, protocol: Protocol, container_port: i64) -> String {
    name.map_or_else(|| format!("{}-{container_port}", protocol.as_str()), str::to_owned)
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
            "`{}` is not a valid port name: at most 15 lower-case letters, digits and '-', \
             with a letter, no '-' at either end or twice in a row",
            shown(name)
        ))
    }
}
