//! TLS on the gRPC port: rustls with the ring provider (chosen explicitly, never a process-wide
//! default), optional mutual TLS against a client CA, and certificate files that are re-read
//! when their contents change, so a rotated certificate reaches new connections without a restart.
//!
//! [`ServerTls`] holds the current configuration; [`incoming`] turns a TCP listener into a stream
//! of finished TLS connections for tonic's `serve_with_incoming_shutdown`. A handshake never holds
//! up another, and a failed one is logged and skipped, never fatal to the listener.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use zeroize::Zeroizing;

use crate::config::TlsSettings;
use crate::transport::connections::Peer;
use crate::transport::connections::{ConnectionLimits, Gated, PeerKey, WeakConnection, next_admitted};

/// Handshakes in progress at once; beyond this, newcomers are closed at once.
const MAX_CONCURRENT_HANDSHAKES: usize = 1024;

/// Handshakes one peer address may have in progress at once, so that no one peer can hold every
/// slot (a client opening many connections at once waits a little, or retries).
pub const HANDSHAKE_SLOTS_PER_PEER: usize = 64;

/// How long a new connection may wait before its first byte (the ClientHello's): a client that
/// connects and says nothing holds a handshake slot no longer than this.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Finished connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// The shortest interval [`ServerTls::watch_files`] honours (a zero interval would spin).
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(10);

/// Why TLS could not be set up. Each message names the file and what is wrong with it, never
/// any of its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read.
    #[error("cannot read the TLS certificate file {}: {error}", path.display())]
    ReadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The key file could not be read.
    #[error("cannot read the TLS key file {}: {error}", path.display())]
    ReadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The client CA file could not be read.
    #[error("cannot read the client CA file {}: {error}", path.display())]
    ReadClientCa {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The certificate file is not well-formed PEM (for instance half-written).
    #[error("the TLS certificate file {} is not valid PEM: {reason}", path.display())]
    CertificatePem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("the TLS certificate file {} holds no PEM certificate", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The first certificate of the chain cannot be parsed.
    #[error("the TLS certificate file {} holds an unusable certificate: {reason}", path.display())]
    InvalidCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls says.
        reason: String,
    },
    /// The key file is not well-formed PEM (for instance half-written).
    #[error("the TLS key file {} is not valid PEM: {reason}", path.display())]
    KeyPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The key file holds no PKCS#8, PKCS#1 or SEC1 private key section.
    #[error("the TLS key file {} holds no private key", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind or encoding ring cannot use.
    #[error("the TLS key file {} holds an unusable private key: {reason}", path.display())]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// What rustls says.
        reason: String,
    },
    /// The key is not the certificate's (typically one file of a rotation was written before
    /// the other).
    #[error("the TLS key file {} does not match the certificate in {}", key.display(), certificate.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        certificate: PathBuf,
    },
    /// The client CA file is not well-formed PEM.
    #[error("the client CA file {} is not valid PEM: {reason}", path.display())]
    ClientCaPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The client CA file holds no `CERTIFICATE` section.
    #[error("the client CA file {} holds no PEM certificate", path.display())]
    NoClientCa {
        /// The file.
        path: PathBuf,
    },
    /// A client CA certificate cannot serve as a trust anchor.
    #[error("the client CA file {} holds an unusable CA certificate: {reason}", path.display())]
    InvalidClientCa {
        /// The file.
        path: PathBuf,
        /// What rustls says.
        reason: String,
    },
    /// The server certificate is expired, or not valid yet: every client would refuse it.
    #[error(
        "the TLS certificate in {} is not valid now (valid from {not_before} until {not_after}); clients would refuse it: renew it", path.display()
    )]
    NotValidNow {
        /// The file.
        path: PathBuf,
        /// The start of its validity.
        not_before: String,
        /// The end of its validity.
        not_after: String,
    },
    /// rustls refused the configuration itself.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The server's TLS configuration, reloaded when its files change.
pub struct ServerTls {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    config: RwLock<Arc<ServerConfig>>,
    /// The client certificate verifier of `config` (with a client CA), to check open
    /// connections again when the CA changes.
    verifier: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
    /// The open connections that presented a client certificate, with their chains.
    clients: Mutex<Vec<(Vec<CertificateDer<'static>>, WeakConnection)>>,
    /// What the files looked like at the last look, loadable or not: a reload is attempted (and
    /// a failure logged) only when this changes.
    seen: Mutex<Seen>,
}

impl ServerTls {
    /// Loads the certificate chain, key and optional client CA into a rustls configuration (ring
    /// provider, ALPN `h2`; with a client CA, every client must present a certificate it signed).
    pub fn load(settings: &TlsSettings) -> Result<Arc<ServerTls>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let files = Files::read(settings)?;
        let (config, verifier) = build(settings, &files, &provider, Validity::Warn)?;
        Ok(Arc::new(ServerTls {
            settings: settings.clone(),
            provider,
            config: RwLock::new(Arc::new(config)),
            verifier: RwLock::new(verifier),
            clients: Mutex::new(Vec::new()),
            seen: Mutex::new(Seen::Contents(files.digest())),
        }))
    }

    /// The configuration new connections get.
    pub fn current(&self) -> Arc<ServerConfig> {
        // A poisoned lock still holds a complete Arc: writers only ever swap it.
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.settings.client_ca_file.is_some()
    }

