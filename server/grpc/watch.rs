//! `Watch`: a stream fed from the runtime's process table; it ends when the client hangs up.

use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

use crate::app::Processes;
use crate::grpc::convert;
use crate::proto;
use crate::security::access::Caller;
use crate::table::Filter;
use crate::telemetry::call;

/// The stream a Watch call answers with.
pub type WatchStream = BoxStream<'static, Result<proto::WatchEvent, Status>>;

/// Handles one Watch call.
pub fn handle(
    processes: &Processes,
    request: proto::WatchRequest,
    caller: &Caller,
) -> Result<WatchStream, Status> {
    call::record_target(request.process_name.as_deref(), request.group.as_deref());
    let filter = Filter { group: request.group, process_name: request.process_name, ..Filter::default() };
    let events = processes.watch(filter, request.since_revision, caller);
    Ok(tokio_stream::wrappers::ReceiverStream::new(events)
        .map(|event| Ok(convert::watch_event_to_proto(event)))
        .boxed())
}
