//! Following a launched process until its supervisor is reaped: its output into the buffer,
//! RUNNING once its tree listens on its ports, and how its command ended.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::launch::Launched;
use super::logs::ProcessOutput;
use super::output::OutputStream;
use super::{LocalProcess, lock, procfs};
use crate::spec::{ProcessStatus, Protocol};
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

/// Follows a launched process until its supervisor is reaped, then reports how the command ended
/// (the supervisor ends as its command did) and sends on `exited`.
pub(super) async fn monitor(
    launched: Launched,
    table: Arc<ProcessTable>,
    process: Arc<LocalProcess>,
    exited: watch::Sender<bool>,
) {
    let Launched { mut child, supervisor, lifeline, .. } = launched;
    let mut readers = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(capture(stdout, OutputStream::Stdout, Arc::clone(&process.output))));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(capture(stderr, OutputStream::Stderr, Arc::clone(&process.output))));
    }
    let tcp_ports: Vec<u16> = process
        .spec
        .container
        .ports
        .iter()
        .filter(|port| port.protocol == Protocol::Tcp)
        .filter_map(|port| u16::try_from(port.container_port).ok())
        .collect();
    let running = || {
        process.update_unless_stopping(&table, |info| {
            if info.status == ProcessStatus::Starting {
                info.status = ProcessStatus::Running;
            }
        });
    };
    let status = if tcp_ports.is_empty() {
        // Nothing to wait for: RUNNING once spawned, even when the command ends at once, so
        // that its history reads STARTING, RUNNING, then how it ended.
        running();
        child.wait().await
    } else {
        let wait = child.wait();
        tokio::pin!(wait);
        tokio::select! {
            status = &mut wait => status,
            () = ready(supervisor, tcp_ports) => {
                running();
                wait.await
            }
        }
    };
    let outcome = match status {
        Ok(status) => exit_outcome(status),
        Err(error) => ExitOutcome {
            status: ProcessStatus::Failed,
            reason: "WaitFailed",
            message: format!("cannot wait for the process: {error}"),
            exit_code: -1,
        },
    };
    // Output written just before the exit is still in the pipes: take it before reporting.
    let aborts: Vec<_> = readers.iter().map(|reader| reader.abort_handle()).collect();
    if tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, futures::future::join_all(readers)).await.is_err() {
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
    process.update_unless_stopping(&table, |info| {
        info.status = outcome.status;
        info.reason = Some(outcome.reason.into());
        info.message = Some(outcome.message.clone());
        info.exit_code = Some(outcome.exit_code);
    });
    // After the status: a follower that ends sees the process EXITED or FAILED.
    process.output.finish();
    exited.send_replace(true);
    drop(lifeline);
}

/// Resolves once the tree of `root` listens on every port, probing `/proc` on a blocking thread
/// with a doubling pause.
async fn ready(root: Pid, ports: Vec<u16>) {
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
