//! The AWS credentials Hydroplane authenticates with, and the SDK configuration around them.
//!
//! - Static keys come from the secret store (the guide's `credentials.access_key`).
//! - With `assume_role`, the SDK's `AssumeRoleProvider` turns those keys into temporary
//!   credentials; [`CredentialsSource`] asks it again ahead of expiry, in the background, and
//!   keeps serving the still-valid credentials while a renewal fails (retried with backoff).
//! - Without `credentials`, the identity the server's surroundings give it ([`AmbientIdentity`]),
//!   in the SDK's own order: IRSA (a web identity token file exchanged at STS for a role's
//!   credentials, through `runtime.sts_endpoint` when set), else EKS Pod Identity (the container
//!   credentials endpoint, aws-config's `EcsCredentialsProvider`), else the rest of the SDK's
//!   default chain (environment keys, profile, instance role). The first two expire and are
//!   renewed like assumed-role credentials; the token files are read afresh on every renewal,
//!   so the kubelet's rotation of them is followed.
//!
//! Nothing here logs or returns a secret: errors name access key ids, role ARNs and secret names.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{
    self as credential_provider, ProvideCredentials, SharedCredentialsProvider, future,
};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::config::{AwsCredentialsSettings, EksSettings};
use crate::report::error_chain;
use crate::secrets::{SecretError, SecretStore};

/// The first delay between attempts to renew credentials after a failure.
const RENEWAL_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest delay between attempts to renew credentials after a failure.
const RENEWAL_RETRY_MAX: Duration = Duration::from_secs(60);

/// Why AWS could not be used. Messages name keys, roles and clusters, never secrets.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// A secret the credentials refer to cannot be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// STS does not know the access key.
    #[error("AWS refused the access key {access_key_id}: {message}")]
    InvalidKeys {
        /// The access key id (never the secret key).
        access_key_id: String,
        /// STS's message.
        message: String,
    },
    /// STS could not be reached at all: no answer, so nothing is known of the keys.
    #[error("cannot reach the AWS STS endpoint {endpoint}: {message}")]
    StsUnreachable {
        /// The endpoint tried (the region's, or `runtime.sts_endpoint`).
        endpoint: String,
        /// What failed (connection refused, DNS, TLS, timeout).
        message: String,
    },
    /// The role cannot be assumed.
    #[error("cannot assume the role {role_arn}: {message}")]
    AssumeRole {
        /// The role's ARN.
        role_arn: String,
        /// STS's message.
        message: String,
    },
    /// No credentials could be had from the default chain or the provider.
    #[error("cannot get AWS credentials: {0}")]
    NoCredentials(String),
}

/// Builds the SDK configuration for `region`, with our one TLS stack (rustls with ring) and
/// the given credentials provider (the default chain when `None`).
pub async fn sdk_config(region: &str, provider: Option<SharedCredentialsProvider>) -> SdkConfig {
    let mut loader = loader(region);
    if let Some(provider) = provider {
        loader = loader.credentials_provider(provider);
    }
    loader.load().await
}

/// The SDK configuration for `region` with no credentials at all: for the unsigned STS call of
/// IRSA, and for the HTTP client and sleep of the providers that fetch credentials.
async fn anonymous_sdk_config(region: &str) -> SdkConfig {
    loader(region).no_credentials().load().await
}

fn loader(region: &str) -> aws_config::ConfigLoader {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http_client)
}

// === The identity of the server's surroundings ===

/// The environment variable naming IRSA's web identity token file.
const WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
/// The environment variable naming the role IRSA assumes.
const ROLE_ARN: &str = "AWS_ROLE_ARN";
/// The environment variable naming IRSA's session (optional).
const ROLE_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";
/// The container credentials endpoint's full URI (EKS Pod Identity sets it).
const CONTAINER_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// The container credentials endpoint's path on ECS's fixed address.
const CONTAINER_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// The file holding the token the container credentials endpoint asks for.
const CONTAINER_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
/// Static keys in the environment, which the SDK's chain puts first.
const ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";

