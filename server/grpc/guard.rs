//! The guard: the one tower layer every call passes before any handler. It authenticates the
//! bearer token, checks the scope the method needs, applies the limits (request size, concurrent
//! calls with load shedding, the per-token rate of Start and Stop, open Watch streams per token
//! and in total), writes the audit line of a refused call, and hands the handler a [`Caller`]
//! and a [`Peer`] in the request's extensions. The `authorization` header is removed on the way:
//! no handler, and so no runtime, ever sees a token.
//!
//! Group restrictions are the one check left to the handlers' side (`app`), because only the
//! decoded request says which group a call is about; the guard provides what they need for it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::body::Body;
use tonic::transport::server::TlsConnectInfo;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShed;
use tower::load_shed::error::Overloaded;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::config::LimitSettings;
use crate::grpc::audit;
use crate::security::access::{Caller, Groups, Scope};
use crate::security::tokens::{TokenBook, TokenId, TokenStore};
use crate::transport::connections::{CallInProgress, ConnectionInfo, ConnectionLimits, Peer, PeerKey};

impl Peer {
    /// The peer of a request, from the connection information tonic attached to it.
    fn of<B>(request: &http::Request<B>) -> Peer {
        connection_of(request).map_or(Peer::Unknown, |connection| connection.peer().clone())
    }
}

/// The connection a request came on (every listener's connections are gated).
fn connection_of<B>(request: &http::Request<B>) -> Option<&ConnectionInfo> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectionInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<ConnectionInfo>>().map(TlsConnectInfo::get_ref))
}

/// The name of callers of a server without tokens, before `@` and their peer.
const ANONYMOUS: &str = "anonymous";

/// What a method is, for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Open to everyone (health checks, so probes need no token).
    Open,
    /// A plain call.
    Unary,
    /// Start or Stop: rate-limited per token.
    Mutating,
    /// A Watch or Logs stream: counted while open.
    Watch,
}

/// The scope and kind of a method, by its path. Anything unknown needs `admin`: a service added
/// later is closed until someone decides who may call it.
fn classify(path: &str) -> (Kind, Option<Scope>, &str) {
    let method = path.rsplit('/').next().unwrap_or(path);
    if path.starts_with("/grpc.health.v1.Health/") {
        return (Kind::Open, None, method);
    }
    if path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
    {
        return (Kind::Unary, Some(Scope::Read), method);
    }
    match path {
        "/hydroplane.v1.ProcessService/List" | "/hydroplane.v1.ProcessService/Describe" => {
            (Kind::Unary, Some(Scope::Read), method)
        }
        "/hydroplane.v1.ProcessService/Watch" => (Kind::Watch, Some(Scope::Read), method),
        "/hydroplane.v1.ProcessService/Start" | "/hydroplane.v1.ProcessService/Stop" => {
            (Kind::Mutating, Some(Scope::Write), method)
        }
        // A Logs stream may follow for as long as a Watch does, so it is counted as one.
        "/hydroplane.v1.ProcessService/Logs" => (Kind::Watch, Some(Scope::Logs), method),
        _ => (Kind::Unary, Some(Scope::Admin), path),
    }
}

/// The guard's shared state: the tokens, the limiters and the Watch stream counts.
pub struct Guard {
    tokens: Option<Arc<TokenStore>>,
    limits: LimitSettings,
    rate: Option<DefaultKeyedRateLimiter<String>>,
    watches: Arc<Semaphore>,
    watches_per_caller: Mutex<HashMap<String, Arc<Semaphore>>>,
    calls: Arc<Semaphore>,
    connections: Arc<ConnectionLimits>,
    streams: Arc<OpenStreams>,
}

