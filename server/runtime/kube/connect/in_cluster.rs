//! The in-cluster config: how the server finds its cluster when it runs in a Pod, the way
//! client-go does. The API server's address is in `KUBERNETES_SERVICE_HOST` and
//! `KUBERNETES_SERVICE_PORT`; the service account's `token`, `ca.crt` and `namespace` are files
//! in `/var/run/secrets/kubernetes.io/serviceaccount` (another directory with
//! `HYDROPLANE_SERVICE_ACCOUNT_DIR`, for tests).
//!
//! The token is a projected one: it expires (an hour by default) and the kubelet writes a new
//! one, atomically, well before. kube-rs re-reads a `token_file` only about once a minute and
//! only at the fixed path, so the token here goes through [`BearerLayer`] instead: the file is
//! looked at (one `stat`) before each request and read again when it changed, and read again at
//! once when the API server answers 401, with the request sent once more. A file that cannot be
//! read keeps the last token that could, as client-go does.
//!
//! The `namespace` file is read only to say which namespace the Pod is in: processes go to
//! `runtime.namespace` (default `default`) in and out of a cluster alike, so one settings file
//! means the same thing wherever it runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::HeaderValue;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::bearer::{BearerLayer, BearerSource};
use crate::config::ApiRateSettings;

/// The variable that moves the service-account directory (for tests).
pub const SERVICE_ACCOUNT_DIR_ENV: &str = "HYDROPLANE_SERVICE_ACCOUNT_DIR";

/// Where the kubelet mounts the service account's files.
pub const DEFAULT_SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Why there is no in-cluster client.
#[derive(Debug, thiserror::Error)]
pub enum InClusterError {
    /// The environment does not say where the API server is: not in a Pod.
    #[error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not both set")]
    NotInCluster,
    /// The environment names an address that is no URL.
    #[error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT make no URL (`{host}`, `{port}`)")]
    BadAddress {
        /// `KUBERNETES_SERVICE_HOST`.
        host: String,
        /// `KUBERNETES_SERVICE_PORT`.
        port: String,
    },
    /// A file of the service account cannot be read.
    #[error("cannot read the service account's {what} {path}: {source}")]
    Read {
        /// `token` or `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file of the service account is there but unusable.
    #[error("the service account's {what} {path} is unusable: {problem}")]
    Unusable {
        /// `token` or `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (never the token itself).
        problem: String,
    },
    /// The kube client cannot be built from them.
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// Where the cluster is, as a Pod sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct InCluster {
    /// The API server, `https://HOST:PORT`.
    pub url: http::Uri,
    /// The service account's directory.
    pub directory: PathBuf,
}

impl InCluster {
    /// The in-cluster config of this process's environment.
    pub fn from_env() -> Result<InCluster, InClusterError> {
        let directory = std::env::var_os(SERVICE_ACCOUNT_DIR_ENV)
            .filter(|directory| !directory.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SERVICE_ACCOUNT_DIR));
        InCluster::from_parts(
            std::env::var("KUBERNETES_SERVICE_HOST").ok(),
            std::env::var("KUBERNETES_SERVICE_PORT").ok(),
            directory,
        )
    }

