//! How hpctl reaches the server: the connection flags, the server URL (TCP with or without TLS,
//! or a Unix domain socket), the TLS files, and the bearer token that goes on every call.
//!
//! The flags are checked without any I/O first ([`ConnectArgs::plan`]), so a wrong combination is
//! reported before a file is read or a connection tried. Failures are explained in one line that
//! names the flag or file that fixes them, and never include the token.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use hydroplane::proto::process_service_client::ProcessServiceClient;
use hyper_util::rt::TokioIo;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::UnixStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A connected client; every call carries the token, when one was given.
pub type Client = ProcessServiceClient<InterceptedService<Channel, Auth>>;

/// How long the TCP connect and, separately, the TLS handshake may take: a server that accepts
/// but never answers should not hang hpctl.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The hint for a server that is not there.
const SERVER_HINT: &str =
    "(is `hydroplane` running? choose another server with -s/--server or HYDROPLANE_SERVER)";

/// The hint for UNAUTHENTICATED when no token was sent.
const TOKEN_HINT: &str = "(give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE)";

/// The connection flags, shared by every subcommand (`global`, so they go before or after it).
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The server: http://HOST:PORT, https://HOST:PORT, HOST:PORT (plain) or unix:PATH.
    #[arg(
        short,
        long,
        global = true,
        env = "HYDROPLANE_SERVER",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub server: String,
    /// The bearer token to send with every call.
    // hide_env_values: `--help` would otherwise print the token from the environment;
    // allow_hyphen_values: a token starting with `-` would otherwise be echoed in clap's error.
    #[arg(
        long,
        global = true,
        env = "HYDROPLANE_TOKEN",
        hide_env_values = true,
        allow_hyphen_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<Token>,
    /// A file holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, global = true, env = "HYDROPLANE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The CA certificate (PEM) to trust for an https:// server, instead of the system's CAs.
    #[arg(long, global = true, env = "HYDROPLANE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The client certificate (PEM) to present to a server that asks for one (mTLS).
    #[arg(long, global = true, env = "HYDROPLANE_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The private key (PEM) of --client-cert.
    #[arg(long, global = true, env = "HYDROPLANE_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<PathBuf>,
}

/// A bearer token. Its Debug prints `<redacted>` and it has no Display, so neither the parsed
/// flags' Debug nor an error message can show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl From<String> for Token {
    fn from(token: String) -> Token {
        Token(token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("<redacted>")
    }
}

