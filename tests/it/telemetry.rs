//! Telemetry end to end, with the real server: `--log-format json` writes one JSON object per
//! line, audit lines and call spans included; with `tracing.otlp_endpoint`, a call's span
//! reaches an OTLP receiver (a small collector of our own, below) in the caller's trace, both on
//! the batch's schedule and, at shutdown, from what was left in the batch.

use std::net::SocketAddr;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::requests::{sleeper, sleeper_spec, start_request, stop_process};
use crate::common::{Server, create_token, token_client};
use hydroplane::proto;

/// The caller's trace, as a `traceparent` would carry it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
/// The caller's span, the parent of the server's.
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// How long a span may take to arrive.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_audit_lines_and_call_spans() {
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let ci_token = create_token(&tokens_file, "ci", "read,write", None);
    let reader_token = create_token(&tokens_file, "reader", "read", None);
    let mut server = Server::start_with_args(&[
        "--tokens-file",
        tokens_file.to_str().expect("utf-8"),
        "--log-format",
        "json",
    ]);
    let channel = Channel::from_shared(server.url()).expect("url").connect().await.expect("connect");
    let mut ci = token_client(channel.clone(), Some(&ci_token));
    let mut reader = token_client(channel.clone(), Some(&reader_token));
    let mut anonymous = token_client(channel.clone(), None);

    ci.start(proto::StartRequest { spec: Some(sleeper_spec("traced", Some("batch"))), ..Default::default() })
        .await
        .expect("ci starts traced");
    ci.list(proto::ListRequest::default()).await.expect("ci lists");
    let refused = reader
        .start(proto::StartRequest { spec: Some(sleeper_spec("not-yours", None)), ..Default::default() })
        .await
        .expect_err("a read token may not start");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let anonymous_list = anonymous.list(proto::ListRequest::default()).await.expect_err("no token");
    assert_eq!(anonymous_list.code(), Code::Unauthenticated);
    ci.stop(stop_process("traced")).await.expect("ci stops traced");
    // An open connection would hold the graceful shutdown for its drain timeout; this runtime
    // must stay free to close it while the server shuts down.
    drop((ci, reader, anonymous, channel));
    let (exit, stderr) =
        tokio::task::spawn_blocking(move || (server.terminate(), server.stderr())).await.expect("terminate");
    assert_eq!(exit, Some(0));

    for token in [&ci_token, &reader_token] {
        assert!(!stderr.contains(token.as_str()), "a token appears in the server's log");
    }
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => value,
            _ => panic!("a log line is not one JSON object: {line:?}"),
        })
        .collect();
    assert!(lines.iter().any(|line| line["fields"]["message"] == "serving"), "{stderr}");

    let audit = |call: &str, outcome: &str| {
        lines
            .iter()
            .find(|line| {
                line["target"] == "audit"
                    && line["fields"]["call"] == call
                    && line["fields"]["outcome"] == outcome
            })
            .unwrap_or_else(|| panic!("no {outcome} audit line of {call}:\n{stderr}"))
    };
    let start = audit("Start", "ok");
    assert_eq!(start["level"], "INFO");
    assert!(start["timestamp"].is_string(), "{start}");
    assert_eq!(start["fields"]["caller"], "ci");
    assert!(start["fields"]["peer"].as_str().is_some_and(|peer| peer.starts_with("127.0.0.1:")), "{start}");
    assert!(
        start["fields"]["target"]
            .as_str()
            .is_some_and(|target| target.contains("process traced in group batch")),
        "{start}"
    );
    // The audit line is inside the call's span, which names the method, caller and target.
    let span = &start["span"];
    assert_eq!(span["name"], "grpc call", "{start}");
    assert_eq!(span["rpc.method"], "Start");
    assert_eq!(span["rpc.service"], "hydroplane.v1.ProcessService");
    assert_eq!(span["caller"], "ci");
    assert_eq!(span["process"], "traced");
    assert_eq!(span["group"], "batch");

    let refused = audit("Start", "refused");
    assert_eq!(refused["fields"]["caller"], "reader");
    assert_eq!(refused["span"]["caller"], "reader", "{refused}");

    // Each call ends with one line carrying its code and duration.
    let closed = |method: &str, code: &str| {
        lines
            .iter()
            .find(|line| {
                line["fields"]["message"] == "close"
                    && line["span"]["rpc.method"] == method
                    && line["span"]["code"] == code
            })
            .unwrap_or_else(|| panic!("no end of a {method} call with {code}:\n{stderr}"))
    };
    let list = closed("List", "OK");
    assert_eq!(list["span"]["caller"], "ci");
    assert!(list["span"]["duration_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{list}");
    assert_eq!(closed("Start", "PermissionDenied")["span"]["rpc.grpc.status_code"], 7);
    // A caller without a token has no name; the span says so by leaving it out.
    assert!(closed("List", "Unauthenticated")["span"].get("caller").is_none());
    assert_eq!(closed("Stop", "OK")["span"]["process"], "traced");
}