    /// Spawns a task that re-reads the files every `interval` and swaps the configuration when
    /// their contents changed; the task ends when this `ServerTls` is dropped.
    pub fn watch_files(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        // A weak reference, so that the watcher does not keep the configuration alive forever.
        let tls = Arc::downgrade(self);
        tokio::spawn(watch(tls, interval.max(MIN_WATCH_INTERVAL)))
    }

    /// Re-reads the files; reloads when they differ from the last look. Blocking (file reads).
    fn check_files(&self) -> Check {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let files = Files::read(&self.settings);
        // Contents, not modification times: Kubernetes swaps a symlink to a new directory, and
        // a copy may keep the old time.
        let now = match &files {
            Ok(files) => Seen::Contents(files.digest()),
            Err(error) => Seen::Unreadable(error.to_string()),
        };
        if now == *seen {
            return Check::Unchanged;
        }
        *seen = now;
        match files.and_then(|files| build(&self.settings, &files, &self.provider, Validity::Refuse)) {
            Ok((config, verifier)) => {
                *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                *self.verifier.write().unwrap_or_else(PoisonError::into_inner) = verifier;
                self.recheck_clients();
                tracing::info!(
                    cert_file = %self.settings.cert_file.display(),
                    key_file = %self.settings.key_file.display(),
                    client_ca_file = ?self.settings.client_ca_file,
                    "reloaded the TLS certificate; new connections get it"
                );
                Check::Reloaded
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot reload the TLS files; new connections keep the previous certificate"
                );
                Check::Failed(error)
            }
        }
    }
}

impl ServerTls {
    /// Remembers an open connection's client certificate chain, to check it again when the
    /// client CA changes.
    fn remember_client(&self, chain: Vec<CertificateDer<'static>>, connection: WeakConnection) {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        // Closed connections are forgotten whenever the list has doubled since the last sweep.
        if clients.len() >= 64 && clients.len().is_power_of_two() {
            clients.retain(|(_, connection)| connection.upgrade().is_some());
        }
        clients.push((chain, connection));
    }

    /// Closes every open connection whose client certificate the current verifier no longer
    /// accepts (the client CA was rotated): trust that is withdrawn ends the connections it let
    /// in, not only new ones. Returns how many were closed.
    fn recheck_clients(&self) -> usize {
        let verifier = self.verifier.read().unwrap_or_else(PoisonError::into_inner).clone();
        let now = rustls_pki_types::UnixTime::now();
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let mut closed = 0;
        clients.retain(|(chain, connection)| {
            let Some(connection) = connection.upgrade() else { return false };
            let trusted = match (&verifier, chain.split_first()) {
                // No client CA any more: certificates are not asked for, nobody is cut off.
                (None, _) => true,
                (Some(verifier), Some((end_entity, intermediates))) => {
                    verifier.verify_client_cert(end_entity, intermediates, now).is_ok()
                }
                (Some(_), None) => false,
            };
            if !trusted {
                tracing::warn!(peer = %connection.peer(), "closing a connection whose client certificate the new client CA does not trust");
                connection.cut();
                closed += 1;
            }
            trusted
        });
        closed
    }
}

/// What one look at the files found.
#[derive(Debug)]
enum Check {
    /// The same as last time.
    Unchanged,
    /// Changed and loaded; new connections get the new configuration.
    Reloaded,
    /// Changed but not loadable; the previous configuration stays.
    Failed(#[allow(dead_code, reason = "read by the tests and by Debug")] TlsError),
}

/// The files' state at one look: a SHA-256 of their contents (no copy of the key stays in
/// memory), or why they could not be read.
#[derive(Debug, PartialEq)]
enum Seen {
    Contents([u8; 32]),
    Unreadable(String),
}

async fn watch(tls: Weak<ServerTls>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(tls) = tls.upgrade() else {
            return;
        };
        // File reads block; keep them off the async workers.
        if let Err(error) = tokio::task::spawn_blocking(move || tls.check_files()).await {
            tracing::error!(%error, "the TLS file check failed; trying again at the next interval");
        }
    }
}

/// The three files as read at one moment; everything is parsed from these bytes, so the digest
/// and the configuration describe the same contents.
struct Files {
    certificate: Vec<u8>,
    key: Zeroizing<Vec<u8>>,
    /// The client CA file and its contents, when there is one.
    client_ca: Option<(PathBuf, Vec<u8>)>,
}

impl Files {
    fn read(settings: &TlsSettings) -> Result<Files, TlsError> {
        let certificate = std::fs::read(&settings.cert_file)
            .map_err(|error| TlsError::ReadCertificate { path: settings.cert_file.clone(), error })?;
        let key = std::fs::read(&settings.key_file)
            .map(Zeroizing::new)
            .map_err(|error| TlsError::ReadKey { path: settings.key_file.clone(), error })?;
        let client_ca = match &settings.client_ca_file {
            Some(path) => Some((
                path.clone(),
                std::fs::read(path).map_err(|error| TlsError::ReadClientCa { path: path.clone(), error })?,
            )),
            None => None,
        };
        Ok(Files { certificate, key, client_ca })
    }

    fn digest(&self) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        // Length prefixes keep bytes moved from one file to another from hashing the same.
        for contents in [
            Some(&self.certificate[..]),
            Some(&self.key[..]),
            self.client_ca.as_ref().map(|(_, contents)| &contents[..]),
        ] {
            match contents {
                Some(contents) => {
                    context.update(&(contents.len() as u64 + 1).to_be_bytes());
                    context.update(contents);
                }
                None => context.update(&0u64.to_be_bytes()),
            }
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(context.finish().as_ref());
        digest
    }
}

