//! The server's YAML settings, in the Python Hydroplane's format: `secret_store`, `runtime` and
//! `process_culling`, plus `auth`, `tls` and `limits`. Every file of `reference/eks-runtime.rst`
//! parses into these types.
//!
//! YAML is read with `serde-saphyr` (pure Rust, line and column in its errors): `serde_yaml` is
//! archived and `serde_yml` has an advisory. Unknown keys are errors, so a typo never silently
//! falls back to a default, and so is a key that does not apply to the chosen `runtime_type` or
//! `secret_store_type`.
//!
//! Every number is range-checked here, once, against [`NUMBER_RANGES`], and seconds and minutes
//! become `Duration`s here: what the rest of the server reads can no longer be out of range, so no
//! later conversion or timer can panic. Each problem is one line naming the key's full path and
//! its allowed range. Where to start: [`Settings::load`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::spec::{SecretReference, dns_label_rule};

mod tracing_section;
pub use tracing_section::{OtlpEndpoint, TracingSettings};

/// Everything the server reads from its config file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where secrets come from.
    #[serde(default)]
    pub secret_store: SecretStoreSettings,
    /// Where processes run.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// Stops processes older than a maximum age, when set.
    #[serde(default)]
    pub process_culling: Option<CullingSettings>,
    /// Bearer tokens every call must carry, when set.
    #[serde(default)]
    pub auth: Option<AuthSettings>,
    /// TLS on the gRPC port, when set.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Limits that keep one caller from exhausting the server.
    #[serde(default)]
    pub limits: LimitSettings,
    /// OTLP export of the call spans, when set.
    #[serde(default)]
    pub tracing: Option<TracingSettings>,
    /// The Prometheus metrics listener, when set.
    #[serde(default)]
    pub metrics: Option<MetricsSettings>,
}

// === Numbers and their ranges ===

/// The allowed range of one numeric key of the settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NumberRange {
    /// The key's full path, e.g. `process_culling.max_age_minutes`.
    pub key: &'static str,
    /// The smallest value allowed (excluded when `above_low`).
    pub low: f64,
    /// Whether the value must be strictly above `low` (e.g. "positive").
    pub above_low: bool,
    /// The largest value allowed.
    pub high: f64,
    /// Whether only whole numbers are allowed.
    pub whole: bool,
    /// The unit, for messages (`seconds`, `minutes`, `bytes`, or empty).
    pub unit: &'static str,
    /// When zero (and -1, client-go's spelling of "off") is allowed below `low` too, what it
    /// means (`no limit`); -1 reads as 0.
    pub zero_means: Option<&'static str>,
}

/// The environment variable that holds the local secret store's password, for scripts and
/// services. Named here, beside the settings, because `runtime.env_passthrough` must refuse it;
/// [`crate::secrets::password`] reads it.
pub const PASSWORD_ENV: &str = "HYDROPLANE_SECRET_STORE_PASSWORD";

const fn range(key: &'static str, low: f64, high: f64, unit: &'static str) -> NumberRange {
    NumberRange { key, low, above_low: false, high, whole: false, unit, zero_means: None }
}

const fn positive(key: &'static str, high: f64, unit: &'static str) -> NumberRange {
    NumberRange { key, low: 0.0, above_low: true, high, whole: false, unit, zero_means: None }
}

const fn whole(key: &'static str, low: f64, high: f64, unit: &'static str) -> NumberRange {
    NumberRange { key, low, above_low: false, high, whole: true, unit, zero_means: None }
}

/// Zero or -1 (which mean `zero_means`), or a number from `low` to `high`.
const fn zero_or_range(
    key: &'static str,
    zero_means: &'static str,
    low: f64,
    high: f64,
    unit: &'static str,
) -> NumberRange {
    NumberRange { key, low, above_low: false, high, whole: false, unit, zero_means: Some(zero_means) }
}

const STOP_GRACE: NumberRange = range("runtime.stop_grace_seconds", 0.0, 3600.0, "seconds");
const OUTPUT_BUFFER: NumberRange = whole("runtime.output_buffer_bytes", 1024.0, (1u64 << 30) as f64, "bytes");
// At least 64 KiB, so each of the two segment files holds a few records; at most a TiB.
const MAX_LOG_BYTES: NumberRange = whole("runtime.max_log_bytes", 65536.0, (1u64 << 40) as f64, "bytes");
// At most 30 days: files kept longer are an archive, not a grace period.
const LOG_RETENTION: NumberRange = range("runtime.log_retention_seconds", 0.0, 2_592_000.0, "seconds");
// The bearer token lasts 15 minutes: it must be renewed a minute before that at the latest.
const TOKEN_REFRESH: NumberRange = range("runtime.token_refresh_seconds", 1.0, 840.0, "seconds");
// 43200 seconds is the longest session STS grants.
const CREDENTIALS_RENEW_BEFORE: NumberRange =
    range("runtime.credentials_renew_before_seconds", 0.0, 43200.0, "seconds");
const SESSION_DURATION: NumberRange =
    whole("runtime.credentials.assume_role.session_duration_seconds", 900.0, 43200.0, "seconds");
// A year: anything longer is a mistake rather than a policy.
const MAX_AGE: NumberRange = positive("process_culling.max_age_minutes", 525_600.0, "minutes");
// At least 60 ms, so the culler's timer never has a zero period; at most a week.
const CULLING_INTERVAL: NumberRange =
    range("process_culling.culling_interval_minutes", 0.001, 10_080.0, "minutes");
const MAX_REQUEST_BYTES: NumberRange =
    whole("limits.max_request_bytes", 1024.0, (64u64 << 20) as f64, "bytes");
const MAX_CONCURRENT_CALLS: NumberRange = whole("limits.max_concurrent_calls", 1.0, 100_000.0, "");
const START_STOP_PER_SECOND: NumberRange = whole("limits.start_stop_per_second", 0.0, 1_000_000.0, "");
const START_STOP_BURST: NumberRange = whole("limits.start_stop_burst", 1.0, 1_000_000.0, "");
const MAX_WATCHES_PER_TOKEN: NumberRange = whole("limits.max_watches_per_token", 1.0, 1_000_000.0, "");
const MAX_WATCHES: NumberRange = whole("limits.max_watches", 1.0, 1_000_000.0, "");
// At least a second, so a client has time to send its first request; at most a day.
const IDLE_TIMEOUT: NumberRange = range("limits.idle_timeout_seconds", 1.0, 86_400.0, "seconds");
const MAX_CONNECTIONS: NumberRange = whole("limits.max_connections", 1.0, 1_000_000.0, "");
const MAX_CONNECTIONS_PER_PEER: NumberRange = whole("limits.max_connections_per_peer", 1.0, 1_000_000.0, "");
// A tenth of a second is the least a distant client can finish a handshake in; five minutes
// is already far more than any honest one needs.
const HANDSHAKE_TIMEOUT: NumberRange = range("tls.handshake_timeout_seconds", 0.1, 300.0, "seconds");
// Below one request every ten seconds the index could not even keep its watches.
const API_QPS: NumberRange =
    zero_or_range("runtime.api_qps", "no limit", 0.1, 100_000.0, "requests per second");
const API_BURST: NumberRange = whole("runtime.api_burst", 1.0, 100_000.0, "requests");

/// A settings file that sets `key` (a full path of [`NUMBER_RANGES`]) to `value`, with what
/// that key needs around it: for the tests that try every key, and for examples.
pub fn yaml_setting(key: &str, value: &str) -> String {
    let (section, name) = key.split_once('.').expect("a full path");
    match (section, name) {
        (
            "runtime",
            "stop_grace_seconds" | "output_buffer_bytes" | "max_log_bytes" | "log_retention_seconds",
        ) => {
            format!("runtime:\n  runtime_type: local\n  {name}: {value}\n")
        }
        ("runtime", "credentials.assume_role.session_duration_seconds") => format!(
            "runtime:\n  runtime_type: eks\n  cluster_name: c\n  region: us-west-2\n  credentials:\n    \
             access_key:\n      access_key_id: {{secret_name: s, key: a}}\n      \
             secret_access_key: {{secret_name: s, key: b}}\n    assume_role:\n      \
             role_arn: arn:aws:iam::1:role/r\n      session_duration_seconds: {value}\n"
        ),
        ("runtime", _) => {
            format!(
                "runtime:\n  runtime_type: eks\n  cluster_name: c\n  region: us-west-2\n  {name}: {value}\n"
            )
        }
        ("tls", _) => format!("tls:\n  cert_file: server.pem\n  key_file: server.key\n  {name}: {value}\n"),
        ("process_culling", "culling_interval_minutes") => {
            format!("process_culling:\n  max_age_minutes: 10\n  {name}: {value}\n")
        }
        _ => format!("{section}:\n  {name}: {value}\n"),
    }
}