/// Where the server's AWS identity comes from when the settings give no `credentials`, read
/// from the environment the Pod's EKS webhooks set. The order is the SDK's default chain's:
/// keys in the environment, then IRSA, then the container endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmbientIdentity {
    /// IRSA: the token file is exchanged for the role's credentials (AssumeRoleWithWebIdentity).
    WebIdentity {
        /// The projected service-account token (rotated by the kubelet).
        token_file: PathBuf,
        /// The role assumed.
        role_arn: String,
        /// The session's name (`AWS_ROLE_SESSION_NAME`, else `hydroplane`).
        session_name: String,
    },
    /// EKS Pod Identity (or ECS): the container credentials endpoint.
    PodIdentity {
        /// The endpoint's URI (never a token).
        endpoint: String,
        /// The file holding the endpoint's authorization token, when one is asked for.
        token_file: Option<PathBuf>,
    },
    /// The rest of the SDK's default chain: environment keys, profile, instance role.
    DefaultChain,
}

impl AmbientIdentity {
    /// Reads the identity from the process's environment.
    pub fn from_env() -> AmbientIdentity {
        AmbientIdentity::from_variables(|name| std::env::var(name).ok())
    }

    /// Reads the identity from `variable`, which gives an environment variable's value.
    pub fn from_variables(variable: impl Fn(&str) -> Option<String>) -> AmbientIdentity {
        let set = |name: &str| variable(name).filter(|value| !value.trim().is_empty());
        if set(ACCESS_KEY_ID).is_some() {
            return AmbientIdentity::DefaultChain;
        }
        if let (Some(token_file), Some(role_arn)) = (set(WEB_IDENTITY_TOKEN_FILE), set(ROLE_ARN)) {
            return AmbientIdentity::WebIdentity {
                token_file: PathBuf::from(token_file),
                role_arn,
                session_name: set(ROLE_SESSION_NAME).unwrap_or_else(|| "hydroplane".to_owned()),
            };
        }
        let endpoint = set(CONTAINER_FULL_URI)
            .or_else(|| set(CONTAINER_RELATIVE_URI).map(|path| format!("http://169.254.170.2{path}")));
        match endpoint {
            Some(endpoint) => AmbientIdentity::PodIdentity {
                endpoint,
                token_file: set(CONTAINER_TOKEN_FILE).map(PathBuf::from),
            },
            None => AmbientIdentity::DefaultChain,
        }
    }

    /// The role assumed, for messages about it.
    pub fn role_arn(&self) -> Option<&str> {
        match self {
            AmbientIdentity::WebIdentity { role_arn, .. } => Some(role_arn),
            _ => None,
        }
    }
}

impl std::fmt::Display for AmbientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmbientIdentity::WebIdentity { token_file, role_arn, .. } => {
                write!(f, "IRSA (the web identity token {} for the role {role_arn})", token_file.display())
            }
            AmbientIdentity::PodIdentity { endpoint, .. } => {
                write!(f, "EKS Pod Identity (the container credentials endpoint {endpoint})")
            }
            AmbientIdentity::DefaultChain => f.write_str("the AWS SDK's default credential chain"),
        }
    }
}

/// The credentials provider of `identity`; `sts_endpoint` is where IRSA's exchange goes.
async fn ambient_provider(
    identity: &AmbientIdentity,
    region: &str,
    sts_endpoint: Option<&str>,
) -> Result<SharedCredentialsProvider, AwsError> {
    let anonymous = anonymous_sdk_config(region).await;
    let provider = match identity {
        AmbientIdentity::WebIdentity { token_file, role_arn, session_name } => {
            let mut sts = aws_sdk_sts::config::Builder::from(&anonymous);
            if let Some(endpoint) = sts_endpoint {
                sts = sts.endpoint_url(endpoint);
            }
            SharedCredentialsProvider::new(WebIdentity {
                sts: aws_sdk_sts::Client::from_conf(sts.build()),
                token_file: token_file.clone(),
                role_arn: role_arn.clone(),
                session_name: session_name.clone(),
            })
        }
        AmbientIdentity::PodIdentity { endpoint, token_file } => {
            let mut provider_config =
                ProviderConfig::without_region().with_region(Some(Region::new(region.to_owned())));
            if let Some(http_client) = anonymous.http_client() {
                provider_config = provider_config.with_http_client(http_client);
            }
            if let Some(sleep) = anonymous.sleep_impl() {
                provider_config = provider_config.with_sleep_impl(sleep);
            }
            SharedCredentialsProvider::new(PodIdentity {
                provider: aws_config::ecs::EcsCredentialsProvider::builder()
                    .configure(&provider_config)
                    .build(),
                endpoint: endpoint.clone(),
                token_file: token_file.clone(),
            })
        }
        AmbientIdentity::DefaultChain => {
            let config = sdk_config(region, None).await;
            config.credentials_provider().ok_or_else(|| {
                AwsError::NoCredentials("the default credential chain found nothing".to_owned())
            })?
        }
    };
    tracing::info!(source = %identity, "AWS credentials from the server's surroundings (no `credentials` in the settings)");
    Ok(provider)
}

