//! `List`: one page, served from the runtime's process table, with no call to the runtime's
//! backend.

use tonic::Status;

use crate::app::{AppError, Processes};
use crate::grpc::convert;
use crate::grpc::wire::ListReply;
use crate::proto;
use crate::security::access::Caller;
use crate::spec::Violations;
use crate::table::Filter;
use crate::table::listing::PageQuery;
use crate::telemetry::call;

/// Checks the request: its selector, and its paging.
pub fn parse(request: proto::ListRequest) -> Result<(Filter, PageQuery), AppError> {
    let mut violations = Violations::default();
    let selector = convert::selector_from_proto(request.label_selector.as_deref(), &mut violations);
    violations.into_fields_result()?;
    let size = usize::try_from(request.page_size).unwrap_or(usize::MAX);
    let filter = Filter { group: request.group, selector, ..Filter::default() };
    let token = request.page_token.filter(|token| !token.is_empty());
    Ok((filter, PageQuery { size, token, ..PageQuery::default() }))
}

/// Handles one List call; the answer is encoded from the table's entries without copying them
/// ([`ListReply`]).
pub fn handle(
    processes: &Processes,
    request: proto::ListRequest,
    caller: &Caller,
) -> Result<ListReply, Status> {
    call::record_target(None, request.group.as_deref());
    let (filter, page) = parse(request)?;
    let stale_reason = processes.staleness();
    let page = processes.list(filter, page, caller)?;
    Ok(ListReply::new(page.processes, stale_reason, page.next_page_token, page.revision))
}