/// Every numeric key of the settings with its allowed range, for the README and the tests.
pub const NUMBER_RANGES: &[NumberRange] = &[
    STOP_GRACE,
    OUTPUT_BUFFER,
    MAX_LOG_BYTES,
    LOG_RETENTION,
    TOKEN_REFRESH,
    CREDENTIALS_RENEW_BEFORE,
    SESSION_DURATION,
    MAX_AGE,
    CULLING_INTERVAL,
    MAX_REQUEST_BYTES,
    MAX_CONCURRENT_CALLS,
    START_STOP_PER_SECOND,
    START_STOP_BURST,
    MAX_WATCHES_PER_TOKEN,
    MAX_WATCHES,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
    HANDSHAKE_TIMEOUT,
    API_QPS,
    API_BURST,
];

impl NumberRange {
    /// The value when it is in range; otherwise one line naming the key and the range.
    pub fn check(&self, value: f64) -> Result<f64, String> {
        if self.zero_means.is_some() && (value == 0.0 || value == -1.0) {
            return Ok(0.0);
        }
        let above_low = if self.above_low { value > self.low } else { value >= self.low };
        // NaN fails every comparison, so it is refused with the rest.
        if above_low && value <= self.high && (!self.whole || value.fract() == 0.0) {
            return Ok(value);
        }
        let unit = if self.unit.is_empty() { String::new() } else { format!(" {}", self.unit) };
        let kind = if self.whole { "a whole number " } else { "" };
        let bounds = if self.above_low {
            format!("positive and at most {}", show_number(self.high))
        } else {
            format!("between {} and {}", show_number(self.low), show_number(self.high))
        };
        let bounds = match self.zero_means {
            Some(meaning) => format!("0 or -1 ({meaning}) or {bounds}"),
            None => bounds,
        };
        Err(format!("{} must be {kind}{bounds}{unit}, got {}", self.key, show_number(value)))
    }

    /// The value as a whole number, when it is in range (the range is within `u64`).
    fn check_whole(&self, number: Option<Number>, default: u64) -> Result<u64, String> {
        match number {
            None => Ok(default),
            // In range, whole and at most 2^40: the conversion is exact.
            Some(Number(value)) => self.check(value).map(|value| value as u64),
        }
    }

    /// The value as a `Duration` of `unit_seconds` each, when it is in range.
    fn check_duration(
        &self,
        number: Option<Number>,
        default: f64,
        unit_seconds: f64,
    ) -> Result<Duration, String> {
        let value = match number {
            None => default,
            Some(Number(value)) => self.check(value)?,
        };
        // Finite, not negative and at most a year of seconds: the conversion cannot fail.
        Ok(Duration::try_from_secs_f64(value * unit_seconds).unwrap_or_default())
    }
}

/// A number as short as it reads well: `1e300`, not three hundred digits.
fn show_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude != 0.0 && magnitude.is_finite() && !(1e-4..1e15).contains(&magnitude) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}

/// A number as written in the file, whole or not. Every numeric key is read as one, so that a
/// value out of range (negative, huge, fractional where a count is asked for, NaN) reaches
/// [`NumberRange::check`], which names the key, instead of a type error that names none.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Number(f64);

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Number, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Number;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a number")
            }
            fn visit_f64<E>(self, value: f64) -> Result<Number, E> {
                Ok(Number(value))
            }
            fn visit_i64<E>(self, value: i64) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
            fn visit_u64<E>(self, value: u64) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
            fn visit_i128<E>(self, value: i128) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
            fn visit_u128<E>(self, value: u128) -> Result<Number, E> {
                Ok(Number(value as f64))
            }
        }
        deserializer.deserialize_f64(Visitor)
    }
}

// === Security and limits ===

/// Who may call: the tokens file (`hydroplane token create` writes it), re-read on change.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The YAML file of token names, hashes, scopes and groups.
    pub tokens_file: PathBuf,
}

/// TLS on the gRPC port; the files are re-read when they change on disk.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawTls")]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM); when set, every client must present a certificate they signed.
    pub client_ca_file: Option<PathBuf>,
    /// How long a client may take to finish its TLS handshake, once it has sent its first byte.
    pub handshake_timeout: Duration,
}

impl TlsSettings {
    /// How long a TLS handshake may take when the settings say nothing.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// TLS from these files, with the default handshake timeout.
    pub fn from_files(cert_file: PathBuf, key_file: PathBuf, client_ca_file: Option<PathBuf>) -> TlsSettings {
        TlsSettings {
            cert_file,
            key_file,
            client_ca_file,
            handshake_timeout: Self::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// `tls` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    #[serde(default)]
    client_ca_file: Option<PathBuf>,
    handshake_timeout_seconds: Option<Number>,
}

impl TryFrom<RawTls> for TlsSettings {
    type Error = String;

    fn try_from(raw: RawTls) -> Result<TlsSettings, String> {
        let default = TlsSettings::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64();
        Ok(TlsSettings {
            cert_file: raw.cert_file,
            key_file: raw.key_file,
            client_ca_file: raw.client_ca_file,
            handshake_timeout: HANDSHAKE_TIMEOUT.check_duration(
                raw.handshake_timeout_seconds,
                default,
                1.0,
            )?,
        })
    }
}

/// Limits on what callers may ask of the server. Every number is range-checked at load.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawLimits")]
pub struct LimitSettings {
    /// The largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// How many calls (Watch streams excepted, once open) run at once; more are shed.
    pub max_concurrent_calls: usize,
    /// Start and Stop calls per second per token (0: no limit).
    pub start_stop_per_second: u32,
    /// How many Start and Stop calls a token may make in a burst above that rate.
    pub start_stop_burst: u32,
    /// Open Watch streams per token.
    pub max_watches_per_token: usize,
    /// Open Watch streams in total.
    pub max_watches: usize,
    /// How long a connection may stay open with no call in progress: before its first request
    /// and between requests (an open stream, even a quiet Watch, is a call in progress).
    pub idle_timeout: Duration,
    /// Open connections in total, over every listener (the metrics listener's too); a newcomer
    /// beyond it is closed at once. Lowered at start to what the open-files limit allows.
    pub max_connections: usize,
    /// Open connections from one peer (an IP address, or a user on a Unix socket).
    pub max_connections_per_peer: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_request_bytes: 1 << 20,
            max_concurrent_calls: 512,
            start_stop_per_second: 100,
            start_stop_burst: 200,
            max_watches_per_token: 256,
            max_watches: 4096,
            idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_connections_per_peer: 1_000,
        }
    }
}

/// `limits` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_request_bytes: Option<Number>,
    max_concurrent_calls: Option<Number>,
    start_stop_per_second: Option<Number>,
    start_stop_burst: Option<Number>,
    max_watches_per_token: Option<Number>,
    max_watches: Option<Number>,
    idle_timeout_seconds: Option<Number>,
    max_connections: Option<Number>,
    max_connections_per_peer: Option<Number>,
}

impl TryFrom<RawLimits> for LimitSettings {
    type Error = String;

    fn try_from(raw: RawLimits) -> Result<LimitSettings, String> {
        let default = LimitSettings::default();
        // Every range ends far below `u32::MAX`, so the narrowing conversions are exact.
        let size = |range: NumberRange, number, default: usize| {
            range.check_whole(number, default as u64).map(|value| value as usize)
        };
        let count = |range: NumberRange, number, default: u32| {
            range.check_whole(number, u64::from(default)).map(|value| value as u32)
        };
        Ok(LimitSettings {
            max_request_bytes: size(MAX_REQUEST_BYTES, raw.max_request_bytes, default.max_request_bytes)?,
            max_concurrent_calls: size(
                MAX_CONCURRENT_CALLS,
                raw.max_concurrent_calls,
                default.max_concurrent_calls,
            )?,
            start_stop_per_second: count(
                START_STOP_PER_SECOND,
                raw.start_stop_per_second,
                default.start_stop_per_second,
            )?,
            start_stop_burst: count(START_STOP_BURST, raw.start_stop_burst, default.start_stop_burst)?,
            max_watches_per_token: size(
                MAX_WATCHES_PER_TOKEN,
                raw.max_watches_per_token,
                default.max_watches_per_token,
            )?,
            max_watches: size(MAX_WATCHES, raw.max_watches, default.max_watches)?,
            idle_timeout: IDLE_TIMEOUT.check_duration(
                raw.idle_timeout_seconds,
                default.idle_timeout.as_secs_f64(),
                1.0,
            )?,
            max_connections: size(MAX_CONNECTIONS, raw.max_connections, default.max_connections)?,
            max_connections_per_peer: size(
                MAX_CONNECTIONS_PER_PEER,
                raw.max_connections_per_peer,
                default.max_connections_per_peer,
            )?,
        })
    }
}

// === The secret store ===

/// The secret store, chosen by `secret_store_type`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(try_from = "RawSecretStore")]
pub enum SecretStoreSettings {
    /// No secret store: specs that reference secrets are refused.
    #[default]
    None,
    /// A directory of encrypted files, opened with a password.
    Local {
        /// The store's directory; `~` is the user's home.
        store_location: PathBuf,
    },
}

/// The default directory of the local secret store, as in Hydroplane.
pub fn default_store_location() -> PathBuf {
    PathBuf::from("~/.hydro_secrets")
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum SecretStoreType {
    None,
    Local,
}

/// `secret_store` as written: read flat, so that a key of another type is named as such.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretStore {
    secret_store_type: SecretStoreType,
    store_location: Option<PathBuf>,
}