/// The rustls configuration of these files, and its client certificate verifier when there is
/// a client CA.
fn build(
    settings: &TlsSettings,
    files: &Files,
    provider: &Arc<CryptoProvider>,
    validity: Validity,
) -> Result<(ServerConfig, Option<Arc<dyn ClientCertVerifier>>), TlsError> {
    let cert_path = &settings.cert_file;
    let key_path = &settings.key_file;
    let chain = certificates(&files.certificate).map_err(|problem| match problem {
        PemProblem::Empty => TlsError::NoCertificate { path: cert_path.clone() },
        PemProblem::Malformed(reason) => TlsError::CertificatePem { path: cert_path.clone(), reason },
    })?;
    match (check_validity(cert_path, &chain[0]), validity) {
        (Ok(()), _) => {}
        (Err(error), Validity::Refuse) => return Err(error),
        (Err(error), Validity::Warn) => {
            tracing::error!(%error, "serving a TLS certificate that is not valid now: every client will refuse it");
        }
    }
    let key = PrivateKeyDer::from_pem_slice(&files.key).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey { path: key_path.clone() },
        error => TlsError::KeyPem { path: key_path.clone(), reason: describe_pem_error(&error) },
    })?;
    if chain.first().is_some_and(|leaf| is_ca_certificate(leaf)) {
        tracing::warn!(
            "{} is a CA certificate (CA:TRUE), which rustls clients (hpctl, the Rust client) refuse as a server's own, as `openssl req -x509` makes by default: make a CA and a server certificate signed by it (`hydroplane tls ca create`, then `hydroplane tls cert create --server`; README, \"Securing the API\")",
            cert_path.display()
        );
    }
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::InvalidKey { path: key_path.clone(), reason: error.to_string() })?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    match certified_key.keys_match() {
        // Unknown: the key cannot tell its public half; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch { key: key_path.clone(), certificate: cert_path.clone() });
        }
        Err(error) => {
            return Err(TlsError::InvalidCertificate { path: cert_path.clone(), reason: error.to_string() });
        }
    }

    let builder = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::Config(error.to_string()))?;
    let verifier = match &files.client_ca {
        Some((ca_path, ca)) => Some(client_verifier(ca_path, ca, provider)?),
        None => None,
    };
    let builder = match &verifier {
        Some(verifier) => builder.with_client_cert_verifier(Arc::clone(verifier)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key)));
    // gRPC runs on HTTP/2 only; a client offering only other protocols is refused in the handshake.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, verifier))
}

/// What to do with a server certificate that is expired or not valid yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Validity {
    /// Serve it with an ERROR line (at start): every client then says "expired" itself, in one
    /// sentence, and the server keeps answering its health probes; a server that refused to
    /// start would say it only in its own log, and take the health checks down with it.
    Warn,
    /// Refuse it (on reload): the certificate in use stays, which every client can still use.
    Refuse,
}

/// Whether a server certificate is valid now.
fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|error| TlsError::InvalidCertificate { path: path.to_owned(), reason: error.to_string() })?;
    let validity = certificate.validity();
    if validity.is_valid() {
        return Ok(());
    }
    Err(TlsError::NotValidNow {
        path: path.to_owned(),
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
    })
}

/// Whether a certificate says it is a CA (basic constraints `CA:TRUE`); false when it cannot be
/// read, which rustls then reports in its own words.
fn is_ca_certificate(certificate: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(certificate).is_ok_and(|(_, parsed)| parsed.is_ca())
}

/// A verifier that demands a client certificate signed by one of the CAs in `ca`.
fn client_verifier(
    path: &Path,
    ca: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let anchors = certificates(ca).map_err(|problem| match problem {
        PemProblem::Empty => TlsError::NoClientCa { path: path.to_owned() },
        PemProblem::Malformed(reason) => TlsError::ClientCaPem { path: path.to_owned(), reason },
    })?;
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        roots.add(anchor).map_err(|error| TlsError::InvalidClientCa {
            path: path.to_owned(),
            reason: error.to_string(),
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|error| TlsError::InvalidClientCa { path: path.to_owned(), reason: error.to_string() })
}

/// Why a PEM file yielded no certificates.
enum PemProblem {
    Empty,
    Malformed(String),
}

/// Every `CERTIFICATE` section of a PEM file, in order.
fn certificates(contents: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemProblem> {
    let chain = CertificateDer::pem_slice_iter(contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| PemProblem::Malformed(describe_pem_error(&error)))?;
    if chain.is_empty() { Err(PemProblem::Empty) } else { Ok(chain) }
}

/// What is wrong with a PEM file, in words that quote none of it (pem's own messages can echo
/// a line of the file, and the file may be a key).
fn describe_pem_error(error: &pem::Error) -> String {
    match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a PEM section has no END line (is it half-written?)".to_owned()
        }
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".to_owned(),
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64".to_owned(),
        pem::Error::NoItemsFound => "it holds no PEM section of the expected kind".to_owned(),
        pem::Error::SectionTooLarge => "a PEM section is larger than 256 MB".to_owned(),
        pem::Error::Io(error) => error.to_string(),
        _ => "it is not valid PEM".to_owned(),
    }
}