/// IRSA's exchange of the web identity token for the role's credentials. aws-config's own
/// `WebIdentityTokenCredentialsProvider` builds its STS client from a `ProviderConfig`, which
/// cannot take an endpoint URL, so `runtime.sts_endpoint` (a VPC endpoint, a test's STS) would
/// not reach it; this is the same call on a client that has the endpoint.
#[derive(Debug)]
struct WebIdentity {
    sts: aws_sdk_sts::Client,
    token_file: PathBuf,
    role_arn: String,
    session_name: String,
}

impl WebIdentity {
    async fn credentials(&self) -> credential_provider::Result {
        // Read on every call: the kubelet replaces the token well before it expires.
        let token = tokio::fs::read_to_string(&self.token_file).await.map_err(|error| {
            CredentialsError::provider_error(std::io::Error::new(
                error.kind(),
                format!("cannot read the web identity token file {}: {error}", self.token_file.display()),
            ))
        })?;
        let answer = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .web_identity_token(token.trim())
            .send()
            .await
            .map_err(|error| {
                CredentialsError::provider_error(std::io::Error::other(format!(
                    "STS refused AssumeRoleWithWebIdentity of {}: {}",
                    self.role_arn,
                    crate::aws::cluster::sdk_error_message(&error)
                )))
            })?;
        let credentials = answer.credentials().ok_or_else(|| {
            CredentialsError::unhandled("STS's AssumeRoleWithWebIdentity answer has no credentials")
        })?;
        let expiry = SystemTime::try_from(*credentials.expiration()).map_err(|_| {
            CredentialsError::unhandled("STS's AssumeRoleWithWebIdentity answer has an unusable expiration")
        })?;
        Ok(Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            Some(expiry),
            "WebIdentityToken",
        ))
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

/// EKS Pod Identity through aws-config's container credentials provider, which reads the
/// authorization token file on every call. Its own error for a token that is not a valid header
/// value quotes the token, so such a file is refused here first, by name.
#[derive(Debug)]
struct PodIdentity {
    provider: aws_config::ecs::EcsCredentialsProvider,
    endpoint: String,
    token_file: Option<PathBuf>,
}

impl PodIdentity {
    async fn credentials(&self) -> credential_provider::Result {
        if let Some(token_file) = &self.token_file {
            let token = tokio::fs::read(token_file).await.map_err(|error| {
                CredentialsError::provider_error(std::io::Error::new(
                    error.kind(),
                    format!("cannot read the Pod Identity token file {}: {error}", token_file.display()),
                ))
            })?;
            if http::HeaderValue::from_bytes(&token).is_err() {
                return Err(CredentialsError::invalid_configuration(format!(
                    "the Pod Identity token file {} holds something that cannot be sent as a header \
                     (a line break or another control character)",
                    token_file.display()
                )));
            }
        }
        self.provider.credentials().await.map_err(|error| {
            CredentialsError::provider_error(std::io::Error::other(format!(
                "the Pod Identity endpoint {} gave no credentials: {}",
                self.endpoint,
                error_chain(&error)
            )))
        })
    }
}

impl ProvideCredentials for PodIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

/// An access key part from the secret store, without the whitespace a file may add.
fn secret_text(
    secrets: &dyn SecretStore,
    reference: &crate::spec::SecretReference,
) -> Result<String, AwsError> {
    Ok(crate::secrets::resolve_text(secrets, reference)?.trim().to_owned())
}

/// The static keys of the settings, from the secret store.
pub fn static_credentials(
    settings: &AwsCredentialsSettings,
    secrets: &dyn SecretStore,
) -> Result<Credentials, AwsError> {
    let access_key_id = secret_text(secrets, &settings.access_key.access_key_id)?;
    let secret_access_key = secret_text(secrets, &settings.access_key.secret_access_key)?;
    Ok(Credentials::new(access_key_id, secret_access_key, None, None, "hydroplane-secret-store"))
}

/// The credentials provider the settings describe, and the access key id for messages.
pub async fn provider(
    settings: &EksSettings,
    secrets: &dyn SecretStore,
) -> Result<(SharedCredentialsProvider, Option<String>), AwsError> {
    let Some(credentials) = &settings.credentials else {
        let identity = AmbientIdentity::from_env();
        let provider =
            ambient_provider(&identity, &settings.region, settings.sts_endpoint.as_deref()).await?;
        return Ok((provider, None));
    };
    let keys = static_credentials(credentials, secrets)?;
    let access_key_id = keys.access_key_id().to_owned();
    let keys_provider = SharedCredentialsProvider::new(keys);
    let Some(role) = &credentials.assume_role else {
        return Ok((keys_provider, Some(access_key_id)));
    };
    let base = sdk_config(&settings.region, Some(keys_provider)).await;
    let base = match &settings.sts_endpoint {
        Some(endpoint) => base.into_builder().endpoint_url(endpoint.clone()).build(),
        None => base,
    };
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role.role_arn.clone())
        .session_name(role.session_name.clone().unwrap_or_else(|| "hydroplane".to_owned()))
        .region(Region::new(settings.region.clone()));
    if let Some(external_id) = &role.external_id {
        builder = builder.external_id(external_id.clone());
    }
    if let Some(seconds) = role.session_duration_seconds {
        builder = builder.session_length(Duration::from_secs(u64::from(seconds)));
    }
    let assume_role = builder.configure(&base).build().await;
    Ok((SharedCredentialsProvider::new(assume_role), Some(access_key_id)))
}