#[tokio::test]
async fn a_calls_span_reaches_the_otlp_endpoint_in_the_callers_trace() {
    let receiver = Receiver::start().await;
    let directory = tempfile::tempdir().expect("tempdir");
    // A short batch delay: the span is exported while the server runs.
    let server = start_exporting_server(directory.path(), &receiver, "100");
    let mut client = server.client().await;
    client.list(traced(proto::ListRequest::default())).await.expect("list");

    let span = receiver.wait_for_span("List").await;
    assert_eq!(span.name, "hydroplane.v1.ProcessService/List");
    assert_eq!(hex(&span.trace_id), TRACE_ID, "the span continues the caller's trace");
    assert_eq!(hex(&span.parent_span_id), PARENT_SPAN_ID, "the caller's span is its parent");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(attribute(&span, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(attribute(&span, "code").as_deref(), Some("OK"));
    assert_eq!(attribute(&span, "caller").as_deref(), Some("anonymous"));
    assert_eq!(receiver.service_names(), ["hydroplane"]);

    // A Start names its process and group; its spec's environment goes nowhere.
    let mut spec = sleeper("exported");
    spec["group"] = "batch".into();
    spec["container"]["env"] = serde_json::json!([{"name": "PASSWORD", "value": "env-value-never-exported"}]);
    client.start(traced(start_request(spec))).await.expect("start");
    client.stop(stop_process("exported")).await.expect("stop");
    let start = receiver.wait_for_span("Start").await;
    assert_eq!(attribute(&start, "process").as_deref(), Some("exported"));
    assert_eq!(attribute(&start, "group").as_deref(), Some("batch"));
    let stop = receiver.wait_for_span("Stop").await;
    assert_ne!(hex(&stop.trace_id), TRACE_ID, "a call without traceparent starts its own trace");
    assert!(
        !format!("{:?}", receiver.received.borrow()).contains("env-value-never-exported"),
        "a spec's environment reached the trace"
    );

    drop(client);
    let (exit, stderr) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        (server.terminate(), server.stderr())
    })
    .await
    .expect("terminate");
    assert_eq!(exit, Some(0));
    // Text logs look as they do without export: no span in front of a line.
    assert!(stderr.contains("INFO audit: call done call=Start"), "{stderr}");
    assert!(!stderr.contains("grpc call"), "{stderr}");
}

#[tokio::test]
async fn spans_left_in_the_batch_are_exported_at_shutdown() {
    let receiver = Receiver::start().await;
    let directory = tempfile::tempdir().expect("tempdir");
    // A batch delay far beyond the test: only the shutdown's flush can export the span.
    let server = start_exporting_server(directory.path(), &receiver, "3600000");
    let mut client = server.client().await;
    client.list(traced(proto::ListRequest::default())).await.expect("list");
    drop(client);
    // The receiver answers while the server shuts down: this runtime must not be blocked.
    let exit = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.terminate()
    })
    .await
    .expect("terminate");
    assert_eq!(exit, Some(0));
    // The server exported before it exited: the span is there now, with no waiting.
    let span = receiver.span_of("List").expect("the List span was exported at shutdown");
    assert_eq!(hex(&span.trace_id), TRACE_ID);
}

