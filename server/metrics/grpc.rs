//! The gRPC server's metrics, with go-grpc-prometheus's names and labels, recorded by one tower
//! layer in front of every service ([`GrpcMetricsLayer`]), outside the guard: a call the guard
//! refuses is counted with its code like any other.
//!
//! The code comes from the `grpc-status` the server sends: in the response headers of a
//! trailers-only answer (a refusal, an error of a unary call), otherwise in the trailers at the
//! end of the body. A body dropped before its trailers (the client went away) counts as
//! `Canceled`. Messages sent are counted one by one from the gRPC framing of the response body
//! (each message has a 5-byte header declaring its length), so a body frame that carries several
//! messages, or a message split over frames, still counts exactly.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tonic::Status;
use tonic::body::Body;
use tower::{BoxError, Layer, Service};

use super::Metrics;

/// The labels of a method: which it is and whether it streams.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `unary`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
    /// The full service name, e.g. `hydroplane.v1.ProcessService`.
    pub grpc_service: &'static str,
    /// The method name, e.g. `List`.
    pub grpc_method: &'static str,
}

/// A method's labels and the code it ended with.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// `unary`, `server_stream` or `bidi_stream`.
    pub grpc_type: &'static str,
    /// The full service name.
    pub grpc_service: &'static str,
    /// The method name.
    pub grpc_method: &'static str,
    /// The status code, as go-grpc-prometheus writes it (`OK`, `InvalidArgument`, ...).
    pub grpc_code: &'static str,
}

/// The gRPC server's metrics.
pub struct GrpcMetrics {
    /// Calls begun.
    pub started: Family<MethodLabels, Counter>,
    /// Calls ended, by code.
    pub handled: Family<HandledLabels, Counter>,
    /// Seconds from a call's start to its end (the end of the stream, for streams).
    pub handling_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    /// Messages sent to clients.
    pub msg_sent: Family<MethodLabels, Counter>,
}

/// Prometheus's default buckets, which go-grpc-prometheus uses.
const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn handling_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

impl GrpcMetrics {
    /// The metrics, registered under their go-grpc-prometheus names.
    pub fn register(registry: &mut Registry) -> GrpcMetrics {
        let metrics = GrpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            handling_seconds: Family::new_with_constructor(handling_histogram),
            msg_sent: Family::default(),
        };
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server",
            metrics.handling_seconds.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Total number of gRPC stream messages sent by the server",
            metrics.msg_sent.clone(),
        );
        metrics
    }
}

/// Every method the server serves, with its labels. Anything else is `unknown`: the path is
/// the caller's to choose, and a label value must not be.
const METHODS: &[(&str, MethodLabels)] = &[
    ("/hydroplane.v1.ProcessService/Start", method("hydroplane.v1.ProcessService", "Start", UNARY)),
    ("/hydroplane.v1.ProcessService/Stop", method("hydroplane.v1.ProcessService", "Stop", UNARY)),
    ("/hydroplane.v1.ProcessService/List", method("hydroplane.v1.ProcessService", "List", UNARY)),
    ("/hydroplane.v1.ProcessService/Describe", method("hydroplane.v1.ProcessService", "Describe", UNARY)),
    ("/hydroplane.v1.ProcessService/Watch", method("hydroplane.v1.ProcessService", "Watch", SERVER_STREAM)),
    ("/hydroplane.v1.ProcessService/Logs", method("hydroplane.v1.ProcessService", "Logs", SERVER_STREAM)),
    ("/grpc.health.v1.Health/Check", method("grpc.health.v1.Health", "Check", UNARY)),
    ("/grpc.health.v1.Health/List", method("grpc.health.v1.Health", "List", UNARY)),
    ("/grpc.health.v1.Health/Watch", method("grpc.health.v1.Health", "Watch", SERVER_STREAM)),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        method("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo", BIDI_STREAM),
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        method("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", BIDI_STREAM),
    ),
];

const UNARY: &str = "unary";
const SERVER_STREAM: &str = "server_stream";
const BIDI_STREAM: &str = "bidi_stream";

const fn method(
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_type: &'static str,
) -> MethodLabels {
    MethodLabels { grpc_type, grpc_service, grpc_method }
}

/// The labels of the method at this path.
pub fn method_of(path: &str) -> MethodLabels {
    METHODS
        .iter()
        .find(|(known, _)| *known == path)
        .map_or(method("unknown", "unknown", UNARY), |(_, labels)| *labels)
}

/// A status code as go-grpc-prometheus writes it (Go's `codes.Code.String()`).
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

/// The code of a `grpc-status` header or trailer, when there is one.
fn status_in(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(code_name(value.trim().parse().unwrap_or(2)))
}

/// The layer that records the gRPC metrics of every call; with no metrics it passes calls
/// through untouched.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Option<Arc<Metrics>>,
}

