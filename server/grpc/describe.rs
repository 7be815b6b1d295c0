//! `Describe`: check the name, then answer from the table, the runtime's stored spec and its
//! events.

use tonic::Status;

use crate::app::{AppError, Processes};
use crate::grpc::audit;
use crate::grpc::convert;
use crate::proto;
use crate::security::access::{Caller, Scope};
use crate::spec::{Violations, dns_label_rule};
use crate::telemetry::call;
use crate::transport::connections::Peer;

/// Checks the request's process name.
pub fn parse(request: &proto::DescribeRequest) -> Result<&str, AppError> {
    let mut violations = Violations::default();
    if let Err(rule) = dns_label_rule(&request.process_name) {
        violations.add("process_name", rule);
    }
    violations.into_fields_result()?;
    Ok(&request.process_name)
}

/// What a literal env value reads as for a caller without `admin`.
pub const REDACTED: &str = "<redacted: literal env values are shown to admin tokens only>";

/// The detail with every literal env value replaced by [`REDACTED`] (names and secret
/// references stay). `read` lets dashboards see what runs; literal values are often
/// passwords, which `Logs` (its own scope) does not show either, so they are shown to `admin`
/// only.
fn redact_env(mut detail: proto::ProcessDetail) -> proto::ProcessDetail {
    use proto::environment_variable::Source;
    let variables = detail
        .spec
        .iter_mut()
        .flat_map(|spec| spec.container.iter_mut())
        .flat_map(|container| container.env.iter_mut());
    for variable in variables {
        if let Some(Source::Value(value)) = &mut variable.source {
            REDACTED.clone_into(value);
        }
    }
    detail
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
    .map(convert::detail_to_proto)
    .map(|detail| if caller.has(Scope::Admin) { detail } else { redact_env(detail) });
    audit::answer("Describe", caller, peer, &target, result)
}
