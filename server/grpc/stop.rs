//! `Stop`: parse the target, then stop.

use tonic::Status;

use crate::app::AppError;
use crate::app::Processes;
use crate::grpc::{audit, convert};
use crate::proto::{self, stop_request::Target};
use crate::runtime::StopTarget;
use crate::security::access::Caller;
use crate::spec::{Violations, dns_label_rule};
use crate::telemetry::call;
use crate::transport::connections::Peer;

/// Checks the request's target.
pub fn parse(request: proto::StopRequest) -> Result<StopTarget, AppError> {
    let mut violations = Violations::default();
    let target = match request.target {
        Some(Target::ProcessName(name)) => {
            if let Err(rule) = dns_label_rule(&name) {
                violations.add("process_name", rule);
            }
            StopTarget::Process(name)
        }
        Some(Target::Group(group)) => {
            if let Err(rule) = dns_label_rule(&group) {
                violations.add("group", rule);
            }
            StopTarget::Group(group)
        }
        Some(Target::LabelSelector(selector)) => {
            match convert::selector_from_proto(Some(&selector), &mut violations) {
                Some(selector) => StopTarget::Selector(selector),
                None => {
                    if selector.trim().is_empty() {
                        violations.add(
                            "label_selector",
                            "is empty, which would stop every process; give requirements (`tier=web`), or stop a group",
                        );
                    }
                    StopTarget::Process(String::new())
                }
            }
        }
        None => {
            violations.add("target", "give a `process_name`, a `group` or a `label_selector`");
            StopTarget::Process(String::new())
        }
    };
    violations.into_fields_result()?;
    Ok(target)
}

/// Handles one Stop call, with its audit line.
pub async fn handle(
    processes: &Processes,
    request: proto::StopRequest,
    caller: &Caller,
    peer: &Peer,
) -> Result<proto::StopResponse, Status> {
    let target = audit::stop_target(&request);
    match &request.target {
        Some(Target::ProcessName(name)) => call::record_target(Some(name), None),
        Some(Target::Group(group)) => call::record_target(None, Some(group)),
        Some(Target::LabelSelector(_)) | None => {}
    }
    let result = match parse(request) {
        Ok(stop_target) => processes.stop(stop_target, caller).await,
        Err(error) => Err(error),
    }
    .map(|stopped| proto::StopResponse { stopped });
    audit::answer("Stop", caller, peer, &target, result)
}
