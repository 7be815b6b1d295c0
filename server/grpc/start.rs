//! `Start`: parse the request into a validated spec and a wait, then start.

use std::time::Duration;

use tonic::Status;

use crate::app::{DEFAULT_WAIT, MAX_WAIT, Processes};
use crate::grpc::convert;
use crate::proto;
use crate::runtime::RuntimeError;
use crate::spec::{ProcessSpec, Violations};

/// A parsed Start request.
pub struct Start {
    spec: ProcessSpec,
    wait: Option<Duration>,
}

impl Start {
    /// Checks the request: every problem of the spec and of the wait is reported together.
    pub fn parse(request: proto::StartRequest) -> Result<Start, RuntimeError> {
        let mut violations = Violations::default();
        let wait_timeout = match request.wait_timeout {
            None => DEFAULT_WAIT,
            Some(timeout) => match Duration::try_from(timeout) {
                Ok(timeout) if timeout <= MAX_WAIT => timeout,
                _ => {
                    violations.add("wait_timeout", format!("must be between 0 and {}s", MAX_WAIT.as_secs()));
                    DEFAULT_WAIT
                }
            },
        };
        let spec = convert::spec_from_proto(request.spec);
        let spec = match (spec, violations.into_result()) {
            (Ok(spec), Ok(())) => spec,
            (Err(mut invalid), Err(wait_problem)) => {
                invalid.0.extend(wait_problem.0);
                return Err(invalid.into());
            }
            (Err(invalid), Ok(())) | (Ok(_), Err(invalid)) => return Err(invalid.into()),
        };
        Ok(Start { spec, wait: request.wait.then_some(wait_timeout) })
    }

    /// Starts the process.
    pub async fn apply(self, processes: &Processes) -> Result<proto::StartResponse, RuntimeError> {
        let started = processes.start(self.spec, self.wait).await?;
        Ok(proto::StartResponse {
            process: Some(convert::info_to_proto(started.process)),
            created: started.created,
        })
    }
}

/// Handles one Start call.
pub async fn handle(
    processes: &Processes,
    request: proto::StartRequest,
) -> Result<proto::StartResponse, Status> {
    Ok(Start::parse(request)?.apply(processes).await?)
}
