//! Health checks run by the server: an HTTP GET or a TCP connection to the process's address, or
//! a command. For a local process ([`CheckContext`]) the address is `127.0.0.1` (it shares the
//! host's network) and the command runs with the process's environment and working directory;
//! the docker runtime runs the same checks through [`CheckTarget`] at a container's address,
//! its commands through the engine. Each check is bounded by its timeout and holds nothing
//! between runs, so hundreds of processes that never pass cost a connection attempt each per
//! period.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use zeroize::Zeroizing;

use crate::spec::{CheckAction, HealthCheck};

/// What a check needs of the process beyond the check itself: where exec checks run, and with
/// which environment.
#[derive(Clone)]
pub(super) struct CheckContext {
    /// The process's environment, secrets resolved (exec checks get exactly it).
    pub(super) environment: Arc<Vec<(String, Zeroizing<String>)>>,
    /// Where exec checks run: the process's working directory, when the check's user can
    /// reach it by path.
    pub(super) working_dir: Option<PathBuf>,
    /// The user exec checks run as, the process's own; `None`: the server's.
    pub(super) user: Option<super::supervisor::RunAs>,
}

/// Where a check runs: the address its connections go to, and how its command runs.
pub(crate) trait CheckTarget: Sync {
    /// The address HTTP GET and TCP checks connect to.
    fn address(&self) -> IpAddr;
    /// Runs an exec check's command: `Ok` when it exits with code 0, else why not (`exited with
    /// code 3`).
    fn exec(&self, command: &[String]) -> impl Future<Output = Result<(), String>> + Send;
}

impl CheckTarget for CheckContext {
    fn address(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }

    fn exec(&self, command: &[String]) -> impl Future<Output = Result<(), String>> + Send {
        exec(command, self)
    }
}

/// Runs one check: `Ok` when it passed, else why it did not, in words for the history
/// (`GET :8000/healthz returned 503`).
pub(crate) async fn run_check(check: &HealthCheck, target: &impl CheckTarget) -> Result<(), String> {
    let action = &check.action;
    let outcome = tokio::time::timeout(check.timeout(), attempt(action, target)).await;
    match outcome {
        Ok(result) => result.map_err(|why| format!("{action} {why}")),
        Err(_) => Err(format!("{action} timed out after {} s", check.timeout_seconds)),
    }
}

async fn attempt(action: &CheckAction, target: &impl CheckTarget) -> Result<(), String> {
    let address = |port: i64| port_of(port).map(|port| SocketAddr::new(target.address(), port));
    match action {
        CheckAction::HttpGet { port, path } => http_get(address(*port)?, path).await,
        CheckAction::TcpSocket { port } => TcpStream::connect(address(*port)?)
            .await
            .map(drop)
            .map_err(|error| format!("could not connect: {error}")),
        CheckAction::Exec { command } => target.exec(command).await,
    }
}

fn port_of(port: i64) -> Result<u16, String> {
    // Validation keeps ports in range; this only guards the conversion.
    u16::try_from(port).map_err(|_| format!("has no valid port ({port})"))
}

/// An HTTP/1.1 GET of the path; a status from 200 to 399 passes, as a Kubernetes probe does.
async fn http_get(address: SocketAddr, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect(address).await.map_err(|error| format!("could not connect: {error}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("failed: {error}"))?;
    // The connection is driven beside the request and dropped with this function.
    let driver = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .header(hyper::header::USER_AGENT, "hydroplane-health-check")
        .body(String::new())
        .map_err(|error| format!("is not a valid request: {error}"))?;
    let response = sender.send_request(request).await;
    driver.abort();
    let status = response.map_err(|error| format!("failed: {error}"))?.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("returned {}", status.as_u16()))
    }
}