/// Turns a failure to get credentials into a message a user can act on.
pub fn classify_credentials_error(
    error: &(dyn std::error::Error + 'static),
    access_key_id: Option<&str>,
    role_arn: Option<&str>,
) -> AwsError {
    let message = error_chain(error);
    if let Some(access_key_id) = access_key_id
        && (message.contains("InvalidClientTokenId") || message.contains("SignatureDoesNotMatch"))
    {
        return AwsError::InvalidKeys { access_key_id: access_key_id.to_owned(), message };
    }
    match role_arn {
        Some(role_arn) => AwsError::AssumeRole { role_arn: role_arn.to_owned(), message },
        None => AwsError::NoCredentials(message),
    }
}

/// When to renew credentials that expire: `renew_before` ahead of expiry, or half-way through
/// their remaining life when they expire sooner than that.
fn renewal_delay(expiry: SystemTime, now: SystemTime, renew_before: Duration) -> Duration {
    let remaining = expiry.duration_since(now).unwrap_or_default();
    if remaining > renew_before { remaining - renew_before } else { remaining / 2 }
}

/// The current credentials, renewed in the background ahead of expiry.
#[derive(Clone)]
pub struct CredentialsSource {
    current: watch::Receiver<Credentials>,
    _renewal: Arc<RenewalTask>,
}

struct RenewalTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for RenewalTask {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for CredentialsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialsSource").field("access_key_id", &self.current().access_key_id()).finish()
    }
}

impl CredentialsSource {
    /// Gets the first credentials from `provider` (an error here is the caller's to report), and
    /// renews them `renew_before` ahead of their expiry from then on.
    pub async fn start(
        provider: SharedCredentialsProvider,
        renew_before: Duration,
    ) -> Result<CredentialsSource, aws_credential_types::provider::error::CredentialsError> {
        let first = provider.provide_credentials().await?;
        let expires = first.expiry().is_some();
        let (sender, current) = watch::channel(first);
        let task = expires.then(|| tokio::spawn(renew(provider, sender, renew_before)));
        Ok(CredentialsSource { current, _renewal: Arc::new(RenewalTask(task)) })
    }

    /// The credentials to use now.
    pub fn current(&self) -> Credentials {
        self.current.borrow().clone()
    }
}

