//! How the Kubernetes runtime connects to an EKS cluster: a cluster that is found and
//! authenticated through AWS. AWS credentials (see [`crate::aws::credentials`]) give the cluster's endpoint and
//! CA (EKS DescribeCluster, unless configured) and sign the bearer token of every request (see
//! [`crate::aws::token`]); the token is renewed well before its 15 minutes, and at once when the
//! API server answers 401 (the request is then sent once more).
//!
//! At start-up the whole chain is checked once (credentials, STS identity, the cluster, the
//! namespace), so a mistake is one clear message rather than a server whose every call fails.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::SharedCredentialsProvider;
use base64::Engine as _;
use http::HeaderValue;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::bearer::{BearerLayer, BearerSource};
use crate::aws::cluster::{self, ClusterError};
use crate::aws::credentials::{self, AwsError, CredentialsSource, classify_credentials_error};
use crate::aws::token::{TokenError, eks_token};
use crate::config::{ApiRateSettings, EksSettings};
use crate::runtime::RuntimeError;
use crate::runtime::kube::KubeRuntime;
use crate::secrets::SecretStore;

/// Why the EKS runtime could not start. Messages name keys, roles, clusters and regions, never
/// secrets.
#[derive(Debug, thiserror::Error)]
pub enum EksError {
    /// Credentials could not be had or were refused.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The cluster could not be found or described.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The cluster's endpoint or CA is unusable.
    #[error("the EKS cluster `{cluster}` has an unusable {what}: {message}")]
    BadCluster {
        /// The cluster's name.
        cluster: String,
        /// `endpoint` or `certificate authority`.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// The kube client could not be built.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    /// The cluster refused (401) or forbade (403) the principal Hydroplane authenticated as: it
    /// has no access entry (or `aws-auth` mapping), or one without the permissions needed.
    #[error(
        "the EKS cluster `{cluster}` refused Hydroplane, which authenticated with AWS as {principal}: {message}; \
         give {iam_principal} access to the cluster: an EKS access entry (`aws eks create-access-entry \
         --cluster-name {cluster} --principal-arn {iam_principal}`, then `aws eks associate-access-policy` or \
         a Kubernetes group bound by the Role in deploy/), or a mapping in the `aws-auth` ConfigMap"
    )]
    NoAccess {
        /// The cluster's name.
        cluster: String,
        /// The ARN GetCallerIdentity gave.
        principal: String,
        /// The IAM ARN an access entry names (a role for an assumed-role session).
        iam_principal: String,
        /// The cluster's answer.
        message: String,
    },
    /// The cluster itself refused or failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Connects to the cluster the settings name and returns the Kubernetes runtime on it.
pub async fn connect(
    settings: &EksSettings,
    secrets: Arc<dyn SecretStore>,
) -> Result<Arc<KubeRuntime>, EksError> {
    let region = settings.region.clone();
    let (provider, access_key_id) = credentials::provider(settings, &*secrets).await?;
    let role_arn = settings
        .credentials
        .as_ref()
        .and_then(|credentials| credentials.assume_role.as_ref())
        .map(|role| role.role_arn.clone());
    let renew_before = settings.credentials_renew_before();
    let source = CredentialsSource::start(provider, renew_before)
        .await
        .map_err(|error| classify_credentials_error(&error, access_key_id.as_deref(), role_arn.as_deref()))?;
    // One SDK configuration (and HTTPS client) serves both start-up calls.
    let config =
        credentials::sdk_config(&settings.region, Some(SharedCredentialsProvider::new(source.current())))
            .await;
    let access_key_id = access_key_id.unwrap_or_else(|| source.current().access_key_id().to_owned());
    let principal =
        cluster::check_identity(&config, settings.sts_endpoint.as_deref(), &access_key_id).await?;
    tracing::info!(cluster = %settings.cluster_name, %region, "AWS credentials accepted");

    let (endpoint, certificate_authority) = match (&settings.endpoint, &settings.certificate_authority) {
        (Some(endpoint), Some(ca)) => (endpoint.clone(), ca.clone()),
        _ => cluster::describe_cluster(&config, settings).await?,
    };
    let tokens = Arc::new(TokenSource {
        credentials: source,
        region,
        cluster_name: settings.cluster_name.clone(),
        refresh: settings.token_refresh(),
        current: Mutex::new(None),
    });
    let namespace = settings.namespace().to_owned();
    let client = kube_client(
        &settings.cluster_name,
        &endpoint,
        &certificate_authority,
        &namespace,
        settings.api_rate,
        tokens,
    )?;
    tracing::info!(cluster = %settings.cluster_name, %endpoint, %namespace, "connecting to the EKS cluster");
    KubeRuntime::connect("eks", client, namespace, secrets, settings.public_exposure.clone())
        .await
        .map_err(|error| no_access(error, &settings.cluster_name, &principal))
}

