//! The life of a local process across its runs: after each run, its restart policy decides
//! whether another follows, after a back-off that doubles from [`FIRST_RESTART_DELAY`] up to
//! [`MAX_RESTART_DELAY`] (and starts over once a run has lasted [`BACKOFF_RESET_AFTER`]), and
//! its `max_run_seconds` ends it for good whatever it is doing.
//!
//! While it waits to restart, a process is FAILED with reason `CrashLoopBackOff` (as a
//! Kubernetes Pod in the same state), then STARTING again with `restart_count` one higher.
//! A Stop ends the wait at once; a run started while a Stop was being asked for is ended by the
//! lifecycle itself, so no run outlives a Stop.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::health::CheckContext;
use super::launch::{self, Launched, SupervisorProgram};
use super::monitor::{self, Cause, ExitOutcome, RunChecks, RunEnd};
use super::supervisor::WorkingDir;
use super::{Launch, LocalProcess, signal_process};
use crate::backoff::Backoff;
use crate::spec::ProcessStatus;
use crate::table::ProcessTable;

/// The delay before the first restart.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);

/// The longest delay between two runs.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);

/// How long a run must last for the back-off to start over (Kubernetes' figure).
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// What a process's lifecycle holds for its whole life.
pub(super) struct Lifecycle {
    pub(super) table: Arc<ProcessTable>,
    pub(super) process: Arc<LocalProcess>,
    pub(super) program: SupervisorProgram,
    pub(super) environment: Arc<Vec<(String, Zeroizing<String>)>>,
    pub(super) grace: Duration,
    pub(super) launch: watch::Sender<Launch>,
    pub(super) exited: watch::Sender<bool>,
    /// Becomes true when a Stop begins.
    pub(super) stop_requested: watch::Receiver<bool>,
}

impl Lifecycle {
    /// Follows the first run and every run after it, until the policy, the deadline or a Stop
    /// ends the process; then marks its output finished and sends on `exited`.
    pub(super) async fn run(mut self, first: Launched, started: Instant) {
        let spec = Arc::clone(&self.process);
        let spec = &spec.spec;
        let checks = RunChecks {
            readiness: spec.readiness.clone(),
            liveness: spec.liveness.clone(),
            context: CheckContext {
                environment: Arc::clone(&self.environment),
                working_dir: match &self.process.placement.working_dir {
                    WorkingDir::Named(directory) => Some(directory.clone()),
                    // Another user may not reach the process's own directory by its path.
                    WorkingDir::Own(directory) => {
                        self.process.placement.user.is_none().then(|| directory.clone())
                    }
                },
                user: self.process.placement.user.clone(),
            },
            deadline: spec.max_run_seconds.map(|seconds| started + Duration::from_secs(seconds)),
        };
        let mut backoff = Backoff::new(FIRST_RESTART_DELAY, MAX_RESTART_DELAY);
        let mut stop = self.stop_requested.clone();
        let mut next = Ok(first);
        loop {
            let run_began = Instant::now();
            let end = match next {
                Ok(launched) => monitor::follow_run(launched, &self.table, &self.process, &checks).await,
                Err(message) => RunEnd {
                    outcome: ExitOutcome {
                        status: ProcessStatus::Failed,
                        reason: "SpawnFailed",
                        message,
                        exit_code: -1,
                    },
                    cause: Cause::Exited,
                },
            };
            self.launch.send_replace(Launch::NotStarted);
            if self.stopping() {
                break;
            }
            if end.cause == Cause::DeadlineExceeded {
                self.deadline_exceeded(Some(end.outcome.exit_code));
                break;
            }
            let succeeded = end.outcome.exit_code == 0 && end.cause == Cause::Exited;
            if !spec.restart_policy.restarts_after(succeeded) {
                self.record_end(&end);
                break;
            }
            if run_began.elapsed() >= BACKOFF_RESET_AFTER {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            self.record_back_off(&end, delay);
            let wait = tokio::time::sleep(delay);
            let deadline = checks.deadline;
            tokio::select! {
                () = wait => {}
                _ = stop.wait_for(|stop| *stop) => break,
                () = monitor::sleep_until(deadline), if deadline.is_some() => {
                    self.deadline_exceeded(None);
                    break;
                }
            }
            // The output from here on is the new run's; the one before is Logs' `previous`.
            self.process.output.begin_run();
            next = self.relaunch().await;
        }
        self.process.output.finish();
        self.exited.send_replace(true);
    }

    fn stopping(&self) -> bool {
        *self.stop_requested.borrow()
    }

    /// Starts the next run, counting the restart; a run that starts while a Stop is being asked
    /// for is ended here (the Stop may have looked before it began).
    async fn relaunch(&mut self) -> Result<Launched, String> {
        let (program, process, environment, grace) =
            (self.program.clone(), Arc::clone(&self.process), Arc::clone(&self.environment), self.grace);
        let launched = tokio::task::spawn_blocking(move || {
            launch::launch(&program, &process.spec, &environment, grace, &process.placement)
        })
        .await
        .unwrap_or_else(|error| Err(format!("the launch of a process failed: {error}")));
        self.process.update_unless_stopping(&self.table, |info| {
            info.restart_count = info.restart_count.saturating_add(1);
            info.status = ProcessStatus::Starting;
            info.reason = Some("Restarted".into());
            info.message = None;
            info.exit_code = None;
        });
        if let Ok(launched) = &launched {
            self.launch
                .send_replace(Launch::Running { supervisor: launched.supervisor, command: launched.command });
            if self.stopping() {
                signal_process(launched.supervisor, Signal::SIGTERM);
            }
        }
        launched
    }

    /// Records how the last run ended, when no run follows it.
    fn record_end(&self, end: &RunEnd) {
        let outcome = &end.outcome;
        self.process.update_unless_stopping(&self.table, |info| {
            info.status = outcome.status;
            info.exit_code = Some(outcome.exit_code);
            match &end.cause {
                Cause::Unhealthy(why) => {
                    info.status = ProcessStatus::Failed;
                    info.reason = Some("Unhealthy".into());
                    info.message = Some(format!("liveness check failed: {why}; then {}", outcome.message));
                }
                Cause::Exited | Cause::DeadlineExceeded => {
                    info.reason = Some(outcome.reason.into());
                    info.message = Some(outcome.message.clone());
                }
            }
        });
    }

    /// Records a run's end and the wait before the next one.
    fn record_back_off(&self, end: &RunEnd, delay: Duration) {
        let ended = match &end.cause {
            Cause::Unhealthy(why) => format!("liveness check failed: {why}; then {}", end.outcome.message),
            Cause::Exited | Cause::DeadlineExceeded => end.outcome.message.clone(),
        };
        let seconds = delay.as_secs_f64();
        self.process.update_unless_stopping(&self.table, |info| {
            info.status = ProcessStatus::Failed;
            info.reason = Some("CrashLoopBackOff".into());
            info.message = Some(format!("{ended}; restarting in {seconds} s"));
            info.exit_code = Some(end.outcome.exit_code);
        });
    }

    /// Records that the process ran out of time.
    fn deadline_exceeded(&self, exit_code: Option<i32>) {
        let seconds = self.process.spec.max_run_seconds.unwrap_or_default();
        self.process.update_unless_stopping(&self.table, |info| {
            info.status = ProcessStatus::Failed;
            info.reason = Some("DeadlineExceeded".into());
            info.message = Some(format!("stopped after its max_run_seconds ({seconds} s)"));
            if exit_code.is_some() {
                info.exit_code = exit_code;
            }
        });
    }
}
