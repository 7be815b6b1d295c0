//! The JSON shapes hpctl prints, as in the Hydroplane guide (`process_name`, `group`,
//! `socket_addresses`, `created`), plus the status and its detail, and the labels; how it writes
//! them, and how a subcommand fails.
//!
//! A closed stdout (`hpctl list | head -1`) is no error to report: writes never panic, and the
//! subcommand ends with [`RunError::StdoutClosed`], which `main` turns into a quiet exit.

use std::collections::BTreeMap;
use std::io::Write;

use hydroplane_client::proto;
use serde::Serialize;

/// Why a subcommand did not finish.
#[derive(Debug)]
pub enum RunError {
    /// A call failed; `main` explains it with the connection flags.
    Call(tonic::Status),
    /// Whoever read stdout has gone.
    StdoutClosed,
    /// The process `start --wait` waited for did not start (FAILED, or EXITED with a non-zero
    /// code); why, in one line. It was printed first.
    ProcessFailed(String),
    /// Anything else, already in words.
    Other(anyhow::Error),
}

impl From<tonic::Status> for RunError {
    fn from(status: tonic::Status) -> RunError {
        RunError::Call(status)
    }
}

impl From<anyhow::Error> for RunError {
    fn from(error: anyhow::Error) -> RunError {
        RunError::Other(error)
    }
}

impl From<std::io::Error> for RunError {
    fn from(error: std::io::Error) -> RunError {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            RunError::StdoutClosed
        } else {
            RunError::Other(anyhow::Error::new(error).context("cannot write to stdout"))
        }
    }
}

/// A process, as printed.
#[derive(Serialize)]
pub struct ProcessJson {
    process_name: String,
    group: Option<String>,
    socket_addresses: Vec<AddressJson>,
    created: Option<String>,
    status: &'static str,
    reason: Option<String>,
    message: Option<String>,
    restart_count: u32,
    exit_code: Option<i32>,
    node: Option<String>,
    /// Left out when the process has none, so that lists of unlabelled processes carry no empty `labels`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

/// A socket address, as printed.
#[derive(Serialize)]
struct AddressJson {
    host: String,
    port: u32,
    is_public: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_name: Option<String>,
}

impl From<proto::ProcessInfo> for ProcessJson {
    fn from(info: proto::ProcessInfo) -> ProcessJson {
        let status = status_name(info.status());
        ProcessJson {
            process_name: info.process_name,
            group: info.group,
            socket_addresses: info
                .socket_addresses
                .into_iter()
                .map(|address| AddressJson {
                    host: address.host,
                    port: address.port,
                    is_public: address.is_public,
                    dns_name: address.dns_name,
                })
                .collect(),
            created: info.created.and_then(format_timestamp),
            status,
            reason: info.reason,
            message: info.message,
            restart_count: info.restart_count,
            exit_code: info.exit_code,
            node: info.node,
            labels: info.labels,
        }
    }
}

/// A status as printed: its name in the contract, without the enum's prefix.
pub fn status_name(status: proto::ProcessStatus) -> &'static str {
    match status {
        proto::ProcessStatus::Unspecified => "UNSPECIFIED",
        proto::ProcessStatus::Starting => "STARTING",
        proto::ProcessStatus::Running => "RUNNING",
        proto::ProcessStatus::Failed => "FAILED",
        proto::ProcessStatus::Exited => "EXITED",
        proto::ProcessStatus::Stopping => "STOPPING",
    }
}

/// Formats a timestamp as Hydroplane did: `2022-12-01T22:40:33+00:00`.
fn format_timestamp(timestamp: prost_types::Timestamp) -> Option<String> {
    let timestamp = jiff::Timestamp::new(timestamp.seconds, 0).ok()?;
    Some(timestamp.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string())
}

/// Prints a value as pretty JSON on stdout.
pub fn print_pretty(value: &impl Serialize) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(value).map_err(anyhow::Error::from)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    stdout.flush()?;
    Ok(())
}

/// Prints one JSON line on stdout, flushed, so that a follower sees it at once.
pub fn print_line(value: &impl Serialize) -> Result<(), RunError> {
    let mut text = serde_json::to_string(value).map_err(anyhow::Error::from)?;
    text.push('\n');
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Resolves once whoever read stdout has gone (a pipe whose reader closed reports an error to
/// epoll); never, when stdout cannot tell (a file, or a terminal). `watch` waits on it beside the
/// server, so that `hpctl watch | head -1` ends when `head` does, not at the next change.
pub async fn stdout_closed() {
    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;
    // Deprecated because a registered fd could be closed while registered; fd 1 is never closed
    // while hpctl runs, and the safe call is the alternative to `unsafe`, which is denied here.
    #[allow(deprecated)]
    let registered = AsyncFd::with_interest(std::io::stdout(), Interest::ERROR);
    match registered {
        Ok(stdout) => {
            let _ = stdout.ready(Interest::ERROR).await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Prints a line on stderr; a closed stderr is ignored, as there is nowhere else to say it.
pub fn warn(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