impl TryFrom<RawSecretStore> for SecretStoreSettings {
    type Error = String;

    fn try_from(raw: RawSecretStore) -> Result<SecretStoreSettings, String> {
        match raw.secret_store_type {
            SecretStoreType::None if raw.store_location.is_some() => {
                Err("secret_store.store_location does not apply to secret_store_type: none (only to local)"
                    .to_owned())
            }
            SecretStoreType::None => Ok(SecretStoreSettings::None),
            SecretStoreType::Local => Ok(SecretStoreSettings::Local {
                store_location: raw.store_location.unwrap_or_else(default_store_location),
            }),
        }
    }
}

// === Runtimes ===

/// The runtime, chosen by `runtime_type`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawRuntime")]
pub enum RuntimeSettings {
    /// Host processes, embedded in the server.
    Local(LocalRuntimeSettings),
    /// Any Kubernetes cluster, from a kubeconfig or the in-cluster config.
    Kubernetes(KubernetesSettings),
    /// Amazon EKS (boxed: it is much larger than the others).
    Eks(Box<EksSettings>),
    /// Containers on one Docker Engine (or Podman's compatible socket).
    Docker(DockerRuntimeSettings),
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings::Local(LocalRuntimeSettings::default())
    }
}

impl RuntimeSettings {
    /// The `runtime_type` spelling, for messages.
    pub fn runtime_type(&self) -> &'static str {
        match self {
            RuntimeSettings::Local(_) => "local",
            RuntimeSettings::Kubernetes(_) => "kubernetes",
            RuntimeSettings::Eks(_) => "eks",
            RuntimeSettings::Docker(_) => "docker",
        }
    }
}

/// Settings of the `docker` runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerRuntimeSettings {
    /// The engine's address (`runtime.docker_host`): `unix://PATH`, `tcp://HOST:PORT` (TLS with
    /// `docker_cert_path`, or `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` as for the docker CLI);
    /// `None`: `DOCKER_HOST`, else the engine's default socket.
    pub docker_host: Option<String>,
    /// The directory of `ca.pem`, `cert.pem` and `key.pem` for a `tcp://` engine that verifies
    /// its clients (`runtime.docker_cert_path`); set, the engine is reached with TLS.
    pub docker_cert_path: Option<PathBuf>,
    /// The user-defined network every container joins (`runtime.network`), where processes reach
    /// each other by name; made when missing. Containers are also labelled with it, and a server
    /// lists only the containers of its own network.
    pub network: String,
    /// How long a stopped container gets between SIGTERM and SIGKILL (`stop_grace_seconds`).
    pub stop_grace: Duration,
}

/// The network of the docker runtime when `runtime.network` is not set (the Python Hydroplane's).
pub const DEFAULT_DOCKER_NETWORK: &str = "hydroplane";

impl Default for DockerRuntimeSettings {
    fn default() -> Self {
        DockerRuntimeSettings {
            docker_host: None,
            docker_cert_path: None,
            network: DEFAULT_DOCKER_NETWORK.to_owned(),
            stop_grace: Duration::from_secs(DEFAULT_STOP_GRACE_SECONDS as u64),
        }
    }
}

/// Settings of the `local` runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalRuntimeSettings {
    /// How long a stopped process gets between SIGTERM and SIGKILL (`stop_grace_seconds`).
    pub stop_grace: Duration,
    /// The most output kept per process in memory, in bytes.
    pub output_buffer_bytes: usize,
    /// Where processes' output is kept on disk (`log_dir`, as written: `~` not yet expanded).
    pub log_dir: PathBuf,
    /// The most disk one process's output takes, in bytes (`max_log_bytes`).
    pub max_log_bytes: u64,
    /// How long a stopped process's files stay on disk (`log_retention_seconds`; zero: removed
    /// when the Stop completes).
    pub log_retention: Duration,
    /// The server's environment variables a process inherits (`env_passthrough`); default
    /// [`DEFAULT_ENV_PASSTHROUGH`].
    pub env_passthrough: Vec<String>,
    /// The user processes run as when no `run_as_by_group` entry matches (`run_as`); `None`:
    /// the server's own user.
    pub run_as: Option<RunAsSetting>,
    /// The user of each group's processes, first matching pattern first (`run_as_by_group`).
    pub run_as_by_group: RunAsByGroup,
}

/// A Unix user (and optionally group) to run processes as: `user` or `user:group`, by name or
/// number; without a group, the user's primary group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAsSetting {
    /// The user's name or id.
    pub user: String,
    /// The group's name or id, when given.
    pub group: Option<String>,
}

impl RunAsSetting {
    /// Parses `user` or `user:group`; `key` names the setting in the error.
    fn parse(text: &str, key: &str) -> Result<RunAsSetting, String> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        let valid = |part: &str| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !valid(user) || group.is_some_and(|group| !valid(group)) {
            return Err(format!(
                "{key} must be `user` or `user:group` (names or ids of letters, digits, `.`, `_` and `-`), got `{text}`"
            ));
        }
        Ok(RunAsSetting { user: user.to_owned(), group: group.map(str::to_owned) })
    }
}

impl std::fmt::Display for RunAsSetting {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.group {
            Some(group) => write!(formatter, "{}:{group}", self.user),
            None => formatter.write_str(&self.user),
        }
    }
}

/// The server's variables a local process inherits when `runtime.env_passthrough` is not set:
/// what a program needs to find its tools and speak the right language, none of the server's own
/// settings or credentials.
pub const DEFAULT_ENV_PASSTHROUGH: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// `runtime.run_as_by_group` as written: a mapping whose order is kept (the first match wins).
#[derive(Default)]
struct OrderedMapping(Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedMapping {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedMapping;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a mapping of group patterns to users")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedMapping, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(OrderedMapping(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The users of each group's processes, first matching pattern first.
pub type RunAsByGroup = Vec<(crate::security::access::GroupPattern, RunAsSetting)>;

/// Checks the local runtime's user and environment keys.
fn check_run_as(
    env_passthrough: Option<Vec<String>>,
    run_as: Option<String>,
    run_as_by_group: Option<OrderedMapping>,
) -> Result<(Vec<String>, Option<RunAsSetting>, RunAsByGroup), String> {
    let env_passthrough = match env_passthrough {
        None => DEFAULT_ENV_PASSTHROUGH.iter().map(|name| (*name).to_owned()).collect(),
        Some(names) => {
            for name in &names {
                if name.is_empty() || name.contains(['=', '\0']) {
                    return Err(format!(
                        "runtime.env_passthrough names environment variables; `{name}` is not a variable's name"
                    ));
                }
                if name == PASSWORD_ENV {
                    return Err(format!(
                        "runtime.env_passthrough must not name {name}: the secret store's password never reaches a process"
                    ));
                }
            }
            names
        }
    };
    let run_as = run_as.map(|text| RunAsSetting::parse(&text, "runtime.run_as")).transpose()?;
    let mut by_group = Vec::new();
    for (pattern, user) in run_as_by_group.unwrap_or_default().0 {
        let pattern = pattern.parse().map_err(|error| format!("runtime.run_as_by_group: {error}"))?;
        let user = RunAsSetting::parse(&user, &format!("runtime.run_as_by_group.{pattern}"))?;
        by_group.push((pattern, user));
    }
    Ok((env_passthrough, run_as, by_group))
}

impl Default for LocalRuntimeSettings {
    fn default() -> Self {
        LocalRuntimeSettings {
            stop_grace: Duration::from_secs(DEFAULT_STOP_GRACE_SECONDS as u64),
            output_buffer_bytes: DEFAULT_OUTPUT_BUFFER_BYTES as usize,
            log_dir: default_log_dir(),
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            log_retention: Duration::from_secs(DEFAULT_LOG_RETENTION_SECONDS as u64),
            env_passthrough: DEFAULT_ENV_PASSTHROUGH.iter().map(|name| (*name).to_owned()).collect(),
            run_as: None,
            run_as_by_group: Vec::new(),
        }
    }
}

impl LocalRuntimeSettings {
    /// How long a stopped process gets between SIGTERM and SIGKILL.
    pub fn stop_grace(&self) -> Duration {
        self.stop_grace
    }
}

/// Where the local runtime keeps output when `runtime.log_dir` is not set: `logs` in the
/// [`default_state_dir`].
pub fn default_log_dir() -> PathBuf {
    default_state_dir().join("logs")
}

/// The server's own state: `hydroplane` in the XDG state directory (`$XDG_STATE_HOME`, else
/// `~/.local/state`), else a directory of this user's in the temporary directory.
pub fn default_state_dir() -> PathBuf {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(state) = non_empty("XDG_STATE_HOME") {
        return state.join("hydroplane");
    }
    if let Some(home) = non_empty("HOME") {
        return home.join(".local/state/hydroplane");
    }
    let temporary = non_empty("TMPDIR").unwrap_or_else(|| PathBuf::from("/tmp"));
    temporary.join(format!("hydroplane-{}", nix::unistd::getuid()))
}

/// The namespace of the Kubernetes runtimes when the settings name none.
pub const DEFAULT_NAMESPACE: &str = "default";

const DEFAULT_STOP_GRACE_SECONDS: f64 = 5.0;
const DEFAULT_OUTPUT_BUFFER_BYTES: u64 = 1 << 20;
const DEFAULT_MAX_LOG_BYTES: u64 = 16 << 20;
const DEFAULT_LOG_RETENTION_SECONDS: f64 = 0.0;
const DEFAULT_TOKEN_REFRESH_SECONDS: f64 = 600.0;
const DEFAULT_CREDENTIALS_RENEW_BEFORE_SECONDS: f64 = 300.0;
const DEFAULT_CULLING_INTERVAL_MINUTES: f64 = 1.0;
// kube-scheduler's defaults, a control-plane component that also writes once per Pod it places:
// a Start costs 2 to 4 requests, so about 30 Starts go at once without waiting and a long burst
// goes at 15 to 25 a second, a small share of a real API server's capacity. client-go's own 5/10
// would make a hundred Starts wait a minute; kubectl's 50/300 lets 300 requests (and as many
// HTTP/1 connections) land at the same moment.
const DEFAULT_API_QPS: f64 = 50.0;
const DEFAULT_API_BURST: u32 = 100;

/// How fast the Kubernetes runtimes call the API server (`runtime.api_qps`, `runtime.api_burst`):
/// every request waits for a token of this bucket, as client-go's `QPS` and `Burst` do. With
/// neither key set the limit is automatic: this bucket only until the API server's answers show
/// that it protects itself with API Priority and Fairness, then none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApiRateSettings {
    /// Requests per second on average; zero: no limit.
    pub qps: f64,
    /// How many requests may go at once, above that rate, after a quiet while.
    pub burst: u32,
    /// Neither key was set: the bucket is dropped once the API server reports APF.
    pub automatic: bool,
}

impl Default for ApiRateSettings {
    fn default() -> Self {
        ApiRateSettings { qps: DEFAULT_API_QPS, burst: DEFAULT_API_BURST, automatic: true }
    }
}

impl ApiRateSettings {
    /// The settings as written, range-checked, with the defaults for what is not.
    fn check(qps: Option<Number>, burst: Option<Number>) -> Result<ApiRateSettings, String> {
        let automatic = qps.is_none() && burst.is_none();
        let qps = match qps {
            Some(Number(value)) => API_QPS.check(value)?,
            None => DEFAULT_API_QPS,
        };
        // At most 100000: the conversion is exact.
        let burst = API_BURST.check_whole(burst, u64::from(DEFAULT_API_BURST))? as u32;
        Ok(ApiRateSettings { qps, burst, automatic })
    }
}

/// How the Kubernetes runtimes make a public process (`has_public_ip`) reachable from outside
/// the cluster (`runtime.public_exposure`).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum PublicExposure {
    /// A NodePort Service; the address is the ExternalIP of the Pod's node and the NodePort
    /// (the Hydroplane guide's way, and the default). NodePorts are finite: 2,768 a cluster by
    /// default.
    #[default]
    NodePort,
    /// A LoadBalancer Service per public process, with these annotations (e.g. for the AWS Load
    /// Balancer Controller's NLB); the address is the load balancer's, from the Service's status.
    LoadBalancer {
        /// `runtime.load_balancer_annotations`, put on each such Service.
        annotations: BTreeMap<String, String>,
    },
    /// Not exposed: a public process gets a ClusterIP Service like any other.
    None,
}

