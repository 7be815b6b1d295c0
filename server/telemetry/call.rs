//! The span of a gRPC call: one tower layer, outside the guard, that opens a span per call,
//! continues the caller's trace from its `traceparent` metadata, and closes the span when the
//! response body ends (so a Watch or Logs stream's span lasts as long as the stream), with the
//! gRPC code and the duration.
//!
//! The span is made before the body is decoded, so what only the request says (the process and
//! group) is recorded into it by the handlers ([`record_target`]) on fields declared empty here,
//! and the guard records the caller's token name the same way: nothing is decoded twice.
//!
//! Health checks get no span: probes call every few seconds from every replica, and would bury
//! the calls someone wants to see in a trace backend.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of call spans, which the text log format leaves out (its lines stay as they were).
pub const CALL_SPAN_TARGET: &str = "hydroplane::call";

/// The longest process or group name recorded: names come from callers and are checked only
/// after they are recorded, so a huge one is cut.
const MAX_NAME_CHARS: usize = 253;

/// Opens a span per call ([`tonic::transport::Server::layer`], outside the guard).
#[derive(Clone, Copy, Debug, Default)]
pub struct CallSpanLayer;

impl<S> Layer<S> for CallSpanLayer {
    type Service = CallSpan<S>;

    fn layer(&self, inner: S) -> CallSpan<S> {
        CallSpan { inner }
    }
}

/// The call-span layer in front of one connection's service.
#[derive(Clone, Debug)]
pub struct CallSpan<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> Service<http::Request<RequestBody>> for CallSpan<S>
where
    S: Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = http::Response<TracedBody<ResponseBody>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/grpc.health.v1.Health/") {
            let future = self.inner.call(request);
            return Box::pin(async move { Ok(future.await?.map(TracedBody::untraced)) });
        }
        let span = call_span(path, request.headers());
        let started = tokio::time::Instant::now();
        let future = {
            // The guard's synchronous part runs in the span too.
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(async move {
            let response = tracing::Instrument::instrument(future, span.clone()).await?;
            // A status in the headers is a trailers-only answer (an error, or a refusal by the
            // guard): the body has nothing more to say.
            let code = grpc_status(response.headers());
            Ok(response.map(|inner| TracedBody { inner, span, started, code, ended: false }))
        })
    }
}

/// A new call span for a method's path, continuing the caller's trace when the metadata carries
/// a valid `traceparent`.
pub(crate) fn call_span(path: &str, headers: &http::HeaderMap) -> Span {
    let full_method = path.trim_start_matches('/');
    let (service, method) = full_method.rsplit_once('/').unwrap_or(("", full_method));
    let span = tracing::info_span!(
        target: CALL_SPAN_TARGET,
        "grpc call",
        otel.name = full_method,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        code = tracing::field::Empty,
        caller = tracing::field::Empty,
        process = tracing::field::Empty,
        group = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    if !span.is_disabled() && headers.contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&MetadataExtractor(headers));
        let remote = parent.span().span_context().clone();
        if remote.is_valid() {
            span.record("trace_id", tracing::field::display(remote.trace_id()));
            // Without the OpenTelemetry layer (no OTLP export) there is no trace to continue;
            // the trace id is in the logs all the same.
            let _ = span.set_parent(parent);
        }
    }
    span
}

/// Records what a call is about, from its decoded request, into the current call span: the
/// process and the group, each when the request names one. Cheap when no span is open.
pub fn record_target(process: Option<&str>, group: Option<&str>) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    if let Some(process) = process {
        span.record("process", cut(process));
    }
    if let Some(group) = group {
        span.record("group", cut(group));
    }
}

/// Records the caller's token name (never the token) into the current call span.
pub fn record_caller(name: &str) {
    Span::current().record("caller", cut(name));
}

fn cut(name: &str) -> &str {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        Some((end, _)) => &name[..end],
        None => name,
    }
}

/// Reads the W3C trace context from gRPC metadata (HTTP/2 headers).
struct MetadataExtractor<'a>(&'a http::HeaderMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The `grpc-status` of headers or trailers.
fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// A response body that holds the call's span open until it ends, and then records the code
/// and the duration into it. A type of its own rather than a boxed `Body`: every message of
/// every Watch stream passes through it.
pub struct TracedBody<B> {
    inner: B,
    span: Span,
    started: tokio::time::Instant,
    /// The call's gRPC code, once the headers or the trailers said it.
    code: Option<i32>,
    /// Whether the body ended (rather than being dropped early: the client went away).
    ended: bool,
}

impl<B> TracedBody<B> {
    /// A body of a call with no span (health checks).
    fn untraced(inner: B) -> TracedBody<B> {
        TracedBody {
            inner,
            span: Span::none(),
            started: tokio::time::Instant::now(),
            code: None,
            ended: false,
        }
    }
}

impl<B> http_body::Body for TracedBody<B>
where
    B: http_body::Body<Data = Bytes, Error = tonic::Status> + Unpin,
{
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        // A stream's items are made while the body is polled: they belong to the call's span.
        let _entered = this.span.enter();
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(context));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.code = this.code.or_else(|| grpc_status(trailers));
                }
            }
            // tonic sends an error's status in the trailers; one without a code is unknown.
            Some(Err(status)) => this.code = this.code.or(Some(status.code() as i32)),
            None => this.ended = true,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for TracedBody<B> {
    fn drop(&mut self) {
        if self.span.is_disabled() {
            return;
        }
        let code = match self.code {
            Some(code) => tonic::Code::from_i32(code),
            // The client left before the end (a Watch it stopped reading, a cancelled call).
            None if !self.ended => tonic::Code::Cancelled,
            None => tonic::Code::Unknown,
        };
        let elapsed = self.started.elapsed();
        self.span.record("code", code_name(code));
        self.span.record("rpc.grpc.status_code", code as i64);
        if is_server_error(code) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    }
}

/// A gRPC code as go-grpc-prometheus and grpc-go write it (`OK`, `InvalidArgument`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// The codes OpenTelemetry's conventions count as the server's failure: the others (a bad
/// argument, a missing process, a refusal) are the caller's, and the span is not an error.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trace_context_is_read_from_metadata() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        let parent = TraceContextPropagator::new().extract(&MetadataExtractor(&headers));
        let parent_span = parent.span();
        let remote = parent_span.span_context();
        assert!(remote.is_valid() && remote.is_remote() && remote.is_sampled());
        assert_eq!(remote.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(remote.span_id().to_string(), "b7ad6b7169203331");
    }

    #[test]
    fn a_malformed_traceparent_starts_no_trace() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-not-a-trace-01"));
        let parent = TraceContextPropagator::new().extract(&MetadataExtractor(&headers));
        assert!(!parent.span().span_context().is_valid());
    }

    #[test]
    fn codes_are_named_as_grpc_go_names_them() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
        assert!(is_server_error(tonic::Code::Unavailable));
        assert!(!is_server_error(tonic::Code::NotFound));
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(300);
        assert_eq!(cut(&long).chars().count(), MAX_NAME_CHARS);
        assert_eq!(cut("short"), "short");
    }

    #[test]
    fn the_grpc_status_is_read_from_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&headers), Some(5));
    }
}