impl Guard {
    /// A guard over these tokens (none: every caller is `anonymous` with every scope) and limits.
    pub fn new(tokens: Option<Arc<TokenStore>>, limits: LimitSettings) -> Arc<Guard> {
        let rate = NonZeroU32::new(limits.start_stop_per_second).map(|per_second| {
            let burst = NonZeroU32::new(limits.start_stop_burst).unwrap_or(per_second);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        let streams = Arc::new(OpenStreams::default());
        if let Some(tokens) = &tokens {
            tokio::spawn(end_revoked_streams(Arc::clone(tokens), Arc::downgrade(&streams), tokens.reloads()));
        }
        Arc::new(Guard {
            streams,
            tokens,
            rate,
            watches: Arc::new(Semaphore::new(limits.max_watches)),
            watches_per_caller: Mutex::new(HashMap::new()),
            calls: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
            connections: ConnectionLimits::new(&limits, open_files_limit()),
            limits,
        })
    }

    /// The connection limits every listener of this server shares (the metrics listener too).
    pub fn connections(&self) -> Arc<ConnectionLimits> {
        Arc::clone(&self.connections)
    }

    /// The tower layer that puts this guard in front of a service.
    pub fn layer(self: &Arc<Self>) -> GuardLayer {
        GuardLayer { guard: Arc::clone(self) }
    }

    /// Who presents this request's `authorization` metadata, and which token it is (none
    /// without a tokens file).
    fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: &Peer,
    ) -> Result<(Caller, Option<TokenId>), Status> {
        let Some(tokens) = &self.tokens else {
            // Without tokens, what is shared per caller (Watch and Logs slots, the share of kept
            // listings) is shared per peer: one client cannot take everyone's.
            return Ok((Caller::unrestricted(&format!("{}@{}", ANONYMOUS, PeerKey::of(peer))), None));
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "this server needs a token: send the metadata `authorization: Bearer <token>` (hpctl: --token or HYDROPLANE_TOKEN)",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("the `authorization` metadata must be `Bearer <token>`")
            })?;
        tokens.current().identify(presented).map(|(caller, id)| (caller.clone(), Some(id))).ok_or_else(|| {
            Status::unauthenticated(
                "the token is not known to this server (revoked, mistyped, or meant for another server)",
            )
        })
    }

    /// Refuses a Start or Stop over the caller's rate.
    fn check_rate(&self, caller: &Caller) -> Result<(), Status> {
        let Some(rate) = &self.rate else { return Ok(()) };
        rate.check_key(&caller.name).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(rate.clock()));
            Status::resource_exhausted(format!(
                "token `{}` is over its rate of {} Start/Stop calls per second (limits.start_stop_per_second); retry in {} ms",
                caller.name,
                self.limits.start_stop_per_second,
                wait.as_millis().max(1)
            ))
        })
    }

    /// Takes a Watch slot of the caller's and one of the server's, or says which limit is full.
    fn open_watch(&self, caller: &Caller) -> Result<[OwnedSemaphorePermit; 2], Status> {
        let per_caller = {
            let mut map = self.watches_per_caller.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(
                map.entry(caller.name.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_watches_per_token))),
            )
        };
        let mine = per_caller.try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "token `{}` has {} Watch and Logs streams open, its limit (limits.max_watches_per_token); close one first",
                caller.name, self.limits.max_watches_per_token
            ))
        })?;
        let server = Arc::clone(&self.watches).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "the server has {} Watch and Logs streams open, its limit (limits.max_watches); retry later",
                self.limits.max_watches
            ))
        })?;
        Ok([mine, server])
    }

    /// Runs every check a call must pass; on success, the caller and what it holds while open.
    fn admit(
        &self,
        kind: Kind,
        scope: Option<Scope>,
        method: &str,
        headers: &http::HeaderMap,
        peer: &Peer,
    ) -> Result<Admitted, (Option<String>, Status)> {
        if kind == Kind::Open {
            // Whoever calls an open method is nobody in particular: no scope, no group.
            let nobody = Caller {
                name: "unauthenticated".to_owned(),
                scopes: Vec::new(),
                groups: Groups::Only(Vec::new()),
            };
            return Ok(Admitted { caller: nobody, permits: None, revocation: None });
        }
        let (caller, token) = self.authenticate(headers, peer).map_err(|status| (None, status))?;
        let refuse = |status: Status| (Some(caller.name.clone()), status);
        if let Some(scope) = scope
            && !caller.has(scope)
        {
            let held: Vec<&str> = caller.scopes.iter().map(|scope| scope.name()).collect();
            return Err(refuse(Status::permission_denied(format!(
                "token `{}` lacks the `{scope}` scope, which {method} needs (it has: {})",
                caller.name,
                held.join(", ")
            ))));
        }
        let permits = match kind {
            Kind::Mutating => {
                // The rate shares the server fairly between tokens; without tokens there is one
                // caller, and the concurrency cap is what protects the server.
                if self.tokens.is_some() {
                    self.check_rate(&caller).map_err(refuse)?;
                }
                None
            }
            Kind::Watch => Some(self.open_watch(&caller).map_err(refuse)?),
            Kind::Open | Kind::Unary => None,
        };
        // A stream outlives the check above: it is ended if its token is revoked meanwhile.
        let revocation = match (kind, token) {
            (Kind::Watch, Some(token)) => Some(self.streams.open(token, scope)),
            _ => None,
        };
        Ok(Admitted { caller, permits, revocation })
    }
}

