//! Following one run of a process until its supervisor is reaped: its output into the buffer,
//! RUNNING once it is ready (its readiness check passes, or without one, its tree listens on its
//! ports), its liveness check and its deadline, and how its command ended. What follows a run
//! (a restart, or the end) is the [`lifecycle`](super::lifecycle)'s to decide.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::health::{self, CheckContext, Streak};
use super::launch::Launched;
use super::logs::ProcessOutput;
use super::output::OutputStream;
use super::{LocalProcess, lock, procfs, signal_process};
use crate::spec::{HealthCheck, ProcessStatus, Protocol};
use crate::table::ProcessTable;

/// The first pause between readiness probes; it doubles up to [`LAST_PROBE_INTERVAL`], so a
/// process that never listens costs one probe a second.
const FIRST_PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// The longest pause between readiness probes.
const LAST_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// How long one snapshot of the host's listening sockets serves every probe: reading it costs
/// the kernel about a millisecond however few sockets there are, so hundreds of STARTING
/// processes share it instead of each reading it.
const LISTENING_MAX_AGE: Duration = Duration::from_millis(50);

/// The shared snapshot and when it was taken.
static LISTENING: Mutex<Option<(tokio::time::Instant, Arc<procfs::Listening>)>> = Mutex::new(None);

/// How long output may still arrive once the supervisor is reaped. Its tree is gone by then, so
/// the pipes are closing; only a process that was handed the pipes from outside the tree keeps
/// them open, and it must not delay the status.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_millis(100);

/// How a command ended, as the process info reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ExitOutcome {
    pub(super) status: ProcessStatus,
    pub(super) reason: &'static str,
    pub(super) message: String,
    pub(super) exit_code: i32,
}

/// Why a run ended, beyond its exit status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Cause {
    /// The command ended on its own (or was stopped).
    Exited,
    /// Its liveness check failed, so the server ended it; the words say how the check failed.
    Unhealthy(String),
    /// The process reached its `max_run_seconds`, so the server ended it.
    DeadlineExceeded,
}

/// How one run ended.
#[derive(Clone, Debug)]
pub(super) struct RunEnd {
    pub(super) outcome: ExitOutcome,
    pub(super) cause: Cause,
}

/// What the checks of a run report.
enum CheckEvent {
    /// The process became ready (true) or stopped being ready (false, with why).
    Ready(bool, Option<String>),
    /// The liveness check failed its threshold, with why.
    Dead(String),
}

/// The checks a run is followed with.
pub(super) struct RunChecks {
    pub(super) readiness: Option<HealthCheck>,
    pub(super) liveness: Option<HealthCheck>,
    pub(super) context: CheckContext,
    /// When the process must end, whatever it does.
    pub(super) deadline: Option<tokio::time::Instant>,
}

/// Aborts the tasks of a run's checks when the run ends.
struct AbortOnDrop(Vec<AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.iter().for_each(AbortHandle::abort);
    }
}

