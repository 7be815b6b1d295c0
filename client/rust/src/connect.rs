//! Reaching the server: the server URL (TCP with or without TLS, or a Unix domain socket), the TLS
//! files, the bearer token that goes on every call, and why a connection failed.
//!
//! The options are checked without any I/O first ([`ConnectOptions::check`]), so a wrong
//! combination is reported before a file is read or a connection tried. Errors are structured, so
//! that a program (hpctl) can add hints in its own words; their messages are one line and never
//! include the token or a key.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UnixStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The server hpctl and the examples use when given none: a local server on its default port.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How long the TCP connect and, separately, the TLS handshake may take by default: a server that
/// accepts but never answers should not hang the caller.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Plain HTTP/2 over TCP: `http://HOST:PORT`, or `HOST:PORT`.
    Http {
        /// `http://HOST:PORT`, as shown in messages.
        url: String,
    },
    /// HTTP/2 over TLS; the server's certificate must be valid for `domain`.
    Https {
        /// `https://HOST:PORT`, as shown in messages.
        url: String,
        /// The URL's host (an IPv6 address without its brackets), a DNS name or an IP address.
        domain: String,
    },
    /// A Unix domain socket: `unix:PATH` or `unix:///ABSOLUTE/PATH`.
    Unix {
        /// The socket's path.
        path: PathBuf,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Http { url } | Target::Https { url, .. } => formatter.write_str(url),
            Target::Unix { path } => write!(formatter, "unix:{}", path.display()),
        }
    }
}

impl FromStr for Target {
    type Err = UrlError;

    fn from_str(server: &str) -> Result<Target, UrlError> {
        Target::parse(server)
    }
}

impl Target {
    /// Parses a server URL: `http://`, `https://`, `unix:` or a bare `HOST:PORT` (plain HTTP).
    pub fn parse(server: &str) -> Result<Target, UrlError> {
        let server = server.trim();
        if server.is_empty() {
            return Err(UrlError::Empty);
        }
        if let Some(rest) = server.strip_prefix("unix:") {
            // As in gRPC: `unix:PATH` may be relative; `unix://` must be followed by an absolute
            // path, since `unix://run/x.sock` could mean either and guessing would pick the wrong
            // socket.
            let path = match rest.strip_prefix("//") {
                Some(absolute) if absolute.starts_with('/') => absolute,
                Some(_) => return Err(UrlError::UnixNotAbsolute(server.to_owned())),
                None => rest,
            };
            if path.is_empty() {
                return Err(UrlError::NoSocket(server.to_owned()));
            }
            return Ok(Target::Unix { path: PathBuf::from(path) });
        }
        let invalid = |problem: String| UrlError::Invalid { server: server.to_owned(), problem };
        let url = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
        let uri: Uri = url.parse().map_err(|error: http::uri::InvalidUri| invalid(error.to_string()))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(invalid("write http://HOST:PORT, https://HOST:PORT or unix:PATH".to_owned()));
        };
        // A user name or password in the URL is most likely a token in the wrong place: it would
        // be shown in every message, so it is refused without echoing the URL.
        if authority.as_str().contains('@') {
            return Err(UrlError::Credentials);
        }
        // gRPC calls always go to /package.Service/Method: a path here would be silently ignored.
        if uri.path_and_query().is_some_and(|path| path.as_str() != "/") {
            return Err(invalid("it takes no path, only scheme://HOST:PORT".to_owned()));
        }
        // `Uri` takes any text after the last colon; a port that is no number would only fail
        // later with a less clear message.
        if authority.port().is_none()
            && authority.as_str().rsplit_once(':').is_some_and(|(_, port)| !port.ends_with(']'))
        {
            return Err(invalid("the port must be a number from 1 to 65535".to_owned()));
        }
        let url = format!("{scheme}://{authority}");
        match scheme {
            "http" => Ok(Target::Http { url }),
            "https" => {
                let host = authority.host();
                let domain = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
                Ok(Target::Https { domain: domain.to_owned(), url })
            }
            other => Err(UrlError::Scheme { scheme: other.to_owned(), server: server.to_owned() }),
        }
    }
}

/// A server URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// No URL at all.
    #[error("the server URL is empty")]
    Empty,
    /// `unix://` followed by a relative path, which is ambiguous.
    #[error("`{0}`: unix:// needs an absolute path, as in unix:///run/hydroplane.sock (or write unix:PATH)")]
    UnixNotAbsolute(String),
    /// `unix:` with no path.
    #[error("`{0}` names no socket: write unix:PATH, as in unix:/run/hydroplane.sock")]
    NoSocket(String),
    /// Not a URL of the form `scheme://HOST:PORT`.
    #[error("invalid server URL `{server}`: {problem}")]
    Invalid {
        /// The URL as given.
        server: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A user name or password in the URL; the URL is not repeated, since it holds a secret.
    #[error("the server URL must not contain a user name or password: a token goes in ConnectOptions::token")]
    Credentials,
    /// A scheme other than `http`, `https` and `unix`.
    #[error("unsupported scheme `{scheme}://` in `{server}`: use http://, https:// or unix:")]
    Scheme {
        /// The scheme, without `://`.
        scheme: String,
        /// The URL as given.
        server: String,
    },
}

/// A bearer token, given or in a file read at connect time. Its Debug prints `<redacted>` and it
/// has no Display, so neither the options' Debug nor an error message can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(TokenSource);

/// Where a token is.
#[derive(Clone, PartialEq, Eq)]
enum TokenSource {
    /// The token itself.
    Given(String),
    /// A file holding it (surrounding whitespace is ignored).
    File(PathBuf),
}