#[test]
fn a_bad_otlp_endpoint_is_refused_at_load_naming_the_key() {
    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("hydroplane.yml");
    std::fs::write(&path, "tracing:\n  otlp_endpoint: 127.0.0.1:4317\n").expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0", "-c"])
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hydroplane");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tracing.otlp_endpoint must start with http:// or https://"), "{stderr}");
}

/// A server exporting to `receiver`, with `OTEL_BSP_SCHEDULE_DELAY` (milliseconds).
fn start_exporting_server(directory: &std::path::Path, receiver: &Receiver, batch_delay_ms: &str) -> Server {
    let config = directory.join("hydroplane.yml");
    std::fs::write(&config, format!("tracing:\n  otlp_endpoint: http://{}\n", receiver.address))
        .expect("write config");
    Server::start_with_env(
        &["-c", config.to_str().expect("utf-8")],
        &[("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms)],
    )
}

/// A request with the caller's trace context in its metadata.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    request.metadata_mut().insert("traceparent", traceparent.parse().expect("ASCII"));
    request
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A span's string attribute.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|attribute| attribute.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

type Span = opentelemetry_proto::tonic::trace::v1::Span;

/// What the receiver got: each span with its resource's `service.name`.
type Received = Vec<(Option<String>, Span)>;

/// An OTLP/gRPC trace receiver on a free loopback port, collecting every span exported to it.
struct Receiver {
    address: SocketAddr,
    received: tokio::sync::watch::Receiver<Received>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the receiver");
        let address = listener.local_addr().expect("address");
        let (sender, received) = tokio::sync::watch::channel(Vec::new());
        let service = TraceServiceServer::new(Collector { received: sender });
        // The task ends with the test's runtime.
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Receiver { address, received }
    }

    /// The first span received of a method of the process service, if any.
    fn span_of(&self, method: &str) -> Option<Span> {
        self.received
            .borrow()
            .iter()
            .map(|(_, span)| span)
            .find(|span| attribute(span, "rpc.method").as_deref() == Some(method))
            .cloned()
    }

    /// Waits (bounded) for a span of a method of the process service.
    async fn wait_for_span(&self, method: &str) -> Span {
        let mut received = self.received.clone();
        let arrived = tokio::time::timeout(
            EXPORT_TIMEOUT,
            received.wait_for(|spans| {
                spans.iter().any(|(_, span)| attribute(span, "rpc.method").as_deref() == Some(method))
            }),
        )
        .await;
        assert!(
            matches!(arrived, Ok(Ok(_))),
            "no span of {method} within {EXPORT_TIMEOUT:?}; got {:?}",
            self.received.borrow().iter().map(|(_, span)| span.name.clone()).collect::<Vec<_>>()
        );
        self.span_of(method).expect("the span that arrived")
    }

    /// Every distinct `service.name` the spans came with.
    fn service_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.received.borrow().iter().map(|(name, _)| name.clone().unwrap_or_default()).collect();
        names.dedup();
        names
    }
}

/// The receiver's gRPC service.
struct Collector {
    received: tokio::sync::watch::Sender<Received>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.received.send_modify(|received| {
            for resource_spans in request.resource_spans {
                let service_name = resource_spans.resource.as_ref().and_then(|resource| {
                    let value =
                        resource.attributes.iter().find(|kv| kv.key == "service.name")?.value.as_ref()?;
                    match value.value.as_ref()? {
                        any_value::Value::StringValue(name) => Some(name.clone()),
                        _ => None,
                    }
                });
                for scope_spans in resource_spans.scope_spans {
                    received.extend(scope_spans.spans.into_iter().map(|span| (service_name.clone(), span)));
                }
            }
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}