/// `runtime.public_exposure` as written.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawExposure {
    NodePort,
    LoadBalancer,
    None,
}

impl PublicExposure {
    /// The setting as written, with its annotations (only with `load_balancer`).
    fn check(
        exposure: Option<RawExposure>,
        annotations: Option<BTreeMap<String, String>>,
    ) -> Result<PublicExposure, String> {
        match (exposure.unwrap_or(RawExposure::NodePort), annotations) {
            (RawExposure::LoadBalancer, annotations) => {
                Ok(PublicExposure::LoadBalancer { annotations: annotations.unwrap_or_default() })
            }
            (_, Some(_)) => Err(
                "runtime.load_balancer_annotations applies only with runtime.public_exposure: load_balancer"
                    .to_owned(),
            ),
            (RawExposure::NodePort, None) => Ok(PublicExposure::NodePort),
            (RawExposure::None, None) => Ok(PublicExposure::None),
        }
    }
}

/// Settings of the `kubernetes` runtime.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KubernetesSettings {
    /// The namespace processes live in (a DNS-1123 label); `default` when unset.
    pub namespace: Option<String>,
    /// A kubeconfig file; the in-cluster config, then `~/.kube/config`, when unset.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; its current context when unset.
    pub context: Option<String>,
    /// How fast the API server is called.
    pub api_rate: ApiRateSettings,
    /// How public processes are reached.
    pub public_exposure: PublicExposure,
}

impl KubernetesSettings {
    /// The namespace processes live in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// Settings of the `eks` runtime, as in the Hydroplane EKS guide.
#[derive(Clone, Debug, PartialEq)]
pub struct EksSettings {
    /// The EKS cluster's name.
    pub cluster_name: String,
    /// The AWS region of the cluster.
    pub region: String,
    /// The namespace processes live in (a DNS-1123 label); `default` when unset.
    pub namespace: Option<String>,
    /// How to authenticate with AWS; the default credential chain when unset.
    pub credentials: Option<AwsCredentialsSettings>,
    /// An STS endpoint instead of the region's (a private VPC endpoint, or a test's).
    pub sts_endpoint: Option<String>,
    /// An EKS endpoint instead of the region's.
    pub eks_endpoint: Option<String>,
    /// The cluster's API server URL; with `certificate_authority`, skips DescribeCluster.
    pub endpoint: Option<String>,
    /// The cluster's CA: base64 of the PEM, as DescribeCluster returns it.
    pub certificate_authority: Option<String>,
    /// How often the bearer token is renewed (`token_refresh_seconds`; it is valid for 15
    /// minutes); default 600 seconds.
    pub token_refresh: Duration,
    /// How long before they expire temporary credentials are renewed
    /// (`credentials_renew_before_seconds`); default 300 seconds.
    pub credentials_renew_before: Duration,
    /// How fast the API server is called.
    pub api_rate: ApiRateSettings,
    /// How public processes are reached.
    pub public_exposure: PublicExposure,
}

impl EksSettings {
    /// The namespace processes live in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// How often the bearer token is renewed.
    pub fn token_refresh(&self) -> Duration {
        self.token_refresh
    }

    /// How long before they expire temporary credentials are renewed.
    pub fn credentials_renew_before(&self) -> Duration {
        self.credentials_renew_before
    }
}

#[derive(Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RuntimeType {
    Local,
    Kubernetes,
    Eks,
    Docker,
}

/// `runtime` as written: one flat mapping, so that a key of another runtime type is named as
/// such rather than as unknown, and every number is checked with its full path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    runtime_type: RuntimeType,
    stop_grace_seconds: Option<Number>,
    output_buffer_bytes: Option<Number>,
    log_dir: Option<PathBuf>,
    max_log_bytes: Option<Number>,
    log_retention_seconds: Option<Number>,
    env_passthrough: Option<Vec<String>>,
    run_as: Option<String>,
    run_as_by_group: Option<OrderedMapping>,
    namespace: Option<String>,
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    cluster_name: Option<String>,
    region: Option<String>,
    credentials: Option<AwsCredentialsSettings>,
    sts_endpoint: Option<String>,
    eks_endpoint: Option<String>,
    endpoint: Option<String>,
    certificate_authority: Option<String>,
    token_refresh_seconds: Option<Number>,
    credentials_renew_before_seconds: Option<Number>,
    api_qps: Option<Number>,
    api_burst: Option<Number>,
    public_exposure: Option<RawExposure>,
    load_balancer_annotations: Option<BTreeMap<String, String>>,
    docker_host: Option<String>,
    docker_cert_path: Option<PathBuf>,
    network: Option<String>,
}

