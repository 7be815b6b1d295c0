//! Prometheus metrics, served on their own listener (`metrics: {listen: HOST:PORT}`) at
//! `GET /metrics` in the text format of `prometheus-client`, the official Rust client: no
//! exposition is written by hand here.
//!
//! Why it is shaped this way:
//! - The names are the conventional ones, so stock dashboards work unchanged: go-grpc-prometheus
//!   for the gRPC server ([`grpc`], one tower layer in front of every service, the guard
//!   included, so refused calls are counted with their codes), client-go's for Kubernetes API
//!   requests ([`rest`], one layer in the kube client's stack), the standard `process_*` ones.
//! - What a scrape can read from existing state (processes by status, the index's health, the
//!   server's own memory, CPU and files) is read at scrape time ([`collect`]) rather than kept
//!   up to date on every change: it costs nothing between scrapes, and cannot drift.
//! - Labels have bounded values only: method and service names come from a fixed table, codes
//!   and statuses from enums, Kubernetes resources from a fixed list. No process name, group,
//!   token or secret is ever a label value, so a caller cannot blow up the series count, and no
//!   secret can leak through a scrape.
//! - The registry is an `Arc<Metrics>` handed to what needs it ([`crate::app::Processes`], the
//!   gRPC layer, the listener). This module knows no runtime: the runtime's own collector is
//!   registered by the app, which owns both ([`Metrics::register_collector`]). The Kubernetes client and the index are built deep inside the
//!   runtime set-up, several calls away from `main`; for those few places [`backend`] is a
//!   process-wide `OnceLock`, set once by [`Metrics::install`], and empty (every count a no-op)
//!   when metrics are off.
//!
//! Where to start: [`Metrics::install`], then [`http::serve`].

pub mod collect;
pub mod grpc;
pub mod http;
pub mod rest;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the server keeps, and the registry that encodes them.
pub struct Metrics {
    /// Behind a lock only so that collectors can be registered after the registry is shared;
    /// it is held while one scrape encodes, never across an await.
    registry: Mutex<Registry>,
    /// The gRPC server's metrics, recorded by the [`grpc`] layer.
    pub grpc: grpc::GrpcMetrics,
    /// The process service's own metrics.
    pub domain: DomainMetrics,
    /// The backends' metrics (see [`backend`]).
    pub backend: BackendMetrics,
}

/// The outcome label of a Start or Stop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `created`, `existing`, `stopped`, or the error's kind (`invalid`, `denied`,
    /// `already_exists`, `not_found`, `timed_out`, `failed`).
    pub outcome: &'static str,
}

/// The process service's metrics: what handlers and the culler record.
pub struct DomainMetrics {
    /// Starts by outcome.
    pub starts: Family<OutcomeLabels, Counter>,
    /// Stops by outcome.
    pub stops: Family<OutcomeLabels, Counter>,
    /// Seconds from a process's creation to its first RUNNING.
    pub start_to_running: Histogram,
    /// Open Watch streams.
    pub watch_streams: Gauge,
    /// RESET events sent to Watch streams.
    pub watch_resets: Counter,
    /// Passes of the culler.
    pub culler_passes: Counter,
    /// Processes the culler stopped.
    pub culled: Counter,
    /// Lists of a whole group, by answer: `kept` (the kept answer was sent) or `made`.
    pub group_answers: Family<OutcomeLabels, Counter>,
    /// The bytes of the kept answers to group Lists.
    pub group_answer_bytes: Gauge,
}

/// The metrics of the backends, reached through [`backend`].
pub struct BackendMetrics {
    /// Kubernetes API requests and their latency.
    pub rest: rest::RestMetrics,
    /// Failed watches of the index, by resource (each is retried: a watch restart).
    pub index_watch_errors: Family<rest::ResourceLabels, Counter>,
    /// Renewals of AWS credentials and EKS tokens, by outcome.
    pub renewals: Family<RenewalLabels, Counter>,
    /// Secret store operations, by outcome.
    pub secret_operations: Family<SecretOperationLabels, Counter>,
}

/// The labels of a credential renewal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RenewalLabels {
    /// `aws_credentials` or `eks_token`.
    pub credential: &'static str,
    /// `renewed` or `failed`.
    pub outcome: &'static str,
}

/// The labels of a secret store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretOperationLabels {
    /// `resolve`.
    pub operation: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Counts a renewal of a backend credential (`aws_credentials`, `eks_token`), when metrics are
/// on.
pub fn count_renewal(credential: &'static str, renewed: bool) {
    if let Some(metrics) = backend() {
        let outcome = if renewed { "renewed" } else { "failed" };
        metrics.renewals.get_or_create(&RenewalLabels { credential, outcome }).inc();
    }
}

/// Counts a secret store operation, when metrics are on.
pub fn count_secret_operation(operation: &'static str, ok: bool) {
    if let Some(metrics) = backend() {
        let outcome = if ok { "ok" } else { "error" };
        metrics.secret_operations.get_or_create(&SecretOperationLabels { operation, outcome }).inc();
    }
}