/// The TLS connections accepted on `listener`, under the server's connection limits: each
/// newcomer needs a connection slot and a handshake slot, of which one peer address may hold at
/// most [`HANDSHAKE_SLOTS_PER_PEER`]; when either is full the newcomer is closed at once, and no
/// established connection is touched. A handshake must begin (the client's first byte) within
/// [`FIRST_BYTE_TIMEOUT`] and end within `tls.handshake_timeout_seconds`; failures are logged
/// and skipped, never end the stream.
///
/// Each connection gets [`ServerTls::current`] as of its accept, so a rotated certificate reaches
/// new connections. The accepting task ends, closing the listener, when the stream is dropped.
/// Must be called within a tokio runtime.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    limits: Arc<ConnectionLimits>,
) -> impl futures::Stream<Item = io::Result<TlsStream<Gated<TcpStream>>>> + Send + 'static {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, tls, limits, sender));
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

type Sender = mpsc::Sender<io::Result<TlsStream<Gated<TcpStream>>>>;

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    limits: Arc<ConnectionLimits>,
    sender: Sender,
) {
    let slots = Arc::new(HandshakeSlots::default());
    loop {
        let (stream, slot) = tokio::select! {
            _ = sender.closed() => return,
            admitted = next_admitted(&listener, &limits) => admitted,
        };
        let Some(handshake_slot) = slots.take(slot.peer()) else {
            // Refused: the newcomer is closed; those already shaking hands go on.
            continue;
        };
        let peer = slot.peer().clone();
        let acceptor = TlsAcceptor::from(tls.current());
        let stream = limits.gate(stream, slot);
        tokio::spawn(handshake(Arc::clone(&tls), acceptor, stream, peer, sender.clone(), handshake_slot));
    }
}

/// The handshakes in progress, in total and by peer address.
#[derive(Default)]
struct HandshakeSlots {
    by_peer: Mutex<(usize, HashMap<PeerKey, usize>)>,
}

impl HandshakeSlots {
    /// A slot for a handshake from `peer`, or `None` (logged) when the server or the peer has
    /// as many handshakes in progress as it may.
    fn take(self: &Arc<Self>, peer: &Peer) -> Option<HandshakeSlot> {
        let key = PeerKey::of(peer);
        let mut counts = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_peer) = &mut *counts;
        let from_peer = by_peer.get(&key).copied().unwrap_or(0);
        if *total >= MAX_CONCURRENT_HANDSHAKES || from_peer >= HANDSHAKE_SLOTS_PER_PEER {
            tracing::debug!(%peer, in_progress = *total, from_peer, "TLS handshake slots full; new connection refused");
            return None;
        }
        *total += 1;
        *by_peer.entry(key).or_insert(0) += 1;
        Some(HandshakeSlot { slots: Arc::clone(self), key })
    }
}

/// One handshake's slot, given back when the handshake ends either way.
struct HandshakeSlot {
    slots: Arc<HandshakeSlots>,
    key: PeerKey,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut counts = self.slots.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_peer) = &mut *counts;
        *total = total.saturating_sub(1);
        if let Some(count) = by_peer.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                by_peer.remove(&self.key);
            }
        }
    }
}

/// One handshake; the slot is held until the connection is handed over, so that finished
/// connections the server has not taken yet count against the limit too.
async fn handshake(
    tls: Arc<ServerTls>,
    acceptor: TlsAcceptor,
    stream: Gated<TcpStream>,
    peer: Peer,
    sender: Sender,
    _slot: HandshakeSlot,
) {
    let timeout = tls.settings.handshake_timeout;
    // A client that connects and says nothing gives its slot back soon: a real one sends its
    // ClientHello at once.
    let mut first = [0u8; 1];
    let spoke = tokio::select! {
        _ = sender.closed() => return,
        spoke = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.get_ref().peek(&mut first)) => spoke,
    };
    match spoke {
        Ok(Ok(read)) if read > 0 => {}
        Ok(_) => return,
        Err(_) => {
            tracing::debug!(%peer, timeout = ?FIRST_BYTE_TIMEOUT, "no TLS handshake began; connection dropped");
            return;
        }
    }
    let result = tokio::select! {
        _ = sender.closed() => return,
        result = tokio::time::timeout(timeout, acceptor.accept(stream)) => result,
    };
    match result {
        Ok(Ok(connection)) => {
            let (gated, session) = connection.get_ref();
            if let Some(chain) = session.peer_certificates() {
                tls.remember_client(chain.to_vec(), gated.info().downgrade());
            }
            // An error here means the stream was dropped; the connection goes with it.
            let _ = sender.send(Ok(connection)).await;
        }
        Ok(Err(error)) => {
            let error = describe_handshake_failure(&error);
            tracing::info!(%peer, %error, "TLS handshake failed; connection dropped")
        }
        Err(_) => {
            tracing::info!(%peer, ?timeout, "TLS handshake timed out; connection dropped")
        }
    }
}

/// Why a client's handshake failed, in one sentence that says what to do, for the log: rustls
/// words some failures with its Debug values (`Other(OtherError(CaUsedAsEndEntity))`), and most
/// of them are fixed on the client's side.
fn describe_handshake_failure(error: &io::Error) -> String {
    let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else {
        return error.to_string();
    };
    describe_tls_error(tls)
}

