//! Connection limits, the same on every listener (gRPC over TCP, TLS and Unix sockets, and the
//! metrics listener): a cap on open connections in total and per peer, where a newcomer beyond
//! either is closed at once and an established caller is never touched; an idle timeout before
//! the first request and between requests; and a reserve of file descriptors that connections
//! never take, so the server can still open its own files when a flood of connections arrives.
//!
//! Start at [`ConnectionLimits::admit`] (a [`ConnectionSlot`], or a refusal) and
//! [`ConnectionLimits::gate`], which wraps the accepted stream in a [`Gated`] one. Calls are
//! counted on the connection by [`ConnectionInfo::begin_call`] (the guard does it for gRPC): a
//! connection with a call in progress, such as a quiet Watch, is never idle. HTTP/2 keepalive
//! pings, which find dead peers under open streams, are the transport's own setting
//! ([`KEEPALIVE_INTERVAL`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::config::LimitSettings;

/// Where a call came from, for audit lines: a TCP peer address, or the Unix socket's peer user.
/// Kept as it is found and formatted only when an audit line is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Peer {
    /// A TCP (or TLS) peer.
    Tcp(std::net::SocketAddr),
    /// A Unix socket peer, with its credentials when the OS gave them.
    Unix(Option<(u32, Option<i32>)>),
    /// Nothing is known (an in-memory connection).
    #[default]
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(address) => write!(formatter, "{address}"),
            Peer::Unix(Some((uid, pid))) => write!(formatter, "unix (uid {uid}, pid {})", pid.unwrap_or(0)),
            Peer::Unix(None) => formatter.write_str("unix"),
            Peer::Unknown => formatter.write_str("unknown"),
        }
    }
}

/// How often the server pings an HTTP/2 connection that has been silent, to find peers that
/// are gone without a word (a quiet Watch otherwise holds its slots for ever).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// How long the answer to a keepalive ping may take before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The fewest file descriptors connections leave free (for log files, process pipes, the
/// tokens file and the runtime's own connections).
const MIN_DESCRIPTOR_RESERVE: u64 = 256;

/// The shortest pause between two warnings that connections are being refused: a flood must
/// not turn into a flood of log lines.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Who a connection is from, for the per-peer cap: an IP address (IPv4-mapped IPv6 addresses
/// count as their IPv4 address), a user on a Unix socket, or nobody known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A TCP peer's address, without the port.
    Address(IpAddr),
    /// A Unix socket peer's user id.
    User(u32),
    /// A peer the OS told nothing about (an in-memory connection, a Unix socket without
    /// credentials).
    Unknown,
}

impl PeerKey {
    /// The key of a peer.
    pub fn of(peer: &Peer) -> PeerKey {
        match peer {
            Peer::Tcp(address) => PeerKey::Address(address.ip().to_canonical()),
            Peer::Unix(Some((uid, _))) => PeerKey::User(*uid),
            Peer::Unix(None) | Peer::Unknown => PeerKey::Unknown,
        }
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerKey::Address(address) => write!(formatter, "{address}"),
            PeerKey::User(uid) => write!(formatter, "uid-{uid}"),
            PeerKey::Unknown => formatter.write_str("unknown"),
        }
    }
}

/// Why a new connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server has as many connections open as it may.
    Total(usize),
    /// This peer has as many connections open as one peer may.
    PerPeer(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Total(cap) => write!(
                formatter,
                "the server has {cap} connections open, its limit (limits.max_connections, or what the open-files limit leaves)"
            ),
            Refusal::PerPeer(cap) => write!(
                formatter,
                "the peer has {cap} connections open, its limit (limits.max_connections_per_peer)"
            ),
        }
    }
}

/// The connection limits every listener of one server shares.
pub struct ConnectionLimits {
    idle_timeout: Duration,
    max_total: usize,
    max_per_peer: usize,
    counts: Mutex<Counts>,
}

/// The open connections, in total and by peer.
#[derive(Default)]
struct Counts {
    total: usize,
    by_peer: HashMap<PeerKey, usize>,
    last_warning: Option<Instant>,
}