    /// The in-cluster config from the two variables' values and the directory.
    pub fn from_parts(
        host: Option<String>,
        port: Option<String>,
        directory: PathBuf,
    ) -> Result<InCluster, InClusterError> {
        let (Some(host), Some(port)) = (host.filter(|h| !h.is_empty()), port.filter(|p| !p.is_empty()))
        else {
            return Err(InClusterError::NotInCluster);
        };
        let bad = || InClusterError::BadAddress { host: host.clone(), port: port.clone() };
        let port_number: u16 = port.trim().parse().map_err(|_| bad())?;
        // An IPv6 address goes in brackets, as client-go writes it.
        let authority = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port_number}")
        } else {
            format!("{host}:{port_number}")
        };
        let url = format!("https://{authority}").parse().map_err(|_| bad())?;
        Ok(InCluster { url, directory })
    }

    /// The service account's token file.
    pub fn token_file(&self) -> PathBuf {
        self.directory.join("token")
    }

    /// The cluster's CA file.
    pub fn ca_file(&self) -> PathBuf {
        self.directory.join("ca.crt")
    }

    /// The namespace the Pod runs in, when the file says.
    pub fn pod_namespace(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.directory.join("namespace")).ok()?;
        let namespace = text.trim();
        (!namespace.is_empty()).then(|| namespace.to_owned())
    }

    /// A client for the cluster that trusts only the cluster's CA and sends the current token.
    pub fn client(&self, namespace: &str, rate: ApiRateSettings) -> Result<kube::Client, InClusterError> {
        let ca_file = self.ca_file();
        let pem = std::fs::read(&ca_file).map_err(|source| InClusterError::Read {
            what: "CA certificate",
            path: ca_file.clone(),
            source,
        })?;
        let unusable = |problem: String| InClusterError::Unusable {
            what: "CA certificate",
            path: ca_file.clone(),
            problem,
        };
        let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(&pem)
            .map(|certificate| certificate.map(|der| der.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|error| unusable(format!("not PEM certificates: {error}")))?;
        if certificates.is_empty() {
            return Err(unusable("no certificate in it".to_owned()));
        }
        let tokens = Arc::new(TokenFile::open(self.token_file())?);
        let mut config = kube::Config::new(self.url.clone());
        config.root_cert = Some(certificates);
        config.default_namespace = namespace.to_owned();
        let builder = super::throttle::client_builder(config, rate).map_err(InClusterError::Client)?;
        Ok(builder.with_layer(&BearerLayer::new(tokens)).build())
    }
}

/// What tells a changed file from the one read last: a rotation writes a new file (a new inode
/// behind the kubelet's `..data` symlink), and an edit in place changes the time or the size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    modified: Option<SystemTime>,
    length: u64,
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    let metadata = std::fs::metadata(path)?;
    Ok(FileStamp { inode: metadata.ino(), modified: metadata.modified().ok(), length: metadata.len() })
}

/// The service account's token file, read again when it changes or was refused.
struct TokenFile {
    path: PathBuf,
    current: Mutex<(HeaderValue, Option<FileStamp>)>,
}

impl TokenFile {
    /// Reads the token once: a missing or empty file is an error at start-up.
    fn open(path: PathBuf) -> Result<TokenFile, InClusterError> {
        let file_stamp = stamp(&path).ok();
        let header = read_header(&path)?;
        Ok(TokenFile { path, current: Mutex::new((header, file_stamp)) })
    }
}

/// The `Authorization` value of the token in `path` (marked sensitive, so never printed).
fn read_header(path: &Path) -> Result<HeaderValue, InClusterError> {
    let text = std::fs::read_to_string(path).map_err(|source| InClusterError::Read {
        what: "token",
        path: path.to_owned(),
        source,
    })?;
    let unusable = |problem: &str| InClusterError::Unusable {
        what: "token",
        path: path.to_owned(),
        problem: problem.to_owned(),
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(unusable("it is empty"));
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| unusable("it is not a header value"))?;
    header.set_sensitive(true);
    Ok(header)
}

