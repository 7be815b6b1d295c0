//! `Describe`: check the name, then answer from the table, the runtime's stored spec and its
//! events.

use tonic::Status;

use crate::app::{AppError, Processes};
use crate::grpc::audit;
use crate::grpc::convert;
use crate::grpc::guard::Peer;
use crate::proto;
use crate::security::access::Caller;
use crate::spec::{Violations, dns_label_rule};
use crate::telemetry::call;

/// Checks the request's process name.
pub fn parse(request: &proto::DescribeRequest) -> Result<&str, AppError> {
    let mut violations = Violations::default();
    if let Err(rule) = dns_label_rule(&request.process_name) {
        violations.add("process_name", rule);
    }
    violations.into_fields_result()?;
    Ok(&request.process_name)
}

/// Handles one Describe call, with its audit line.
pub async fn handle(
    processes: &Processes,
    request: proto::DescribeRequest,
    caller: &Caller,
    peer: &Peer,
) -> Result<proto::ProcessDetail, Status> {
    let target = audit::describe_target(&request);
    call::record_target(Some(&request.process_name), None);
    let result = match parse(&request) {
        Ok(name) => processes.describe(name, caller).await,
        Err(error) => Err(error),
    }
    .map(convert::detail_to_proto);
    audit::answer("Describe", caller, peer, &target, result)
}
