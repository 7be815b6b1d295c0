//! The AWS credentials Hydroplane authenticates with, and the SDK configuration around them.
//!
//! - Static keys come from the secret store (the guide's `credentials.access_key`).
//! - With `assume_role`, the SDK's `AssumeRoleProvider` turns those keys into temporary
//!   credentials; [`CredentialsSource`] asks it again ahead of expiry, in the background, and
//!   keeps serving the still-valid credentials while a renewal fails (retried with backoff).
//! - Without `credentials`, the SDK's default chain (environment, profile, web identity, instance
//!   role).
//!
//! Nothing here logs or returns a secret: errors name access key ids, role ARNs and secret names.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
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
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .http_client(http_client);
    if let Some(provider) = provider {
        loader = loader.credentials_provider(provider);
    }
    loader.load().await
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
        let config = sdk_config(&settings.region, None).await;
        let provider = config.credentials_provider().ok_or_else(|| {
            AwsError::NoCredentials("the default credential chain found nothing".to_owned())
        })?;
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