impl From<String> for Token {
    fn from(token: String) -> Token {
        Token::new(token)
    }
}

impl From<&str> for Token {
    fn from(token: &str) -> Token {
        Token::new(token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            TokenSource::Given(_) => formatter.write_str("<redacted>"),
            // The path is no secret, and naming it helps when the file is the wrong one.
            TokenSource::File(path) => formatter.debug_tuple("TokenFile").field(path).finish(),
        }
    }
}

impl Token {
    /// The token itself; surrounding whitespace is ignored.
    pub fn new(token: impl Into<String>) -> Token {
        Token(TokenSource::Given(token.into()))
    }

    /// A file holding the token (surrounding whitespace is ignored), read when connecting.
    pub fn from_file(path: impl Into<PathBuf>) -> Token {
        Token(TokenSource::File(path.into()))
    }

    /// Whether this is a given token that is empty or only whitespace (a file is never empty
    /// before it is read): a program may treat that as no token, as for `HYDROPLANE_TOKEN=`.
    pub fn is_empty(&self) -> bool {
        matches!(&self.0, TokenSource::Given(token) if token.trim().is_empty())
    }

    /// Checks a given token without any I/O; a file is checked when it is read.
    pub fn check(&self) -> Result<(), TokenError> {
        match &self.0 {
            TokenSource::Given(token) => header(token, None).map(drop),
            TokenSource::File(_) => Ok(()),
        }
    }

    /// The `authorization` value, reading the file when the token is in one.
    fn header(&self) -> Result<MetadataValue<Ascii>, TokenError> {
        match &self.0 {
            TokenSource::Given(token) => header(token, None),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| TokenError::Unreadable { path: path.clone(), source })?;
                header(&text, Some(path))
            }
        }
    }
}

/// The `authorization` value for a token, checked to be a valid header; `file` is where it came
/// from, for the error, which never includes the token itself.
fn header(token: &str, file: Option<&Path>) -> Result<MetadataValue<Ascii>, TokenError> {
    // Trimmed: a trailing newline from `$(cat file)` or an editor is never part of a token.
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Empty { file: file.map(Path::to_owned) });
    }
    let invalid = || TokenError::Invalid { file: file.map(Path::to_owned) };
    // Stricter than a header allows: a space inside would make `Bearer a b`, which no server
    // would match, so it is reported here rather than as an unknown token.
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(invalid());
    }
    let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| invalid())?;
    // Sensitive: hyper and h2 then keep it out of their Debug output and HPACK tables.
    value.set_sensitive(true);
    Ok(value)
}

/// A token that cannot be sent. The message names the file, never the token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is empty or only whitespace.
    #[error("{}", match file {
        Some(path) => format!("the token file {} is empty", path.display()),
        None => "the token is empty".to_owned(),
    })]
    Empty {
        /// The file it was read from, if any.
        file: Option<PathBuf>,
    },
    /// The token has characters a header cannot carry (only visible ASCII, no spaces).
    #[error("{} has characters that cannot go in a gRPC header (only visible ASCII, no spaces)", match file {
        Some(path) => format!("the token in {}", path.display()),
        None => "the token".to_owned(),
    })]
    Invalid {
        /// The file it was read from, if any.
        file: Option<PathBuf>,
    },
    /// The token file cannot be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// PEM text (certificates or a private key), given or in a file read at connect time. Its Debug
/// shows the path or the length, never the contents, since it may be a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct Pem(PemSource);

/// Where PEM text is.
#[derive(Clone, PartialEq, Eq)]
enum PemSource {
    /// The text itself.
    Given(Vec<u8>),
    /// A file holding it.
    File(PathBuf),
}

impl fmt::Debug for Pem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            PemSource::Given(pem) => write!(formatter, "Pem(<{} bytes>)", pem.len()),
            PemSource::File(path) => formatter.debug_tuple("PemFile").field(path).finish(),
        }
    }
}

impl Pem {
    /// PEM text itself.
    pub fn new(pem: impl Into<Vec<u8>>) -> Pem {
        Pem(PemSource::Given(pem.into()))
    }

    /// A PEM file, read when connecting.
    pub fn from_file(path: impl Into<PathBuf>) -> Pem {
        Pem(PemSource::File(path.into()))
    }

    /// The file, when the text is in one.
    pub fn path(&self) -> Option<&Path> {
        match &self.0 {
            PemSource::Given(_) => None,
            PemSource::File(path) => Some(path),
        }
    }

    /// The text, read from the file when it is in one; `file` names it in errors.
    fn read(&self, file: TlsFile) -> Result<Vec<u8>, FileError> {
        match &self.0 {
            PemSource::Given(pem) => Ok(pem.clone()),
            PemSource::File(path) => std::fs::read(path).map_err(|error| FileError {
                file,
                path: Some(path.clone()),
                problem: FileProblem::Unreadable(error),
            }),
        }
    }

    /// The text, which must hold at least one certificate.
    fn certificates(&self, file: TlsFile) -> Result<Vec<u8>, FileError> {
        let pem = self.read(file)?;
        let error = |problem| FileError { file, path: self.path().map(Path::to_owned), problem };
        // Checked here because rustls skips what it cannot parse: a wrong file would otherwise
        // show up only later as an UnknownIssuer that does not name it.
        let mut count = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            certificate.map_err(|problem| error(FileProblem::NotPem(problem.to_string())))?;
            count += 1;
        }
        if count == 0 {
            return Err(error(FileProblem::NoCertificate));
        }
        Ok(pem)
    }

    /// The text, which must hold a private key.
    fn private_key(&self, file: TlsFile) -> Result<Vec<u8>, FileError> {
        let pem = self.read(file)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|problem| FileError {
            file,
            path: self.path().map(Path::to_owned),
            problem: FileProblem::NoPrivateKey(problem.to_string()),
        })?;
        Ok(pem)
    }
}