/// A refusal by the cluster names the principal and how to let it in; other errors stay.
fn no_access(error: RuntimeError, cluster: &str, principal: &str) -> EksError {
    match error {
        RuntimeError::Unauthenticated { .. } | RuntimeError::PermissionDenied { .. } => EksError::NoAccess {
            cluster: cluster.to_owned(),
            principal: principal.to_owned(),
            iam_principal: iam_principal(principal),
            message: error.to_string(),
        },
        other => EksError::Runtime(other),
    }
}

/// The IAM ARN an access entry takes for a caller: an assumed-role session
/// (`arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`) is its role (`arn:aws:iam::ACCOUNT:role/ROLE`);
/// a user's ARN is itself.
fn iam_principal(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [_, partition, "sts", "", account, resource] = parts.as_slice()
        && let Some(rest) = resource.strip_prefix("assumed-role/")
        && let Some((role, _session)) = rest.rsplit_once('/')
    {
        return format!("arn:{partition}:iam::{account}:role/{role}");
    }
    arn.to_owned()
}

/// A kube client for the cluster: its CA is the only one trusted (no insecure TLS anywhere), and
/// every request carries a fresh EKS token.
fn kube_client(
    cluster: &str,
    endpoint: &str,
    certificate_authority: &str,
    namespace: &str,
    rate: ApiRateSettings,
    tokens: Arc<TokenSource>,
) -> Result<kube::Client, EksError> {
    let bad = |what: &'static str, message: String| EksError::BadCluster {
        cluster: cluster.to_owned(),
        what,
        message,
    };
    let url: http::Uri =
        endpoint.parse().map_err(|error| bad("endpoint", format!("`{endpoint}`: {error}")))?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(certificate_authority.trim())
        .map_err(|error| bad("certificate authority", format!("not base64: {error}")))?;
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
        .map(|certificate| certificate.map(|der| der.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|error| bad("certificate authority", format!("not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(bad("certificate authority", "no certificate in it".to_owned()));
    }
    let mut config = kube::Config::new(url);
    config.root_cert = Some(certificates);
    config.default_namespace = namespace.to_owned();
    let builder =
        super::throttle::client_builder(config, rate).map_err(|error| EksError::Client(error.to_string()))?;
    Ok(builder.with_layer(&BearerLayer::new(tokens)).build())
}

/// The bearer token of the cluster, made afresh when it is older than `refresh` or was refused.
struct TokenSource {
    credentials: CredentialsSource,
    region: String,
    cluster_name: String,
    refresh: Duration,
    current: Mutex<Option<(HeaderValue, tokio::time::Instant)>>,
}

impl TokenSource {
    /// The `Authorization` header value to send now.
    fn header(&self, renew: bool) -> Result<HeaderValue, TokenError> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !renew
            && let Some((header, made)) = current.as_ref()
            && made.elapsed() < self.refresh
        {
            return Ok(header.clone());
        }
        let token =
            eks_token(&self.credentials.current(), &self.region, &self.cluster_name, SystemTime::now())
                .inspect_err(|_| crate::metrics::count_renewal("eks_token", false))?;
        crate::metrics::count_renewal("eks_token", true);
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.as_str()))
            .map_err(|error| TokenError::Signing(error.to_string()))?;
        header.set_sensitive(true);
        *current = Some((header.clone(), tokio::time::Instant::now()));
        tracing::debug!(cluster = %self.cluster_name, "made a new EKS token");
        Ok(header)
    }
}

impl BearerSource for TokenSource {
    fn header(&self, renew: bool) -> Result<HeaderValue, tower::BoxError> {
        TokenSource::header(self, renew).map_err(Into::into)
    }

