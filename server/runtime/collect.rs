//! What a metrics scrape reads from a runtime: its processes by status and its index's health
//! ([`RuntimeCollector`]). Read at scrape time, it costs nothing between scrapes and cannot drift
//! from the truth. The caller that owns both the runtime and the metrics registers it
//! ([`crate::app::Processes::with_metrics`]); the metrics module knows no runtime.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::runtime::Runtime;
use crate::spec::ProcessStatus;

/// Every status, with the name the API gives it.
const STATUSES: [(ProcessStatus, &str); 5] = [
    (ProcessStatus::Starting, "STARTING"),
    (ProcessStatus::Running, "RUNNING"),
    (ProcessStatus::Failed, "FAILED"),
    (ProcessStatus::Exited, "EXITED"),
    (ProcessStatus::Stopping, "STOPPING"),
];

/// The labels of `hydroplane_processes`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    runtime: &'static str,
    status: &'static str,
}

/// The runtime's processes by status, and its index's health, read at each scrape.
pub struct RuntimeCollector {
    runtime: Arc<dyn Runtime>,
}

impl RuntimeCollector {
    /// A collector of `runtime`.
    pub fn new(runtime: Arc<dyn Runtime>) -> RuntimeCollector {
        RuntimeCollector { runtime }
    }
}

impl fmt::Debug for RuntimeCollector {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("RuntimeCollector").finish_non_exhaustive()
    }
}

impl Collector for RuntimeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let runtime = &self.runtime;
        let counts = runtime.table().status_counts();
        {
            let mut family = encoder.encode_descriptor(
                "hydroplane_processes",
                "Processes the runtime knows, by status",
                None,
                MetricType::Gauge,
            )?;
            // Every status, zeros included, so that a series does not vanish when it empties.
            for (status, name) in STATUSES {
                let labels = ProcessLabels { runtime: runtime.name(), status: name };
                let count = counts.get(&status).copied().unwrap_or(0);
                ConstGauge::new(i64::try_from(count).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(sync) = runtime.index_sync() {
            let synced = encoder.encode_descriptor(
                "hydroplane_index_synced",
                "1 when every watch of the runtime's index has listed once and none is failing, else 0",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(sync.synced)).encode(synced)?;
            let staleness = encoder.encode_descriptor(
                "hydroplane_index_staleness_seconds",
                "0 while the index is synced; otherwise seconds since it last heard from the cluster",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(sync.staleness.as_secs_f64()).encode(staleness)?;
            if let Some(in_use) = sync.node_ports_in_use {
                let node_ports = encoder.encode_descriptor(
                    "hydroplane_kube_node_ports_in_use",
                    "NodePorts held by the runtime's Services (public processes with runtime.public_exposure: node_port); the cluster has 2,768 unless its API server was given another --service-node-port-range",
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(i64::try_from(in_use).unwrap_or(i64::MAX)).encode(node_ports)?;
            }
        }
        Ok(())
    }
}
