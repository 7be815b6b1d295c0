//! `Start`: parse the request into a validated spec and a wait, then start.

use std::time::Duration;

use tonic::Status;

use crate::app::AppError;
use crate::app::{DEFAULT_WAIT, MAX_WAIT, Processes};
use crate::grpc::audit;
use crate::grpc::convert;
use crate::proto;
use crate::security::access::Caller;
use crate::spec::{ValidSpec, Violations};
use crate::telemetry::call;
use crate::transport::connections::Peer;

/// A parsed Start request.
pub struct Start {
    spec: ValidSpec,
    wait: Option<Duration>,
}

impl Start {
    /// Checks the request: every problem of the spec and of the wait is reported together.
    pub fn parse(request: proto::StartRequest) -> Result<Start, AppError> {
        let mut violations = Violations::default();
        let wait_timeout = match request.wait_timeout {
            None => DEFAULT_WAIT,
            Some(timeout) => wait_from_proto(timeout).unwrap_or_else(|rule| {
                violations.add("wait_timeout", rule);
                DEFAULT_WAIT
            }),
        };
        let spec = violations.and(convert::spec_from_proto(request.spec))?;
        Ok(Start { spec, wait: request.wait.then_some(wait_timeout) })
    }

    /// Starts the process on the caller's behalf.
    pub async fn apply(
        self,
        processes: &Processes,
        caller: &Caller,
    ) -> Result<proto::StartResponse, AppError> {
        let started = processes.start(self.spec, self.wait, caller).await?;
        Ok(proto::StartResponse {
            process: Some(convert::info_to_proto(&started.process)),
            created: started.created,
        })
    }
}

/// The wait a caller asked for, checked as the wire gave it: nanos in `0..1e9` (so a value is
/// never silently carried into seconds, and a negative part is never mixed with a positive one)
/// and at most [`MAX_WAIT`]. The rule quotes the value given.
pub fn wait_from_proto(timeout: prost_types::Duration) -> Result<Duration, String> {
    let prost_types::Duration { seconds, nanos } = timeout;
    let given = format!("got {{seconds: {seconds}, nanos: {nanos}}}");
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(format!(
            "nanos must be between 0 and 999999999 (and the duration not negative), {given}"
        ));
    }
    match u64::try_from(seconds) {
        Ok(seconds) if seconds < MAX_WAIT.as_secs() || (seconds == MAX_WAIT.as_secs() && nanos == 0) => {
            // `nanos` is checked to be in `0..1e9` above.
            Ok(Duration::new(seconds, nanos as u32))
        }
        _ => Err(format!("must be between 0 and {}s, {given}", MAX_WAIT.as_secs())),
    }
}

/// Handles one Start call, with its audit line.
pub async fn handle(
    processes: &Processes,
    request: proto::StartRequest,
    caller: &Caller,
    peer: &Peer,
) -> Result<proto::StartResponse, Status> {
    let target = audit::start_target(&request);
    if let Some(spec) = &request.spec {
        call::record_target(Some(&spec.process_name), spec.group.as_deref());
    }
    let result = match Start::parse(request) {
        Ok(start) => start.apply(processes, caller).await,
        Err(error) => Err(error),
    };
    audit::answer("Start", caller, peer, &target, result)
}