    fn name(&self) -> &'static str {
        "EKS token"
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::Credentials;
    use http::{Request, Response};
    use kube::client::Body;
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    async fn tokens(refresh: Duration) -> Arc<TokenSource> {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let source =
            CredentialsSource::start(SharedCredentialsProvider::new(credentials), Duration::from_secs(300))
                .await
                .expect("static credentials");
        Arc::new(TokenSource {
            credentials: source,
            region: "us-west-2".into(),
            cluster_name: "hydro-eks".into(),
            refresh,
            current: Mutex::new(None),
        })
    }

    /// A stand-in for the kube stack: answers 401 to the first `refusals` requests, records the
    /// Authorization headers it saw.
    fn cluster(
        refusals: usize,
        seen: Arc<Mutex<Vec<String>>>,
    ) -> impl Service<Request<Body>, Response = Response<String>, Error = tower::BoxError, Future: Send>
    + Send
    + 'static {
        let calls = Arc::new(AtomicUsize::new(0));
        tower::service_fn(move |request: Request<Body>| {
            let seen = Arc::clone(&seen);
            let calls = Arc::clone(&calls);
            async move {
                let header = request.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                seen.lock().expect("lock").push(header.unwrap_or_default().to_owned());
                let status = if calls.fetch_add(1, Ordering::SeqCst) < refusals { 401 } else { 200 };
                Ok::<_, tower::BoxError>(
                    Response::builder().status(status).body(String::new()).expect("response"),
                )
            }
        })
    }

    fn get() -> Request<Body> {
        Request::get("https://cluster/api/v1/pods").body(Body::empty()).expect("request")
    }

    fn made(tokens: &TokenSource) -> tokio::time::Instant {
        *tokens.current.lock().expect("lock").as_ref().map(|(_, made)| made).expect("a token was made")
    }

    #[test]
    fn an_access_entry_names_the_role_of_an_assumed_role_session() {
        assert_eq!(
            iam_principal("arn:aws:sts::123456789012:assumed-role/hydroplane-server/eks-pod-identity"),
            "arn:aws:iam::123456789012:role/hydroplane-server"
        );
        assert_eq!(
            iam_principal("arn:aws:iam::123456789012:user/hydroplane"),
            "arn:aws:iam::123456789012:user/hydroplane"
        );
        let refused = RuntimeError::Unauthenticated {
            message: "the cluster refused our credentials".into(),
            source: None,
        };
        let error = no_access(refused, "hydro-eks", "arn:aws:sts::1:assumed-role/r/s").to_string();
        assert!(error.contains("authenticated with AWS as arn:aws:sts::1:assumed-role/r/s"), "{error}");
        assert!(error.contains("--principal-arn arn:aws:iam::1:role/r"), "{error}");
        assert!(error.contains("aws-auth"), "{error}");
        let other = no_access(RuntimeError::Internal("x".into()), "c", "p");
        assert!(matches!(other, EksError::Runtime(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_token_is_renewed_at_once_and_the_request_sent_again() {
        let tokens = tokens(Duration::from_secs(600)).await;
        tokens.header(false).expect("token");
        let first_made = made(&tokens);
        tokio::time::advance(Duration::from_secs(1)).await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service = BearerLayer::new(Arc::clone(&tokens)).layer(cluster(1, Arc::clone(&seen)));
        let response = service.ready().await.expect("ready").call(get()).await.expect("answered");
        assert_eq!(response.status(), 200, "the retry went through");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen.len(), 2, "sent exactly twice");
        assert!(seen.iter().all(|header| header.starts_with("Bearer k8s-aws-v1.")), "{seen:?}");
        assert!(made(&tokens) > first_made, "the refused token was replaced, though it was not due yet");
    }

    #[tokio::test]
    async fn a_token_refused_twice_is_reported_not_retried_forever() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut service = BearerLayer::new(tokens(Duration::from_secs(600)).await)
            .layer(cluster(usize::MAX, Arc::clone(&seen)));
        let response = service.ready().await.expect("ready").call(get()).await.expect("answered");
        assert_eq!(response.status(), 401);
        assert_eq!(seen.lock().expect("lock").len(), 2, "one retry only");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_reused_until_they_are_due_for_renewal() {
        let cached = tokens(Duration::from_secs(600)).await;
        let first = cached.header(false).expect("token");
        assert_eq!(first, cached.header(false).expect("token"), "reused while fresh");
        assert!(first.is_sensitive(), "never printed by header dumps");
        let made_first = made(&cached);
        tokio::time::advance(Duration::from_secs(601)).await;
        cached.header(false).expect("token");
        assert!(made(&cached) > made_first, "renewed once due");
    }
}