/// Follows one run until its supervisor is reaped, keeping the status current (STARTING and
/// RUNNING as readiness comes and goes) and ending the run when its liveness check fails or its
/// deadline passes. Reports how it ended; the caller records that.
pub(super) async fn follow_run(
    launched: Launched,
    table: &ProcessTable,
    process: &Arc<LocalProcess>,
    checks: &RunChecks,
) -> RunEnd {
    let Launched { mut child, supervisor, lifeline, tracked, .. } = launched;
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(capture(stdout, OutputStream::Stdout, Arc::clone(&process.output))));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(capture(stderr, OutputStream::Stderr, Arc::clone(&process.output))));
    }
    let (events, mut received) = mpsc::channel(4);
    let mut tasks = Vec::new();
    match &checks.readiness {
        Some(check) => {
            tasks.push(tokio::spawn(readiness(check.clone(), checks.context.clone(), events.clone())))
        }
        None => {
            let tcp_ports: Vec<u16> = process
                .spec
                .container
                .ports
                .iter()
                .filter(|port| port.protocol == Protocol::Tcp)
                .filter_map(|port| u16::try_from(port.container_port).ok())
                .collect();
            if tcp_ports.is_empty() {
                // Nothing to wait for: RUNNING once spawned, even when the command ends at once,
                // so that its history reads STARTING, RUNNING, then how it ended.
                set_ready(table, process, true, None);
            } else {
                let events = events.clone();
                tasks.push(tokio::spawn(async move {
                    listening(supervisor, tcp_ports).await;
                    let _ = events.send(CheckEvent::Ready(true, None)).await;
                }));
            }
        }
    }
    if let Some(check) = &checks.liveness {
        tasks.push(tokio::spawn(liveness(check.clone(), checks.context.clone(), events.clone())));
    }
    drop(events);
    let _tasks = AbortOnDrop(tasks.iter().map(tokio::task::JoinHandle::abort_handle).collect());
    let mut cause = Cause::Exited;
    let deadline = checks.deadline;
    let wait = child.wait();
    tokio::pin!(wait);
    let status = loop {
        tokio::select! {
            status = &mut wait => break status,
            Some(event) = received.recv() => match event {
                CheckEvent::Ready(ready, why) => set_ready(table, process, ready, why),
                CheckEvent::Dead(why) => {
                    if cause == Cause::Exited {
                        tracing::info!(process = %process.spec.process_name, %why, "the liveness check failed; ending the run");
                        process.update_unless_stopping(table, |info| {
                            info.reason = Some("Unhealthy".into());
                            info.message = Some(format!("liveness check failed: {why}"));
                        });
                        cause = Cause::Unhealthy(why);
                        // The supervisor passes SIGTERM to the tree and SIGKILLs it after the grace.
                        signal_process(supervisor, Signal::SIGTERM);
                    }
                }
            },
            () = sleep_until(deadline), if deadline.is_some() && cause != Cause::DeadlineExceeded => {
                tracing::info!(process = %process.spec.process_name, "the process reached its max_run_seconds; ending it");
                cause = Cause::DeadlineExceeded;
                signal_process(supervisor, Signal::SIGTERM);
            }
        }
    };
    // Reaped: its pid is no longer the server's to keep from the orphan reaping.
    drop(tracked);
    let mut outcome = match status {
        Ok(status) => exit_outcome(status),
        Err(error) => ExitOutcome {
            status: ProcessStatus::Failed,
            reason: "WaitFailed",
            message: format!("cannot wait for the process: {error}"),
            exit_code: -1,
        },
    };
    if !super::launch::ended_on_its_own(&lifeline) {
        // Killed from outside, the supervisor did not end its tree: the command got SIGKILL
        // with it (its parent-death signal), and the rest is now the server's to end, before
        // the status says the process is over.
        let reaped = tokio::task::spawn_blocking(super::orphans::reap).await.unwrap_or_default();
        tracing::warn!(process = %process.spec.process_name, reaped, "the supervisor was killed from outside; its tree was ended");
        outcome = ExitOutcome {
            status: ProcessStatus::Failed,
            reason: "SupervisorKilled",
            message: format!(
                "its supervisor was {}; the server ended what was left of its tree",
                outcome.message
            ),
            exit_code: outcome.exit_code,
        };
    }
    if let Some(path) = process.placement.cgroup.clone() {
        // Whatever the tree left that neither the supervisor nor the orphan reaping found (a
        // process that is no descendant of either any more) is still in the cgroup.
        let killed =
            tokio::task::spawn_blocking(move || super::cgroup::kill_all(&path)).await.unwrap_or_default();
        if killed > 0 {
            tracing::warn!(process = %process.spec.process_name, killed, "processes of the run outlived its tree; killed through its cgroup");
        }
    }
    // Output written just before the exit is still in the pipes: take it before reporting.
    let aborts: Vec<_> = readers.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, futures::future::join_all(readers)).await.is_err() {
        aborts.iter().for_each(AbortHandle::abort);
    }
    drop(lifeline);
    RunEnd { outcome, cause }
}

/// Sleeps until the deadline, or for ever without one.
pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// RUNNING while ready, STARTING (with why) while not; a stop in progress is left alone.
fn set_ready(table: &ProcessTable, process: &LocalProcess, ready: bool, why: Option<String>) {
    process.update_unless_stopping(table, |info| {
        if ready && info.status == ProcessStatus::Starting {
            info.status = ProcessStatus::Running;
            info.reason = None;
            info.message = None;
        } else if !ready && matches!(info.status, ProcessStatus::Starting | ProcessStatus::Running) {
            info.status = ProcessStatus::Starting;
            info.reason = Some("Unready".into());
            info.message = why.map(|why| format!("readiness check failed: {why}"));
        }
    });
}

