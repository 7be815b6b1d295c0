//! `Watch`: a stream fed from the runtime's process table; it ends when the client hangs up.

use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

use crate::app::{AppError, Processes};
use crate::grpc::convert;
use crate::grpc::wire::WatchReply;
use crate::metrics::Metrics;
use crate::proto;
use crate::security::access::Caller;
use crate::spec::Violations;
use crate::table::{Filter, WatchEvent};
use crate::telemetry::call;

/// The stream a Watch call answers with, as owned messages (for in-process callers of the
/// service trait).
pub type WatchStream = BoxStream<'static, Result<proto::WatchEvent, Status>>;

/// The stream a Watch call answers with, as the server sends it: each event encoded from the
/// table's shared entry ([`WatchReply`]).
pub type WatchReplies = BoxStream<'static, Result<WatchReply, Status>>;

/// Handles one Watch call.
pub fn handle(
    processes: &Processes,
    request: proto::WatchRequest,
    caller: &Caller,
) -> Result<WatchReplies, Status> {
    call::record_target(request.process_name.as_deref(), request.group.as_deref());
    let mut violations = Violations::default();
    let selector = convert::selector_from_proto(request.label_selector.as_deref(), &mut violations);
    violations.into_fields_result().map_err(AppError::from)?;
    let filter =
        Filter { group: request.group, process_name: request.process_name, selector, ..Filter::default() };
    let events = processes.watch(filter, request.since_revision, caller);
    let open = processes.metrics().map(|metrics| OpenWatch::new(Arc::clone(metrics)));
    Ok(events
        .map(move |event| {
            if let (Some(open), WatchEvent::Reset { .. }) = (&open, &event) {
                open.metrics.domain.watch_resets.inc();
            }
            Ok(WatchReply::new(event))
        })
        .boxed())
}

/// One open Watch stream in the `hydroplane_watch_streams` gauge, until the stream is dropped.
struct OpenWatch {
    metrics: Arc<Metrics>,
}

impl OpenWatch {
    fn new(metrics: Arc<Metrics>) -> OpenWatch {
        metrics.domain.watch_streams.inc();
        OpenWatch { metrics }
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.metrics.domain.watch_streams.dec();
    }
}
