//! `Stop`: parse the target, then stop.

use tonic::Status;

use crate::app::Processes;
use crate::proto::{self, stop_request::Target};
use crate::runtime::{RuntimeError, StopTarget};
use crate::spec::{Violations, dns_label_rule};

/// Checks the request's target.
pub fn parse(request: proto::StopRequest) -> Result<StopTarget, RuntimeError> {
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
        None => {
            violations.add("target", "give a `process_name` or a `group`");
            StopTarget::Process(String::new())
        }
    };
    violations.into_result()?;
    Ok(target)
}

/// Handles one Stop call.
pub async fn handle(
    processes: &Processes,
    request: proto::StopRequest,
) -> Result<proto::StopResponse, Status> {
    let target = parse(request)?;
    let stopped = processes.stop(target).await?;
    Ok(proto::StopResponse { stopped })
}
