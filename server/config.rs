//! The server's YAML settings, in the Python Hydroplane's format: `secret_store`, `runtime` and
//! `process_culling`. Every file of `reference/eks-runtime.rst` parses into these types.
//!
//! YAML is read with `serde-saphyr` (pure Rust, line and column in its errors): `serde_yaml` is
//! archived and `serde_yml` has an advisory. Unknown keys are errors, so a typo never silently
//! falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::spec::SecretReference;

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
}

/// Who may call: the tokens file (`hydroplane token create` writes it), re-read on change.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The YAML file of token names, hashes, scopes and groups.
    pub tokens_file: PathBuf,
}

/// TLS on the gRPC port; the files are re-read when they change on disk.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM); when set, every client must present a certificate they signed.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// Limits on what callers may ask of the server. Every number is range-checked at load.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
        }
    }
}

impl LimitSettings {
    /// Checks every limit against its allowed range.
    fn check(&self) -> Result<(), String> {
        let ranges: [(&str, u64, u64, u64); 6] = [
            ("max_request_bytes", self.max_request_bytes as u64, 1024, 64 << 20),
            ("max_concurrent_calls", self.max_concurrent_calls as u64, 1, 100_000),
            ("start_stop_per_second", u64::from(self.start_stop_per_second), 0, 1_000_000),
            ("start_stop_burst", u64::from(self.start_stop_burst), 1, 1_000_000),
            ("max_watches_per_token", self.max_watches_per_token as u64, 1, 1_000_000),
            ("max_watches", self.max_watches as u64, 1, 1_000_000),
        ];
        for (name, value, low, high) in ranges {
            if !(low..=high).contains(&value) {
                return Err(format!("limits.{name} must be between {low} and {high}, got {value}"));
            }
        }
        Ok(())
    }
}

/// The secret store, chosen by `secret_store_type`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(tag = "secret_store_type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SecretStoreSettings {
    /// No secret store: specs that reference secrets are refused.
    #[default]
    None,
    /// A directory of encrypted files, opened with a password.
    Local {
        /// The store's directory; `~` is the user's home.
        #[serde(default = "default_store_location")]
        store_location: PathBuf,
    },
}

/// The default directory of the local secret store, as in Hydroplane.
pub fn default_store_location() -> PathBuf {
    PathBuf::from("~/.hydro_secrets")
}

/// The runtime, chosen by `runtime_type`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "runtime_type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RuntimeSettings {
    /// Host processes, embedded in the server.
    Local(LocalRuntimeSettings),
    /// Any Kubernetes cluster, from a kubeconfig or the in-cluster config.
    Kubernetes(KubernetesSettings),
    /// Amazon EKS (boxed: it is much larger than the others).
    Eks(Box<EksSettings>),
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings::Local(LocalRuntimeSettings::default())
    }
}

/// Settings of the `local` runtime.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalRuntimeSettings {
    /// How long a stopped process gets between SIGTERM and SIGKILL, in seconds.
    #[serde(default = "default_stop_grace_seconds")]
    pub stop_grace_seconds: f64,
    /// The most output kept per process, in bytes.
    #[serde(default = "default_output_buffer_bytes")]
    pub output_buffer_bytes: usize,
}

impl Default for LocalRuntimeSettings {
    fn default() -> Self {
        LocalRuntimeSettings {
            stop_grace_seconds: default_stop_grace_seconds(),
            output_buffer_bytes: default_output_buffer_bytes(),
        }
    }
}

impl LocalRuntimeSettings {
    /// How long a stopped process gets between SIGTERM and SIGKILL (checked at load: finite and
    /// not negative).
    pub fn stop_grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.stop_grace_seconds).unwrap_or_default()
    }
}

/// The namespace of the Kubernetes runtimes when the settings name none.
pub const DEFAULT_NAMESPACE: &str = "default";

impl RuntimeSettings {
    /// The `runtime_type` spelling, for messages.
    pub fn runtime_type(&self) -> &'static str {
        match self {
            RuntimeSettings::Local(_) => "local",
            RuntimeSettings::Kubernetes(_) => "kubernetes",
            RuntimeSettings::Eks(_) => "eks",
        }
    }
}

fn default_stop_grace_seconds() -> f64 {
    5.0
}