impl ConnectionLimits {
    /// The limits of these settings. With `open_files` (the process's open-files limit), the
    /// total cap is lowered, if need be, to leave a reserve of descriptors free: a tenth of the
    /// limit, and at least [`MIN_DESCRIPTOR_RESERVE`].
    pub fn new(limits: &LimitSettings, open_files: Option<u64>) -> Arc<ConnectionLimits> {
        let mut max_total = limits.max_connections;
        if let Some(open_files) = open_files {
            let reserve = (open_files / 10).max(MIN_DESCRIPTOR_RESERVE);
            let allowed = usize::try_from(open_files.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1);
            if allowed < max_total {
                tracing::warn!(
                    max_connections = max_total,
                    open_files,
                    reserve,
                    allowed,
                    "limits.max_connections is above what the open-files limit allows with a reserve; \
                     serving at most `allowed` connections (raise the hard limit, `ulimit -Hn`, for more)"
                );
                max_total = allowed;
            }
        }
        Arc::new(ConnectionLimits {
            idle_timeout: limits.idle_timeout,
            max_total,
            max_per_peer: limits.max_connections_per_peer,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// The total cap as served (after the descriptor reserve).
    pub fn max_connections(&self) -> usize {
        self.max_total
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new connection from `peer`, or refuses it (and logs why, at most every
    /// [`WARNING_INTERVAL`]); the caller closes a refused connection at once.
    pub fn admit(self: &Arc<Self>, peer: Peer) -> Result<ConnectionSlot, Refusal> {
        let key = PeerKey::of(&peer);
        let mut counts = self.counts();
        let from_peer = counts.by_peer.get(&key).copied().unwrap_or(0);
        let refusal = if counts.total >= self.max_total {
            Some(Refusal::Total(self.max_total))
        } else if from_peer >= self.max_per_peer {
            Some(Refusal::PerPeer(self.max_per_peer))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let now = Instant::now();
            if counts.last_warning.is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL) {
                counts.last_warning = Some(now);
                tracing::warn!(%peer, reason = %refusal, "refusing new connections (this one and others like it for a while); established ones are served");
            } else {
                tracing::debug!(%peer, reason = %refusal, "new connection refused");
            }
            return Err(refusal);
        }
        counts.total += 1;
        *counts.by_peer.entry(key).or_insert(0) += 1;
        drop(counts);
        Ok(ConnectionSlot { limits: Arc::clone(self), key, peer })
    }

    /// The connection with its slot, closed once idle for the idle timeout.
    pub fn gate<IO>(&self, io: IO, slot: ConnectionSlot) -> Gated<IO> {
        let state = Arc::new(ConnectionState {
            calls: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            cut: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let info = ConnectionInfo { peer: slot.peer.clone(), state: Arc::clone(&state) };
        Gated {
            io,
            info,
            idle: Box::pin(tokio::time::sleep(self.idle_timeout)),
            idle_timeout: self.idle_timeout,
            _slot: slot,
        }
    }

    /// How many connections are open, in total and from a peer.
    pub fn open(&self, peer: &Peer) -> (usize, usize) {
        let counts = self.counts();
        (counts.total, counts.by_peer.get(&PeerKey::of(peer)).copied().unwrap_or(0))
    }
}

/// One open connection's place in the counts, given back when the connection closes.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    key: PeerKey,
    peer: Peer,
}

impl ConnectionSlot {
    /// The peer the slot is counted for.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_peer.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.by_peer.remove(&self.key);
            }
        }
    }
}

/// What one connection's calls and its stream share.
struct ConnectionState {
    /// Calls in progress (a stream counts until it ends).
    calls: AtomicUsize,
    /// When the last call ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// Set to close the connection (its peer is no longer trusted).
    cut: AtomicBool,
    /// The connection's reader, woken to close it.
    waker: AtomicWaker,
}

/// A connection as its calls see it (tonic puts it in every request's extensions): its peer,
/// and the means to count a call or close the connection.
#[derive(Clone)]
pub struct ConnectionInfo {
    peer: Peer,
    state: Arc<ConnectionState>,
}

impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ConnectionInfo").field("peer", &self.peer).finish_non_exhaustive()
    }
}

impl ConnectionInfo {
    /// The peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Counts a call until the returned value is dropped: the connection is not idle meanwhile.
    pub fn begin_call(&self) -> CallInProgress {
        self.state.calls.fetch_add(1, Ordering::AcqRel);
        CallInProgress { state: Arc::clone(&self.state) }
    }

    /// Closes the connection: its next read fails, which ends it and every stream on it.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::Release);
        self.state.waker.wake();
    }

    /// Whether the connection has been cut.
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::Acquire)
    }

    /// A reference that does not keep the connection's state alive, for registries of open
    /// connections.
    pub fn downgrade(&self) -> WeakConnection {
        WeakConnection { peer: self.peer.clone(), state: Arc::downgrade(&self.state) }
    }
}