impl Token {
    /// The `authorization` value, checked to be a valid header; `what` names where the token came
    /// from in the error, which never includes the token itself.
    fn header(&self, what: &str) -> Result<MetadataValue<Ascii>, CliError> {
        // Trimmed: a trailing newline from `$(cat file)` or an editor is never part of a token.
        let token = self.0.trim();
        let invalid = || {
            CliError::Setup(format!(
                "{what} has characters that cannot go in a gRPC header (only visible ASCII, no spaces)"
            ))
        };
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

    /// Whether there is no token at all, which is the same as not giving one.
    fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

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

/// Parses a server URL: `http://`, `https://`, `unix:` or a bare `HOST:PORT` (plain HTTP).
pub fn parse_server(server: &str) -> Result<Target, String> {
    let server = server.trim();
    if server.is_empty() {
        return Err("the server URL is empty: give one with -s/--server or HYDROPLANE_SERVER".to_owned());
    }
    if let Some(rest) = server.strip_prefix("unix:") {
        // As in gRPC: `unix:PATH` may be relative; `unix://` must be followed by an absolute path,
        // since `unix://run/x.sock` could mean either and guessing would pick the wrong socket.
        let path = match rest.strip_prefix("//") {
            Some(absolute) if absolute.starts_with('/') => absolute,
            Some(_) => {
                return Err(format!(
                    "`{server}`: unix:// needs an absolute path, as in unix:///run/hydroplane.sock (or write unix:PATH)"
                ));
            }
            None => rest,
        };
        if path.is_empty() {
            return Err(format!(
                "`{server}` names no socket: write unix:PATH, as in unix:/run/hydroplane.sock"
            ));
        }
        return Ok(Target::Unix { path: PathBuf::from(path) });
    }
    let url = if server.contains("://") { server.to_owned() } else { format!("http://{server}") };
    let uri: Uri = url.parse().map_err(|error| format!("invalid server URL `{server}`: {error}"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(format!(
            "invalid server URL `{server}`: write http://HOST:PORT, https://HOST:PORT or unix:PATH"
        ));
    };
    // A user name or password in the URL is most likely a token in the wrong place: it would be
    // shown in every message, so it is refused without echoing the URL.
    if authority.as_str().contains('@') {
        return Err("the server URL must not contain a user name or password: give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE".to_owned());
    }
    // gRPC calls always go to /package.Service/Method: a path here would be silently ignored.
    if uri.path_and_query().is_some_and(|path| path.as_str() != "/") {
        return Err(format!("invalid server URL `{server}`: it takes no path, only scheme://HOST:PORT"));
    }
    // `Uri` takes any text after the last colon; a port that is no number would only fail later
    // with a less clear message.
    if authority.port().is_none()
        && authority.as_str().rsplit_once(':').is_some_and(|(_, port)| !port.ends_with(']'))
    {
        return Err(format!("invalid server URL `{server}`: the port must be a number from 1 to 65535"));
    }
    let url = format!("{scheme}://{authority}");
    match scheme {
        "http" => Ok(Target::Http { url }),
        "https" => {
            let host = authority.host();
            let domain = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
            Ok(Target::Https { domain: domain.to_owned(), url })
        }
        other => {
            Err(format!("unsupported scheme `{other}://` in `{server}`: use http://, https:// or unix:"))
        }
    }
}

/// Where the token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TokenSource {
    /// No token: calls go without `authorization`.
    None,
    /// `--token` or `HYDROPLANE_TOKEN`.
    Given(Token),
    /// `--token-file` or `HYDROPLANE_TOKEN_FILE`, read at connect time.
    File(PathBuf),
}

/// The connection flags, checked: where to connect, and what to send and trust there.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The server.
    target: Target,
    /// The token to send.
    token: TokenSource,
    /// The only CA trusted for https, instead of the system's.
    ca_cert: Option<PathBuf>,
    /// The client certificate and its key, for mTLS.
    identity: Option<(PathBuf, PathBuf)>,
}

/// An empty value (`HYDROPLANE_CA_CERT=`) counts as not given, as for most tools' variables.
fn given(path: &Option<PathBuf>) -> Option<PathBuf> {
    path.as_ref().filter(|path| !path.as_os_str().is_empty()).cloned()
}

impl ConnectArgs {
    /// Checks the flags together, without reading any file or touching the network.
    pub fn plan(&self) -> Result<Plan, CliError> {
        let target = parse_server(&self.server).map_err(CliError::Setup)?;
        let token = self.token.as_ref().filter(|token| !token.is_empty());
        let token = match (token, given(&self.token_file)) {
            (Some(_), Some(_)) => {
                return Err(CliError::Setup(
                    "give the token with --token (HYDROPLANE_TOKEN) or --token-file (HYDROPLANE_TOKEN_FILE), not both"
                        .to_owned(),
                ));
            }
            (Some(token), None) => {
                token.header("the token")?;
                TokenSource::Given(token.clone())
            }
            (None, Some(path)) => TokenSource::File(path),
            (None, None) => TokenSource::None,
        };
        let identity = match (given(&self.client_cert), given(&self.client_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(CliError::Setup(
                    "--client-cert and --client-key go together (HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY): give both or neither"
                        .to_owned(),
                ));
            }
        };
        let ca_cert = given(&self.ca_cert);
        // TLS files for a plain or Unix server would be silently unused: the user thinks the
        // connection is verified when it is not.
        if !matches!(target, Target::Https { .. }) {
            if ca_cert.is_some() {
                return Err(CliError::Setup(format!(
                    "--ca-cert needs an https:// server URL, not {target} (check -s/--server, HYDROPLANE_SERVER and HYDROPLANE_CA_CERT)"
                )));
            }
            if identity.is_some() {
                return Err(CliError::Setup(format!(
                    "--client-cert and --client-key need an https:// server URL, not {target} (check -s/--server, HYDROPLANE_SERVER, HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY)"
                )));
            }
        }
        Ok(Plan { target, token, ca_cert, identity })
    }
}

/// Puts `authorization: Bearer TOKEN` on every call, when a token was given.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Plan {
    /// Reads the token and TLS files and connects.
    pub async fn connect(&self) -> Result<Client, CliError> {
        let auth = Auth(self.authorization()?);
        let channel = match &self.target {
            Target::Http { url } => endpoint(url)?.connect_timeout(CONNECT_TIMEOUT).connect().await,
            Target::Https { url, domain } => {
                let tls = self.tls_config(domain)?;
                endpoint(url)?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tls_config(tls)
                    .map_err(|error| self.tls_setup_error(&error))?
                    .connect()
                    .await
            }
            Target::Unix { path } => {
                let path: Arc<Path> = Arc::from(path.as_path());
                // The URL is a placeholder for the `:authority` header: the connector below decides
                // where the bytes go, and it is called again for each reconnect.
                Endpoint::from_static("http://localhost")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = Arc::clone(&path);
                        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
                    }))
                    .await
            }
        };
        let channel = channel.map_err(|error| self.unreachable(&error))?;
        Ok(ProcessServiceClient::with_interceptor(channel, auth))
    }

    /// Turns a failed call into one line: transport failures read as a failed connection, and
    /// UNAUTHENTICATED without a token says how to give one.
    pub fn explain(&self, status: tonic::Status) -> CliError {
        // A connection that breaks after connect (a refused client certificate, a server that
        // went away) comes back as a status whose source is the transport error.
        let transport = (status.code() == tonic::Code::Unavailable && status.message().contains("transport"))
            || StdError::source(&status).is_some_and(|source| source.is::<tonic::transport::Error>());
        if transport {
            return self.unreachable(&status);
        }
        let hint = (status.code() == tonic::Code::Unauthenticated && self.token == TokenSource::None)
            .then_some(TOKEN_HINT);
        CliError::Server { status, hint }
    }

    /// The `authorization` value, reading the token file when the token is in one.
    fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, CliError> {
        match &self.token {
            TokenSource::None => Ok(None),
            TokenSource::Given(token) => token.header("the token").map(Some),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| {
                    CliError::Setup(format!("cannot read the token file {}: {error}", path.display()))
                })?;
                let token = Token(text);
                if token.is_empty() {
                    return Err(CliError::Setup(format!("the token file {} is empty", path.display())));
                }
                token.header(&format!("the token in {}", path.display())).map(Some)
            }
        }
    }

    /// The TLS settings: the given CA only, or else the system's roots; the client identity.
    fn tls_config(&self, domain: &str) -> Result<ClientTlsConfig, CliError> {
        let tls = ClientTlsConfig::new().domain_name(domain).timeout(CONNECT_TIMEOUT);
        let tls = match &self.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read_certificates("--ca-cert", path)?)),
            None => tls.with_native_roots(),
        };
        Ok(match &self.identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(
                read_certificates("--client-cert", cert)?,
                read_private_key("--client-key", key)?,
            )),
            None => tls,
        })
    }

    /// Explains why the TLS settings were refused before connecting.
    fn tls_setup_error(&self, error: &(dyn StdError + 'static)) -> CliError {
        let reason = root_cause(error);
        let hint = match (&self.ca_cert, &self.identity) {
            (None, _) if reason.contains("native") => {
                " (this system has no CA certificates: name the CA that signed the server's certificate with --ca-cert or HYDROPLANE_CA_CERT)"
            }
            (_, Some(_)) => " (does --client-key belong to --client-cert?)",
            _ => "",
        };
        CliError::Setup(format!("cannot set up TLS for {}: {reason}{hint}", self.target))
    }

    /// A failure to reach the server, with the hint that fits its cause.
    fn unreachable(&self, error: &(dyn StdError + 'static)) -> CliError {
        let reason = root_cause(error);
        let hint = match TlsFailure::find(error, &reason) {
            Some(failure) => self.tls_hint(failure),
            None if matches!(self.target, Target::Unix { .. })
                && find_io_kind(error) == Some(std::io::ErrorKind::PermissionDenied) =>
            {
                "(this user may not open the socket: check its owner and mode)".to_owned()
            }
            // Some TLS servers (BoringSSL's, as in grpcio) just close the connection when a client
            // certificate is missing or refused, with no alert to tell why.
            None if matches!(self.target, Target::Https { .. }) && closed_by_peer(error, &reason) => {
                if self.identity.is_none() {
                    "(the server closed the connection: if it wants a client certificate, give --client-cert and --client-key)".to_owned()
                } else {
                    "(the server closed the connection: is --client-cert signed by the CA the server trusts for clients?)".to_owned()
                }
            }
            // A TLS server closes a connection that does not start with a TLS handshake.
            None if matches!(self.target, Target::Http { .. }) && closed_by_peer(error, &reason) => {
                "(the server closed the connection: if it uses TLS, give an https:// URL)".to_owned()
            }
            None => SERVER_HINT.to_owned(),
        };
        CliError::Unreachable { server: self.target.to_string(), reason, hint }
    }

    /// What to try when the TLS handshake failed.
    fn tls_hint(&self, failure: TlsFailure) -> String {
        match failure {
            TlsFailure::WrongName => {
                let domain = match &self.target {
                    Target::Https { domain, .. } => domain.as_str(),
                    _ => "this host",
                };
                format!(
                    "(the server's certificate is not valid for {domain}: connect by a name or IP address it lists)"
                )
            }
            TlsFailure::OutOfValidity => {
                "(the server's certificate is outside its validity period; is this machine's clock right?)"
                    .to_owned()
            }
            TlsFailure::Untrusted if self.ca_cert.is_some() => {
                "(does --ca-cert name the CA that signed the server's certificate?)".to_owned()
            }
            TlsFailure::Untrusted => {
                "(only the system's CAs are trusted: name the CA that signed the server's certificate with --ca-cert or HYDROPLANE_CA_CERT)"
                    .to_owned()
            }
            TlsFailure::ClientCertificate if self.identity.is_none() => {
                "(the server wants a client certificate: give --client-cert and --client-key)".to_owned()
            }
            TlsFailure::ClientCertificate => {
                "(the server refused --client-cert: is it signed by the CA the server trusts for clients?)"
                    .to_owned()
            }
            TlsFailure::NotTls => {
                "(does the server use TLS? a server without TLS needs an http:// URL)".to_owned()
            }
            TlsFailure::Other => {
                "(check the server's TLS settings and --ca-cert, --client-cert and --client-key)".to_owned()
            }
        }
    }
}

/// Why a TLS handshake failed, as far as the hint depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsFailure {
    /// The server's certificate does not name the host connected to.
    WrongName,
    /// The server's certificate has expired or is not valid yet.
    OutOfValidity,
    /// The server's certificate is signed by no trusted CA (or is otherwise unacceptable).
    Untrusted,
    /// The server wanted a client certificate, or refused the one given.
    ClientCertificate,
    /// The server did not answer in TLS at all.
    NotTls,
    /// Anything else.
    Other,
}