/// See [`describe_handshake_failure`].
fn describe_tls_error(error: &rustls::Error) -> String {
    use rustls::{AlertDescription, CertificateError};
    const MAKE_CLIENT: &str = "give the client a certificate signed by the CA in tls.client_ca_file (`hydroplane tls cert create --client`)";
    match error {
        rustls::Error::NoCertificatesPresented => format!(
            "the client sent no certificate, and this server requires one (tls.client_ca_file): {MAKE_CLIENT}"
        ),
        rustls::Error::InvalidCertificate(problem) => {
            let problem = match problem {
                CertificateError::UnknownIssuer => "is not signed by the CA in tls.client_ca_file".to_owned(),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => "has expired".to_owned(),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    "is not valid yet (is either clock wrong?)".to_owned()
                }
                CertificateError::BadSignature => {
                    "is not signed by the CA in tls.client_ca_file (a CA of the same name signed it)".to_owned()
                }
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                    "is not one for a TLS client (its extended key usage lacks clientAuth)".to_owned()
                }
                CertificateError::Other(other) if format!("{other}").contains("CaUsedAsEndEntity") => {
                    "is a CA certificate (CA:TRUE), which cannot be a client's own".to_owned()
                }
                CertificateError::Revoked => "is revoked".to_owned(),
                _ => "is not acceptable".to_owned(),
            };
            format!("the client's certificate {problem}: {MAKE_CLIENT}")
        }
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA | AlertDescription::BadCertificate | AlertDescription::CertificateUnknown,
        ) => "the client does not trust this server's certificate: give the client the CA that signed tls.cert_file (hpctl's --ca-cert), and check that the certificate lists the name the client connects by".to_owned(),
        rustls::Error::AlertReceived(AlertDescription::CertificateExpired) => {
            "the client says this server's certificate has expired: renew tls.cert_file (`hydroplane tls cert create --server --force`); the server reads it again within a second".to_owned()
        }
        rustls::Error::AlertReceived(alert) => {
            format!("the client ended the handshake (TLS alert {}): check its TLS settings", u8::from(*alert))
        }
        rustls::Error::InvalidMessage(_) => {
            "the client did not speak TLS: it needs an https:// URL for this server".to_owned()
        }
        rustls::Error::NoApplicationProtocol => {
            "the client did not offer HTTP/2 (ALPN h2), which gRPC needs: use a gRPC client".to_owned()
        }
        rustls::Error::PeerIncompatible(_) => {
            "the client supports no TLS version or cipher suite this server does (TLS 1.2 and 1.3): update the client".to_owned()
        }
        other => format!("{other}: check the client's TLS settings"),
    }
}

#[cfg(test)]
#[path = "../../tests/it/common/certs.rs"]
#[allow(dead_code, reason = "shared with the integration tests, which use all of it")]
mod test_certs;

#[cfg(test)]
mod tests {
    use super::test_certs::TestCa;
    use super::*;

    use std::net::SocketAddr;

    use std::pin::Pin;

    use futures::{Stream, StreamExt};
    use rustls::ClientConfig;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::{Instant, timeout};
    use tokio_rustls::TlsConnector;

    /// How long a test waits for something that should happen at once.
    const GUARD: Duration = Duration::from_secs(10);

    type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

    /// A directory with a CA's server files (and the CA file when `mutual`).
    struct Fixture {
        dir: tempfile::TempDir,
        ca: TestCa,
        settings: TlsSettings,
    }

    impl Fixture {
        fn new(mutual: bool) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let ca = TestCa::new("hydroplane test CA one");
            let (cert_file, key_file) = ca.write_server_files(dir.path(), "server");
            let client_ca_file = mutual.then(|| ca.write_ca_file(dir.path(), "clients.pem"));
            Fixture { settings: TlsSettings::from_files(cert_file, key_file, client_ca_file), dir, ca }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn client_config(ca_pem: &str, identity: Option<(String, String)>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(certificate.expect("CA PEM")).expect("a CA certificate");
        }
        let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("client certificate"),
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key"),
                )
                .expect("client identity"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// A TLS client connection to `address` as `localhost`, and its local address.
    async fn connect(
        address: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> (io::Result<ClientStream>, SocketAddr) {
        let tcp = TcpStream::connect(address).await.expect("TCP connect");
        let local = tcp.local_addr().expect("local address");
        let name = ServerName::try_from("localhost").expect("server name");
        let result = match timeout(GUARD, TlsConnector::from(config).connect(name, tcp)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "the client handshake timed out")),
        };
        (result, local)
    }

    async fn listen(
        tls: &Arc<ServerTls>,
    ) -> (SocketAddr, Pin<Box<impl Stream<Item = io::Result<TlsStream<Gated<TcpStream>>>>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        (address, Box::pin(incoming(listener, Arc::clone(tls), test_limits())))
    }

    async fn next_connection(
        connections: &mut (impl Stream<Item = io::Result<TlsStream<Gated<TcpStream>>>> + Unpin),
    ) -> TlsStream<Gated<TcpStream>> {
        timeout(GUARD, connections.next())
            .await
            .expect("a connection in time")
            .expect("the stream is open")
            .expect("the stream yields no errors")
    }