fn default_output_buffer_bytes() -> usize {
    1 << 20
}

/// Settings of the `kubernetes` runtime.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// The namespace processes live in; `default` when unset.
    #[serde(default)]
    pub namespace: Option<String>,
    /// A kubeconfig file; the in-cluster config, then `~/.kube/config`, when unset.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; its current context when unset.
    #[serde(default)]
    pub context: Option<String>,
}

impl KubernetesSettings {
    /// The namespace processes live in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }
}

/// Settings of the `eks` runtime, as in the Hydroplane EKS guide.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EksSettings {
    /// The EKS cluster's name.
    pub cluster_name: String,
    /// The AWS region of the cluster.
    pub region: String,
    /// The namespace processes live in; `default` when unset.
    #[serde(default)]
    pub namespace: Option<String>,
    /// How to authenticate with AWS; the default credential chain when unset.
    #[serde(default)]
    pub credentials: Option<AwsCredentialsSettings>,
    /// An STS endpoint instead of the region's (a private VPC endpoint, or a test's).
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// An EKS endpoint instead of the region's.
    #[serde(default)]
    pub eks_endpoint: Option<String>,
    /// The cluster's API server URL; with `certificate_authority`, skips DescribeCluster.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The cluster's CA: base64 of the PEM, as DescribeCluster returns it.
    #[serde(default)]
    pub certificate_authority: Option<String>,
    /// How often the bearer token is renewed (it is valid for 15 minutes); default 600.
    #[serde(default = "default_token_refresh_seconds")]
    pub token_refresh_seconds: f64,
    /// How long before they expire temporary credentials are renewed; default 300.
    #[serde(default = "default_credentials_renew_before_seconds")]
    pub credentials_renew_before_seconds: f64,
}

impl EksSettings {
    /// The namespace processes live in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// How often the bearer token is renewed (checked at load: between 0 and 840 seconds).
    pub fn token_refresh(&self) -> Duration {
        Duration::try_from_secs_f64(self.token_refresh_seconds).unwrap_or_default()
    }

    /// How long before they expire temporary credentials are renewed (checked at load).
    pub fn credentials_renew_before(&self) -> Duration {
        Duration::try_from_secs_f64(self.credentials_renew_before_seconds).unwrap_or_default()
    }
}

fn default_token_refresh_seconds() -> f64 {
    600.0
}

fn default_credentials_renew_before_seconds() -> f64 {
    300.0
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
#[serde(deny_unknown_fields)]
pub struct AssumeRoleSettings {
    /// The role's ARN.
    pub role_arn: String,
    /// The external id the role's trust policy asks for, if any.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The session name shown in CloudTrail.
    #[serde(default)]
    pub session_name: Option<String>,
    /// How long the temporary credentials last (900..43200 seconds).
    #[serde(default)]
    pub session_duration_seconds: Option<u32>,
}

/// Settings of the process culler, as in Hydroplane.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CullingSettings {
    /// Processes older than this are stopped.
    pub max_age_minutes: f64,
    /// How often the culler looks.
    #[serde(default = "default_culling_interval_minutes")]
    pub culling_interval_minutes: f64,
}

impl CullingSettings {
    /// Processes older than this are stopped (checked at load: positive).
    pub fn max_age(&self) -> Duration {
        Duration::try_from_secs_f64(self.max_age_minutes * 60.0).unwrap_or(Duration::MAX)
    }

    /// How often the culler looks (checked at load: positive).
    pub fn interval(&self) -> Duration {
        Duration::try_from_secs_f64(self.culling_interval_minutes * 60.0).unwrap_or(Duration::MAX)
    }
}

