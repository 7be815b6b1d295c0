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

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt};

use crate::config::{OtlpEndpoint, TracingSettings};

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
    subscriber(format, filter, provider.as_ref()).try_init()?;
    Ok(Telemetry { provider })
}

/// The subscriber [`init`] installs: one log format behind `filter`, and the OTLP layer when there
/// is a provider.
fn subscriber(
    format: LogFormat,
    filter: EnvFilter,
    provider: Option<&SdkTracerProvider>,
) -> impl tracing::Subscriber + Send + Sync + 'static {
    // Boxed layers in one list, rather than optional ones: a layer that is absent must not count
    // as one that wants every span, or call spans would be made for no one.
    let mut layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = Vec::new();
    if let Some(provider) = provider {
        let export = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE_NAME))
            // Our spans and what happens inside them; never the exporter's own HTTP/2 client,
            // whose spans would be exported in turn.
            .with_filter(filter_fn(|metadata| {
                let target = metadata.target();
                metadata.level() <= &tracing::Level::INFO
                    && (target == "hydroplane" || target.starts_with("hydroplane::"))
            }));
        layers.push(export.boxed());
    }
    // One of the two formats, behind RUST_LOG's filter.
    let log = match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            // Colour codes only for a terminal: log files and journald get plain text.
            .with_ansi(std::io::stderr().is_terminal())
            // Text lines stay as they were: call spans are for JSON and OTLP.
            .with_filter(filter.and(filter_fn(|metadata| {
                !(metadata.is_span() && metadata.target() == call::CALL_SPAN_TARGET)
            })))
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            // One line when a call ends, with its code and duration in the span's fields.
            .with_span_events(fmt::format::FmtSpan::CLOSE)
            .with_filter(filter)
            .boxed(),
    };
    layers.push(log);
    tracing_subscriber::registry().with(layers)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether a call span is made under the subscriber of this format and provider.
    fn call_span_made(format: LogFormat, provider: Option<&SdkTracerProvider>) -> bool {
        let subscriber = subscriber(format, EnvFilter::new("info"), provider);
        tracing::subscriber::with_default(subscriber, || {
            !call::call_span("/hydroplane.v1.ProcessService/List", &http::HeaderMap::new()).is_disabled()
        })
    }

    #[test]
    fn call_spans_are_made_only_when_something_consumes_them() {
        // Text logs without export: nothing would show a span, so none is made.
        assert!(!call_span_made(LogFormat::Text, None));
        assert!(call_span_made(LogFormat::Json, None));
        let provider = SdkTracerProvider::builder().build();
        assert!(call_span_made(LogFormat::Text, Some(&provider)));
    }
}