    /// Proves the connection carries data and is the one `client_address` opened.
    async fn ping(
        client: &mut ClientStream,
        server: &mut TlsStream<Gated<TcpStream>>,
        client_address: SocketAddr,
    ) {
        assert_eq!(
            server.get_ref().0.get_ref().peer_addr().expect("peer"),
            client_address,
            "another connection"
        );
        assert_eq!(server.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        client.write_all(b"ping").await.expect("client writes");
        client.flush().await.expect("client flushes");
        let mut buffer = [0u8; 4];
        timeout(GUARD, server.read_exact(&mut buffer)).await.expect("data in time").expect("server reads");
        assert_eq!(&buffer, b"ping");
    }

    /// A handshake through `connections` by a client trusting `ca_pem` works end to end.
    async fn assert_serves(
        address: SocketAddr,
        connections: &mut (impl Stream<Item = io::Result<TlsStream<Gated<TcpStream>>>> + Unpin),
        ca_pem: &str,
        identity: Option<(String, String)>,
    ) {
        let (client, local) = connect(address, client_config(ca_pem, identity)).await;
        let mut client = client.expect("the client handshake succeeds");
        let mut server = next_connection(connections).await;
        ping(&mut client, &mut server, local).await;
    }

    /// The server refused a client: the handshake failed, or (TLS 1.3, where the client finishes
    /// first) the first read fails or ends.
    async fn assert_refused(result: io::Result<ClientStream>) {
        if let Ok(mut client) = result {
            let mut buffer = [0u8; 1];
            let read = timeout(GUARD, client.read(&mut buffer)).await.expect("the server answers in time");
            assert!(matches!(read, Err(_) | Ok(0)), "the server accepted the client: {read:?}");
        }
    }

    fn test_limits() -> Arc<ConnectionLimits> {
        ConnectionLimits::new(&crate::config::LimitSettings::default(), None)
    }

    fn load_error(settings: &TlsSettings) -> String {
        match ServerTls::load(settings) {
            Ok(_) => panic!("loading {settings:?} succeeded"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn load_reports_a_missing_certificate_file() {
        let fixture = Fixture::new(false);
        let missing = fixture.path("missing.pem");
        let message = load_error(&TlsSettings { cert_file: missing.clone(), ..fixture.settings.clone() });
        assert!(
            message.starts_with(&format!("cannot read the TLS certificate file {}: ", missing.display())),
            "{message}"
        );
        let message = load_error(&TlsSettings { key_file: missing.clone(), ..fixture.settings.clone() });
        assert!(
            message.starts_with(&format!("cannot read the TLS key file {}: ", missing.display())),
            "{message}"
        );
    }

    #[test]
    fn load_reports_a_file_without_a_certificate() {
        let fixture = Fixture::new(false);
        // The key where the certificate should be: PEM, but no CERTIFICATE section.
        let settings =
            TlsSettings { cert_file: fixture.settings.key_file.clone(), ..fixture.settings.clone() };
        assert_eq!(
            load_error(&settings),
            format!("the TLS certificate file {} holds no PEM certificate", settings.cert_file.display())
        );
        let settings =
            TlsSettings { key_file: fixture.settings.cert_file.clone(), ..fixture.settings.clone() };
        assert_eq!(
            load_error(&settings),
            format!("the TLS key file {} holds no private key", settings.key_file.display())
        );
    }

    #[test]
    fn load_reports_half_written_files_without_quoting_them() {
        let fixture = Fixture::new(false);
        let key = std::fs::read_to_string(&fixture.settings.key_file).expect("key");
        let half = &key[..key.len() / 2];
        std::fs::write(&fixture.settings.key_file, half).expect("truncate the key");
        let message = load_error(&fixture.settings);
        assert!(
            message.starts_with(&format!(
                "the TLS key file {} is not valid PEM",
                fixture.settings.key_file.display()
            )),
            "{message}"
        );
        let body_line = half.lines().nth(1).expect("a base64 line");
        assert!(!message.contains(body_line), "the message quotes the key: {message}");
    }

    #[test]
    fn load_reports_a_key_that_does_not_match() {
        let fixture = Fixture::new(false);
        let (_, other_key) = fixture.ca.write_server_files(fixture.dir.path(), "other");
        let settings = TlsSettings { key_file: other_key.clone(), ..fixture.settings.clone() };
        assert_eq!(
            load_error(&settings),
            format!(
                "the TLS key file {} does not match the certificate in {}",
                other_key.display(),
                settings.cert_file.display()
            )
        );
    }

    #[test]
    fn load_reports_a_bad_client_ca_file() {
        let fixture = Fixture::new(false);
        let bad = fixture.path("bad-ca.pem");
        std::fs::write(&bad, "not a certificate\n").expect("write");
        let settings = TlsSettings { client_ca_file: Some(bad.clone()), ..fixture.settings.clone() };
        assert_eq!(
            load_error(&settings),
            format!("the client CA file {} holds no PEM certificate", bad.display())
        );

        let missing = fixture.path("missing-ca.pem");
        let settings = TlsSettings { client_ca_file: Some(missing.clone()), ..fixture.settings.clone() };
        let message = load_error(&settings);
        assert!(
            message.starts_with(&format!("cannot read the client CA file {}: ", missing.display())),
            "{message}"
        );

        let garbage = fixture.path("garbage-ca.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .expect("write");
        let settings = TlsSettings { client_ca_file: Some(garbage.clone()), ..fixture.settings.clone() };
        let message = load_error(&settings);
        assert!(
            message.starts_with(&format!(
                "the client CA file {} holds an unusable CA certificate",
                garbage.display()
            )),
            "{message}"
        );
    }

    #[test]
    fn load_gives_h2_and_client_authentication_as_configured() {
        let plain = Fixture::new(false);
        let tls = ServerTls::load(&plain.settings).expect("load");
        assert!(!tls.requires_client_certificates());
        assert_eq!(tls.current().alpn_protocols, vec![b"h2".to_vec()]);
        let mutual = Fixture::new(true);
        assert!(ServerTls::load(&mutual.settings).expect("load").requires_client_certificates());
    }

    #[tokio::test]
    async fn serves_clients_that_trust_the_ca_and_survives_those_that_do_not() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, mut connections) = listen(&tls).await;
        assert_serves(address, &mut connections, &fixture.ca.pem(), None).await;

        let stranger = TestCa::new("another CA");
        let (result, _) = connect(address, client_config(&stranger.pem(), None)).await;
        assert!(result.is_err(), "a client trusting another CA completed the handshake");

        assert_serves(address, &mut connections, &fixture.ca.pem(), None).await;
    }

    #[tokio::test]
    async fn with_a_client_ca_a_certificate_is_mandatory() {
        let fixture = Fixture::new(true);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, mut connections) = listen(&tls).await;

        let (result, _) = connect(address, client_config(&fixture.ca.pem(), None)).await;
        assert_refused(result).await;

        let stranger = TestCa::new("another CA");
        let (result, _) =
            connect(address, client_config(&fixture.ca.pem(), Some(stranger.client_cert("mallory")))).await;
        assert_refused(result).await;

        let identity = fixture.ca.client_cert("alice");
        let (client, local) = connect(address, client_config(&fixture.ca.pem(), Some(identity))).await;
        let mut client = client.expect("a client with a certificate completes the handshake");
        let mut server = next_connection(&mut connections).await;
        assert!(server.get_ref().1.peer_certificates().is_some_and(|chain| !chain.is_empty()));
        ping(&mut client, &mut server, local).await;
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_others() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, mut connections) = listen(&tls).await;
        let _silent = TcpStream::connect(address).await.expect("TCP connect");
        // Well within the silent client's handshake timeout: the handshakes are not serialised.
        timeout(FIRST_BYTE_TIMEOUT / 2, assert_serves(address, &mut connections, &fixture.ca.pem(), None))
            .await
            .expect("the good client is served while the silent one waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_dropped_after_the_first_byte_timeout() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, _connections) = listen(&tls).await;
        let mut silent = TcpStream::connect(address).await.expect("TCP connect");
        let started = Instant::now();
        let mut buffer = [0u8; 1];
        // The paused clock jumps to the next timer once everything is idle: the first byte's.
        let read = silent.read(&mut buffer).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= FIRST_BYTE_TIMEOUT && elapsed < fixture.settings.handshake_timeout,
            "closed after {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stalls_mid_handshake_is_dropped_after_the_handshake_timeout() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, _connections) = listen(&tls).await;
        let mut stalled = TcpStream::connect(address).await.expect("TCP connect");
        // The start of a TLS record, and nothing more.
        stalled.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
        let started = Instant::now();
        let mut buffer = [0u8; 1];
        let read = stalled.read(&mut buffer).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            started.elapsed() >= fixture.settings.handshake_timeout,
            "closed after {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn an_expired_certificate_is_served_at_load_and_refused_at_reload() {
        let fixture = Fixture::new(false);
        let expired_dir = tempfile::tempdir().expect("tempdir");
        let (cert_file, key_file) = fixture.ca.write_expired_server_files(expired_dir.path(), "old");
        let expired = TlsSettings::from_files(cert_file.clone(), key_file, None);
        assert!(ServerTls::load(&expired).is_ok(), "served at start, with an error line");
        let Ok(chain) = certificates(&std::fs::read(&cert_file).expect("read")) else { panic!("PEM") };
        let message = check_validity(&cert_file, &chain[0]).expect_err("expired").to_string();
        assert!(
            message.contains(&cert_file.display().to_string()) && message.contains("not valid now"),
            "{message}"
        );

        let tls = ServerTls::load(&fixture.settings).expect("load");
        let served = tls.current();
        fixture.ca.write_expired_server_files(fixture.dir.path(), "server");
        match tls.check_files() {
            Check::Failed(TlsError::NotValidNow { .. }) => {}
            other => panic!("an expired certificate was not refused: {other:?}"),
        }
        assert!(Arc::ptr_eq(&served, &tls.current()), "the valid certificate stays in use");
    }

    #[tokio::test]
    async fn silent_connections_from_one_peer_cannot_take_every_handshake_slot() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, mut connections) = listen(&tls).await;
        // More silent connections from 127.0.0.2 than one peer may hold slots for: they take
        // only their share, and the rest are closed at once.
        let flooder: SocketAddr = "127.0.0.2:0".parse().expect("address");
        let mut silent = Vec::new();
        for _ in 0..HANDSHAKE_SLOTS_PER_PEER + 16 {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(flooder).expect("bind 127.0.0.2");
            silent.push(socket.connect(address).await.expect("TCP connect"));
        }
        // All at once, well within the first-byte timeout: only the refused are closed by then.
        let reads = silent.iter_mut().map(|socket| async move {
            let mut buffer = [0u8; 1];
            timeout(Duration::from_millis(500), socket.read(&mut buffer)).await
        });
        let mut closed = 0;
        for read in futures::future::join_all(reads).await.into_iter().flatten() {
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            closed += 1;
        }
        assert_eq!(closed, 16, "only the newcomers beyond the peer's share are refused");
        // Another peer (127.0.0.1) is served at once.
        timeout(FIRST_BYTE_TIMEOUT / 2, assert_serves(address, &mut connections, &fixture.ca.pem(), None))
            .await
            .expect("the good client is served while the silent ones wait");
    }