/// The open streams of callers with tokens, each with the token and scope it was let in with,
/// so that a reload of the tokens file ends those whose token no longer grants it.
#[derive(Default)]
struct OpenStreams {
    open: Mutex<HashMap<u64, OpenStream>>,
    next: std::sync::atomic::AtomicU64,
}

impl OpenStreams {
    fn open_streams(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenStream>> {
        self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a stream; it is unregistered when the returned value is dropped.
    fn open(self: &Arc<Self>, token: TokenId, scope: Option<Scope>) -> StreamRevocation {
        let key = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let revocation = Arc::new(Revocation::default());
        self.open_streams().insert(key, (token, scope, Arc::clone(&revocation)));
        StreamRevocation { streams: Arc::clone(self), key, revocation }
    }

    /// Ends every stream whose token the book no longer holds, or no longer with the scope.
    fn revoke_missing(&self, book: &TokenBook) -> usize {
        let mut ended = 0;
        for (token, scope, revocation) in self.open_streams().values() {
            let granted =
                book.caller_of(*token).is_some_and(|caller| scope.is_none_or(|scope| caller.has(scope)));
            if !granted && !revocation.revoked.swap(true, std::sync::atomic::Ordering::AcqRel) {
                revocation.waker.wake();
                ended += 1;
            }
        }
        ended
    }
}

/// One open stream: the token and scope it was let in with, and its revocation.
type OpenStream = (TokenId, Option<Scope>, Arc<Revocation>);

/// Whether a stream's token was revoked, and the stream's body to wake when it is.
#[derive(Default)]
struct Revocation {
    revoked: std::sync::atomic::AtomicBool,
    waker: futures::task::AtomicWaker,
}

/// A stream's place among the open streams, held by its response body.
struct StreamRevocation {
    streams: Arc<OpenStreams>,
    key: u64,
    revocation: Arc<Revocation>,
}

impl StreamRevocation {
    /// Whether the token was revoked; registers the waker to be woken when it is.
    fn poll_revoked(&self, context: &Context<'_>) -> bool {
        self.revocation.waker.register(context.waker());
        self.revocation.revoked.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for StreamRevocation {
    fn drop(&mut self) {
        self.streams.open_streams().remove(&self.key);
    }
}

/// Ends the streams of revoked tokens after each reload of the tokens file, until the guard
/// is gone.
async fn end_revoked_streams(
    tokens: Arc<TokenStore>,
    streams: std::sync::Weak<OpenStreams>,
    mut reloads: tokio::sync::watch::Receiver<u64>,
) {
    while reloads.changed().await.is_ok() {
        let Some(streams) = streams.upgrade() else { return };
        let ended = streams.revoke_missing(&tokens.current());
        if ended > 0 {
            tracing::info!(streams = ended, "ended the open streams of revoked tokens");
        }
    }
}

/// The process's open-files limit (soft), which connections must leave a reserve under.
fn open_files_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// A call that passed the guard.
struct Admitted {
    caller: Caller,
    permits: Option<[OwnedSemaphorePermit; 2]>,
    revocation: Option<StreamRevocation>,
}

/// The guard as a tower layer (`tonic::transport::Server::layer`).
#[derive(Clone)]
pub struct GuardLayer {
    guard: Arc<Guard>,
}

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<LoadShed<tower::limit::ConcurrencyLimit<S>>>;

    fn layer(&self, inner: S) -> Self::Service {
        // One semaphore for every connection: the cap is the server's, not each connection's.
        let limited = GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(&self.guard.calls)).layer(inner);
        GuardService { inner: LoadShed::new(limited), guard: Arc::clone(&self.guard) }
    }
}

/// The guard in front of one connection's service.
#[derive(Clone)]
pub struct GuardService<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S> Service<http::Request<Body>> for GuardService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<GuardedBody>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is decided per call, inside: the load shedder answers at once either way.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let guard = Arc::clone(&self.guard);
        // Readiness (a concurrency slot) is taken per call by `oneshot`, on a clone.
        let inner = self.inner.clone();
        Box::pin(async move {
            let peer = Peer::of(&request);
            // The connection is busy, not idle, until this call's answer has been sent.
            let in_progress = connection_of(&request).map(ConnectionInfo::begin_call);
            let (kind, scope, method) = classify(request.uri().path());
            let method = method.to_owned();
            let admitted = guard.admit(kind, scope, &method, request.headers(), &peer);
            // Whatever the outcome, the token goes no further than this function.
            request.headers_mut().remove(http::header::AUTHORIZATION);
            let Admitted { caller, permits, revocation } = match admitted {
                Ok(admitted) => admitted,
                Err((caller, status)) => {
                    if let Some(name) = &caller {
                        crate::telemetry::call::record_caller(name);
                    }
                    audit::refused(&method, caller.as_deref(), &peer, &status);
                    return Ok(status.into_http().map(|body| GuardedBody::response(body, None, in_progress)));
                }
            };
            // Spans name the caller without its peer (the span has the peer already).
            crate::telemetry::call::record_caller(caller.name.split('@').next().unwrap_or(ANONYMOUS));
            let limit = guard.limits.max_request_bytes;
            let caller_name = caller.name.clone();
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(peer.clone());
            let request = request.map(|body| GuardedBody::limited(body, limit));
            let response = match inner.oneshot(request).await {
                Ok(response) => response,
                Err(error) => {
                    let error: BoxError = error.into();
                    if error.is::<Overloaded>() {
                        let status = Status::resource_exhausted(format!(
                            "the server is at its limit of {} calls at once (limits.max_concurrent_calls); retry shortly",
                            guard.limits.max_concurrent_calls
                        ));
                        audit::refused(&method, Some(&caller_name), &peer, &status);
                        return Ok(status
                            .into_http()
                            .map(|body| GuardedBody::response(body, None, in_progress)));
                    }
                    return Err(error);
                }
            };
            let mut response = response;
            malformed_request_is_invalid_argument(&mut response);
            Ok(response.map(|body| GuardedBody::response(body, permits, in_progress).ended_on(revocation)))
        })
    }
}