/// Runs the command in a process group of its own, so that a check that times out is killed with
/// whatever it started.
async fn exec(command: &[String], context: &CheckContext) -> Result<(), String> {
    let Some((program, arguments)) = command.split_first() else {
        return Err("has no command".to_owned());
    };
    let mut child = tokio::process::Command::new(program);
    child
        .args(arguments)
        .env_clear()
        .envs(context.environment.iter().map(|(name, value)| (name.as_str(), value.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    match (&context.user, &context.working_dir) {
        (None, Some(directory)) => {
            child.current_dir(directory);
        }
        (None, None) => {}
        (Some(user), directory) => {
            // The directory is entered as the check's user, once it is that user (std would enter
            // it first, as the server's); the path is made before the fork.
            let directory = directory
                .as_ref()
                .map(|directory| std::ffi::CString::new(directory.as_os_str().as_encoded_bytes()))
                .transpose()
                .map_err(|_| "has a working directory that holds NUL".to_owned())?;
            let user = user.clone();
            // SAFETY: the closure runs in the forked child before exec and makes only system calls
            // (setgroups, setgid, setuid, chdir), allocating nothing.
            #[allow(unsafe_code)]
            unsafe {
                child.pre_exec(move || {
                    user.become_in_child()?;
                    if let Some(directory) = &directory
                        && nix::libc::chdir(directory.as_ptr()) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
    let (mut child, _tracked) = super::orphans::spawn_tracked(&mut child)
        .map_err(|error| format!("could not be started: {error}"))?;
    let group = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw);
    // Whatever ends the wait (the check's timeout drops this future), the group goes with it.
    let _group = KillGroupOnDrop(group);
    let status = child.wait().await.map_err(|error| format!("could not be waited for: {error}"))?;
    // Whatever the check left running outside its group became the server's (a subreaper).
    let _ = tokio::task::spawn_blocking(super::orphans::reap).await;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(format!("exited with code {code}")),
        (None, Some(signal)) => Err(format!("was killed by signal {signal}")),
        (None, None) => Err("ended without an exit code".to_owned()),
    }
}

/// SIGKILLs a process group when dropped.
struct KillGroupOnDrop(Option<Pid>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

/// Counts a check's results in a row: it fails after `failure_threshold` failures and passes
/// again with one success, as a Kubernetes probe with a success threshold of 1.
#[derive(Debug)]
pub(crate) struct Streak {
    threshold: u32,
    failures: u32,
}

impl Streak {
    /// A streak for this check.
    pub(crate) fn new(check: &HealthCheck) -> Streak {
        Streak { threshold: check.failure_threshold.max(1), failures: 0 }
    }

    /// Records one result; true when this failure is the one that reaches the threshold (once
    /// per streak of failures, however long it goes on).
    pub(crate) fn record(&mut self, passed: bool) -> bool {
        if passed {
            self.failures = 0;
            false
        } else {
            self.failures = self.failures.saturating_add(1);
            self.failures == self.threshold
        }
    }
}

/// The pause before the first check of a run: short, so a process that is ready at once is
/// RUNNING at once, as with the port check.
pub(crate) const FIRST_CHECK_DELAY: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> CheckContext {
        CheckContext {
            environment: Arc::new(vec![("PATH".to_owned(), Zeroizing::new("/usr/bin:/bin".to_owned()))]),
            working_dir: None,
            user: None,
        }
    }

    fn check(action: CheckAction) -> HealthCheck {
        HealthCheck::new(action)
    }

    #[test]
    fn a_streak_reports_its_threshold_once_and_starts_over_after_a_success() {
        let mut streak =
            Streak::new(&HealthCheck { failure_threshold: 2, ..check(CheckAction::TcpSocket { port: 1 }) });
        assert!(!streak.record(false));
        assert!(streak.record(false));
        assert!(!streak.record(false), "a failed check is reported once");
        assert!(!streak.record(true));
        assert!(!streak.record(false));
        assert!(streak.record(false), "a new streak is reported again");
    }

    #[tokio::test]
    async fn http_checks_pass_on_2xx_and_3xx_and_name_any_other_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let service =
                    hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                        let status = if request.uri().path() == "/ok" { 200 } else { 503 };
                        hyper::Response::builder().status(status).body(String::new())
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let get = |path: &str| check(CheckAction::HttpGet { port: i64::from(port), path: path.to_owned() });
        assert_eq!(run_check(&get("/ok"), &context()).await, Ok(()));
        assert_eq!(
            run_check(&get("/healthz"), &context()).await,
            Err(format!("GET :{port}/healthz returned 503"))
        );
    }

    #[tokio::test]
    async fn tcp_checks_pass_once_accepted_and_fail_on_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = i64::from(listener.local_addr().expect("address").port());
        assert_eq!(run_check(&check(CheckAction::TcpSocket { port }), &context()).await, Ok(()));
        drop(listener);
        let failed =
            run_check(&check(CheckAction::TcpSocket { port }), &context()).await.expect_err("closed");
        assert!(failed.starts_with(&format!("TCP :{port} could not connect")), "{failed}");
    }

    #[tokio::test]
    async fn exec_checks_pass_on_code_0_and_time_out_killing_what_they_started() {
        let exec = |script: &str| {
            check(CheckAction::Exec { command: vec!["sh".into(), "-c".into(), script.into()] })
        };
        assert_eq!(run_check(&exec("test -n \"$PATH\""), &context()).await, Ok(()));
        let failed = run_check(&exec("exit 3"), &context()).await.expect_err("exits 3");
        assert_eq!(failed, "exec sh -c exit 3 exited with code 3");
        let slow = run_check(&exec("sleep 30"), &context()).await.expect_err("times out");
        assert_eq!(slow, "exec sh -c sleep 30 timed out after 1 s");
    }
}
