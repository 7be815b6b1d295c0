//! `hpctl wait-ready`: waits until the server answers its gRPC health check with SERVING, at most
//! `--timeout` seconds, so that a script that starts `hydroplane &` can go on once it serves.
//!
//! A server that is not listening yet (connection refused, no socket file yet), one that takes
//! the connection but answers nothing yet, and one that says NOT_SERVING are asked again, ever
//! less often (50 ms doubling to 500 ms); a failure that waiting cannot fix (a TLS handshake that
//! fails, a socket this user may not open) ends the wait at once, in the same words as any other
//! subcommand's.

use std::time::Duration;

use anyhow::anyhow;
use hydroplane_client::{ConnectError, Failure};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::connect::Plan;
use crate::output::RunError;

/// The service whose health is asked: the process API itself, which the server marks SERVING once
/// it serves it.
const SERVICE: &str = "hydroplane.v1.ProcessService";

/// How soon the first retry comes, and the longest pause between two.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// See [`FIRST_PAUSE`].
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// What one attempt found.
enum Attempt {
    /// The server serves.
    Serving,
    /// Not yet; why, for the message at the end.
    NotYet(String),
    /// Waiting will not help.
    Failed(RunError),
}

/// Asks until the server is SERVING or `--timeout` has passed.
pub async fn run(plan: &Plan) -> Result<(), RunError> {
    let timeout = plan.timeout().duration();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut last = "no answer yet".to_owned();
    loop {
        let attempt = match tokio::time::timeout_at(deadline, attempt(plan)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::NotYet(last.clone()),
        };
        match attempt {
            Attempt::Serving => return Ok(()),
            Attempt::Failed(error) => return Err(error),
            Attempt::NotYet(why) => last = why,
        }
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(RunError::Other(anyhow!(
                "the Hydroplane server at {} was not ready within {} s (--timeout {}): {last}",
                plan.target(),
                timeout.as_secs_f64(),
                plan.timeout().text()
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// One connection and health check.
async fn attempt(plan: &Plan) -> Attempt {
    let client = match plan.try_connect().await {
        Ok(client) => client,
        Err(ConnectError::Unreachable(unreachable)) if unreachable.failure() == Failure::Other => {
            return Attempt::NotYet(unreachable.reason().to_owned());
        }
        Err(error) => return Attempt::Failed(RunError::Other(plan.explain_connect(error).into())),
    };
    let request = HealthCheckRequest { service: SERVICE.to_owned() };
    match HealthClient::new(client.service()).check(request).await {
        Ok(response) if response.get_ref().status() == ServingStatus::Serving => Attempt::Serving,
        Ok(response) => {
            Attempt::NotYet(format!("its health check answers {}", response.get_ref().status().as_str_name()))
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            Attempt::NotYet("it does not serve the process API yet".to_owned())
        }
        Err(status) => match hydroplane_client::Unreachable::from_status(client.target(), &status) {
            Some(unreachable) if unreachable.failure() == Failure::Other => {
                Attempt::NotYet(unreachable.reason().to_owned())
            }
            _ if status.code() == tonic::Code::Unavailable => Attempt::NotYet(status.message().to_owned()),
            _ => Attempt::Failed(RunError::Call(status)),
        },
    }
}