impl RawRuntime {
    /// The keys given, each with the runtime types it applies to.
    fn keys_given(&self) -> Vec<(&'static str, &'static [RuntimeType])> {
        use RuntimeType::{Docker, Eks, Kubernetes, Local};
        let keys: [(&'static str, bool, &'static [RuntimeType]); 27] = [
            ("stop_grace_seconds", self.stop_grace_seconds.is_some(), &[Local, Docker]),
            ("output_buffer_bytes", self.output_buffer_bytes.is_some(), &[Local]),
            ("log_dir", self.log_dir.is_some(), &[Local]),
            ("max_log_bytes", self.max_log_bytes.is_some(), &[Local]),
            ("log_retention_seconds", self.log_retention_seconds.is_some(), &[Local]),
            ("env_passthrough", self.env_passthrough.is_some(), &[Local]),
            ("run_as", self.run_as.is_some(), &[Local]),
            ("run_as_by_group", self.run_as_by_group.is_some(), &[Local]),
            ("namespace", self.namespace.is_some(), &[Kubernetes, Eks]),
            ("kubeconfig", self.kubeconfig.is_some(), &[Kubernetes]),
            ("context", self.context.is_some(), &[Kubernetes]),
            ("cluster_name", self.cluster_name.is_some(), &[Eks]),
            ("region", self.region.is_some(), &[Eks]),
            ("credentials", self.credentials.is_some(), &[Eks]),
            ("sts_endpoint", self.sts_endpoint.is_some(), &[Eks]),
            ("eks_endpoint", self.eks_endpoint.is_some(), &[Eks]),
            ("endpoint", self.endpoint.is_some(), &[Eks]),
            ("certificate_authority", self.certificate_authority.is_some(), &[Eks]),
            ("token_refresh_seconds", self.token_refresh_seconds.is_some(), &[Eks]),
            ("credentials_renew_before_seconds", self.credentials_renew_before_seconds.is_some(), &[Eks]),
            ("api_qps", self.api_qps.is_some(), &[Kubernetes, Eks]),
            ("api_burst", self.api_burst.is_some(), &[Kubernetes, Eks]),
            ("public_exposure", self.public_exposure.is_some(), &[Kubernetes, Eks]),
            ("load_balancer_annotations", self.load_balancer_annotations.is_some(), &[Kubernetes, Eks]),
            ("docker_host", self.docker_host.is_some(), &[Docker]),
            ("docker_cert_path", self.docker_cert_path.is_some(), &[Docker]),
            ("network", self.network.is_some(), &[Docker]),
        ];
        keys.into_iter().filter(|(_, given, _)| *given).map(|(key, _, types)| (key, types)).collect()
    }
}

fn runtime_type_name(runtime_type: RuntimeType) -> &'static str {
    match runtime_type {
        RuntimeType::Local => "local",
        RuntimeType::Kubernetes => "kubernetes",
        RuntimeType::Eks => "eks",
        RuntimeType::Docker => "docker",
    }
}

fn check_namespace(namespace: &Option<String>) -> Result<(), String> {
    match namespace {
        Some(namespace) => dns_label_rule(namespace).map_err(|rule| format!("runtime.namespace {rule}")),
        None => Ok(()),
    }
}

/// The names Docker accepts for a network: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn docker_network_rule(network: &str) -> Result<(), String> {
    let mut characters = network.chars();
    let first_fits = characters.next().is_some_and(|first| first.is_ascii_alphanumeric());
    if first_fits && characters.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Ok(());
    }
    Err(format!(
        "runtime.network `{network}` is not a Docker network name (a letter or digit, then letters, digits, `_`, `.` or `-`)"
    ))
}

fn required(value: Option<String>, key: &str) -> Result<String, String> {
    value.ok_or_else(|| format!("runtime.{key} is required for runtime_type: eks"))
}

impl TryFrom<RawRuntime> for RuntimeSettings {
    type Error = String;

    fn try_from(raw: RawRuntime) -> Result<RuntimeSettings, String> {
        let chosen = raw.runtime_type;
        for (key, applies_to) in raw.keys_given() {
            if !applies_to.contains(&chosen) {
                let types: Vec<&str> = applies_to.iter().map(|kind| runtime_type_name(*kind)).collect();
                return Err(format!(
                    "runtime.{key} does not apply to runtime_type: {} (only to {})",
                    runtime_type_name(chosen),
                    types.join(" and ")
                ));
            }
        }
        match chosen {
            RuntimeType::Local => {
                let (env_passthrough, run_as, run_as_by_group) =
                    check_run_as(raw.env_passthrough, raw.run_as, raw.run_as_by_group)?;
                Ok(RuntimeSettings::Local(LocalRuntimeSettings {
                    stop_grace: STOP_GRACE.check_duration(
                        raw.stop_grace_seconds,
                        DEFAULT_STOP_GRACE_SECONDS,
                        1.0,
                    )?,
                    output_buffer_bytes: OUTPUT_BUFFER
                        .check_whole(raw.output_buffer_bytes, DEFAULT_OUTPUT_BUFFER_BYTES)?
                        as usize,
                    log_dir: match raw.log_dir {
                        Some(log_dir) if log_dir.as_os_str().is_empty() => {
                            return Err(
                                "runtime.log_dir must be a directory's path, got an empty one".to_owned()
                            );
                        }
                        Some(log_dir) => log_dir,
                        None => default_log_dir(),
                    },
                    max_log_bytes: MAX_LOG_BYTES.check_whole(raw.max_log_bytes, DEFAULT_MAX_LOG_BYTES)?,
                    log_retention: LOG_RETENTION.check_duration(
                        raw.log_retention_seconds,
                        DEFAULT_LOG_RETENTION_SECONDS,
                        1.0,
                    )?,
                    env_passthrough,
                    run_as,
                    run_as_by_group,
                }))
            }
            RuntimeType::Docker => Ok(RuntimeSettings::Docker(DockerRuntimeSettings {
                docker_host: match raw.docker_host {
                    Some(host) if host.trim().is_empty() => {
                        return Err("runtime.docker_host must be an address (unix:///var/run/docker.sock, tcp://HOST:2376), got an empty one".to_owned());
                    }
                    host => host,
                },
                docker_cert_path: raw.docker_cert_path,
                network: match raw.network {
                    Some(network) => {
                        docker_network_rule(&network)?;
                        network
                    }
                    None => DEFAULT_DOCKER_NETWORK.to_owned(),
                },
                stop_grace: STOP_GRACE.check_duration(
                    raw.stop_grace_seconds,
                    DEFAULT_STOP_GRACE_SECONDS,
                    1.0,
                )?,
            })),
            RuntimeType::Kubernetes => {
                check_namespace(&raw.namespace)?;
                Ok(RuntimeSettings::Kubernetes(KubernetesSettings {
                    namespace: raw.namespace,
                    kubeconfig: raw.kubeconfig,
                    context: raw.context,
                    api_rate: ApiRateSettings::check(raw.api_qps, raw.api_burst)?,
                    public_exposure: PublicExposure::check(
                        raw.public_exposure,
                        raw.load_balancer_annotations,
                    )?,
                }))
            }
            RuntimeType::Eks => {
                check_namespace(&raw.namespace)?;
                if raw.endpoint.is_some() != raw.certificate_authority.is_some() {
                    return Err("runtime.endpoint and runtime.certificate_authority go together".to_owned());
                }
                Ok(RuntimeSettings::Eks(Box::new(EksSettings {
                    cluster_name: required(raw.cluster_name, "cluster_name")?,
                    region: required(raw.region, "region")?,
                    namespace: raw.namespace,
                    credentials: raw.credentials,
                    sts_endpoint: raw.sts_endpoint,
                    eks_endpoint: raw.eks_endpoint,
                    endpoint: raw.endpoint,
                    certificate_authority: raw.certificate_authority,
                    token_refresh: TOKEN_REFRESH.check_duration(
                        raw.token_refresh_seconds,
                        DEFAULT_TOKEN_REFRESH_SECONDS,
                        1.0,
                    )?,
                    credentials_renew_before: CREDENTIALS_RENEW_BEFORE.check_duration(
                        raw.credentials_renew_before_seconds,
                        DEFAULT_CREDENTIALS_RENEW_BEFORE_SECONDS,
                        1.0,
                    )?,
                    api_rate: ApiRateSettings::check(raw.api_qps, raw.api_burst)?,
                    public_exposure: PublicExposure::check(
                        raw.public_exposure,
                        raw.load_balancer_annotations,
                    )?,
                })))
            }
        }
    }
}

/// AWS credentials: access keys from the secret store, optionally used to assume a role.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentialsSettings {
    /// The access key pair.
    pub access_key: AccessKeySettings,
    /// A role to assume with those keys.
    #[serde(default)]
    pub assume_role: Option<AssumeRoleSettings>,
}

/// An AWS access key pair, as secret references.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeySettings {
    /// Where the access key id is kept.
    pub access_key_id: SecretReference,
    /// Where the secret access key is kept.
    pub secret_access_key: SecretReference,
}

/// An IAM role to assume through STS.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawAssumeRole")]
pub struct AssumeRoleSettings {
    /// The role's ARN.
    pub role_arn: String,
    /// The external id the role's trust policy asks for, if any.
    pub external_id: Option<String>,
    /// The session name shown in CloudTrail.
    pub session_name: Option<String>,
    /// How long the temporary credentials last (900..43200 seconds).
    pub session_duration_seconds: Option<u32>,
}

/// `assume_role` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssumeRole {
    role_arn: String,
    external_id: Option<String>,
    session_name: Option<String>,
    session_duration_seconds: Option<Number>,
}

impl TryFrom<RawAssumeRole> for AssumeRoleSettings {
    type Error = String;

    fn try_from(raw: RawAssumeRole) -> Result<AssumeRoleSettings, String> {
        let session_duration_seconds = match raw.session_duration_seconds {
            // At most 43200: the conversion is exact.
            Some(Number(value)) => Some(SESSION_DURATION.check(value)? as u32),
            None => None,
        };
        Ok(AssumeRoleSettings {
            role_arn: raw.role_arn,
            external_id: raw.external_id,
            session_name: raw.session_name,
            session_duration_seconds,
        })
    }
}

