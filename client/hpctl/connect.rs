//! How hpctl reaches the server: its connection flags, turned into the client crate's
//! [`ConnectOptions`], and the one-line messages, with hints naming the flags, for what goes
//! wrong. Parsing the URL, reading the token and TLS files, connecting and classifying failures
//! are `hydroplane_client`'s; only what is about flags is here.
//!
//! The flags are checked without any I/O first ([`ConnectArgs::plan`]), so a wrong combination is
//! reported before a file is read or a connection tried. Failures are explained in one line that
//! names the flag or file that fixes them, and never include the token.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use hydroplane_client::{
    Client, ClientIdentity, ConnectError, ConnectOptions, DEFAULT_CONNECT_TIMEOUT, Failure, NoAnswer, Pem,
    Target, TlsFailure, TlsFile, TlsSetupProblem, Token, Unreachable, UrlError,
};

use crate::config::Config;

/// The hint for a server that is not there.
const SERVER_HINT: &str = "(is `hydroplane` running? it may still be starting: `hpctl wait-ready` waits for it; or choose another server with -s/--server or HYDROPLANE_SERVER)";

/// The hint for UNAUTHENTICATED when no token was sent.
const TOKEN_HINT: &str = "(give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE)";

/// The connection flags, shared by every subcommand (`global`, so they go before or after it).
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The server: http://HOST:PORT, https://HOST:PORT, HOST:PORT (plain) or unix:PATH [default:
    /// the config file's `server`, else http://127.0.0.1:50051].
    #[arg(short, long, global = true, env = "HYDROPLANE_SERVER", value_name = "URL")]
    pub server: Option<String>,
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
    /// How long a call may take, in seconds (connecting: at most 5 s of it); for `start --wait`,
    /// how long to wait for the process.
    // allow_hyphen_values: `--timeout -1` then reaches the parser, which quotes it, instead of
    // reading as an unknown flag `-1`.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "60", allow_hyphen_values = true)]
    pub timeout: Seconds,
}

/// A number of seconds as the user wrote it, and as a duration.
#[derive(Clone, Debug, PartialEq)]
pub struct Seconds {
    /// The text given, for messages.
    text: String,
    /// What it means.
    duration: Duration,
}

impl Seconds {
    /// The text given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The duration.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let number: f64 = text.trim().parse().map_err(|_| "not a number of seconds".to_owned())?;
        // NaN is no number of seconds either, hence not `number <= 0.0`.
        if number.is_nan() || number <= 0.0 {
            return Err("the number of seconds must be above 0".to_owned());
        }
        let duration = Duration::try_from_secs_f64(number).map_err(|_| "too many seconds".to_owned())?;
        Ok(Seconds { text: text.to_owned(), duration })
    }
}

/// The connection flags, checked: the options to connect with. The hints are derived from them
/// (was a token, a CA, a client certificate given?), so they are all a plan needs.
#[derive(Debug, PartialEq)]
pub struct Plan {
    /// Where to connect, and what to send and trust there.
    options: ConnectOptions,
    /// `--timeout`, for messages.
    timeout: Seconds,
}

/// An empty value (`HYDROPLANE_CA_CERT=`) counts as not given, as for most tools' variables.
fn given(path: &Option<PathBuf>) -> Option<PathBuf> {
    path.as_ref().filter(|path| !path.as_os_str().is_empty()).cloned()
}

impl ConnectArgs {
    /// Fills in what the flags and variables leave open from hpctl's config file: the server; its
    /// CA, for an https:// server; the token file, when no token is given otherwise.
    pub fn apply(&mut self, config: &Config) {
        if self.server.is_none() {
            self.server.clone_from(&config.server);
        }
        let https = self.server.as_deref().is_some_and(|server| server.starts_with("https://"));
        if self.ca_cert.is_none() && https {
            self.ca_cert.clone_from(&config.ca_cert);
        }
        if self.token.is_none() && self.token_file.is_none() {
            self.token_file.clone_from(&config.token_file);
        }
    }