/// A client certificate and its private key, for servers that want one (mTLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate (PEM), optionally followed by its chain.
    pub certificate: Pem,
    /// The certificate's private key (PEM).
    pub key: Pem,
}

/// Which TLS input a [`FileError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFile {
    /// The CA certificate trusted for the server.
    CaCertificate,
    /// The client certificate.
    ClientCertificate,
    /// The client certificate's private key.
    ClientKey,
}

impl fmt::Display for TlsFile {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            TlsFile::CaCertificate => "the CA certificate",
            TlsFile::ClientCertificate => "the client certificate",
            TlsFile::ClientKey => "the client key",
        })
    }
}

/// A TLS file that cannot be read or holds the wrong thing.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.describe(&self.file.to_string()))]
pub struct FileError {
    /// Which input.
    pub file: TlsFile,
    /// Its file, when it was given as one.
    pub path: Option<PathBuf>,
    /// What is wrong.
    pub problem: FileProblem,
}

impl FileError {
    /// The message, calling the input `name` (a program can say `--ca-cert` instead of "the CA
    /// certificate").
    pub fn describe(&self, name: &str) -> String {
        let named = match &self.path {
            Some(path) => format!("{name} {}", path.display()),
            None => name.to_owned(),
        };
        match &self.problem {
            FileProblem::Unreadable(error) => format!("cannot read {named}: {error}"),
            FileProblem::NotPem(error) => format!("{named}: not a PEM certificate file ({error})"),
            FileProblem::NoCertificate => {
                format!("{named}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)")
            }
            FileProblem::NoPrivateKey(error) => format!("{named}: no PEM private key in it ({error})"),
        }
    }
}

/// What is wrong with a TLS file.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileProblem {
    /// It cannot be read.
    Unreadable(std::io::Error),
    /// It has a broken PEM section.
    NotPem(String),
    /// It has no certificate.
    NoCertificate,
    /// It has no private key.
    NoPrivateKey(String),
}

/// How to reach a server: where it is, the token to send, and what to trust and present for TLS.
///
/// Built from a server URL and then refined:
///
/// ```
/// use hydroplane_client::{ConnectOptions, Pem, Token};
///
/// let options = ConnectOptions::new("https://hydroplane.example:50051")?
///     .token(Token::from_file("/run/secrets/hydroplane-token"))
///     .ca_certificate(Pem::from_file("/etc/hydroplane/ca.pem"));
/// options.check()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The server.
    target: Target,
    /// The token to send with every call.
    token: Option<Token>,
    /// The only CA trusted for https, instead of the system's.
    ca_certificate: Option<Pem>,
    /// The client certificate and its key, for mTLS.
    client_identity: Option<ClientIdentity>,
    /// How long the TCP connect and the TLS handshake may each take.
    connect_timeout: Duration,
    /// How long a call may wait for the server's answer; `None`: as long as it takes.
    request_timeout: Option<Duration>,
}

impl ConnectOptions {
    /// Options for this server URL: `http://HOST:PORT`, `https://HOST:PORT`, `HOST:PORT` (plain)
    /// or `unix:PATH`; no token, the system's CAs for https.
    pub fn new(server: &str) -> Result<ConnectOptions, UrlError> {
        Ok(ConnectOptions::for_target(Target::parse(server)?))
    }

    /// Options for an already parsed target.
    pub fn for_target(target: Target) -> ConnectOptions {
        ConnectOptions {
            target,
            token: None,
            ca_certificate: None,
            client_identity: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
        }
    }

    /// Sends this bearer token with every call.
    pub fn token(mut self, token: Token) -> ConnectOptions {
        self.token = Some(token);
        self
    }

    /// Trusts only the CA certificates in this PEM for an https server, not the system's.
    pub fn ca_certificate(mut self, pem: Pem) -> ConnectOptions {
        self.ca_certificate = Some(pem);
        self
    }

    /// Presents this client certificate to an https server that asks for one.
    pub fn client_identity(mut self, identity: ClientIdentity) -> ConnectOptions {
        self.client_identity = Some(identity);
        self
    }

    /// Sets how long the TCP connect and the TLS handshake may each take (5 s by default).
    pub fn connect_timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how long each call may wait for the server's answer (none by default). A call that
    /// gets none in time fails with DEADLINE_EXCEEDED and a [`NoAnswer`] as its source, so that a
    /// server that takes the connection and never answers cannot hang the caller. A Start that
    /// waits for its process gets the wait plus [`START_WAIT_MARGIN`] if that is longer; a watch
    /// is bounded until its stream opens, not after.
    pub fn request_timeout(mut self, timeout: Duration) -> ConnectOptions {
        self.request_timeout = Some(timeout);
        self
    }