/// The layer over these metrics (none: metrics are off).
pub fn layer(metrics: Option<Arc<Metrics>>) -> GrpcMetricsLayer {
    GrpcMetricsLayer { metrics }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService { inner, metrics: self.metrics.clone() }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, ResponseBody> Service<http::Request<Body>> for GrpcMetricsService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ResponseBody: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResponseBody>>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let Some(metrics) = self.metrics.clone() else {
            let future = self.inner.call(request);
            return Box::pin(async move {
                Ok(future.await.map_err(Into::into)?.map(|inner| MeteredBody { inner, meter: None }))
            });
        };
        let labels = method_of(request.uri().path());
        metrics.grpc.started.get_or_create(&labels).inc();
        let call = Call { metrics, labels, begin: tokio::time::Instant::now(), finished: false };
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut call = call;
            match future.await {
                Ok(response) => {
                    if let Some(code) = status_in(response.headers()) {
                        // Trailers-only: the answer is complete with its headers.
                        call.finish(code);
                        return Ok(response.map(|inner| MeteredBody { inner, meter: None }));
                    }
                    Ok(response.map(|inner| MeteredBody { inner, meter: Some((call, Framer::default())) }))
                }
                Err(error) => {
                    call.finish(code_name(2));
                    Err(error.into())
                }
            }
        })
    }
}

/// One call being measured; it records its end exactly once, as `Canceled` when dropped first.
struct Call {
    metrics: Arc<Metrics>,
    labels: MethodLabels,
    begin: tokio::time::Instant,
    finished: bool,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let MethodLabels { grpc_type, grpc_service, grpc_method } = self.labels;
        let handled = HandledLabels { grpc_type, grpc_service, grpc_method, grpc_code: code };
        self.metrics.grpc.handled.get_or_create(&handled).inc();
        self.metrics
            .grpc
            .handling_seconds
            .get_or_create(&self.labels)
            .observe(self.begin.elapsed().as_secs_f64());
    }

    fn sent(&self, messages: u64) {
        if messages > 0 {
            self.metrics.grpc.msg_sent.get_or_create(&self.labels).inc_by(messages);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(code_name(1));
    }
}

/// Counts gRPC messages in a byte stream: each is a 5-byte header (a flag and a big-endian
/// length) and that many bytes.
#[derive(Debug, Default)]
struct Framer {
    header: [u8; 5],
    header_filled: usize,
    remaining: u64,
}

impl Framer {
    /// Reads the next bytes; returns how many messages began in them.
    fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(data.len());
                data = &data[skip..];
                self.remaining -= skip as u64;
                continue;
            }
            let take = (self.header.len() - self.header_filled).min(data.len());
            self.header[self.header_filled..self.header_filled + take].copy_from_slice(&data[..take]);
            self.header_filled += take;
            data = &data[take..];
            if self.header_filled == self.header.len() {
                messages += 1;
                let [_, a, b, c, d] = self.header;
                self.remaining = u64::from(u32::from_be_bytes([a, b, c, d]));
                self.header_filled = 0;
            }
        }
        messages
    }
}

/// A response body that counts the messages it carries and records the call's end, when the
/// call is measured. A type of its own rather than a boxed `Body`: every message of every Watch
/// stream passes through it.
pub struct MeteredBody<B> {
    inner: B,
    /// The call and the message counter; `None` when metrics are off or the answer was
    /// complete with its headers.
    meter: Option<(Call, Framer)>,
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Status>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(context));
        let Some((call, framer)) = &mut self.meter else { return Poll::Ready(frame) };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let messages = framer.feed(data);
                    call.sent(messages);
                } else if let Some(trailers) = frame.trailers_ref() {
                    call.finish(status_in(trailers).unwrap_or(code_name(2)));
                }
            }
            Some(Err(status)) => call.finish(code_name(status.code() as i32)),
            None => call.finish(code_name(2)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn message(length: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7u8, length as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_however_the_frames_cut_them() {
        let mut stream = message(3);
        stream.extend(message(0));
        stream.extend(message(300));
        stream.extend(message(1));
        for cut in [1, 2, 4, 5, 6, 7, 100, stream.len()] {
            let mut framer = Framer::default();
            let counted: u64 = stream.chunks(cut).map(|chunk| framer.feed(chunk)).sum();
            assert_eq!(counted, 4, "in chunks of {cut}");
        }
    }

    #[test]
    fn methods_and_codes_have_go_grpc_prometheus_labels() {
        let list = method_of("/hydroplane.v1.ProcessService/List");
        assert_eq!(
            (list.grpc_service, list.grpc_method, list.grpc_type),
            ("hydroplane.v1.ProcessService", "List", "unary")
        );
        assert_eq!(method_of("/hydroplane.v1.ProcessService/Watch").grpc_type, "server_stream");
        assert_eq!(method_of("/evil.Service/x-1234").grpc_method, "unknown");
        assert_eq!(code_name(0), "OK");
        assert_eq!(code_name(3), "InvalidArgument");
        assert_eq!(code_name(tonic::Code::Cancelled as i32), "Canceled");
        assert_eq!(code_name(99), "Unknown");
    }
}
