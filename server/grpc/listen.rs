//! Where the server listens, and whether that is safe: TCP (plain or TLS) and Unix domain
//! sockets (owner only), and the rule that keeps an unprotected server off the network.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::transport::tls::ServerTls;

/// An address from `-H`: a host (with the port from `-p`) or `unix:PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddress {
    /// A TCP host name or IP address and a port.
    Tcp {
        /// The host or IP address.
        host: String,
        /// The port (0 picks a free one).
        port: u16,
    },
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl ListenAddress {
    /// Reads `-H`'s value: `unix:PATH` or a host, which gets `port`.
    pub fn parse(host: &str, port: u16) -> Result<ListenAddress, String> {
        if let Some(path) = host.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err("-H unix:PATH needs a path, such as unix:/run/hydroplane/api.sock".to_owned());
            }
            return Ok(ListenAddress::Unix(PathBuf::from(path)));
        }
        if host.is_empty() {
            return Err("-H needs a host, an IP address or unix:PATH".to_owned());
        }
        // `[::1]` is how URLs write IPv6 addresses; the socket API wants it bare.
        let host = host.strip_prefix('[').and_then(|host| host.strip_suffix(']')).unwrap_or(host);
        Ok(ListenAddress::Tcp { host: host.to_owned(), port })
    }
}

/// What protects a listener's callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    /// TLS is on.
    pub tls: bool,
    /// TLS demands client certificates.
    pub client_certificates: bool,
    /// Every call needs a token.
    pub tokens: bool,
}

/// Decides whether a bound TCP address may be served with this protection; `Ok(Some(warning))`
/// when only `--insecure` allows it. Loopback is exempt: only local users reach it.
pub fn check_exposure(
    address: SocketAddr,
    protection: Protection,
    insecure: bool,
) -> Result<Option<String>, String> {
    if address.ip().is_loopback() {
        return Ok(None);
    }
    let problem = match (protection.tls, protection.tokens, protection.client_certificates) {
        (true, true, _) | (true, false, true) => return Ok(None),
        (false, false, _) => format!(
            "{address} would be served with neither TLS nor tokens: anyone who can reach it could run any \
             command as this server's user"
        ),
        (false, true, _) => format!(
            "{address} would be served with tokens but no TLS: tokens would cross the network in clear text"
        ),
        (true, false, false) => {
            format!(
                "{address} would be served with TLS but no tokens or client certificates: anyone could call it"
            )
        }
    };
    if insecure {
        return Ok(Some(format!("--insecure: {problem}")));
    }
    Err(format!(
        "refusing to listen: {problem}. Set `tls: {{cert_file, key_file}}` and `auth: {{tokens_file}}` in the settings \
         (README, \"Securing the API\"), listen on 127.0.0.1 or unix:PATH, or pass --insecure to accept the risk"
    ))
}

/// A listener, bound and checked, ready to serve.
pub enum Listener {
    /// Plain TCP.
    Tcp(tokio::net::TcpListener),
    /// TCP with TLS.
    Tls(tokio::net::TcpListener, Arc<ServerTls>),
    /// A Unix domain socket, removed when the listener is dropped.
    Unix(tokio::net::UnixListener, SocketFile),
    /// In-memory connections (one end of each `tokio::io::duplex`), for tests in one process.
    InMemory(futures::stream::BoxStream<'static, std::io::Result<tokio::io::DuplexStream>>),
}

impl Listener {
    /// How the server announces it: `127.0.0.1:50051` or `unix:/path`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(listener) | Listener::Tls(listener, _) => listener
                .local_addr()
                .map(|address| address.to_string())
                .unwrap_or_else(|_| "an unknown address".to_owned()),
            Listener::Unix(_, file) => format!("unix:{}", file.0.display()),
            Listener::InMemory(_) => "memory".to_owned(),
        }
    }
}

/// A Unix socket's path, removed when dropped so the next start finds no stale socket.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why a listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The OS refused.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another server answers on the socket path, or the path is not a socket.
    #[error("cannot listen on unix:{}: {reason}", path.display())]
    SocketTaken {
        /// The path.
        path: PathBuf,
        /// What is there.
        reason: String,
    },
    /// The exposure rule refused it.
    #[error("{0}")]
    Unsafe(String),
}

/// The protection a TCP listener gets from these settings.
pub fn protection(tls: Option<&Arc<ServerTls>>, tokens: bool) -> Protection {
    Protection {
        tls: tls.is_some(),
        client_certificates: tls.is_some_and(|tls| tls.requires_client_certificates()),
        tokens,
    }
}