    /// The bound on each call, when set.
    pub(crate) fn request_timeout_value(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// The server.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether a token is set (a program may hint at one when the server wants it).
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a CA certificate is set, instead of the system's CAs.
    pub fn has_ca_certificate(&self) -> bool {
        self.ca_certificate.is_some()
    }

    /// Whether a client identity is set.
    pub fn has_client_identity(&self) -> bool {
        self.client_identity.is_some()
    }

    /// Checks the options together, without reading any file or touching the network.
    pub fn check(&self) -> Result<(), ConnectError> {
        if let Some(token) = &self.token {
            token.check()?;
        }
        // TLS settings for a plain or Unix server would be silently unused: the caller thinks the
        // connection is verified when it is not.
        if !matches!(self.target, Target::Https { .. }) {
            if self.ca_certificate.is_some() {
                return Err(ConnectError::CaCertificateWithoutTls(self.target.clone()));
            }
            if self.client_identity.is_some() {
                return Err(ConnectError::ClientIdentityWithoutTls(self.target.clone()));
            }
        }
        Ok(())
    }

    /// Reads the token and TLS files and connects.
    pub(crate) async fn channel(&self) -> Result<(Channel, Auth), ConnectError> {
        self.check()?;
        let auth = Auth(self.token.as_ref().map(Token::header).transpose()?);
        let timeout = self.connect_timeout;
        let channel = match &self.target {
            Target::Http { url } => endpoint(&self.target, url)?.connect_timeout(timeout).connect().await,
            Target::Https { url, domain } => {
                let tls = self.tls_config(domain)?;
                endpoint(&self.target, url)?
                    .connect_timeout(timeout)
                    .tls_config(tls)
                    .map_err(|error| self.tls_setup_error(&error))?
                    .connect()
                    .await
            }
            Target::Unix { path } => {
                let path: Arc<Path> = Arc::from(path.as_path());
                // The URL is a placeholder for the `:authority` header: the connector below
                // decides where the bytes go, and it is called again for each reconnect.
                Endpoint::from_static("http://localhost")
                    .connect_timeout(timeout)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = Arc::clone(&path);
                        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
                    }))
                    .await
            }
        };
        let channel = channel.map_err(|error| Unreachable::new(&self.target, &error))?;
        Ok((channel, auth))
    }

    /// The TLS settings: the given CA only, or else the system's roots; the client identity.
    fn tls_config(&self, domain: &str) -> Result<ClientTlsConfig, FileError> {
        // `domain_name` is also how an IP address is checked against the certificate's IP SANs.
        let tls = ClientTlsConfig::new().domain_name(domain).timeout(self.connect_timeout);
        let tls = match &self.ca_certificate {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem.certificates(TlsFile::CaCertificate)?)),
            None => tls.with_native_roots(),
        };
        Ok(match &self.client_identity {
            Some(identity) => tls.identity(Identity::from_pem(
                identity.certificate.certificates(TlsFile::ClientCertificate)?,
                identity.key.private_key(TlsFile::ClientKey)?,
            )),
            None => tls,
        })
    }

    /// Explains why the TLS settings were refused before connecting.
    fn tls_setup_error(&self, error: &(dyn StdError + 'static)) -> ConnectError {
        let reason = root_cause(error);
        let problem = if self.ca_certificate.is_none() && reason.contains("native") {
            TlsSetupProblem::NoSystemRoots
        } else if self.client_identity.is_some() {
            TlsSetupProblem::ClientIdentity
        } else {
            TlsSetupProblem::Other
        };
        ConnectError::TlsSetup { target: self.target.clone(), reason, problem }
    }
}

/// Puts `authorization: Bearer TOKEN` on every call, when a token was given.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(if self.0.is_some() { "Auth(<redacted>)" } else { "Auth(None)" })
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The endpoint of the already checked `http://` or `https://` URL of `target`.
fn endpoint(target: &Target, url: &str) -> Result<Endpoint, Unreachable> {
    // From a `Uri`, not `Endpoint::from_shared`: for https that would load the system's roots
    // even when a CA is given, and fail on a machine that has none.
    let uri: Uri = url.parse().map_err(|error: http::uri::InvalidUri| Unreachable {
        target: target.clone(),
        reason: error.to_string(),
        failure: Failure::Other,
    })?;
    Ok(Endpoint::from(uri))
}

/// How much longer than its wait a waiting Start may take before the client gives up on it, so
/// that the server's own DEADLINE_EXCEEDED, which says what the process was doing, arrives first.
pub const START_WAIT_MARGIN: Duration = Duration::from_secs(10);

/// The source of the DEADLINE_EXCEEDED a call gets when the server sent no answer within the
/// request timeout (see [`ConnectOptions::request_timeout`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no answer from the server within {after:?}")]
pub struct NoAnswer {
    /// How long the call waited.
    after: Duration,
}

impl NoAnswer {
    /// A call that waited this long.
    pub(crate) fn new(after: Duration) -> NoAnswer {
        NoAnswer { after }
    }

    /// How long the call waited.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// The status a call gets for it.
    pub(crate) fn status(self) -> tonic::Status {
        let mut status = tonic::Status::deadline_exceeded(self.to_string());
        status.set_source(Arc::new(self));
        status
    }

    /// When a call failed because the server did not answer in time, how long it waited.
    pub fn from_status(status: &tonic::Status) -> Option<NoAnswer> {
        StdError::source(status).and_then(|source| source.downcast_ref::<NoAnswer>()).copied()
    }
}

/// Why [`crate::Client::connect`] failed. One line; never the token or a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The token cannot be read or sent.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A CA certificate for a server that is not `https://`, where it would be silently unused.
    #[error("a CA certificate needs an https:// server URL, not {0}")]
    CaCertificateWithoutTls(Target),
    /// A client certificate for a server that is not `https://`.
    #[error("a client certificate needs an https:// server URL, not {0}")]
    ClientIdentityWithoutTls(Target),
    /// A TLS file cannot be read or holds the wrong thing.
    #[error(transparent)]
    File(#[from] FileError),
    /// The TLS settings were refused before connecting.
    #[error("cannot set up TLS for {target}: {reason}")]
    TlsSetup {
        /// The server.
        target: Target,
        /// The root cause.
        reason: String,
        /// What it is about, as far as known.
        problem: TlsSetupProblem,
    },
    /// The server could not be reached, or the TLS handshake with it failed.
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
}