// === Culling ===

/// Settings of the process culler, as in Hydroplane.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawCulling")]
pub struct CullingSettings {
    /// Processes older than this are stopped (`max_age_minutes`).
    pub max_age: Duration,
    /// How often the culler looks (`culling_interval_minutes`, default 1).
    pub interval: Duration,
}

impl CullingSettings {
    /// Processes older than this are stopped.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// How often the culler looks.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

/// `process_culling` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCulling {
    max_age_minutes: Number,
    culling_interval_minutes: Option<Number>,
}

impl TryFrom<RawCulling> for CullingSettings {
    type Error = String;

    fn try_from(raw: RawCulling) -> Result<CullingSettings, String> {
        Ok(CullingSettings {
            max_age: MAX_AGE.check_duration(Some(raw.max_age_minutes), 0.0, 60.0)?,
            interval: CULLING_INTERVAL.check_duration(
                raw.culling_interval_minutes,
                DEFAULT_CULLING_INTERVAL_MINUTES,
                60.0,
            )?,
        })
    }
}

// === Loading ===

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid YAML, does not match the settings, or has a value out of range.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column, on one line.
        message: String,
    },
}

impl Settings {
    /// Reads and checks a YAML settings file.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let (settings, warnings) = Settings::parse_with_warnings(&text)
            .map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        for warning in warnings {
            tracing::warn!("{}: {warning}", path.display());
        }
        Ok(settings)
    }

    /// Parses and checks YAML settings; an empty document is the defaults.
    pub fn parse(text: &str) -> Result<Settings, String> {
        Settings::parse_with_warnings(text).map(|(settings, _)| settings)
    }

    /// Parses and checks YAML settings, and says what it had to forgive: a key indented between
    /// two levels (as in the Hydroplane EKS guide's `assume_role` example) is read at the
    /// enclosing level, with a warning naming the line, when the strict reading fails. Errors are
    /// one line.
    pub fn parse_with_warnings(text: &str) -> Result<(Settings, Vec<String>), String> {
        if text.lines().all(|line| {
            let line = line.trim();
            line.is_empty() || line == "---" || line.starts_with('#')
        }) {
            return Ok((Settings::default(), Vec::new()));
        }
        match parse_yaml(text) {
            Ok(settings) => Ok((settings, Vec::new())),
            Err(message) => match realign_indentation(text) {
                // The realigned reading's error names the real mistake more often than the strict
                // one (which sees a mis-indented key as part of the value above it), so it is
                // reported, with what was realigned.
                Some((realigned, warnings)) => match parse_yaml(&realigned) {
                    Ok(settings) => Ok((settings, warnings)),
                    Err(error) => Err(format!("{error} (while reading {})", warnings.join("; "))),
                },
                None => Err(message),
            },
        }
    }
}

/// One strict reading: NaN and infinities reach the range checks (which name the key), and the
/// error is the message alone, on one line, without the source snippet.
fn parse_yaml(text: &str) -> Result<Settings, String> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
    serde_saphyr::from_str_with_options(text, options).map_err(|error| {
        let message = error.to_string();
        let message = message.strip_prefix("error: ").unwrap_or(&message);
        message.split_whitespace().collect::<Vec<_>>().join(" ")
    })
}

/// Moves block-mapping keys that are indented between two open levels to the enclosing level
/// (their nested lines with them), and says which lines moved. `None` when no line needed it.
fn realign_indentation(text: &str) -> Option<(String, Vec<String>)> {
    let mut levels: Vec<usize> = Vec::new();
    let mut opens_block = false;
    // While a misaligned key's own block is being read: the original indent of that key and how
    // far its lines move.
    let mut moving: Option<(usize, usize)> = None;
    let mut warnings = Vec::new();
    let mut lines = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') || content == "---" {
            lines.push(line.to_owned());
            continue;
        }
        let indent = line.len() - content.len();
        if let Some((key_indent, shift)) = moving {
            if indent > key_indent {
                lines.push(format!("{}{content}", " ".repeat(indent - shift)));
                continue;
            }
            moving = None;
        }
        let mut new_indent = indent;
        let deeper_than_top = levels.last().is_none_or(|top| indent > *top);
        if !(deeper_than_top && opens_block) {
            while levels.last().is_some_and(|top| *top > indent) {
                levels.pop();
            }
            if let Some(&top) = levels.last()
                && top != indent
            {
                new_indent = top;
                moving = Some((indent, indent - top));
                warnings.push(format!(
                    "line {}: `{}` is indented by {indent} spaces, between two levels; read as indented by {top}, \
                     as a key of the enclosing mapping. Fix the file to silence this warning.",
                    number + 1,
                    content.split(':').next().unwrap_or(content)
                ));
            }
        }
        if levels.last() != Some(&new_indent) {
            levels.push(new_indent);
        }
        opens_block = content.ends_with(':');
        lines.push(format!("{}{content}", " ".repeat(new_indent)));
    }
    (!warnings.is_empty()).then(|| (lines.join("\n") + "\n", warnings))
}

/// `metrics` in the settings: where the metrics listener listens.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawMetricsSettings")]
pub struct MetricsSettings {
    /// The address of the metrics listener (port 0 picks a free one).
    pub listen: std::net::SocketAddr,
}

/// `metrics` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetricsSettings {
    listen: String,
}

impl TryFrom<RawMetricsSettings> for MetricsSettings {
    type Error = String;