/// What tonic's decoder (prost) says of a request message it cannot decode, as it leaves in a
/// `grpc-message` header: percent-encoded, or not.
const DECODE_FAILURE: [&[u8]; 2] = [b"failed%20to%20decode%20Protobuf", b"failed to decode Protobuf"];

/// Turns tonic's answer to a request message that does not decode, `INTERNAL` (as gRPC's
/// table says of parse errors), into `INVALID_ARGUMENT`: the bytes are the caller's mistake,
/// and the server's own failures must stay told apart from them. The request is decoded before
/// any handler runs, so such an answer is a status alone (trailers-only).
fn malformed_request_is_invalid_argument<B>(response: &mut http::Response<B>) {
    let headers = response.headers_mut();
    let internal = headers.get("grpc-status").is_some_and(|code| code.as_bytes() == b"13");
    let undecodable = headers
        .get("grpc-message")
        .is_some_and(|message| DECODE_FAILURE.iter().any(|prefix| message.as_bytes().starts_with(prefix)));
    if internal && undecodable {
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
    }
}

/// The gRPC frame header before each message: the limit is on the message itself.
const FRAME_HEADER_BYTES: usize = 5;

/// A body the guard watches over: a request body cut off with `RESOURCE_EXHAUSTED` once it
/// passes the size limit (before the whole of a huge message is buffered), or a response body,
/// which for a Watch holds the stream's slots until it ends or the client leaves. Responses
/// keep this type up to the transport rather than a boxed `Body`: every message of every
/// Watch stream passes through it.
pub struct GuardedBody {
    inner: Body,
    /// For a request: the bytes seen so far and the limit.
    limit: Option<(usize, usize)>,
    _permits: Option<[OwnedSemaphorePermit; 2]>,
    _in_progress: Option<CallInProgress>,
    /// For a stream: ends it with UNAUTHENTICATED once its token is revoked.
    revocation: Option<StreamRevocation>,
    /// Whether the revocation's trailers have been sent.
    ended: bool,
}

impl GuardedBody {
    /// A request body cut off past `limit` bytes.
    fn limited(inner: Body, limit: usize) -> Body {
        Body::new(GuardedBody {
            inner,
            limit: Some((0, limit)),
            _permits: None,
            _in_progress: None,
            revocation: None,
            ended: false,
        })
    }