fn default_culling_interval_minutes() -> f64 {
    1.0
}

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
    /// The file is not valid YAML or does not match the settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
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
        settings.checked().map_err(|message| ConfigError::Invalid { path: path.to_owned(), message })
    }

    /// Parses YAML settings; an empty document is the defaults.
    pub fn parse(text: &str) -> Result<Settings, String> {
        Settings::parse_with_warnings(text).map(|(settings, _)| settings)
    }

    /// Parses YAML settings, and says what it had to forgive: a key indented between two levels
    /// (as in the Hydroplane EKS guide's `assume_role` example) is read at the enclosing level,
    /// with a warning naming the line, when the strict reading fails.
    pub fn parse_with_warnings(text: &str) -> Result<(Settings, Vec<String>), String> {
        if text.lines().all(|line| {
            let line = line.trim();
            line.is_empty() || line == "---" || line.starts_with('#')
        }) {
            return Ok((Settings::default(), Vec::new()));
        }
        let strict = serde_saphyr::from_str(text).map_err(|error| {
            let message = error.to_string();
            message.strip_prefix("error: ").map(str::to_owned).unwrap_or(message)
        });
        match strict {
            Ok(settings) => Ok((settings, Vec::new())),
            Err(message) => match realign_indentation(text) {
                // The realigned reading's error names the real mistake more often than the strict
                // one (which sees a mis-indented key as part of the value above it), so it is
                // reported, with what was realigned.
                Some((realigned, warnings)) => match serde_saphyr::from_str(&realigned) {
                    Ok(settings) => Ok((settings, warnings)),
                    Err(error) => Err(format!("{error}\n(while reading {})", warnings.join("; "))),
                },
                None => Err(message),
            },
        }
    }

    fn checked(self) -> Result<Settings, String> {
        self.limits.check()?;
        if let Some(culling) = &self.process_culling {
            if !(culling.max_age_minutes.is_finite() && culling.max_age_minutes > 0.0) {
                return Err(format!(
                    "process_culling.max_age_minutes must be positive, got {}",
                    culling.max_age_minutes
                ));
            }
            if !(culling.culling_interval_minutes.is_finite() && culling.culling_interval_minutes > 0.0) {
                return Err(format!(
                    "process_culling.culling_interval_minutes must be positive, got {}",
                    culling.culling_interval_minutes
                ));
            }
        }
        if let RuntimeSettings::Local(LocalRuntimeSettings { stop_grace_seconds, .. }) = &self.runtime
            && !(stop_grace_seconds.is_finite() && *stop_grace_seconds >= 0.0)
        {
            return Err(format!("runtime.stop_grace_seconds must be zero or more, got {stop_grace_seconds}"));
        }
        if let RuntimeSettings::Eks(eks) = &self.runtime {
            if !(eks.token_refresh_seconds.is_finite()
                && eks.token_refresh_seconds > 0.0
                && eks.token_refresh_seconds < 840.0)
            {
                return Err(format!(
                    "runtime.token_refresh_seconds must be between 0 and 840 (tokens last 15 minutes), got {}",
                    eks.token_refresh_seconds
                ));
            }
            if !(eks.credentials_renew_before_seconds.is_finite()
                && eks.credentials_renew_before_seconds >= 0.0)
            {
                return Err(format!(
                    "runtime.credentials_renew_before_seconds must be zero or more, got {}",
                    eks.credentials_renew_before_seconds
                ));
            }
            if eks.endpoint.is_some() != eks.certificate_authority.is_some() {
                return Err("runtime.endpoint and runtime.certificate_authority go together".to_owned());
            }
        }
        if let RuntimeSettings::Eks(eks) = &self.runtime
            && let Some(AwsCredentialsSettings { assume_role: Some(role), .. }) = &eks.credentials
            && let Some(seconds) = role.session_duration_seconds
            && !(900..=43200).contains(&seconds)
        {
            return Err(format!(
                "runtime.credentials.assume_role.session_duration_seconds must be between 900 \
                 and 43200, got {seconds}"
            ));
        }
        Ok(self)
    }
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
        let error = Settings::parse("runtime:\n  runtime_type: docker\n").unwrap_err();
        assert!(error.contains("docker"), "{error}");
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
        assert_eq!(culling.max_age_minutes, 30.0);
        assert_eq!(culling.culling_interval_minutes, 1.0);
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
            })
        );
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
            matches!(settings.runtime, RuntimeSettings::Local(LocalRuntimeSettings { stop_grace_seconds, .. }) if stop_grace_seconds == 1.0)
        );
        assert!(Settings::parse("runtime: [\n").is_err());
        let error = Settings::parse("runtime:\n  runtime_type: local\n   bogus: 1\n").unwrap_err();
        assert!(error.contains("bogus") && error.contains("line 3: `bogus` is indented by 3"), "{error}");
    }
}