    #[tokio::test]
    async fn dropping_the_stream_closes_the_listener() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, connections) = listen(&tls).await;
        drop(connections);
        let deadline = Instant::now() + GUARD;
        while TcpStream::connect(address).await.is_ok() {
            assert!(Instant::now() < deadline, "the listener is still open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn watch_files_serves_a_rotated_certificate_to_new_connections() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let watcher = tls.watch_files(Duration::from_millis(100));
        let (address, mut connections) = listen(&tls).await;
        assert_serves(address, &mut connections, &fixture.ca.pem(), None).await;
        let before = tls.current();

        let second = TestCa::new("hydroplane test CA two");
        second.write_server_files(fixture.dir.path(), "server");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (result, local) = connect(address, client_config(&second.pem(), None)).await;
            if let Ok(mut client) = result {
                let mut server = next_connection(&mut connections).await;
                ping(&mut client, &mut server, local).await;
                break;
            }
            assert!(Instant::now() < deadline, "the rotated certificate was not served within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!Arc::ptr_eq(&before, &tls.current()));
        let (result, _) = connect(address, client_config(&fixture.ca.pem(), None)).await;
        assert!(result.is_err(), "the old certificate is still served");

        // The watcher holds no strong reference: it ends with the configuration.
        drop(connections);
        drop(tls);
        timeout(GUARD, watcher).await.expect("the watcher ends").expect("the watcher did not panic");
    }

    #[tokio::test]
    async fn broken_files_keep_the_previous_configuration() {
        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, mut connections) = listen(&tls).await;
        let original = tls.current();
        assert!(matches!(tls.check_files(), Check::Unchanged));

        // Half a certificate, as a reader may see mid-write.
        let cert = std::fs::read_to_string(&fixture.settings.cert_file).expect("cert");
        std::fs::write(&fixture.settings.cert_file, &cert[..cert.len() / 2]).expect("truncate");
        assert!(matches!(tls.check_files(), Check::Failed(TlsError::CertificatePem { .. })));
        assert!(Arc::ptr_eq(&original, &tls.current()));
        // The same broken contents again: no second attempt, so no second error in the log.
        assert!(matches!(tls.check_files(), Check::Unchanged));
        assert_serves(address, &mut connections, &fixture.ca.pem(), None).await;

        // A rotation that writes the certificate before the key: a mismatch until the key lands.
        let second = TestCa::new("hydroplane test CA two");
        let (new_cert, new_key) = second.server_cert();
        std::fs::write(&fixture.settings.cert_file, new_cert).expect("write the certificate");
        assert!(matches!(tls.check_files(), Check::Failed(TlsError::KeyMismatch { .. })));
        assert!(Arc::ptr_eq(&original, &tls.current()));
        assert_serves(address, &mut connections, &fixture.ca.pem(), None).await;

        std::fs::write(&fixture.settings.key_file, new_key).expect("write the key");
        assert!(matches!(tls.check_files(), Check::Reloaded));
        assert!(!Arc::ptr_eq(&original, &tls.current()));
        assert_serves(address, &mut connections, &second.pem(), None).await;

        // A missing file is a change too, reported once, and the configuration stays.
        let current = tls.current();
        std::fs::remove_file(&fixture.settings.key_file).expect("remove the key");
        assert!(matches!(tls.check_files(), Check::Failed(TlsError::ReadKey { .. })));
        assert!(matches!(tls.check_files(), Check::Unchanged));
        assert!(Arc::ptr_eq(&current, &tls.current()));
        assert_serves(address, &mut connections, &second.pem(), None).await;
    }

    #[tokio::test]
    async fn a_rotated_client_ca_is_reloaded() {
        let fixture = Fixture::new(true);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let (address, mut connections) = listen(&tls).await;
        let second = TestCa::new("client CA two");
        second.write_ca_file(fixture.dir.path(), "clients.pem");
        assert!(matches!(tls.check_files(), Check::Reloaded));
        assert!(tls.requires_client_certificates());

        let (result, _) =
            connect(address, client_config(&fixture.ca.pem(), Some(fixture.ca.client_cert("old")))).await;
        assert_refused(result).await;
        assert_serves(address, &mut connections, &fixture.ca.pem(), Some(second.client_cert("new"))).await;
    }

    #[tokio::test]
    async fn tonic_serves_grpc_over_the_stream() {
        use tonic::transport::{Certificate, Channel, ClientTlsConfig, Server};
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let fixture = Fixture::new(false);
        let tls = ServerTls::load(&fixture.settings).expect("load");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(Server::builder().add_service(health).serve_with_incoming_shutdown(
            incoming(listener, Arc::clone(&tls), test_limits()),
            async {
                let _ = stopped.await;
            },
        ));

        let channel = Channel::from_shared(format!("https://{address}"))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(fixture.ca.pem()))
                    .domain_name("localhost"),
            )
            .expect("client TLS")
            .connect()
            .await
            .expect("connect over TLS");
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .expect("the health check answers");
        assert_eq!(response.into_inner().status(), ServingStatus::Serving);

        let _ = stop.send(());
        timeout(GUARD, server).await.expect("the server stops").expect("no panic").expect("served cleanly");
    }
}