    /// Checks the flags together, without reading any file or touching the network.
    pub fn plan(&self) -> Result<Plan, CliError> {
        let server = self.server.as_deref().unwrap_or(hydroplane_client::DEFAULT_SERVER);
        let mut options = ConnectOptions::new(server).map_err(url_error)?;
        let token = self.token.as_ref().filter(|token| !token.is_empty());
        match (token, given(&self.token_file)) {
            (Some(_), Some(_)) => {
                return Err(CliError::Setup(
                    "give the token with --token (HYDROPLANE_TOKEN) or --token-file (HYDROPLANE_TOKEN_FILE), not both"
                        .to_owned(),
                ));
            }
            (Some(token), None) => {
                token.check().map_err(|error| CliError::Setup(error.to_string()))?;
                options = options.token(token.clone());
            }
            (None, Some(path)) => options = options.token(Token::from_file(path)),
            (None, None) => {}
        }
        match (given(&self.client_cert), given(&self.client_key)) {
            (Some(cert), Some(key)) => {
                options = options.client_identity(ClientIdentity {
                    certificate: Pem::from_file(cert),
                    key: Pem::from_file(key),
                });
            }
            (None, None) => {}
            _ => {
                return Err(CliError::Setup(
                    "--client-cert and --client-key go together (HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY): give both or neither"
                        .to_owned(),
                ));
            }
        }
        if let Some(ca_cert) = given(&self.ca_cert) {
            options = options.ca_certificate(Pem::from_file(ca_cert));
        }
        let timeout = self.timeout.duration();
        options = options.connect_timeout(timeout.min(DEFAULT_CONNECT_TIMEOUT)).request_timeout(timeout);
        let plan = Plan { options, timeout: self.timeout.clone() };
        plan.options.check().map_err(|error| plan.explain_connect(error))?;
        Ok(plan)
    }
}

/// A URL error, with the flags that set the URL or the token where they are the fix.
fn url_error(error: UrlError) -> CliError {
    CliError::Setup(match error {
        UrlError::Empty => "the server URL is empty: give one with -s/--server or HYDROPLANE_SERVER".to_owned(),
        UrlError::Credentials => "the server URL must not contain a user name or password: give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE".to_owned(),
        other => other.to_string(),
    })
}

/// The flag that names a TLS file.
fn flag(file: TlsFile) -> &'static str {
    match file {
        TlsFile::CaCertificate => "--ca-cert",
        TlsFile::ClientCertificate => "--client-cert",
        TlsFile::ClientKey => "--client-key",
    }
}