/// What refused TLS settings are about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsSetupProblem {
    /// No CA was given and the system has no CA certificates to trust instead.
    NoSystemRoots,
    /// A client identity was given, and its key may not belong to its certificate.
    ClientIdentity,
    /// Anything else.
    Other,
}

/// The server could not be reached, or the TLS handshake with it failed; classified, so that a
/// program can say what to try.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the Hydroplane server at {target}: {reason} ({})", self.explanation())]
pub struct Unreachable {
    /// The server.
    target: Target,
    /// The root cause's message: "Connection refused (os error 111)", not "transport error".
    reason: String,
    /// The cause, as far as the fix depends on it.
    failure: Failure,
}

/// Why a server could not be reached, as far as the fix depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The TLS handshake failed.
    Tls(TlsFailure),
    /// This user may not open the Unix socket.
    SocketPermission,
    /// The server accepted the connection and closed it: over http, likely a TLS server; over
    /// https, some TLS servers (BoringSSL's, as in grpcio) do so for a missing or refused client
    /// certificate, with no alert to tell why.
    ClosedByServer,
    /// Anything else: refused, timed out, no such host or socket.
    Other,
}

/// Why a TLS handshake failed, as far as the fix depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate does not name the host connected to.
    WrongName,
    /// The server's certificate has expired or is not valid yet.
    OutOfValidity,
    /// The server's certificate is signed by no trusted CA (or is otherwise unacceptable).
    Untrusted,
    /// The server presented a CA certificate (`CA:TRUE`, as `openssl req -x509` makes by default)
    /// as its own, which TLS clients refuse: it needs a certificate signed by that CA.
    CaCertificate,
    /// The server's certificate is not meant for a TLS server (its extended key usage lacks
    /// serverAuth: a client certificate, say).
    WrongPurpose,
    /// The server wanted a client certificate, or refused the one given.
    ClientCertificate,
    /// The server did not answer in TLS at all.
    NotTls,
    /// Anything else.
    Other,
}

impl Unreachable {
    /// Classifies a failure to reach `target`.
    fn new(target: &Target, error: &(dyn StdError + 'static)) -> Unreachable {
        let mut reason = root_cause(error);
        let failure = match TlsFailure::find(error, &reason) {
            Some(failure) => Failure::Tls(failure),
            None if matches!(target, Target::Unix { .. })
                && find_io_kind(error) == Some(std::io::ErrorKind::PermissionDenied) =>
            {
                Failure::SocketPermission
            }
            None if !matches!(target, Target::Unix { .. }) && closed_by_peer(error, &reason) => {
                Failure::ClosedByServer
            }
            None => Failure::Other,
        };
        // rustls words some failures with its Debug values (`Other(OtherError(CaUsedAsEndEntity))`):
        // a person gets a sentence instead.
        if let Failure::Tls(tls) = failure {
            reason = tls.reason(&reason, target);
        }
        Unreachable { target: target.clone(), reason, failure }
    }

    /// When a call failed because the connection failed (a refused client certificate, a server
    /// that went away), how; `None` when the server itself answered with the status.
    pub fn from_status(target: &Target, status: &tonic::Status) -> Option<Unreachable> {
        // Such a failure comes back as a status whose source is the transport error.
        let transport = (status.code() == tonic::Code::Unavailable && status.message().contains("transport"))
            || StdError::source(status).is_some_and(|source| source.is::<tonic::transport::Error>());
        transport.then(|| Unreachable::new(target, status))
    }

    /// The server.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The root cause's message.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The cause, as far as the fix depends on it.
    pub fn failure(&self) -> Failure {
        self.failure
    }

    /// What to try, in words that fit any program (hpctl has its own, naming its flags).
    fn explanation(&self) -> String {
        match self.failure {
            Failure::Tls(TlsFailure::WrongName) => {
                let domain = match &self.target {
                    Target::Https { domain, .. } => domain.as_str(),
                    _ => "this host",
                };
                format!(
                    "the server's certificate is not valid for {domain}: connect by a name or IP address it lists"
                )
            }
            Failure::Tls(TlsFailure::OutOfValidity) => {
                "the server's certificate is outside its validity period; is this machine's clock right?"
                    .to_owned()
            }
            Failure::Tls(TlsFailure::Untrusted) => {
                "the server's certificate is signed by no trusted CA: set the CA that signed it".to_owned()
            }
            Failure::Tls(TlsFailure::ClientCertificate) => {
                "the server wants a client certificate, or refused the one given".to_owned()
            }
            Failure::Tls(TlsFailure::NotTls) => {
                "does the server use TLS? a server without TLS needs an http:// URL".to_owned()
            }
            Failure::Tls(TlsFailure::CaCertificate) => {
                "give the server a certificate signed by that CA (`hydroplane tls cert create --server`) and trust the CA".to_owned()
            }
            Failure::Tls(TlsFailure::WrongPurpose) => {
                "give the server a server certificate (`hydroplane tls cert create --server`)".to_owned()
            }
            Failure::Tls(TlsFailure::Other) => "the TLS handshake failed: check the TLS settings".to_owned(),
            Failure::SocketPermission => "this user may not open the socket: check its owner and mode".to_owned(),
            Failure::ClosedByServer if matches!(self.target, Target::Https { .. }) => {
                "the server closed the connection: does it want a client certificate, or refuse the one given?"
                    .to_owned()
            }
            Failure::ClosedByServer => {
                "the server closed the connection: if it uses TLS, give an https:// URL".to_owned()
            }
            Failure::Other => "is the server running there?".to_owned(),
        }
    }
}

impl TlsFailure {
    /// What went wrong, in words, from rustls's message (`root_cause`) where it tells more than
    /// the class; never rustls's Debug values.
    fn reason(self, root_cause: &str, target: &Target) -> String {
        let text = root_cause.to_ascii_lowercase();
        match self {
            TlsFailure::WrongName => {
                let domain = match target {
                    Target::Https { domain, .. } => domain.as_str(),
                    _ => "this host",
                };
                format!("the server's certificate is not valid for {domain}")
            }
            TlsFailure::OutOfValidity if text.contains("not valid yet") || text.contains("notvalidyet") => {
                "the server's certificate is not valid yet".to_owned()
            }
            TlsFailure::OutOfValidity => "the server's certificate has expired".to_owned(),
            TlsFailure::Untrusted if text.contains("unknownissuer") || text.contains("unknown issuer") => {
                "the server's certificate is not signed by a CA this client trusts".to_owned()
            }
            TlsFailure::Untrusted if text.contains("badsignature") || text.contains("bad signature") => {
                "the server's certificate is not signed by the CA this client trusts (a CA of the same name signed it)"
                    .to_owned()
            }
            TlsFailure::Untrusted => "the server's certificate is not acceptable".to_owned(),
            TlsFailure::CaCertificate => {
                "the server's certificate is a CA certificate (CA:TRUE), which TLS clients refuse as a server's own"
                    .to_owned()
            }
            TlsFailure::WrongPurpose => {
                "the server's certificate is not one for a TLS server (its extended key usage lacks serverAuth)"
                    .to_owned()
            }
            TlsFailure::ClientCertificate if text.contains("certificaterequired") => {
                "the server requires a client certificate".to_owned()
            }
            TlsFailure::ClientCertificate => "the server refused the client certificate".to_owned(),
            TlsFailure::NotTls => "the server did not answer in TLS".to_owned(),
            TlsFailure::Other => format!("the TLS handshake failed: {root_cause}"),
        }
    }

