//! What the server tells the people who operate it, beside the audit log: log lines as text or
//! JSON (`--log-format`), a span per gRPC call ([`call`]), and, when `tracing.otlp_endpoint` is
//! set, those spans exported over OTLP so that a call shows up in the caller's trace.
//!
//! Where to start: [`init`], which `main` calls once, before the first log line, and
//! [`call::CallSpanLayer`], the tower layer in front of the guard.
//!
//! Invariants: without an endpoint and with text logs, the server writes exactly what it wrote
//! before telemetry existed (the text format never shows call spans, and with no one to consume
//! them, call spans are not even made). Spans and log lines carry token names, never tokens, and
//! process and group names, never a spec's environment.

pub mod call;
pub mod settings;

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

pub use settings::{OtlpEndpoint, TracingSettings};

/// The name the server's spans are exported under (`service.name`), unless `OTEL_SERVICE_NAME`
/// says otherwise.
const SERVICE_NAME: &str = "hydroplane";

/// How log lines on stderr are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, with its fields as `key=value`.
    #[default]
    Text,
    /// For log collectors: one JSON object per line, with the event's fields and the call span's.
    Json,
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built for the endpoint.
    #[error("cannot set up the OTLP exporter for tracing.otlp_endpoint {endpoint}: {source}")]
    BuildExporter {
        /// The configured endpoint.
        endpoint: OtlpEndpoint,
        /// The exporter's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// A global subscriber was set already (a second `init`).
    #[error("cannot install the log subscriber: {0}")]
    Install(#[from] tracing_subscriber::util::TryInitError),
}

/// The telemetry set up by [`init`]; [`Telemetry::shutdown`] exports what is left.
#[must_use = "call shutdown at exit, or spans still in the batch are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still waiting in the batch and stops the exporter. Call it outside the
    /// async runtime (the export runs on it), while the runtime still exists.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not export the last spans to the OTLP endpoint");
        }
    }
}

/// Installs the global log subscriber: `filter` (RUST_LOG) decides which lines are written, in
/// `format`; with `tracing`, call spans are exported over OTLP as well. Must run inside the tokio
/// runtime (`Runtime::enter`): the batch exporter is a task on it.
pub fn init(
    format: LogFormat,
    filter: EnvFilter,
    tracing: Option<&TracingSettings>,
) -> Result<Telemetry, TelemetryError> {
    let provider = tracing.map(|settings| tracer_provider(&settings.otlp_endpoint)).transpose()?;
    let export = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            // Our spans and what happens inside them; never the exporter's own HTTP/2 client,
            // whose spans would be exported in turn.
            .with_filter(filter_fn(|metadata| {
                let target = metadata.target();
                metadata.level() <= &tracing::Level::INFO
                    && (target == "hydroplane" || target.starts_with("hydroplane::"))
            }))
    });
    // One of the two formats, each behind RUST_LOG's filter.
    let (text, json) = match format {
        LogFormat::Text => {
            let text = fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a terminal: log files and journald get plain text.
                .with_ansi(std::io::stderr().is_terminal())
                // Text lines stay as they were: call spans are for JSON and OTLP.
                .with_filter(filter.and(filter_fn(|metadata| {
                    !(metadata.is_span() && metadata.target() == call::CALL_SPAN_TARGET)
                })));
            (Some(text), None)
        }
        LogFormat::Json => {
            let json = fmt::layer()
                .json()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                // One line when a call ends, with its code and duration in the span's fields.
                .with_span_events(fmt::format::FmtSpan::CLOSE)
                .with_filter(filter);
            (None, Some(json))
        }
    };
    tracing_subscriber::registry().with(export).with(text).with(json).try_init()?;
    Ok(Telemetry { provider })
}

/// The tracer provider that batches spans and exports them to `endpoint` over OTLP/gRPC. The
/// batch's timing and size follow the standard `OTEL_BSP_*` variables (5 s by default).
fn tracer_provider(endpoint: &OtlpEndpoint) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder =
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.as_str());
    if endpoint.is_https() {
        // The collector's certificate is checked against the system's roots, with ring.
        builder = builder.with_tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots());
    }
    let exporter = builder
        .build()
        .map_err(|source| TelemetryError::BuildExporter { endpoint: endpoint.clone(), source })?;
    let processor = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build();
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(SERVICE_NAME);
    }
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource.build()).build())
}
