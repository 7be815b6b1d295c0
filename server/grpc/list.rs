//! `List`: served from the runtime's process table, with no call to the runtime's backend.

use tonic::Status;

use crate::app::Processes;
use crate::grpc::convert;
use crate::proto;
use crate::security::access::Caller;
use crate::table::Filter;
use crate::telemetry::call;

/// Handles one List call.
pub fn handle(
    processes: &Processes,
    request: proto::ListRequest,
    caller: &Caller,
) -> Result<proto::ListResponse, Status> {
    call::record_target(None, request.group.as_deref());
    let filter = Filter { group: request.group, ..Filter::default() };
    let stale_reason = processes.staleness();
    let processes = processes.list(filter, caller).iter().map(convert::info_to_proto).collect();
    Ok(proto::ListResponse { processes, stale_reason, ..proto::ListResponse::default() })
}