fn socket_address_text(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Applies the exposure rule to every address a host resolves to, before anything is bound;
/// returns the warnings `--insecure` had to allow.
pub async fn check_tcp(
    host: &str,
    port: u16,
    protection: Protection,
    insecure: bool,
) -> Result<Vec<String>, ListenError> {
    let address = socket_address_text(host, port);
    let resolved = tokio::net::lookup_host(&address)
        .await
        .map_err(|source| ListenError::Bind { address: address.clone(), source })?;
    let mut warnings = Vec::new();
    for resolved in resolved {
        if let Some(warning) = check_exposure(resolved, protection, insecure).map_err(ListenError::Unsafe)? {
            warnings.push(warning);
        }
    }
    Ok(warnings)
}

/// Binds a TCP address (with TLS when given), checking the bound address against the exposure
/// rule once more.
pub async fn bind_tcp(
    host: &str,
    port: u16,
    tls: Option<&Arc<ServerTls>>,
    tokens: bool,
    insecure: bool,
) -> Result<Listener, ListenError> {
    let address = socket_address_text(host, port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| ListenError::Bind { address: address.clone(), source })?;
    let bound =
        listener.local_addr().map_err(|source| ListenError::Bind { address: address.clone(), source })?;
    check_exposure(bound, protection(tls, tokens), insecure).map_err(ListenError::Unsafe)?;
    Ok(match tls {
        Some(tls) => Listener::Tls(listener, Arc::clone(tls)),
        None => Listener::Tcp(listener),
    })
}

/// Binds a Unix socket that only the server's user can connect to: it is made under a private
/// temporary name, restricted to 0600, then renamed into place, so no other user ever sees it
/// open. A stale socket left by a crash is replaced; a live one, or a file that is not a
/// socket, is left alone and reported.
pub async fn bind_unix(path: &Path) -> Result<Listener, ListenError> {
    let taken = |reason: String| ListenError::SocketTaken { path: path.to_owned(), reason };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => {
            return Err(taken("the path exists and is not a socket".to_owned()));
        }
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                return Err(taken("another server is listening there".to_owned()));
            }
        }
        Err(_) => {}
    }
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = directory.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let bind_error = |source| ListenError::Bind { address: format!("unix:{}", path.display()), source };
    let listener = tokio::net::UnixListener::bind(&temporary).map_err(bind_error)?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = placed {
        let _ = std::fs::remove_file(&temporary);
        return Err(bind_error(error));
    }
    Ok(Listener::Unix(listener, SocketFile(path.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Protection = Protection { tls: false, client_certificates: false, tokens: false };

    #[test]
    fn addresses_are_hosts_or_unix_paths() {
        assert_eq!(
            ListenAddress::parse("unix:/tmp/a.sock", 1),
            Ok(ListenAddress::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(
            ListenAddress::parse("unix:///tmp/a.sock", 1),
            Ok(ListenAddress::Unix("/tmp/a.sock".into()))
        );
        assert_eq!(ListenAddress::parse("[::1]", 7), Ok(ListenAddress::Tcp { host: "::1".into(), port: 7 }));
        assert!(ListenAddress::parse("unix:", 1).is_err());
    }

    #[test]
    fn only_a_protected_server_leaves_loopback() {
        let public: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        assert_eq!(check_exposure(loopback, OPEN, false), Ok(None));
        let refused = check_exposure(public, OPEN, false).unwrap_err();
        assert!(refused.contains("neither TLS nor tokens") && refused.contains("--insecure"), "{refused}");
        assert!(!refused.contains('\n'));
        let tokens_only = Protection { tokens: true, ..OPEN };
        assert!(check_exposure(public, tokens_only, false).unwrap_err().contains("clear text"));
        assert!(check_exposure(public, tokens_only, true).unwrap().unwrap().contains("clear text"));
        let tls_only = Protection { tls: true, ..OPEN };
        assert!(check_exposure(public, tls_only, false).is_err());
        assert_eq!(
            check_exposure(public, Protection { client_certificates: true, ..tls_only }, false),
            Ok(None)
        );
        assert_eq!(check_exposure(public, Protection { tokens: true, ..tls_only }, false), Ok(None));
    }

    #[tokio::test]
    async fn a_unix_socket_is_private_and_a_live_one_is_not_taken_over() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("api.sock");
        let listener = bind_unix(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = bind_unix(&path).await.err().expect("a live socket is refused").to_string();
        assert!(second.contains("another server is listening"), "{second}");
        drop(listener);
        assert!(!path.exists(), "the socket file is removed with its listener");
        std::fs::write(&path, "not a socket").unwrap();
        assert!(bind_unix(&path).await.is_err());
    }
}