impl TlsFailure {
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
            Some(if problem.contains("notvalidforname") || problem.contains("not valid for name") {
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

/// The endpoint of an already checked `http://` or `https://` URL.
fn endpoint(url: &str) -> Result<Endpoint, CliError> {
    // From a `Uri`, not `Endpoint::from_shared`: for https that would load the system's roots
    // even when --ca-cert is given, and fail on a machine that has none.
    let uri: Uri =
        url.parse().map_err(|error| CliError::Setup(format!("invalid server URL `{url}`: {error}")))?;
    Ok(Endpoint::from(uri))
}

/// Reads a PEM file that must hold at least one certificate; `flag` names it in errors.
fn read_certificates(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    let pem = read_file(flag, path)?;
    // Checked here because rustls skips what it cannot parse: a wrong file would otherwise show up
    // only later as an UnknownIssuer that does not name it.
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        certificate.map_err(|error| {
            CliError::Setup(format!("{flag} {}: not a PEM certificate file ({error})", path.display()))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(CliError::Setup(format!(
            "{flag} {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(pem)
}

/// Reads a PEM file that must hold a private key.
fn read_private_key(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    let pem = read_file(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        CliError::Setup(format!("{flag} {}: no PEM private key in it ({error})", path.display()))
    })?;
    Ok(pem)
}

/// Reads a file given by a flag, naming both when it cannot.
fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|error| CliError::Setup(format!("cannot read {flag} {}: {error}", path.display())))
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

/// A failure to report: one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The flags, the URL or a file they name is wrong; nothing was sent.
    #[error("{0}")]
    Setup(String),
    /// The server could not be reached, or the TLS handshake with it failed.
    #[error("cannot reach the Hydroplane server at {server}: {reason} {hint}")]
    Unreachable {
        /// The server, as shown.
        server: String,
        /// The root cause.
        reason: String,
        /// What to try.
        hint: String,
    },
    /// The server answered with an error.
    #[error("{}{}", message(.status), .hint.map(|hint| format!(" {hint}")).unwrap_or_default())]
    Server {
        /// The server's answer.
        status: tonic::Status,
        /// What to try, when there is something.
        hint: Option<&'static str>,
    },
}

/// A status's message, or its code's description when the server sent none.
fn message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses one server URL and compares.
    #[track_caller]
    fn check(server: &str, expected: Result<Target, &str>) {
        assert_eq!(parse_server(server), expected.map_err(str::to_owned), "{server}");
    }

    fn http(url: &str) -> Result<Target, &'static str> {
        Ok(Target::Http { url: url.to_owned() })
    }

    fn https(url: &str, domain: &str) -> Result<Target, &'static str> {
        Ok(Target::Https { url: url.to_owned(), domain: domain.to_owned() })
    }

    fn unix(path: &str) -> Result<Target, &'static str> {
        Ok(Target::Unix { path: PathBuf::from(path) })
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
        check("https://10.0.0.7:8443", https("https://10.0.0.7:8443", "10.0.0.7"));
        check("https://[::1]:8443", https("https://[::1]:8443", "::1"));
        check("unix:/run/hydroplane.sock", unix("/run/hydroplane.sock"));
        check("unix:hydroplane.sock", unix("hydroplane.sock"));
        check("unix:///run/hydroplane.sock", unix("/run/hydroplane.sock"));
        check(
            "unix://run/hydroplane.sock",
            Err(
                "`unix://run/hydroplane.sock`: unix:// needs an absolute path, as in unix:///run/hydroplane.sock (or write unix:PATH)",
            ),
        );
        check("unix:", Err("`unix:` names no socket: write unix:PATH, as in unix:/run/hydroplane.sock"));
        check("", Err("the server URL is empty: give one with -s/--server or HYDROPLANE_SERVER"));
        check(
            "ftp://host:21",
            Err("unsupported scheme `ftp://` in `ftp://host:21`: use http://, https:// or unix:"),
        );
        check(
            "https://host:1/api",
            Err("invalid server URL `https://host:1/api`: it takes no path, only scheme://HOST:PORT"),
        );
        check(
            "https://secret@host:1",
            Err(
                "the server URL must not contain a user name or password: give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE",
            ),
        );
        check(
            "http://host:port",
            Err("invalid server URL `http://host:port`: the port must be a number from 1 to 65535"),
        );
        check(
            "https://host:",
            Err("invalid server URL `https://host:`: the port must be a number from 1 to 65535"),
        );
        check("https://host", https("https://host", "host"));
        check("[::1]", http("http://[::1]"));
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
        check_message("Connection refused (os error 111)", None);
    }

    /// Connection flags with only the server set; tests fill in the rest.
    fn args(server: &str) -> ConnectArgs {
        ConnectArgs {
            server: server.to_owned(),
            token: None,
            token_file: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// Plans from some flags and compares with the plan or the error expected.
    #[track_caller]
    fn check_plan(args: ConnectArgs, expected: Result<Plan, &str>) {
        let plan = args.plan().map_err(|error| error.to_string());
        assert_eq!(plan, expected.map_err(str::to_owned), "{args:?}");
    }

    fn path(path: &str) -> Option<PathBuf> {
        Some(PathBuf::from(path))
    }

    fn token(token: &str) -> Option<Token> {
        Some(Token(token.to_owned()))
    }

    #[test]
    fn flag_combinations() {
        let local = || Target::Http { url: "http://127.0.0.1:1".to_owned() };
        let secure = || Target::Https { url: "https://h:1".to_owned(), domain: "h".to_owned() };
        let plan =
            |target, token, ca_cert: Option<PathBuf>, identity| Plan { target, token, ca_cert, identity };

        check_plan(args("127.0.0.1:1"), Ok(plan(local(), TokenSource::None, None, None)));
        check_plan(
            ConnectArgs { token: token(" abc\n"), ..args("127.0.0.1:1") },
            Ok(plan(local(), TokenSource::Given(Token(" abc\n".to_owned())), None, None)),
        );
        // Empty values, as from `HYDROPLANE_TOKEN=`, count as not given.
        check_plan(
            ConnectArgs { token: token(""), token_file: path(""), ca_cert: path(""), ..args("127.0.0.1:1") },
            Ok(plan(local(), TokenSource::None, None, None)),
        );
        check_plan(
            ConnectArgs { token_file: path("/t"), ..args("127.0.0.1:1") },
            Ok(plan(local(), TokenSource::File(PathBuf::from("/t")), None, None)),
        );
        check_plan(
            ConnectArgs { token: token("abc"), token_file: path("/t"), ..args("127.0.0.1:1") },
            Err(
                "give the token with --token (HYDROPLANE_TOKEN) or --token-file (HYDROPLANE_TOKEN_FILE), not both",
            ),
        );
        check_plan(
            ConnectArgs { token: token("a b"), ..args("127.0.0.1:1") },
            Err("the token has characters that cannot go in a gRPC header (only visible ASCII, no spaces)"),
        );
        check_plan(
            ConnectArgs { token: token("caf\u{e9}"), ..args("127.0.0.1:1") },
            Err("the token has characters that cannot go in a gRPC header (only visible ASCII, no spaces)"),
        );
        check_plan(args("https://h:1"), Ok(plan(secure(), TokenSource::None, None, None)));
        check_plan(
            ConnectArgs {
                ca_cert: path("ca.pem"),
                client_cert: path("c.pem"),
                client_key: path("k.pem"),
                ..args("https://h:1")
            },
            Ok(plan(
                secure(),
                TokenSource::None,
                path("ca.pem"),
                Some((PathBuf::from("c.pem"), PathBuf::from("k.pem"))),
            )),
        );
        let pair = "--client-cert and --client-key go together (HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY): give both or neither";
        check_plan(ConnectArgs { client_cert: path("c.pem"), ..args("https://h:1") }, Err(pair));
        check_plan(ConnectArgs { client_key: path("k.pem"), ..args("https://h:1") }, Err(pair));
        check_plan(
            ConnectArgs { ca_cert: path("ca.pem"), ..args("127.0.0.1:1") },
            Err(
                "--ca-cert needs an https:// server URL, not http://127.0.0.1:1 (check -s/--server, HYDROPLANE_SERVER and HYDROPLANE_CA_CERT)",
            ),
        );
        check_plan(
            ConnectArgs { ca_cert: path("ca.pem"), ..args("unix:/run/h.sock") },
            Err(
                "--ca-cert needs an https:// server URL, not unix:/run/h.sock (check -s/--server, HYDROPLANE_SERVER and HYDROPLANE_CA_CERT)",
            ),
        );
        check_plan(
            ConnectArgs { client_cert: path("c.pem"), client_key: path("k.pem"), ..args("http://h:1") },
            Err(
                "--client-cert and --client-key need an https:// server URL, not http://h:1 (check -s/--server, HYDROPLANE_SERVER, HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY)",
            ),
        );
        check_plan(
            ConnectArgs { token: token("abc"), ..args("gopher://h:1") },
            Err("unsupported scheme `gopher://` in `gopher://h:1`: use http://, https:// or unix:"),
        );
    }

    #[test]
    fn the_token_never_shows() {
        let args = ConnectArgs { token: token("s3cret-token"), ..args("https://h:1") };
        let debug = format!("{args:?} {:?}", args.plan().expect("plan"));
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let error = ConnectArgs { token: token("s3cret token"), ..args }.plan().unwrap_err().to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn the_token_and_tls_files_are_read_and_named_when_wrong() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let token_file = file("token", "  abc.def\n");
        let plan = ConnectArgs { token_file: Some(token_file), ..args("127.0.0.1:1") }.plan().expect("plan");
        let value = plan.authorization().expect("token").expect("a value");
        assert_eq!(value.to_str().expect("ascii"), "Bearer abc.def");
        assert!(value.is_sensitive());

        let empty = file("empty", "\n");
        let error = ConnectArgs { token_file: Some(empty.clone()), ..args("127.0.0.1:1") }
            .plan()
            .expect("plan")
            .authorization()
            .unwrap_err();
        assert_eq!(error.to_string(), format!("the token file {} is empty", empty.display()));

        let missing = directory.path().join("missing");
        let error = ConnectArgs { token_file: Some(missing.clone()), ..args("127.0.0.1:1") }
            .plan()
            .expect("plan")
            .authorization()
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(&format!("cannot read the token file {}: ", missing.display())), "{error}");

        let not_pem = file("not.pem", "hello");
        let tls_error = |ca_cert: &Path, cert: &Path, key: &Path| {
            ConnectArgs {
                ca_cert: Some(ca_cert.to_owned()),
                client_cert: Some(cert.to_owned()),
                client_key: Some(key.to_owned()),
                ..args("https://h:1")
            }
            .plan()
            .expect("plan")
            .tls_config("h")
            .unwrap_err()
            .to_string()
        };
        let error = tls_error(&missing, &missing, &missing);
        assert!(error.starts_with(&format!("cannot read --ca-cert {}: ", missing.display())), "{error}");
        let error = tls_error(&not_pem, &not_pem, &not_pem);
        assert_eq!(
            error,
            format!(
                "--ca-cert {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                not_pem.display()
            )
        );
        let pki = Pki::new("hpctl test CA");
        let ca = file("ca.pem", &pki.ca_pem);
        let error = tls_error(&ca, &ca, &missing);
        assert!(error.starts_with(&format!("cannot read --client-key {}: ", missing.display())), "{error}");
        let error = tls_error(&ca, &ca, &ca);
        assert!(
            error.starts_with(&format!("--client-key {}: no PEM private key in it", ca.display())),
            "{error}"
        );
    }

    /// A CA, a server certificate it signed for 127.0.0.1 and localhost, and a client one.
    struct Pki {
        ca_pem: String,
        server_pem: String,
        server_key: String,
        client_pem: String,
        client_key: String,
    }

    impl Pki {
        /// A PKI whose CA is called `name`: two CAs of one name would differ only in signature.
        fn new(name: &str) -> Pki {
            Pki::for_server(name, &["127.0.0.1", "localhost"])
        }

        /// A PKI whose server certificate names only these hosts.
        fn for_server(name: &str, hosts: &[&str]) -> Pki {
            use rcgen::{
                BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            };
            let ca_key = KeyPair::generate().expect("key");
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
            ca_params.distinguished_name.push(DnType::CommonName, name);
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
            let issuer = Issuer::new(ca_params, ca_key);
            let leaf = |names: Vec<String>, usage| {
                let key = KeyPair::generate().expect("key");
                let mut params = CertificateParams::new(names).expect("params");
                params.extended_key_usages = vec![usage];
                (params.signed_by(&key, &issuer).expect("sign").pem(), key.serialize_pem())
            };
            let (server_pem, server_key) = leaf(
                hosts.iter().map(|host| host.to_string()).collect(),
                ExtendedKeyUsagePurpose::ServerAuth,
            );
            let (client_pem, client_key) = leaf(vec!["hpctl".into()], ExtendedKeyUsagePurpose::ClientAuth);
            Pki { ca_pem, server_pem, server_key, client_pem, client_key }
        }
    }

    /// A ProcessService whose List records the `authorization` it got and, when `required` is
    /// set, answers UNAUTHENTICATED without that token.
    #[derive(Clone, Default)]
    struct Recorder {
        seen: Arc<std::sync::Mutex<Vec<Option<String>>>>,
        required: Option<&'static str>,
    }

    #[tonic::async_trait]
    impl hydroplane::proto::process_service_server::ProcessService for Recorder {
        async fn start(
            &self,
            _: tonic::Request<hydroplane::proto::StartRequest>,
        ) -> Result<tonic::Response<hydroplane::proto::StartResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("start"))
        }

        async fn stop(
            &self,
            _: tonic::Request<hydroplane::proto::StopRequest>,
        ) -> Result<tonic::Response<hydroplane::proto::StopResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("stop"))
        }

        async fn list(
            &self,
            request: tonic::Request<hydroplane::proto::ListRequest>,
        ) -> Result<tonic::Response<hydroplane::proto::ListResponse>, tonic::Status> {
            let authorization = request
                .metadata()
                .get("authorization")
                .map(|value| value.to_str().expect("ascii").to_owned());
            self.seen.lock().expect("lock").push(authorization.clone());
            if let Some(required) = self.required
                && authorization != Some(format!("Bearer {required}"))
            {
                return Err(tonic::Status::unauthenticated("no valid bearer token"));
            }
            Ok(tonic::Response::new(hydroplane::proto::ListResponse::default()))
        }

        type WatchStream = tokio_stream::Empty<Result<hydroplane::proto::WatchEvent, tonic::Status>>;

        async fn watch(
            &self,
            _: tonic::Request<hydroplane::proto::WatchRequest>,
        ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
            Ok(tonic::Response::new(tokio_stream::empty()))
        }
    }

    /// Serves the recorder on a loopback port, with TLS when given; returns the port.
    async fn serve_tcp(recorder: Recorder, tls: Option<tonic::transport::ServerTlsConfig>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("server tls");
        }
        let router = server
            .add_service(hydroplane::proto::process_service_server::ProcessServiceServer::new(recorder));
        tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
        port
    }

    /// The server side of TLS with the test PKI; `client_auth` requires client certificates.
    fn server_tls(pki: &Pki, client_auth: bool) -> tonic::transport::ServerTlsConfig {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server_pem, &pki.server_key));
        if client_auth { tls.client_ca_root(Certificate::from_pem(&pki.ca_pem)) } else { tls }
    }

    /// Connects with these flags and lists; the error line on failure.
    async fn list(args: ConnectArgs) -> Result<(), String> {
        let plan = args.plan().map_err(|error| error.to_string())?;
        let mut client = plan.connect().await.map_err(|error| error.to_string())?;
        client
            .list(hydroplane::proto::ListRequest::default())
            .await
            .map(drop)
            .map_err(|status| plan.explain(status).to_string())
    }

    #[tokio::test]
    async fn the_token_goes_on_every_call_and_unauthenticated_says_how_to_give_one() {
        let recorder = Recorder { required: Some("abc"), ..Recorder::default() };
        let port = serve_tcp(recorder.clone(), None).await;
        let server = format!("127.0.0.1:{port}");
        list(ConnectArgs { token: token("abc"), ..args(&server) }).await.expect("list with the token");
        let error = list(args(&server)).await.unwrap_err();
        assert_eq!(
            error,
            "no valid bearer token (give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE)"
        );
        let error = list(ConnectArgs { token: token("wrong"), ..args(&server) }).await.unwrap_err();
        assert_eq!(error, "no valid bearer token");
        assert_eq!(
            *recorder.seen.lock().expect("lock"),
            [Some("Bearer abc".to_owned()), None, Some("Bearer wrong".to_owned())]
        );
    }

    #[tokio::test]
    async fn a_unix_socket_is_reached_and_a_missing_one_is_one_line() {
        let directory = tempfile::tempdir().expect("tempdir");
        let socket = directory.path().join("hydroplane.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
        let recorder = Recorder::default();
        let router = tonic::transport::Server::builder().add_service(
            hydroplane::proto::process_service_server::ProcessServiceServer::new(recorder.clone()),
        );
        tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)));
        for server in [format!("unix:{}", socket.display()), format!("unix://{}", socket.display())] {
            list(ConnectArgs { token: token("t"), ..args(&server) }).await.expect("list over the socket");
        }
        assert_eq!(recorder.seen.lock().expect("lock").len(), 2);

        let missing = directory.path().join("missing.sock");
        let error = list(args(&format!("unix:{}", missing.display()))).await.unwrap_err();
        assert_eq!(
            error,
            format!(
                "cannot reach the Hydroplane server at unix:{}: No such file or directory (os error 2) {SERVER_HINT}",
                missing.display()
            )
        );
    }

    #[tokio::test]
    async fn https_trusts_the_given_ca_and_explains_a_wrong_one() {
        let pki = Pki::new("hpctl test CA");
        let other = Pki::new("another CA");
        let directory = tempfile::tempdir().expect("tempdir");
        let ca = directory.path().join("ca.pem");
        std::fs::write(&ca, &pki.ca_pem).expect("write");
        let wrong_ca = directory.path().join("wrong-ca.pem");
        std::fs::write(&wrong_ca, &other.ca_pem).expect("write");
        let recorder = Recorder::default();
        let port = serve_tcp(recorder.clone(), Some(server_tls(&pki, false))).await;

        for host in ["127.0.0.1", "localhost"] {
            let server = format!("https://{host}:{port}");
            list(ConnectArgs { ca_cert: Some(ca.clone()), token: token("t"), ..args(&server) })
                .await
                .unwrap_or_else(|error| panic!("{server}: {error}"));
        }
        assert_eq!(
            *recorder.seen.lock().expect("lock"),
            [Some("Bearer t".to_owned()), Some("Bearer t".to_owned())]
        );

        let server = format!("https://127.0.0.1:{port}");
        let error = list(ConnectArgs { ca_cert: Some(wrong_ca), ..args(&server) }).await.unwrap_err();
        assert_eq!(
            error,
            format!(
                "cannot reach the Hydroplane server at {server}: invalid peer certificate: UnknownIssuer (does --ca-cert name the CA that signed the server's certificate?)"
            )
        );
        // A certificate for another name than the one connected to.
        let localhost_only = Pki::for_server("localhost CA", &["localhost"]);
        let localhost_ca = directory.path().join("localhost-ca.pem");
        std::fs::write(&localhost_ca, &localhost_only.ca_pem).expect("write");
        let localhost_port = serve_tcp(Recorder::default(), Some(server_tls(&localhost_only, false))).await;
        let error = list(ConnectArgs {
            ca_cert: Some(localhost_ca),
            ..args(&format!("https://127.0.0.1:{localhost_port}"))
        })
        .await
        .unwrap_err();
        assert!(
            error.ends_with(
                "(the server's certificate is not valid for 127.0.0.1: connect by a name or IP address it lists)"
            ),
            "{error}"
        );
        // A plain client at a TLS server, and a TLS client at a plain one.
        let plain_port = serve_tcp(Recorder::default(), None).await;
        let error = list(ConnectArgs {
            ca_cert: Some(ca.clone()),
            ..args(&format!("https://127.0.0.1:{plain_port}"))
        })
        .await
        .unwrap_err();
        assert!(
            error.ends_with("(does the server use TLS? a server without TLS needs an http:// URL)"),
            "{error}"
        );
        let error = list(args(&format!("127.0.0.1:{port}"))).await.unwrap_err();
        assert!(
            error.ends_with("(the server closed the connection: if it uses TLS, give an https:// URL)"),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
    }

    #[tokio::test]
    async fn mtls_presents_the_client_certificate_and_explains_a_missing_one() {
        let pki = Pki::new("hpctl test CA");
        let directory = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).expect("write");
            Some(path)
        };
        let (ca, cert, key) =
            (write("ca.pem", &pki.ca_pem), write("c.pem", &pki.client_pem), write("k.pem", &pki.client_key));
        let port = serve_tcp(Recorder::default(), Some(server_tls(&pki, true))).await;
        let server = format!("https://127.0.0.1:{port}");
        list(ConnectArgs { ca_cert: ca.clone(), client_cert: cert, client_key: key, ..args(&server) })
            .await
            .expect("list with a client certificate");
        let error = list(ConnectArgs { ca_cert: ca, ..args(&server) }).await.unwrap_err();
        assert!(
            error.starts_with(&format!("cannot reach the Hydroplane server at {server}: "))
                && error.ends_with(
                    "(the server wants a client certificate: give --client-cert and --client-key)"
                ),
            "{error}"
        );
    }
}