/// A connection that may have closed since; see [`ConnectionInfo::downgrade`].
#[derive(Clone)]
pub struct WeakConnection {
    peer: Peer,
    state: std::sync::Weak<ConnectionState>,
}

impl WeakConnection {
    /// The connection, while it is open.
    pub fn upgrade(&self) -> Option<ConnectionInfo> {
        self.state.upgrade().map(|state| ConnectionInfo { peer: self.peer.clone(), state })
    }
}

/// A call in progress on a connection; see [`ConnectionInfo::begin_call`].
pub struct CallInProgress {
    state: Arc<ConnectionState>,
}

impl Drop for CallInProgress {
    fn drop(&mut self) {
        if self.state.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.state.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
    }
}

/// An accepted connection under the limits: it holds its slot while open, and its reads fail
/// (ending the connection) once it has had no call in progress for the idle timeout, or when
/// it is cut.
pub struct Gated<IO> {
    io: IO,
    info: ConnectionInfo,
    /// Fires at the earliest moment the connection could have become idle for long enough;
    /// reset lazily when a call has come or ended since.
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    _slot: ConnectionSlot,
}

impl<IO> Gated<IO> {
    /// The connection as its calls see it.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// `Ready` with an error once the connection is to close: cut, or idle for too long.
    fn poll_closing(&mut self, context: &mut Context<'_>) -> Poll<io::Error> {
        let state = &self.info.state;
        state.waker.register(context.waker());
        if state.cut.load(Ordering::Acquire) {
            return Poll::Ready(io::Error::new(io::ErrorKind::ConnectionAborted, "the connection was cut"));
        }
        loop {
            if self.idle.as_mut().poll(context).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            let deadline = if state.calls.load(Ordering::Acquire) > 0 {
                now + self.idle_timeout
            } else {
                *state.idle_since.lock().unwrap_or_else(PoisonError::into_inner) + self.idle_timeout
            };
            if deadline <= now {
                tracing::debug!(peer = %self.info.peer, timeout = ?self.idle_timeout, "closing an idle connection");
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle too long",
                ));
            }
            self.idle.as_mut().reset(deadline);
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Gated<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Poll::Ready(error) = this.poll_closing(context) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_read(context, buffer)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Gated<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.info.is_cut() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was cut",
            )));
        }
        Pin::new(&mut self.io).poll_write(context, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.info.is_cut() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection was cut",
            )));
        }
        Pin::new(&mut self.io).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(context)
    }
}

impl<IO> tonic::transport::server::Connected for Gated<IO> {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// Whether an accept error is one connection's (it died before it was taken), not the
/// listener's.
pub fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// The pause after an accept error such as EMFILE: retrying at once would spin while the
/// condition lasts, and connections that close meanwhile free descriptors.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(200);

/// A listener whose accepted connections can be admitted: TCP or a Unix socket.
pub trait Accept: Send + 'static {
    /// The accepted stream.
    type Stream: Send + 'static;
    /// The next connection and its peer.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, Peer)>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(tokio::net::TcpStream, Peer)> {
        let (stream, address) = tokio::net::TcpListener::accept(self).await?;
        // Small gRPC frames otherwise wait for delayed ACKs (40 ms on Linux) when a response
        // spans several packets.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%address, %error, "cannot set TCP_NODELAY");
        }
        Ok((stream, Peer::Tcp(address)))
    }
}

impl Accept for tokio::net::UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(tokio::net::UnixStream, Peer)> {
        let (stream, _) = tokio::net::UnixListener::accept(self).await?;
        // SO_PEERCRED: who is on the other end, for the per-peer limits and the audit lines.
        let credentials = stream.peer_cred().ok().map(|credentials| (credentials.uid(), credentials.pid()));
        Ok((stream, Peer::Unix(credentials)))
    }
}