/// Runs the readiness check for the whole run: ready after one pass, not ready after
/// `failure_threshold` failures in a row; while not ready, a new reason is reported when the
/// failure changes (a refused connection that becomes a 503).
async fn readiness(check: HealthCheck, context: CheckContext, events: mpsc::Sender<CheckEvent>) {
    let mut streak = Streak::new(&check);
    let mut ready = false;
    let mut said: Option<String> = None;
    tokio::time::sleep(health::FIRST_CHECK_DELAY).await;
    loop {
        let event = match health::run_check(&check, &context).await {
            Ok(()) => {
                streak.record(true);
                said = None;
                (!ready).then_some(CheckEvent::Ready(true, None))
            }
            Err(why) => {
                let reached = streak.record(false);
                let changed = !ready && said.is_some() && said.as_deref() != Some(why.as_str());
                (reached || changed).then(|| {
                    said = Some(why.clone());
                    CheckEvent::Ready(false, Some(why))
                })
            }
        };
        if let Some(event) = event {
            ready = matches!(event, CheckEvent::Ready(true, _));
            if events.send(event).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(check.period()).await;
    }
}

/// Runs the liveness check, first one period after the run starts (the time a process gets to
/// come up); reports once when it fails its threshold.
async fn liveness(check: HealthCheck, context: CheckContext, events: mpsc::Sender<CheckEvent>) {
    let mut streak = Streak::new(&check);
    loop {
        tokio::time::sleep(check.period()).await;
        match health::run_check(&check, &context).await {
            Ok(()) => {
                streak.record(true);
            }
            Err(why) => {
                if streak.record(false) {
                    let _ = events.send(CheckEvent::Dead(why)).await;
                    return;
                }
            }
        }
    }
}

/// Resolves once the tree of `root` listens on every port, probing `/proc` on a blocking thread
/// with a doubling pause.
async fn listening(root: Pid, ports: Vec<u16>) {
    let ports = Arc::new(ports);
    let mut pause = FIRST_PROBE_INTERVAL;
    loop {
        let probed = Arc::clone(&ports);
        let now = tokio::time::Instant::now();
        let probe = move || procfs::tree_listens(root, &probed, &shared_listening(now));
        if tokio::task::spawn_blocking(probe).await.unwrap_or(false) {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LAST_PROBE_INTERVAL);
    }
}

/// The host's listening sockets as of at most [`LISTENING_MAX_AGE`] before `now`; the lock is
/// held while reading, so concurrent probes wait for one read instead of making their own.
fn shared_listening(now: tokio::time::Instant) -> Arc<procfs::Listening> {
    let mut shared = lock(&LISTENING);
    if let Some((taken, listening)) = &*shared
        && now.saturating_duration_since(*taken) < LISTENING_MAX_AGE
    {
        return Arc::clone(listening);
    }
    let listening = Arc::new(procfs::listening_inodes());
    *shared = Some((now, Arc::clone(&listening)));
    listening
}

/// Reads one of the process's pipes into its output until the pipe closes. A process that writes
/// faster than this keeps up is held back by its full pipe, which is all the flow control needed.
async fn capture(mut pipe: impl AsyncRead + Unpin, stream: OutputStream, output: Arc<ProcessOutput>) {
    // One read is one disk record at most. The buffer is reserved, not zeroed: a page of it
    // becomes resident only once output has been read into it, so a thousand quiet processes do
    // not hold 128 KiB of memory each.
    let mut buffer = Vec::with_capacity(super::disk::MAX_RECORD_DATA);
    loop {
        buffer.clear();
        match pipe.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => output.append(stream, &buffer, jiff::Timestamp::now()),
        }
    }
}

pub(super) fn exit_outcome(status: ExitStatus) -> ExitOutcome {
    match (status.code(), status.signal()) {
        (Some(0), _) => ExitOutcome {
            status: ProcessStatus::Exited,
            reason: "Completed",
            message: "exited with code 0".to_owned(),
            exit_code: 0,
        },
        (Some(code), _) => ExitOutcome {
            status: ProcessStatus::Failed,
            reason: "Error",
            message: format!("exited with code {code}"),
            exit_code: code,
        },
        (None, Some(signal)) => {
            let name = Signal::try_from(signal).map(|signal| signal.as_str()).unwrap_or("an unknown signal");
            ExitOutcome {
                status: ProcessStatus::Failed,
                reason: "Signaled",
                message: format!("killed by {name}"),
                exit_code: 128 + signal,
            }
        }
        (None, None) => ExitOutcome {
            status: ProcessStatus::Failed,
            reason: "Error",
            message: format!("ended without an exit code ({status})"),
            exit_code: -1,
        },
    }
}