async fn renew(
    provider: SharedCredentialsProvider,
    sender: watch::Sender<Credentials>,
    renew_before: Duration,
) {
    loop {
        let expiry = sender.borrow().expiry();
        let Some(expiry) = expiry else { return };
        tokio::time::sleep(renewal_delay(expiry, SystemTime::now(), renew_before)).await;
        let mut retry = Backoff::new(RENEWAL_RETRY_FIRST, RENEWAL_RETRY_MAX);
        loop {
            match provider.provide_credentials().await {
                Ok(credentials) => {
                    crate::metrics::count_renewal("aws_credentials", true);
                    tracing::debug!(access_key_id = credentials.access_key_id(), expiry = ?credentials.expiry(), "renewed AWS credentials");
                    sender.send_replace(credentials);
                    break;
                }
                Err(error) => {
                    crate::metrics::count_renewal("aws_credentials", false);
                    let still_valid = expiry.duration_since(SystemTime::now()).unwrap_or_default();
                    let delay = retry.next_delay();
                    tracing::warn!(error = %error_chain(&error), ?still_valid, retry = ?delay, "cannot renew AWS credentials; the current ones stay in use; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        if sender.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_ahead_of_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(renewal_delay(now + hour, now, Duration::from_secs(300)), Duration::from_secs(3300));
        // Short-lived credentials are renewed half-way rather than at once.
        assert_eq!(
            renewal_delay(now + Duration::from_secs(200), now, Duration::from_secs(300)),
            Duration::from_secs(100)
        );
        assert_eq!(renewal_delay(now - hour, now, Duration::from_secs(300)), Duration::ZERO);
    }

    #[test]
    fn the_surroundings_identity_follows_the_sdks_order() {
        #[track_caller]
        fn check(variables: &[(&str, &str)], expected: AmbientIdentity) {
            let found = AmbientIdentity::from_variables(|name| {
                variables.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned())
            });
            assert_eq!(found, expected, "{variables:?}");
        }
        let irsa =
            [("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"), ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r")];
        let web_identity = AmbientIdentity::WebIdentity {
            token_file: "/var/run/token".into(),
            role_arn: "arn:aws:iam::1:role/r".into(),
            session_name: "hydroplane".into(),
        };
        check(&irsa, web_identity.clone());
        let pod_identity = [
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/pod-token"),
        ];
        check(
            &pod_identity,
            AmbientIdentity::PodIdentity {
                endpoint: "http://169.254.170.23/v1/credentials".into(),
                token_file: Some("/var/run/pod-token".into()),
            },
        );
        // Both: web identity first, as in the SDK's chain.
        check(&[irsa[0], irsa[1], pod_identity[0]], web_identity);
        // A token file without a role is not IRSA.
        check(&[irsa[0]], AmbientIdentity::DefaultChain);
        check(
            &[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x")],
            AmbientIdentity::PodIdentity {
                endpoint: "http://169.254.170.2/v2/credentials/x".into(),
                token_file: None,
            },
        );
        // Keys in the environment come before both.
        check(&[("AWS_ACCESS_KEY_ID", "AKID"), irsa[0], irsa[1]], AmbientIdentity::DefaultChain);
        check(
            &[("AWS_ROLE_SESSION_NAME", "s"), irsa[0], irsa[1]],
            AmbientIdentity::WebIdentity {
                token_file: "/var/run/token".into(),
                role_arn: "arn:aws:iam::1:role/r".into(),
                session_name: "s".into(),
            },
        );
        check(&[], AmbientIdentity::DefaultChain);
    }

    #[test]
    fn bad_keys_are_named_by_their_id_only() {
        let error = std::io::Error::other(
            "InvalidClientTokenId: The security token included in the request is invalid.",
        );
        let classified =
            classify_credentials_error(&error, Some("AKIDEXAMPLE"), Some("arn:aws:iam::1:role/r"));
        assert!(matches!(classified, AwsError::InvalidKeys { .. }));
        assert!(classified.to_string().contains("AKIDEXAMPLE"));
        let other = std::io::Error::other("AccessDenied: not authorized to perform sts:AssumeRole");
        let classified =
            classify_credentials_error(&other, Some("AKIDEXAMPLE"), Some("arn:aws:iam::1:role/r"));
        assert!(
            classified.to_string().starts_with("cannot assume the role arn:aws:iam::1:role/r: "),
            "{classified}"
        );
    }
}