impl Plan {
    /// The warning for a token about to travel in clear text beyond this host: a server that
    /// allows it runs with `--insecure`, and anyone on the way can read the token.
    pub fn clear_text_token_warning(&self) -> Option<String> {
        let Target::Http { url } = self.options.target() else { return None };
        if !self.options.has_token() {
            return None;
        }
        let host = url.parse::<tonic::transport::Uri>().ok()?.host()?.to_owned();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare.eq_ignore_ascii_case("localhost")
            || bare.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback());
        (!loopback).then(|| {
            format!(
                "warning: the token goes to {url} in clear text, readable by anyone on the way; \
                 use an https:// server (one with TLS) beyond this host"
            )
        })
    }

    /// Reads the token and TLS files and connects.
    pub async fn connect(&self) -> Result<Client, CliError> {
        self.try_connect().await.map_err(|error| self.explain_connect(error))
    }

    /// Reads the token and TLS files and connects, with the failure as the client crate tells it
    /// (for `wait-ready`, which retries what may pass).
    pub async fn try_connect(&self) -> Result<Client, ConnectError> {
        Client::connect(self.options.clone()).await
    }

    /// The server.
    pub fn target(&self) -> &Target {
        self.options.target()
    }

    /// `--timeout`.
    pub fn timeout(&self) -> &Seconds {
        &self.timeout
    }

    /// Turns a failed call into one line: transport failures read as a failed connection, and
    /// UNAUTHENTICATED without a token says how to give one.
    pub fn explain(&self, status: tonic::Status) -> CliError {
        if let Some(no_answer) = NoAnswer::from_status(&status) {
            return self.no_answer(&no_answer);
        }
        if let Some(unreachable) = Unreachable::from_status(self.options.target(), &status) {
            return self.unreachable(&unreachable);
        }
        // A server that already says how to give a token (ours does) gets no second hint.
        let hint = (status.code() == tonic::Code::Unauthenticated
            && !self.options.has_token()
            && !status.message().contains("--token"))
        .then_some(TOKEN_HINT);
        CliError::Server { status, hint }
    }

    /// A failure to check the options or to connect, in hpctl's words.
    pub fn explain_connect(&self, error: ConnectError) -> CliError {
        match error {
            ConnectError::CaCertificateWithoutTls(target) => CliError::Setup(format!(
                "--ca-cert needs an https:// server URL, not {target} (check -s/--server, HYDROPLANE_SERVER and HYDROPLANE_CA_CERT)"
            )),
            ConnectError::ClientIdentityWithoutTls(target) => CliError::Setup(format!(
                "--client-cert and --client-key need an https:// server URL, not {target} (check -s/--server, HYDROPLANE_SERVER, HYDROPLANE_CLIENT_CERT and HYDROPLANE_CLIENT_KEY)"
            )),
            ConnectError::File(error) => CliError::Setup(error.describe(flag(error.file))),
            ConnectError::TlsSetup { target, reason, problem } => {
                let hint = match problem {
                    TlsSetupProblem::NoSystemRoots => {
                        " (this system has no CA certificates: name the CA that signed the server's certificate with --ca-cert or HYDROPLANE_CA_CERT)"
                    }
                    TlsSetupProblem::ClientIdentity => " (does --client-key belong to --client-cert?)",
                    _ => "",
                };
                CliError::Setup(format!("cannot set up TLS for {target}: {reason}{hint}"))
            }
            ConnectError::Unreachable(unreachable) => self.unreachable(&unreachable),
            // The token's messages name the file, if any, and need no flag.
            other => CliError::Setup(other.to_string()),
        }
    }

    /// The server took the connection but answered nothing in time.
    fn no_answer(&self, no_answer: &NoAnswer) -> CliError {
        CliError::Unreachable {
            server: self.options.target().to_string(),
            reason: format!(
                "no answer within {} (--timeout {})",
                seconds(no_answer.after()),
                self.timeout.text()
            ),
            hint: "(is it a Hydroplane server, and does it use TLS? give a longer --timeout for a slow one)"
                .to_owned(),
        }
    }

    /// A failure to reach the server, with the hint that fits its cause.
    fn unreachable(&self, unreachable: &Unreachable) -> CliError {
        let hint = match unreachable.failure() {
            Failure::Tls(failure) => self.tls_hint(failure),
            Failure::SocketPermission => {
                "(this user may not open the socket: check its owner and mode)".to_owned()
            }
            Failure::ClosedByServer if matches!(self.options.target(), Target::Https { .. }) => {
                if !self.options.has_client_identity() {
                    "(the server closed the connection: if it wants a client certificate, give --client-cert and --client-key)".to_owned()
                } else {
                    "(the server closed the connection: is --client-cert signed by the CA the server trusts for clients?)".to_owned()
                }
            }
            // A TLS server closes a connection that does not start with a TLS handshake.
            Failure::ClosedByServer => {
                "(the server closed the connection: if it uses TLS, give an https:// URL)".to_owned()
            }
            _ if timed_out(unreachable.reason()) => format!(
                "(connecting may take the smaller of --timeout ({}) and 5 s: is the server there, and does it speak TLS if the URL is https://?)",
                self.timeout.text()
            ),
            _ => SERVER_HINT.to_owned(),
        };
        CliError::Unreachable {
            server: unreachable.target().to_string(),
            reason: unreachable.reason().to_owned(),
            hint,
        }
    }

    /// What to try when the TLS handshake failed (the reason already says what is wrong).
    fn tls_hint(&self, failure: TlsFailure) -> String {
        let ca_cert = self.options.has_ca_certificate();
        let identity = self.options.has_client_identity();
        match failure {
            TlsFailure::WrongName => {
                let domain = match self.options.target() {
                    Target::Https { domain, .. } => domain.as_str(),
                    _ => "this host",
                };
                format!(
                    "(connect by a name or IP address it lists, or give the server one that lists {domain}: `hydroplane tls cert create --server --san {domain}`)"
                )
            }
            TlsFailure::OutOfValidity => {
                "(give the server a new one: `hydroplane tls cert create --server --force`; is this machine's clock right?)"
                    .to_owned()
            }
            TlsFailure::CaCertificate => {
                "(give the server a certificate signed by a CA, as `hydroplane tls cert create --server` makes, and trust that CA with --ca-cert)"
                    .to_owned()
            }
            TlsFailure::WrongPurpose => {
                "(give the server a server certificate, as `hydroplane tls cert create --server` makes)".to_owned()
            }
            TlsFailure::Untrusted if ca_cert => {
                "(does --ca-cert name the CA that signed the server's certificate?)".to_owned()
            }
            TlsFailure::Untrusted => {
                "(only the system's CAs are trusted: name the CA that signed the server's certificate with --ca-cert or HYDROPLANE_CA_CERT)"
                    .to_owned()
            }
            TlsFailure::ClientCertificate if !identity => {
                "(give --client-cert and --client-key, signed by the CA the server trusts for clients)".to_owned()
            }
            TlsFailure::ClientCertificate => {
                "(is --client-cert signed by the CA the server trusts for clients, and still valid?)".to_owned()
            }
            TlsFailure::NotTls => {
                "(does the server use TLS? a server without TLS needs an http:// URL)".to_owned()
            }
            _ => "(check the server's TLS settings and --ca-cert, --client-cert and --client-key)".to_owned(),
        }
    }
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