    fn try_from(raw: RawMetricsSettings) -> Result<MetricsSettings, String> {
        let listen = raw.listen.trim().parse().map_err(|_| {
            format!(
                "metrics.listen must be an IP address and a port, such as 127.0.0.1:9464 or [::1]:9464, got `{}`",
                raw.listen
            )
        })?;
        Ok(MetricsSettings { listen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, key: &str) -> SecretReference {
        SecretReference { secret_name: name.to_owned(), key: Some(key.to_owned()) }
    }

    #[test]
    fn no_config_means_the_local_runtime_without_secrets() {
        let settings = Settings::parse("---\n").expect("parses");
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.runtime.runtime_type(), "local");
        assert_eq!(settings.secret_store, SecretStoreSettings::None);
    }

    #[test]
    fn the_guides_quickstart_config_parses() {
        let settings = Settings::parse(
            "---\nsecret_store:\n  secret_store_type: local\n  store_location: ~/.hydro_secrets\n\n\
             runtime:\n  runtime_type: eks\n  cluster_name: hydro-eks\n  region: us-west-2\n  \
             credentials:\n    access_key:\n      access_key_id:\n        secret_name: \
             aws-credentials\n        key: AccessKeyId\n      secret_access_key:\n        \
             secret_name: aws-credentials\n        key: SecretAccessKey\n",
        )
        .expect("parses");
        assert_eq!(
            settings.secret_store,
            SecretStoreSettings::Local { store_location: PathBuf::from("~/.hydro_secrets") }
        );
        let RuntimeSettings::Eks(eks) = settings.runtime else { panic!("not eks") };
        assert_eq!(eks.cluster_name, "hydro-eks");
        assert_eq!(eks.region, "us-west-2");
        let credentials = eks.credentials.expect("credentials");
        assert_eq!(credentials.access_key.access_key_id, secret("aws-credentials", "AccessKeyId"));
        assert_eq!(credentials.access_key.secret_access_key, secret("aws-credentials", "SecretAccessKey"));
    }

    #[test]
    fn assume_role_parses() {
        let settings = Settings::parse(
            "runtime:\n    runtime_type: eks\n    cluster_name: my-cluster\n    region: us-west-2\n    \
             credentials:\n      access_key:\n        access_key_id:\n          secret_name: aws-creds\n          \
             key: AccessKeyId\n        secret_access_key:\n          secret_name: aws-creds\n          \
             key: SecretAccessKey\n      assume_role:\n        role_arn: \"arn:aws:iam::123456789012:role/EKSAdmin\"\n",
        )
        .expect("parses");
        let RuntimeSettings::Eks(eks) = settings.runtime else { panic!("not eks") };
        let role = eks.credentials.and_then(|c| c.assume_role).expect("assume_role");
        assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/EKSAdmin");
    }

    #[test]
    fn an_unknown_runtime_type_is_named() {
        let error = Settings::parse("runtime:\n  runtime_type: nomad\n").unwrap_err();
        assert!(error.contains("nomad"), "{error}");
    }

    #[test]
    fn the_python_hydroplanes_basic_config_is_the_docker_runtime() {
        let settings = Settings::parse(
            "---\nsecret_store:\n  secret_store_type: none\n\nruntime:\n  runtime_type: docker\n",
        )
        .unwrap();
        assert_eq!(settings.runtime, RuntimeSettings::Docker(DockerRuntimeSettings::default()));
        let settings = Settings::parse(
            "runtime:\n  runtime_type: docker\n  docker_host: unix:///run/x.sock\n  network: lab-1\n  stop_grace_seconds: 3\n",
        )
        .unwrap();
        let RuntimeSettings::Docker(docker) = settings.runtime else { panic!("not docker") };
        assert_eq!(docker.docker_host.as_deref(), Some("unix:///run/x.sock"));
        assert_eq!((docker.network.as_str(), docker.stop_grace), ("lab-1", Duration::from_secs(3)));
        assert_eq!(docker.docker_cert_path, None);
        let settings =
            Settings::parse("runtime:\n  runtime_type: docker\n  docker_host: tcp://127.0.0.1:2376\n  docker_cert_path: /certs\n")
                .unwrap();
        let RuntimeSettings::Docker(docker) = settings.runtime else { panic!("not docker") };
        assert_eq!(docker.docker_cert_path.as_deref(), Some(Path::new("/certs")));
        let error = Settings::parse("runtime:\n  runtime_type: docker\n  network: -bad\n").unwrap_err();
        assert!(error.contains("runtime.network"), "{error}");
        let error = Settings::parse("runtime:\n  runtime_type: docker\n  namespace: x\n").unwrap_err();
        assert!(error.contains("does not apply to runtime_type: docker"), "{error}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let error = Settings::parse("runtime:\n  runtime_type: local\n  nmespace: x\n").unwrap_err();
        assert!(error.contains("nmespace"), "{error}");
    }

    #[test]
    fn culling_defaults_to_one_minute_intervals() {
        let settings = Settings::parse("process_culling:\n  max_age_minutes: 30\n").expect("parses");
        let culling = settings.process_culling.expect("culling");
        assert_eq!(culling.max_age(), Duration::from_secs(30 * 60));
        assert_eq!(culling.interval(), Duration::from_secs(60));
    }

    #[test]
    fn every_number_out_of_range_is_one_line_naming_the_key_and_the_range() {
        for range in NUMBER_RANGES {
            for value in ["-1", "1e300", "-1e300", "1e-15", ".nan", ".inf", "-.inf", "1e20"] {
                let number: f64 = match value {
                    ".nan" => f64::NAN,
                    ".inf" => f64::INFINITY,
                    "-.inf" => f64::NEG_INFINITY,
                    _ => value.parse().expect("a number"),
                };
                if range.check(number).is_ok() {
                    continue;
                }
                let yaml = yaml_setting(range.key, value);
                let error = Settings::parse(&yaml).expect_err(&yaml);
                assert!(!error.contains('\n'), "{error}");
                assert!(error.contains(&format!("{} must be", range.key)), "{yaml}: {error}");
                assert!(error.contains(&show_number(range.high)), "{yaml}: {error}");
            }
            // Both ends of the range are accepted (a positive range's low end is not), and zero
            // where it has a meaning.
            let low = if range.above_low { range.high / 1e6 } else { range.low };
            let zero = range.zero_means.map(|_| 0.0);
            for value in [low, range.high].into_iter().chain(zero) {
                let yaml = yaml_setting(range.key, &value.to_string());
                Settings::parse(&yaml).unwrap_or_else(|error| panic!("{yaml}: {error}"));
            }
            if range.whole {
                let error = Settings::parse(&yaml_setting(range.key, &(range.high - 0.5).to_string()))
                    .expect_err(range.key);
                assert!(error.contains("a whole number"), "{error}");
            }
        }
    }

    #[test]
    fn durations_are_checked_and_converted_at_load() {
        let settings = Settings::parse(&yaml_setting("runtime.stop_grace_seconds", "0.25")).expect("parses");
        let RuntimeSettings::Local(local) = settings.runtime else { panic!("local") };
        assert_eq!(local.stop_grace(), Duration::from_millis(250));
        let settings = Settings::parse(&yaml_setting("process_culling.culling_interval_minutes", "0.5"))
            .expect("parses");
        let culling = settings.process_culling.expect("culling");
        assert_eq!(
            (culling.max_age(), culling.interval()),
            (Duration::from_secs(600), Duration::from_secs(30))
        );
    }

    #[test]
    fn the_local_runtimes_log_settings_parse_with_their_defaults() {
        let settings = Settings::parse(
            "runtime:\n  runtime_type: local\n  log_dir: ~/logs\n  max_log_bytes: 1048576\n  \
             log_retention_seconds: 2.5\n",
        )
        .expect("parses");
        let RuntimeSettings::Local(local) = settings.runtime else { panic!("local") };
        assert_eq!(local.log_dir, PathBuf::from("~/logs"), "`~` is expanded when the runtime starts");
        assert_eq!((local.max_log_bytes, local.log_retention), (1 << 20, Duration::from_millis(2500)));

        let defaults = LocalRuntimeSettings::default();
        assert_eq!((defaults.max_log_bytes, defaults.log_retention), (16 << 20, Duration::ZERO));
        assert!(defaults.log_dir.ends_with("hydroplane/logs"), "{}", defaults.log_dir.display());
        let RuntimeSettings::Local(local) =
            Settings::parse("runtime:\n  runtime_type: local\n").expect("parses").runtime
        else {
            panic!("local")
        };
        assert_eq!(local, defaults);
    }

    #[test]
    fn bad_log_settings_are_refused_with_the_key() {
        let check = |yaml: &str, expected: &str| {
            let error = Settings::parse(yaml).expect_err(yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        };
        check("runtime:\n  runtime_type: local\n  log_dir: \"\"\n", "runtime.log_dir must be");
        check(
            "runtime:\n  runtime_type: local\n  max_log_bytes: 1000\n",
            "runtime.max_log_bytes must be a whole number between 65536 and 1099511627776 bytes, got 1000",
        );
        check(
            "runtime:\n  runtime_type: local\n  log_retention_seconds: -1\n",
            "runtime.log_retention_seconds must be between 0 and 2592000 seconds",
        );
        for key in ["log_dir: /x", "max_log_bytes: 65536", "log_retention_seconds: 1"] {
            check(
                &format!("runtime:\n  runtime_type: kubernetes\n  {key}\n"),
                "does not apply to runtime_type: kubernetes (only to local)",
            );
        }
    }

    #[test]
    fn the_local_runtimes_user_and_environment_settings_parse_and_bad_ones_are_named() {
        let settings = Settings::parse(
            "runtime:\n  runtime_type: local\n  env_passthrough: [PATH, LANG]\n  run_as: app:staff\n  \
             run_as_by_group:\n    ci-*: ci\n    web: web:www-data\n    '*': nobody\n",
        )
        .expect("parses");
        let RuntimeSettings::Local(local) = settings.runtime else { panic!("local") };
        assert_eq!(local.env_passthrough, ["PATH", "LANG"]);
        assert_eq!(local.run_as, Some(RunAsSetting { user: "app".into(), group: Some("staff".into()) }));
        let by_group: Vec<String> =
            local.run_as_by_group.iter().map(|(pattern, user)| format!("{pattern}={user}")).collect();
        assert_eq!(by_group, ["ci-*=ci", "web=web:www-data", "*=nobody"], "in the file's order");
        let defaults = LocalRuntimeSettings::default();
        assert_eq!(defaults.env_passthrough, DEFAULT_ENV_PASSTHROUGH);
        assert_eq!((defaults.run_as, defaults.run_as_by_group), (None, Vec::new()));

        let check = |yaml: &str, expected: &str| {
            let error =
                Settings::parse(&format!("runtime:\n  runtime_type: local\n  {yaml}\n")).expect_err(yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        };
        check("run_as: \"\"", "runtime.run_as must be `user` or `user:group`");
        check("run_as: \"a:b:c\"", "runtime.run_as must be `user` or `user:group`");
        check("run_as: \"a b\"", "got `a b`");
        check("run_as_by_group:\n    CI: ci", "runtime.run_as_by_group: group pattern `CI` has `C`");
        check(
            "run_as_by_group:\n    ci: \"ci:\"",
            "runtime.run_as_by_group.ci must be `user` or `user:group`",
        );
        check("run_as_by_group: [ci]", "expected mapping");
        check("env_passthrough: [\"A=B\"]", "`A=B` is not a variable's name");
        check(
            "env_passthrough: [HYDROPLANE_SECRET_STORE_PASSWORD]",
            "must not name HYDROPLANE_SECRET_STORE_PASSWORD",
        );
        for key in ["run_as: app", "env_passthrough: [PATH]", "run_as_by_group: {ci: ci}"] {
            let error =
                Settings::parse(&format!("runtime:\n  runtime_type: kubernetes\n  {key}\n")).expect_err(key);
            assert!(error.contains("does not apply to runtime_type: kubernetes (only to local)"), "{error}");
        }
    }

    #[test]
    fn keys_of_another_type_are_named_with_why() {
        let check = |yaml: &str, expected: &str| {
            let error = Settings::parse(yaml).expect_err(yaml);
            assert!(error.contains(expected), "{yaml}: {error}");
        };
        check(
            "secret_store:\n  secret_store_type: none\n  store_location: /x\n",
            "secret_store.store_location does not apply to secret_store_type: none",
        );
        check(
            "runtime:\n  runtime_type: local\n  namespace: x\n",
            "runtime.namespace does not apply to runtime_type: local (only to kubernetes and eks)",
        );
        check(
            "runtime:\n  runtime_type: kubernetes\n  stop_grace_seconds: 1\n",
            "runtime.stop_grace_seconds does not apply to runtime_type: kubernetes",
        );
        check(
            "runtime:\n  runtime_type: kubernetes\n  cluster_name: c\n",
            "runtime.cluster_name does not apply to runtime_type: kubernetes (only to eks)",
        );
        check(
            "runtime:\n  runtime_type: eks\n  cluster_name: c\n  region: r\n  kubeconfig: /k\n",
            "runtime.kubeconfig does not apply to runtime_type: eks",
        );
        check("runtime:\n  runtime_type: eks\n  region: r\n", "runtime.cluster_name is required");
        check("runtime:\n  runtime_type: local\n  nmespace: x\n", "unknown field `nmespace`");
    }

    #[test]
    fn the_namespace_is_a_dns_label() {
        for runtime in ["runtime_type: kubernetes", "runtime_type: eks\n  cluster_name: c\n  region: r"] {
            for bad in ["Procs", "-x", "a_b", "\"\"", &"a".repeat(64)] {
                let yaml = format!("runtime:\n  {runtime}\n  namespace: {bad}\n");
                let error = Settings::parse(&yaml).expect_err(&yaml);
                assert!(error.contains("runtime.namespace must"), "{error}");
            }
            let yaml = format!("runtime:\n  {runtime}\n  namespace: team-1\n");
            Settings::parse(&yaml).unwrap_or_else(|error| panic!("{yaml}: {error}"));
        }
    }

    #[test]
    fn kubernetes_settings_parse() {
        let settings = Settings::parse(
            "runtime:\n  runtime_type: kubernetes\n  namespace: procs\n  kubeconfig: /tmp/kc\n",
        )
        .expect("parses");
        assert_eq!(
            settings.runtime,
            RuntimeSettings::Kubernetes(KubernetesSettings {
                namespace: Some("procs".into()),
                kubeconfig: Some(PathBuf::from("/tmp/kc")),
                context: None,
                api_rate: ApiRateSettings { qps: 50.0, burst: 100, automatic: true },
                public_exposure: PublicExposure::NodePort,
            })
        );
    }

    #[test]
    fn public_exposure_is_node_port_by_default_and_annotations_go_with_load_balancer() {
        let exposure = |extra: &str| {
            let yaml = format!("runtime:\n  runtime_type: kubernetes\n{extra}");
            match Settings::parse(&yaml).map(|settings| settings.runtime) {
                Ok(RuntimeSettings::Kubernetes(kubernetes)) => Ok(kubernetes.public_exposure),
                Ok(other) => panic!("{other:?}"),
                Err(error) => Err(error),
            }
        };
        assert_eq!(exposure(""), Ok(PublicExposure::NodePort));
        assert_eq!(exposure("  public_exposure: none\n"), Ok(PublicExposure::None));
        let nlb = "  public_exposure: load_balancer\n  load_balancer_annotations:\n    \
                   service.beta.kubernetes.io/aws-load-balancer-type: external\n";
        assert_eq!(
            exposure(nlb),
            Ok(PublicExposure::LoadBalancer {
                annotations: BTreeMap::from([(
                    "service.beta.kubernetes.io/aws-load-balancer-type".to_owned(),
                    "external".to_owned()
                )])
            })
        );
        let error = exposure("  load_balancer_annotations: {a: b}\n").expect_err("needs load_balancer");
        assert!(error.contains("only with runtime.public_exposure: load_balancer"), "{error}");
        assert!(exposure("  public_exposure: ingress\n").is_err());
    }

    #[test]
    fn the_api_rate_applies_to_both_kubernetes_runtimes_and_zero_means_no_limit() {
        let kubernetes = |extra: &str| {
            let yaml = format!("runtime:\n  runtime_type: kubernetes\n{extra}");
            match Settings::parse(&yaml).map(|settings| settings.runtime) {
                Ok(RuntimeSettings::Kubernetes(kubernetes)) => Ok(kubernetes.api_rate),
                Ok(other) => panic!("{other:?}"),
                Err(error) => Err(error),
            }
        };
        assert_eq!(kubernetes(""), Ok(ApiRateSettings::default()));
        assert_eq!(
            kubernetes("  api_qps: 2.5\n  api_burst: 3\n"),
            Ok(ApiRateSettings { qps: 2.5, burst: 3, automatic: false })
        );
        assert_eq!(
            kubernetes("  api_qps: 0\n"),
            Ok(ApiRateSettings { qps: 0.0, burst: 100, automatic: false })
        );
        assert_eq!(
            kubernetes("  api_qps: -1\n"),
            Ok(ApiRateSettings { qps: 0.0, burst: 100, automatic: false })
        );
        assert_eq!(
            kubernetes("  api_qps: 50\n"),
            Ok(ApiRateSettings { qps: 50.0, burst: 100, automatic: false })
        );
        let refused = |extra: &str, expected: &str| {
            let error = kubernetes(extra).expect_err(extra);
            assert!(error.starts_with(expected), "{error}");
        };
        refused(
            "  api_qps: 0.01\n",
            "runtime.api_qps must be 0 or -1 (no limit) or between 0.1 and 100000 requests per second, got 0.01 ",
        );
        refused(
            "  api_burst: 0\n",
            "runtime.api_burst must be a whole number between 1 and 100000 requests, got 0 ",
        );

        let settings = Settings::parse(&yaml_setting("runtime.api_burst", "7")).expect("parses");
        let RuntimeSettings::Eks(eks) = settings.runtime else { panic!("eks") };
        assert_eq!(eks.api_rate, ApiRateSettings { qps: 50.0, burst: 7, automatic: false });

        for key in ["api_qps: 10", "api_burst: 10"] {
            let yaml = format!("runtime:\n  runtime_type: local\n  {key}\n");
            let error = Settings::parse(&yaml).expect_err(&yaml);
            let name = key.split(':').next().unwrap_or_default();
            assert!(
                error.contains(&format!(
                    "runtime.{name} does not apply to runtime_type: local (only to kubernetes and eks)"
                )),
                "{error}"
            );
        }
    }
}

#[cfg(test)]
mod guide_tests {
    use super::*;

    /// The YAML blocks of the EKS guide (`docs/eks-runtime.rst`, a copy of the Hydroplane
    /// guide), in order.
    fn guide_yaml_blocks() -> Vec<String> {
        let guide = include_str!("../docs/eks-runtime.rst");
        let mut blocks = Vec::new();
        let mut lines = guide.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim() != ".. code-block:: yaml" {
                continue;
            }
            let mut block = Vec::new();
            while let Some(next) = lines.peek() {
                if !next.trim().is_empty() && !next.starts_with(' ') {
                    break;
                }
                block.push(lines.next().unwrap_or_default());
            }
            let text: Vec<&str> =
                block.iter().map(|line| line.strip_prefix("    ").unwrap_or(line)).collect();
            blocks.push(text.join("\n").trim_matches('\n').to_owned() + "\n");
        }
        blocks
    }

    #[test]
    fn every_yaml_block_of_the_guide_parses() {
        let blocks = guide_yaml_blocks();
        assert_eq!(blocks.len(), 4, "{blocks:#?}");
        for block in &blocks {
            let settings = Settings::parse(block).unwrap_or_else(|error| panic!("{error}\n{block}"));
            assert_eq!(settings.runtime.runtime_type(), "eks");
        }
        // The last block indents `assume_role` by one space too many: it is read as meant, with
        // a warning that names the line.
        let (settings, warnings) = Settings::parse_with_warnings(&blocks[3]).expect("parses");
        let RuntimeSettings::Eks(eks) = settings.runtime else { panic!("eks") };
        let role = eks.credentials.and_then(|credentials| credentials.assume_role).expect("assume_role");
        assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/EKSAdmin");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("line 13: `assume_role` is indented by 7 spaces"), "{warnings:?}");
        // Well-indented files get no warning.
        assert!(Settings::parse_with_warnings(&blocks[1]).expect("parses").1.is_empty());
    }

    #[test]
    fn the_example_eks_config_parses_without_warnings() {
        let (settings, warnings) = Settings::parse_with_warnings(include_str!("../examples/eks.yml"))
            .expect("examples/eks.yml parses");
        assert!(warnings.is_empty(), "{warnings:?}");
        let RuntimeSettings::Eks(eks) = settings.runtime else { panic!("eks") };
        assert_eq!((eks.cluster_name.as_str(), eks.region.as_str()), ("hydro-eks", "us-west-2"));
    }

    #[test]
    fn realignment_is_always_announced_and_never_hides_other_mistakes() {
        let (settings, warnings) =
            Settings::parse_with_warnings("runtime:\n  runtime_type: local\n   stop_grace_seconds: 1\n")
                .expect("parses");
        assert_eq!(warnings.len(), 1);
        assert!(
            matches!(settings.runtime, RuntimeSettings::Local(LocalRuntimeSettings { stop_grace, .. }) if stop_grace == Duration::from_secs(1))
        );
        assert!(Settings::parse("runtime: [\n").is_err());
        let error = Settings::parse("runtime:\n  runtime_type: local\n   bogus: 1\n").unwrap_err();
        assert!(error.contains("bogus") && error.contains("line 3: `bogus` is indented by 3"), "{error}");
    }
}