impl BearerSource for TokenFile {
    fn header(&self, renew: bool) -> Result<HeaderValue, tower::BoxError> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = stamp(&self.path).ok();
        if !renew && now.is_some() && now == current.1 {
            return Ok(current.0.clone());
        }
        match read_header(&self.path) {
            Ok(header) => {
                if header != current.0 {
                    tracing::info!(path = %self.path.display(), "read the rotated service-account token");
                }
                *current = (header, now);
            }
            // The last token that could be read is kept: a kubelet may remove the file for a moment.
            Err(error) => tracing::warn!(%error, "keeping the last service-account token"),
        }
        Ok(current.0.clone())
    }

    fn name(&self) -> &'static str {
        "service-account token"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(host: Option<&str>, port: Option<&str>, expected: Result<&str, &str>) {
        let found =
            InCluster::from_parts(host.map(str::to_owned), port.map(str::to_owned), PathBuf::from("/sa"));
        match (found, expected) {
            (Ok(found), Ok(url)) => assert_eq!(found.url.to_string(), url),
            (Err(error), Err(message)) => assert_eq!(error.to_string(), message),
            (found, expected) => panic!("{host:?} {port:?}: {found:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn the_environment_gives_the_api_server() {
        check(Some("10.96.0.1"), Some("443"), Ok("https://10.96.0.1:443/"));
        check(Some("127.0.0.1"), Some("6443"), Ok("https://127.0.0.1:6443/"));
        check(Some("fd00::1"), Some("443"), Ok("https://[fd00::1]:443/"));
        let not_in_cluster = "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not both set";
        check(None, Some("443"), Err(not_in_cluster));
        check(Some("10.96.0.1"), None, Err(not_in_cluster));
        check(Some(""), Some(""), Err(not_in_cluster));
        check(
            Some("10.96.0.1"),
            Some("https"),
            Err("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT make no URL (`10.96.0.1`, `https`)"),
        );
    }

    #[test]
    fn a_rotated_token_is_read_before_the_next_request() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("token");
        std::fs::write(&path, "first-token\n").expect("write");
        let tokens = TokenFile::open(path.clone()).expect("token");
        let first = tokens.header(false).expect("header");
        assert_eq!(first, "Bearer first-token");
        assert!(first.is_sensitive(), "never printed by header dumps");
        // As the kubelet does: a new file renamed over the old one.
        let next = directory.path().join("token.new");
        std::fs::write(&next, "second-token").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert_eq!(tokens.header(false).expect("header"), "Bearer second-token");
        // Gone for a moment: the last token is kept.
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(tokens.header(true).expect("header"), "Bearer second-token");
    }

    #[tokio::test]
    async fn a_refused_token_is_read_again_at_once_and_the_request_sent_once_more() {
        use tower::{Layer, Service, ServiceExt};

        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("token");
        std::fs::write(&path, "first-token").expect("write");
        let tokens = Arc::new(TokenFile::open(path.clone()).expect("token"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cluster = {
            let seen = Arc::clone(&seen);
            tower::service_fn(move |request: http::Request<kube::client::Body>| {
                let header =
                    request.headers()[http::header::AUTHORIZATION].to_str().unwrap_or_default().to_owned();
                seen.lock().expect("lock").push(header.clone());
                // The token rotates while the request is in flight, and the old one is refused.
                std::fs::write(&path, "second-token").expect("write");
                let status = if header == "Bearer second-token" { 200 } else { 401 };
                async move {
                    Ok::<_, tower::BoxError>(
                        http::Response::builder().status(status).body(String::new()).expect("response"),
                    )
                }
            })
        };
        let mut service = BearerLayer::new(tokens).layer(cluster);
        let request = http::Request::get("https://cluster/api/v1/pods")
            .body(kube::client::Body::empty())
            .expect("request");
        let response = service.ready().await.expect("ready").call(request).await.expect("answered");
        assert_eq!(response.status(), 200);
        assert_eq!(*seen.lock().expect("lock"), ["Bearer first-token", "Bearer second-token"]);
    }

    #[test]
    fn missing_or_empty_files_are_named_without_the_token() {
        let directory = tempfile::tempdir().expect("tempdir");
        let in_cluster = InCluster {
            url: "https://127.0.0.1:1".parse().expect("url"),
            directory: directory.path().into(),
        };
        let error = in_cluster.client("default", ApiRateSettings::default()).err().expect("no CA");
        assert!(error.to_string().starts_with("cannot read the service account's CA certificate"), "{error}");
        std::fs::write(in_cluster.ca_file(), "not a certificate").expect("write");
        let error = in_cluster.client("default", ApiRateSettings::default()).err().expect("bad CA");
        assert!(error.to_string().contains("no certificate in it"), "{error}");
        std::fs::write(in_cluster.token_file(), " \n").expect("write");
        let error = TokenFile::open(in_cluster.token_file()).err().expect("empty token");
        assert!(error.to_string().ends_with("token is unusable: it is empty"), "{error}");
        assert_eq!(in_cluster.pod_namespace(), None);
        std::fs::write(directory.path().join("namespace"), "hydroplane\n").expect("write");
        assert_eq!(in_cluster.pod_namespace().as_deref(), Some("hydroplane"));
    }
}