    /// A response body, holding a Watch stream's slots if it has any (a refusal has none), and
    /// keeping its connection from counting as idle until it is sent.
    fn response(
        inner: Body,
        permits: Option<[OwnedSemaphorePermit; 2]>,
        in_progress: Option<CallInProgress>,
    ) -> GuardedBody {
        GuardedBody {
            inner,
            limit: None,
            _permits: permits,
            _in_progress: in_progress,
            revocation: None,
            ended: false,
        }
    }

    /// The same body, ended with UNAUTHENTICATED when its token is revoked.
    fn ended_on(mut self, revocation: Option<StreamRevocation>) -> GuardedBody {
        self.revocation = revocation;
        self
    }
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.revocation.as_ref().is_some_and(|revocation| revocation.poll_revoked(context)) {
            // Between two messages (the inner body yields whole ones): trailers end the stream
            // as a call that failed, which the client reads as the status.
            self.ended = true;
            let status = Status::unauthenticated(
                "the token of this stream was revoked (or lost the scope it needs) when the tokens file was re-read",
            );
            // tonic writes a status as headers; as trailers, only its `grpc-*` entries belong.
            let mut trailers = status.into_http::<()>().into_parts().0.headers;
            trailers.remove(http::header::CONTENT_TYPE);
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(context));
        if let Some((seen, limit)) = &mut self.limit
            && let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            // The first message's header declares its length: a huge request is refused on its
            // first bytes, before tonic would make room for it.
            let declared = match (*seen, data.get(1..FRAME_HEADER_BYTES)) {
                (0, Some(length)) => length.try_into().map(u32::from_be_bytes).unwrap_or(0) as usize,
                _ => 0,
            };
            *seen = seen.saturating_add(data.len());
            if declared > *limit || *seen > *limit + FRAME_HEADER_BYTES {
                let size = if declared > 0 { format!("{declared} bytes") } else { "larger".to_owned() };
                return Poll::Ready(Some(Err(Status::resource_exhausted(format!(
                    "the request is {size}, above the limit of {limit} bytes (limits.max_request_bytes)"
                )))));
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_need_their_scopes_and_unknown_ones_need_admin() {
        assert_eq!(classify("/grpc.health.v1.Health/Check").0, Kind::Open);
        assert_eq!(classify("/hydroplane.v1.ProcessService/List").1, Some(Scope::Read));
        assert_eq!(classify("/hydroplane.v1.ProcessService/Describe").1, Some(Scope::Read));
        assert_eq!(classify("/hydroplane.v1.ProcessService/Watch").0, Kind::Watch);
        assert_eq!(
            classify("/hydroplane.v1.ProcessService/Start"),
            (Kind::Mutating, Some(Scope::Write), "Start")
        );
        assert_eq!(classify("/hydroplane.v1.ProcessService/Logs"), (Kind::Watch, Some(Scope::Logs), "Logs"));
        assert_eq!(
            classify("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo").1,
            Some(Scope::Read)
        );
        assert_eq!(classify("/other.Service/Do").1, Some(Scope::Admin));
    }

    #[test]
    fn watch_slots_are_counted_per_token_and_in_total() {
        let limits = LimitSettings { max_watches_per_token: 2, max_watches: 3, ..LimitSettings::default() };
        let guard = Guard::new(None, limits);
        let one = Caller::unrestricted("one");
        let two = Caller::unrestricted("two");
        let first = guard.open_watch(&one).unwrap();
        let _second = guard.open_watch(&one).unwrap();
        let full = guard.open_watch(&one).unwrap_err();
        assert!(
            full.message().contains("token `one` has 2 Watch and Logs streams open"),
            "{}",
            full.message()
        );
        let _third = guard.open_watch(&two).unwrap();
        let total = guard.open_watch(&two).unwrap_err();
        assert!(total.message().contains("limits.max_watches"), "{}", total.message());
        drop(first);
        assert!(guard.open_watch(&two).is_ok());
    }

    #[test]
    fn the_rate_of_start_and_stop_is_per_token() {
        let limits =
            LimitSettings { start_stop_per_second: 1, start_stop_burst: 2, ..LimitSettings::default() };
        let guard = Guard::new(None, limits);
        let busy = Caller::unrestricted("busy");
        assert!(guard.check_rate(&busy).is_ok() && guard.check_rate(&busy).is_ok());
        let over = guard.check_rate(&busy).unwrap_err();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
        assert!(over.message().contains("token `busy`") && over.message().contains("retry in"));
        assert!(guard.check_rate(&Caller::unrestricted("calm")).is_ok());
    }
}