/// Whether a failure to connect was a timeout (TCP connect or TLS handshake), by its message.
fn timed_out(reason: &str) -> bool {
    let reason = reason.to_ascii_lowercase();
    reason.contains("timed out") || reason.contains("timeout")
}

/// A duration in seconds, as people write it: `1 s`, `2.5 s`.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

/// A status's message on one line, or its code's description when the server sent none.
fn message(status: &tonic::Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        one_line(status.message())
    }
}

/// A server message on one line. The server lists the rules a request breaks one per line after
/// a heading (`invalid request:` then `  - label_selector: at position 7: ...`); hpctl's
/// errors are one line, so they become `heading: first; second`, as `start` words its own.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let heading = lines.next().unwrap_or_default();
    let items: Vec<&str> = lines.map(|line| line.strip_prefix("- ").unwrap_or(line)).collect();
    match (items.is_empty(), heading.ends_with(':')) {
        (true, _) => heading.to_owned(),
        (false, true) => format!("{heading} {}", items.join("; ")),
        (false, false) => format!("{heading}; {}", items.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use hydroplane_client::proto;
    use tonic::transport::{Certificate, Identity};

    use super::*;

    #[test]
    fn a_server_message_listing_violations_is_one_line() {
        let check = |text: &str, expected: &str| {
            assert_eq!(message(&tonic::Status::invalid_argument(text)), expected, "{text:?}");
        };
        check(
            "invalid request:\n  - label_selector: at position 7: expected a value",
            "invalid request: label_selector: at position 7: expected a value",
        );
        check("invalid process spec:\n  - a: one\n  - b: two", "invalid process spec: a: one; b: two");
        check("process `web` does not exist", "process `web` does not exist");
        check("first\nsecond", "first; second");
        check("", "Client specified an invalid argument");
    }

    /// Connection flags with only the server set; tests fill in the rest.
    fn args(server: &str) -> ConnectArgs {
        ConnectArgs {
            server: Some(server.to_owned()),
            token: None,
            token_file: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            timeout: "60".parse().expect("seconds"),
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
        Some(Token::new(token))
    }

    #[test]
    fn a_token_in_clear_text_beyond_this_host_is_warned_of() {
        let warning = |server: &str, token: Option<Token>| {
            ConnectArgs { token, ..args(server) }.plan().expect("a plan").clear_text_token_warning()
        };
        for server in ["127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "127.0.0.2:1"] {
            assert_eq!(warning(server, token("abc")), None, "{server}");
        }
        for server in ["10.0.0.1:1", "http://example.com:1", "http://[2001:db8::1]:1"] {
            let text = warning(server, token("abc")).expect("a warning");
            assert!(text.starts_with("warning: the token goes to http://"), "{text}");
            assert!(!text.contains("abc"), "the warning never shows the token: {text}");
            assert_eq!(warning(server, None), None, "no token, nothing to warn of: {server}");
        }
        assert_eq!(warning("https://example.com:1", token("abc")), None);
        assert_eq!(warning("unix:/tmp/h.sock", token("abc")), None);
    }

    #[test]
    fn flag_combinations() {
        let plan = |options: ConnectOptions| Plan {
            options: options.connect_timeout(Duration::from_secs(5)).request_timeout(Duration::from_secs(60)),
            timeout: "60".parse().expect("seconds"),
        };
        let local = || ConnectOptions::new("127.0.0.1:1").expect("url");
        let secure = || ConnectOptions::new("https://h:1").expect("url");

        check_plan(args("127.0.0.1:1"), Ok(plan(local())));
        check_plan(
            ConnectArgs { token: token(" abc\n"), ..args("127.0.0.1:1") },
            Ok(plan(local().token(Token::new(" abc\n")))),
        );
        // Empty values, as from `HYDROPLANE_TOKEN=`, count as not given.
        check_plan(
            ConnectArgs { token: token(""), token_file: path(""), ca_cert: path(""), ..args("127.0.0.1:1") },
            Ok(plan(local())),
        );
        check_plan(
            ConnectArgs { token_file: path("/t"), ..args("127.0.0.1:1") },
            Ok(plan(local().token(Token::from_file("/t")))),
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
        check_plan(args("https://h:1"), Ok(plan(secure())));
        check_plan(
            ConnectArgs {
                ca_cert: path("ca.pem"),
                client_cert: path("c.pem"),
                client_key: path("k.pem"),
                ..args("https://h:1")
            },
            Ok(plan(secure().ca_certificate(Pem::from_file("ca.pem")).client_identity(ClientIdentity {
                certificate: Pem::from_file("c.pem"),
                key: Pem::from_file("k.pem"),
            }))),
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
    fn url_errors_name_the_flags_that_fix_them() {
        check_plan(args(""), Err("the server URL is empty: give one with -s/--server or HYDROPLANE_SERVER"));
        check_plan(
            args("https://secret@host:1"),
            Err(
                "the server URL must not contain a user name or password: give a token with --token, HYDROPLANE_TOKEN or HYDROPLANE_TOKEN_FILE",
            ),
        );
        check_plan(
            args("unix://run/hydroplane.sock"),
            Err(
                "`unix://run/hydroplane.sock`: unix:// needs an absolute path, as in unix:///run/hydroplane.sock (or write unix:PATH)",
            ),
        );
        check_plan(
            args("http://host:port"),
            Err("invalid server URL `http://host:port`: the port must be a number from 1 to 65535"),
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

    /// Plans and connects with these flags; the error line. Files are read before any connection
    /// is tried, so a port nothing listens on is enough.
    async fn connect_error(args: ConnectArgs) -> String {
        args.plan().expect("plan").connect().await.map(drop).unwrap_err().to_string()
    }

    #[tokio::test]
    async fn the_token_and_tls_files_are_read_and_named_when_wrong() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, text: &str| {
            let path = directory.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let empty = file("empty", "\n");
        let error =
            connect_error(ConnectArgs { token_file: Some(empty.clone()), ..args("127.0.0.1:1") }).await;
        assert_eq!(error, format!("the token file {} is empty", empty.display()));

        let missing = directory.path().join("missing");
        let error =
            connect_error(ConnectArgs { token_file: Some(missing.clone()), ..args("127.0.0.1:1") }).await;
        assert!(error.starts_with(&format!("cannot read the token file {}: ", missing.display())), "{error}");

        let not_pem = file("not.pem", "hello");
        let tls_error = |ca_cert: &Path, cert: &Path, key: &Path| {
            connect_error(ConnectArgs {
                ca_cert: Some(ca_cert.to_owned()),
                client_cert: Some(cert.to_owned()),
                client_key: Some(key.to_owned()),
                ..args("https://127.0.0.1:1")
            })
        };
        let error = tls_error(&missing, &missing, &missing).await;
        assert!(error.starts_with(&format!("cannot read --ca-cert {}: ", missing.display())), "{error}");
        let error = tls_error(&not_pem, &not_pem, &not_pem).await;
        assert_eq!(
            error,
            format!(
                "--ca-cert {}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
                not_pem.display()
            )
        );
        let pki = Pki::new("hpctl test CA");
        let ca = file("ca.pem", &pki.ca_pem);
        let error = tls_error(&ca, &ca, &missing).await;
        assert!(error.starts_with(&format!("cannot read --client-key {}: ", missing.display())), "{error}");
        let error = tls_error(&ca, &ca, &ca).await;
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
    impl proto::process_service_server::ProcessService for Recorder {
        async fn start(
            &self,
            _: tonic::Request<proto::StartRequest>,
        ) -> Result<tonic::Response<proto::StartResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("start"))
        }

        async fn stop(
            &self,
            _: tonic::Request<proto::StopRequest>,
        ) -> Result<tonic::Response<proto::StopResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("stop"))
        }

        type LogsStream = futures::stream::Empty<Result<proto::LogChunk, tonic::Status>>;

        async fn logs(
            &self,
            _: tonic::Request<proto::LogsRequest>,
        ) -> Result<tonic::Response<Self::LogsStream>, tonic::Status> {
            Err(tonic::Status::unimplemented("logs"))
        }

        async fn describe(
            &self,
            _: tonic::Request<proto::DescribeRequest>,
        ) -> Result<tonic::Response<proto::ProcessDetail>, tonic::Status> {
            Err(tonic::Status::unimplemented("describe"))
        }

        async fn list(
            &self,
            request: tonic::Request<proto::ListRequest>,
        ) -> Result<tonic::Response<proto::ListResponse>, tonic::Status> {
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
            Ok(tonic::Response::new(proto::ListResponse::default()))
        }

        type WatchStream = tokio_stream::Empty<Result<proto::WatchEvent, tonic::Status>>;

        async fn watch(
            &self,
            _: tonic::Request<proto::WatchRequest>,
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
        let router = server.add_service(proto::process_service_server::ProcessServiceServer::new(recorder));
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
        let client = plan.connect().await.map_err(|error| error.to_string())?;
        client
            .list(proto::ListRequest::default())
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
        let router = tonic::transport::Server::builder()
            .add_service(proto::process_service_server::ProcessServiceServer::new(recorder.clone()));
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
                "cannot reach the Hydroplane server at {server}: the server's certificate is not signed by a CA this client trusts (does --ca-cert name the CA that signed the server's certificate?)"
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
                "the server's certificate is not valid for 127.0.0.1 (connect by a name or IP address it lists, or give the server one that lists 127.0.0.1: `hydroplane tls cert create --server --san 127.0.0.1`)"
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
                    "(give --client-cert and --client-key, signed by the CA the server trusts for clients)"
                ),
            "{error}"
        );
    }
}