static BACKEND: OnceLock<Arc<Metrics>> = OnceLock::new();

/// The metrics of the backends deep in the runtimes, when metrics are on.
pub fn backend() -> Option<&'static BackendMetrics> {
    BACKEND.get().map(|metrics| &metrics.backend)
}

impl Metrics {
    /// Makes the registry with every metric, and makes it the one [`backend`] returns (the
    /// first one made wins; later ones, as in tests, still count their own calls).
    pub fn install() -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::new());
        let _ = BACKEND.set(Arc::clone(&metrics));
        metrics
    }

    /// A registry with every metric, not installed for the backends.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let grpc = grpc::GrpcMetrics::register(&mut registry);
        let domain = DomainMetrics {
            starts: Family::default(),
            stops: Family::default(),
            // 50 ms to about 14 minutes.
            start_to_running: Histogram::new(exponential_buckets(0.05, 2.0, 15)),
            watch_streams: Gauge::default(),
            watch_resets: Counter::default(),
            culler_passes: Counter::default(),
            culled: Counter::default(),
            group_answers: Family::default(),
            group_answer_bytes: Gauge::default(),
        };
        registry.register(
            "hydroplane_process_starts",
            "Start calls that reached the runtime, by outcome",
            domain.starts.clone(),
        );
        registry.register("hydroplane_process_stops", "Stop calls, by outcome", domain.stops.clone());
        registry.register(
            "hydroplane_process_start_to_running_seconds",
            "Seconds from a process's creation to its first RUNNING status",
            domain.start_to_running.clone(),
        );
        registry.register("hydroplane_watch_streams", "Open Watch streams", domain.watch_streams.clone());
        registry.register(
            "hydroplane_watch_resets",
            "RESET events sent to Watch streams",
            domain.watch_resets.clone(),
        );
        registry.register(
            "hydroplane_culler_passes",
            "Passes of the process culler",
            domain.culler_passes.clone(),
        );
        registry.register(
            "hydroplane_culled_processes",
            "Processes the culler stopped",
            domain.culled.clone(),
        );
        registry.register(
            "hydroplane_list_group_answers",
            "Lists of a whole group, by whether the kept answer was sent (kept) or one was made (made)",
            domain.group_answers.clone(),
        );
        registry.register(
            "hydroplane_list_group_answer_bytes",
            "Bytes of the answers to group Lists kept until their group changes",
            domain.group_answer_bytes.clone(),
        );
        let backend = BackendMetrics {
            rest: rest::RestMetrics::register(&mut registry),
            index_watch_errors: Family::default(),
            renewals: Family::default(),
            secret_operations: Family::default(),
        };
        registry.register(
            "hydroplane_credential_renewals",
            "Renewals of AWS credentials and EKS tokens, by credential and outcome",
            backend.renewals.clone(),
        );
        registry.register(
            "hydroplane_secret_store_operations",
            "Secret store operations, by operation and outcome",
            backend.secret_operations.clone(),
        );
        registry.register(
            "hydroplane_index_watch_errors",
            "Failed watches of the Kubernetes index, by resource; each is retried with backoff",
            backend.index_watch_errors.clone(),
        );
        registry.register_collector(Box::new(collect::ProcessCollector));
        Metrics { registry: Mutex::new(registry), grpc, domain, backend }
    }

    /// Reports what `collector` reads at every scrape from now on: how a module this one does
    /// not know (the runtime) is scraped, wired by the caller that owns both.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner).register_collector(collector);
    }

    /// The text exposition of every metric, as a scrape gets it.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The content type of [`Metrics::encode`]'s text (OpenMetrics, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use crate::config::Settings;

    #[test]
    fn the_listen_address_is_checked_at_load() {
        let settings = Settings::parse("metrics:\n  listen: 127.0.0.1:9464\n").expect("valid settings");
        assert_eq!(settings.metrics.map(|metrics| metrics.listen.port()), Some(9464));
        let error = Settings::parse("metrics:\n  listen: localhost\n").expect_err("not an address");
        assert!(error.contains("metrics.listen must be an IP address and a port"), "{error}");
        assert!(Settings::parse("metrics:\n  port: 1\n").is_err());
        assert_eq!(Settings::parse("").expect("no settings").metrics, None);
    }

    #[test]
    fn renewals_and_secret_operations_are_counted_by_outcome() {
        let metrics = super::Metrics::install();
        super::count_renewal("eks_token", true);
        super::count_secret_operation("resolve", false);
        let text = metrics.encode().expect("encodes");
        // No other test installs a registry, so this one is the backends'.
        let renewed = r#"hydroplane_credential_renewals_total{credential="eks_token",outcome="renewed"} 1"#;
        assert!(text.contains(renewed), "{text}");
        let failed = r#"hydroplane_secret_store_operations_total{operation="resolve",outcome="error"} 1"#;
        assert!(text.contains(failed), "{text}");
    }
}