    /// Finds the failure in an error chain, given its root cause's message. During the handshake
    /// it is a `rustls::Error` inside an `io::Error` (whose `source()` skips it, so it is looked
    /// into); an alert that arrives after the client's side of the handshake, as a refused client
    /// certificate does in TLS 1.3, has been turned into text by h2 and is known by its message.
    fn find(error: &(dyn StdError + 'static), root_cause: &str) -> Option<TlsFailure> {
        let mut current = Some(error);
        while let Some(error) = current {
            let tls = error.downcast_ref::<rustls::Error>().or_else(|| {
                error
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                return Some(TlsFailure::from_rustls(tls));
            }
            current = error.source();
        }
        TlsFailure::from_message(root_cause)
    }

    /// Classifies a rustls error.
    fn from_rustls(error: &rustls::Error) -> TlsFailure {
        match error {
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => TlsFailure::WrongName,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => TlsFailure::OutOfValidity,
            rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
            ) => TlsFailure::WrongPurpose,
            rustls::Error::InvalidCertificate(CertificateError::Other(other))
                if format!("{other}").contains("CaUsedAsEndEntity") =>
            {
                TlsFailure::CaCertificate
            }
            rustls::Error::InvalidCertificate(_) => TlsFailure::Untrusted,
            rustls::Error::AlertReceived(alert) => TlsFailure::from_alert(&format!("{alert:?}")),
            rustls::Error::InvalidMessage(_) => TlsFailure::NotTls,
            _ => TlsFailure::Other,
        }
    }

    /// Classifies a TLS alert from the server by its name, as rustls prints it.
    fn from_alert(name: &str) -> TlsFailure {
        match name {
            "CertificateRequired"
            | "HandshakeFailure"
            | "BadCertificate"
            | "UnknownCA"
            | "CertificateUnknown"
            | "UnsupportedCertificate"
            | "CertificateExpired"
            | "CertificateRevoked"
            | "AccessDenied"
            | "DecryptError" => TlsFailure::ClientCertificate,
            _ => TlsFailure::Other,
        }
    }

    /// Classifies rustls's message for an error, when only the text is left.
    fn from_message(message: &str) -> Option<TlsFailure> {
        if let Some(alert) = message.strip_prefix("received fatal alert: ") {
            Some(TlsFailure::from_alert(alert.trim()))
        } else if let Some(problem) = message.strip_prefix("invalid peer certificate: ") {
            let problem = problem.to_ascii_lowercase();
            Some(if problem.contains("causedasendentity") {
                TlsFailure::CaCertificate
            } else if problem.contains("invalidpurpose") || problem.contains("extended key usage") {
                TlsFailure::WrongPurpose
            } else if problem.contains("notvalidforname") || problem.contains("not valid for name") {
                TlsFailure::WrongName
            } else if problem.contains("expired")
                || problem.contains("notvalidyet")
                || problem.contains("not valid yet")
            {
                TlsFailure::OutOfValidity
            } else {
                TlsFailure::Untrusted
            })
        } else if message.starts_with("received corrupt message") {
            Some(TlsFailure::NotTls)
        } else {
            None
        }
    }
}

/// Whether the server accepted the connection and then closed it. Depending on timing, h2 and
/// rustls report that as any of these, some only as text.
fn closed_by_peer(error: &(dyn StdError + 'static), reason: &str) -> bool {
    use std::io::ErrorKind;
    matches!(
        find_io_kind(error),
        Some(
            ErrorKind::BrokenPipe
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
        )
    ) || ["broken pipe", "connection reset", "connection closed", "close_notify", "handshake eof"]
        .iter()
        .any(|text| reason.to_ascii_lowercase().contains(text))
}

/// The kind of the first `io::Error` in a chain.
fn find_io_kind(error: &(dyn StdError + 'static)) -> Option<std::io::ErrorKind> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = error.source();
    }
    None
}

/// The innermost error's message: "Connection refused (os error 111)", not "transport error".
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one server URL and compares.
    #[track_caller]
    fn check(server: &str, expected: Result<Target, UrlError>) {
        assert_eq!(Target::parse(server), expected, "{server}");
    }

    fn http(url: &str) -> Result<Target, UrlError> {
        Ok(Target::Http { url: url.to_owned() })
    }

    fn https(url: &str, domain: &str) -> Result<Target, UrlError> {
        Ok(Target::Https { url: url.to_owned(), domain: domain.to_owned() })
    }

    fn unix(path: &str) -> Result<Target, UrlError> {
        Ok(Target::Unix { path: PathBuf::from(path) })
    }

    fn invalid(server: &str, problem: &str) -> Result<Target, UrlError> {
        Err(UrlError::Invalid { server: server.to_owned(), problem: problem.to_owned() })
    }

    #[test]
    fn server_urls() {
        check("127.0.0.1:50051", http("http://127.0.0.1:50051"));
        check("localhost:50051", http("http://localhost:50051"));
        check(" [::1]:50051 ", http("http://[::1]:50051"));
        check("http://127.0.0.1:50051", http("http://127.0.0.1:50051"));
        check("http://127.0.0.1:50051/", http("http://127.0.0.1:50051"));
        check(
            "https://hydroplane.example:443",
            https("https://hydroplane.example:443", "hydroplane.example"),
        );
        // An IP address is the "domain" too: rustls then checks it against the IP SANs.
        check("https://10.0.0.7:8443", https("https://10.0.0.7:8443", "10.0.0.7"));
        check("https://[::1]:8443", https("https://[::1]:8443", "::1"));
        check("https://host", https("https://host", "host"));
        check("[::1]", http("http://[::1]"));
        check("unix:/run/hydroplane.sock", unix("/run/hydroplane.sock"));
        check("unix:hydroplane.sock", unix("hydroplane.sock"));
        check("unix:///run/hydroplane.sock", unix("/run/hydroplane.sock"));
        check(
            "unix://run/hydroplane.sock",
            Err(UrlError::UnixNotAbsolute("unix://run/hydroplane.sock".into())),
        );
        check("unix:", Err(UrlError::NoSocket("unix:".into())));
        check("", Err(UrlError::Empty));
        check("  ", Err(UrlError::Empty));
        check(
            "ftp://host:21",
            Err(UrlError::Scheme { scheme: "ftp".into(), server: "ftp://host:21".into() }),
        );
        check(
            "https://host:1/api",
            invalid("https://host:1/api", "it takes no path, only scheme://HOST:PORT"),
        );
        check("https://secret@host:1", Err(UrlError::Credentials));
        check("http://host:port", invalid("http://host:port", "the port must be a number from 1 to 65535"));
        check("https://host:", invalid("https://host:", "the port must be a number from 1 to 65535"));
    }

    #[test]
    fn url_errors_read_as_one_line_and_never_repeat_credentials() {
        let message = |server: &str| Target::parse(server).unwrap_err().to_string();
        assert_eq!(
            message("unix://run/h.sock"),
            "`unix://run/h.sock`: unix:// needs an absolute path, as in unix:///run/hydroplane.sock (or write unix:PATH)"
        );
        assert_eq!(
            message("gopher://h:1"),
            "unsupported scheme `gopher://` in `gopher://h:1`: use http://, https:// or unix:"
        );
        assert_eq!(
            message("http://h:1/x"),
            "invalid server URL `http://h:1/x`: it takes no path, only scheme://HOST:PORT"
        );
        assert!(!message("https://user:s3cret@h:1").contains("s3cret"));
    }

    /// Classifies one rustls message and compares.
    #[track_caller]
    fn check_message(message: &str, expected: Option<TlsFailure>) {
        assert_eq!(TlsFailure::from_message(message), expected, "{message}");
    }

    #[test]
    fn tls_failures_known_only_by_their_message() {
        check_message("received fatal alert: CertificateRequired", Some(TlsFailure::ClientCertificate));
        check_message("received fatal alert: UnknownCA", Some(TlsFailure::ClientCertificate));
        check_message("received fatal alert: ProtocolVersion", Some(TlsFailure::Other));
        check_message("invalid peer certificate: UnknownIssuer", Some(TlsFailure::Untrusted));
        check_message("invalid peer certificate: BadSignature", Some(TlsFailure::Untrusted));
        check_message(
            "invalid peer certificate: certificate not valid for name \"h\"; certificate is only valid for DnsName(\"x\")",
            Some(TlsFailure::WrongName),
        );
        check_message("invalid peer certificate: NotValidForName", Some(TlsFailure::WrongName));
        check_message(
            "invalid peer certificate: certificate expired: verification time 2, but certificate is not valid after 1",
            Some(TlsFailure::OutOfValidity),
        );
        check_message("received corrupt message of type InvalidContentType", Some(TlsFailure::NotTls));
        check_message(
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
            Some(TlsFailure::CaCertificate),
        );
        check_message("invalid peer certificate: InvalidPurpose", Some(TlsFailure::WrongPurpose));
        check_message("Connection refused (os error 111)", None);
    }

    /// Words one rustls message and compares.
    #[track_caller]
    fn check_reason(message: &str, expected: &str) {
        let target = Target::Https { url: "https://h:1".to_owned(), domain: "h".to_owned() };
        let failure = TlsFailure::from_message(message).expect("a TLS failure");
        assert_eq!(failure.reason(message, &target), expected, "{message}");
    }

    #[test]
    fn tls_failures_are_worded_without_rustls_values() {
        check_reason(
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
            "the server's certificate is a CA certificate (CA:TRUE), which TLS clients refuse as a server's own",
        );
        check_reason(
            "invalid peer certificate: UnknownIssuer",
            "the server's certificate is not signed by a CA this client trusts",
        );
        check_reason(
            "invalid peer certificate: certificate expired: verification time 2 (UNIX), but certificate is not valid after 1 (1 seconds ago)",
            "the server's certificate has expired",
        );
        check_reason(
            "invalid peer certificate: certificate not valid yet: verification time 1 (UNIX), but certificate is not valid before 2 (1 seconds in future)",
            "the server's certificate is not valid yet",
        );
        check_reason(
            "invalid peer certificate: NotValidForName",
            "the server's certificate is not valid for h",
        );
        check_reason("received fatal alert: CertificateRequired", "the server requires a client certificate");
        check_reason("received fatal alert: UnknownCA", "the server refused the client certificate");
    }

    /// Checks one set of options without I/O and compares the message.
    #[track_caller]
    fn check_options(options: ConnectOptions, expected: Result<(), &str>) {
        let checked = options.check().map_err(|error| error.to_string());
        assert_eq!(checked, expected.map_err(str::to_owned), "{options:?}");
    }

    fn options(server: &str) -> ConnectOptions {
        ConnectOptions::new(server).expect("a valid URL")
    }

    #[test]
    fn option_combinations() {
        check_options(options("127.0.0.1:1"), Ok(()));
        check_options(options("127.0.0.1:1").token(Token::new(" abc\n")), Ok(()));
        check_options(options("127.0.0.1:1").token(Token::from_file("/not/read/yet")), Ok(()));
        let invalid =
            "the token has characters that cannot go in a gRPC header (only visible ASCII, no spaces)";
        check_options(options("127.0.0.1:1").token(Token::new("a b")), Err(invalid));
        check_options(options("127.0.0.1:1").token(Token::new("caf\u{e9}")), Err(invalid));
        check_options(options("127.0.0.1:1").token(Token::new(" ")), Err("the token is empty"));
        let identity = ClientIdentity { certificate: Pem::from_file("c.pem"), key: Pem::from_file("k.pem") };
        check_options(
            options("https://h:1").ca_certificate(Pem::from_file("ca.pem")).client_identity(identity.clone()),
            Ok(()),
        );
        check_options(
            options("127.0.0.1:1").ca_certificate(Pem::from_file("ca.pem")),
            Err("a CA certificate needs an https:// server URL, not http://127.0.0.1:1"),
        );
        check_options(
            options("unix:/run/h.sock").ca_certificate(Pem::new("")),
            Err("a CA certificate needs an https:// server URL, not unix:/run/h.sock"),
        );
        check_options(
            options("http://h:1").client_identity(identity),
            Err("a client certificate needs an https:// server URL, not http://h:1"),
        );
    }

    #[test]
    fn the_token_and_keys_never_show() {
        let key = Pem::new("-----BEGIN PRIVATE KEY-----\ns3cret-key\n-----END PRIVATE KEY-----\n");
        let options = options("https://h:1")
            .token(Token::new("s3cret-token"))
            .client_identity(ClientIdentity { certificate: Pem::from_file("c.pem"), key });
        let debug = format!("{options:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let error = options.token(Token::new("s3cret token")).check().unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn a_token_file_is_read_trimmed_and_marked_sensitive() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let value = Token::from_file(file("token", "  abc.def\n")).header().expect("a value");
        assert_eq!(value.to_str().expect("ascii"), "Bearer abc.def");
        assert!(value.is_sensitive());

        let empty = file("empty", "\n");
        let error = Token::from_file(&empty).header().unwrap_err().to_string();
        assert_eq!(error, format!("the token file {} is empty", empty.display()));
        let spaced = file("spaced", "a b");
        let error = Token::from_file(&spaced).header().unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "the token in {} has characters that cannot go in a gRPC header (only visible ASCII, no spaces)",
                spaced.display()
            )
        );
        let missing = directory.path().join("missing");
        let error = Token::from_file(&missing).header().unwrap_err().to_string();
        assert!(error.starts_with(&format!("cannot read the token file {}: ", missing.display())), "{error}");
    }

    #[test]
    fn tls_files_are_checked_and_named() {
        let problem = |pem: Pem, file| pem.certificates(file).unwrap_err();
        let error = problem(Pem::new("hello"), TlsFile::CaCertificate);
        assert_eq!(
            error.to_string(),
            "the CA certificate: no PEM certificate in it (-----BEGIN CERTIFICATE-----)"
        );
        let error = problem(Pem::from_file("/no/such/ca.pem"), TlsFile::CaCertificate);
        assert!(
            error.describe("--ca-cert").starts_with("cannot read --ca-cert /no/such/ca.pem: "),
            "{error}"
        );
        let error = Pem::new("hello").private_key(TlsFile::ClientKey).unwrap_err();
        assert!(error.to_string().starts_with("the client key: no PEM private key in it"), "{error}");
    }
}