/// The next admitted connection of a listener: refused newcomers are closed at once (dropped),
/// accept errors of one connection skipped, and others (out of descriptors) retried after a
/// pause. Never ends: a listener is closed by dropping it.
pub async fn next_admitted<L: Accept>(
    listener: &L,
    limits: &Arc<ConnectionLimits>,
) -> (L::Stream, ConnectionSlot) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match limits.admit(peer) {
                Ok(slot) => return (stream, slot),
                Err(_) => drop(stream),
            },
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, "a connection closed before it was accepted");
            }
            Err(error) => {
                tracing::error!(%error, pause = ?ACCEPT_ERROR_PAUSE, "cannot accept a connection; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// The admitted connections of a listener, gated, as tonic's `serve_with_incoming` takes them.
pub fn incoming<L>(
    listener: L,
    limits: Arc<ConnectionLimits>,
) -> impl futures::Stream<Item = io::Result<Gated<L::Stream>>> + Send + 'static
where
    L: Accept + Sync,
{
    futures::stream::unfold((listener, limits), |(listener, limits)| async move {
        let (stream, slot) = next_admitted(&listener, &limits).await;
        let gated = limits.gate(stream, slot);
        Some((Ok(gated), (listener, limits)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(total: usize, per_peer: usize, idle: Duration) -> Arc<ConnectionLimits> {
        let settings = LimitSettings {
            max_connections: total,
            max_connections_per_peer: per_peer,
            idle_timeout: idle,
            ..LimitSettings::default()
        };
        ConnectionLimits::new(&settings, None)
    }

    fn peer(address: &str) -> Peer {
        Peer::Tcp(address.parse().expect("an address"))
    }

    #[test]
    fn newcomers_beyond_the_caps_are_refused_and_slots_come_back() {
        let limits = limits(3, 2, Duration::from_secs(60));
        let first = limits.admit(peer("10.0.0.1:1")).expect("first");
        let _second = limits.admit(peer("10.0.0.1:2")).expect("second");
        assert_eq!(limits.admit(peer("10.0.0.1:3")).err(), Some(Refusal::PerPeer(2)));
        // The same address through IPv6's IPv4-mapped form is the same peer.
        assert_eq!(limits.admit(peer("[::ffff:10.0.0.1]:4")).err(), Some(Refusal::PerPeer(2)));
        let _third = limits.admit(peer("10.0.0.2:1")).expect("another peer");
        assert_eq!(limits.admit(peer("10.0.0.3:1")).err(), Some(Refusal::Total(3)));
        drop(first);
        let _fourth = limits.admit(peer("10.0.0.3:1")).expect("a closed connection frees its slot");
        assert_eq!(limits.open(&peer("10.0.0.1:9")), (3, 1));
    }

    #[test]
    fn the_open_files_limit_keeps_a_reserve() {
        let settings = LimitSettings { max_connections: 100_000, ..LimitSettings::default() };
        assert_eq!(ConnectionLimits::new(&settings, Some(20_000)).max_connections(), 18_000);
        assert_eq!(ConnectionLimits::new(&settings, Some(1024)).max_connections(), 768);
        assert_eq!(ConnectionLimits::new(&settings, Some(10_000_000)).max_connections(), 100_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_closes_when_idle_but_not_while_a_call_is_open() {
        let limits = limits(10, 10, Duration::from_secs(30));
        let (server_end, mut client_end) = tokio::io::duplex(64);
        let slot = limits.admit(Peer::Unknown).expect("admitted");
        let mut gated = limits.gate(server_end, slot);
        let info = gated.info().clone();

        // A call keeps the connection open however long it lasts.
        let call = info.begin_call();
        let mut buffer = [0u8; 8];
        let read = tokio::time::timeout(Duration::from_secs(300), gated.read(&mut buffer)).await;
        assert!(read.is_err(), "no read may end while a call is open");
        client_end.write_all(b"hi").await.expect("write");
        assert_eq!(gated.read(&mut buffer).await.expect("read"), 2);

        // Once it ends, the connection has the idle timeout, counted from the end.
        drop(call);
        let started = Instant::now();
        let error = gated.read(&mut buffer).await.expect_err("closed when idle");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        drop(gated);
        assert_eq!(limits.open(&Peer::Unknown), (0, 0), "the slot is given back");
        let mut rest = Vec::new();
        client_end.read_to_end(&mut rest).await.expect("the client sees the end");
    }

    #[tokio::test]
    async fn a_cut_connection_ends_its_pending_read() {
        let limits = limits(10, 10, Duration::from_secs(3600));
        let (server_end, _client_end) = tokio::io::duplex(64);
        let slot = limits.admit(Peer::Unknown).expect("admitted");
        let mut gated = limits.gate(server_end, slot);
        let info = gated.info().clone();
        let reader = tokio::spawn(async move {
            let mut buffer = [0u8; 8];
            gated.read(&mut buffer).await
        });
        tokio::task::yield_now().await;
        info.cut();
        let read =
            tokio::time::timeout(Duration::from_secs(10), reader).await.expect("woken").expect("joined");
        assert_eq!(read.expect_err("cut").kind(), io::ErrorKind::ConnectionAborted);
    }
}
