//! Starting one process: its environment (built in one pass) and its supervisor (spawned, and
//! its report read). Everything here blocks (secret resolution, fork and exec, the report), so
//! the runtime calls it on a blocking thread, never under its lock.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::unistd::Pid;
use zeroize::Zeroizing;

use super::RuntimeError;
use super::orphans::{self, Tracked};
use super::supervisor::{self, Report, Request, RunAs, WorkingDir};
use super::users::ProcessUser;
use crate::secrets::{SecretError, SecretStore};
use crate::spec::{ProcessSpec, ValueOrSecret};

/// The longest report line read; a longer one is garbled.
const MAX_REPORT_BYTES: usize = 64 * 1024;

/// How long a supervisor may take to say whether its command started.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The program that becomes a supervisor: the server's own binary.
#[derive(Clone, Debug)]
pub struct SupervisorProgram {
    /// What is executed: `/proc/self/exe`, the very binary that runs the server, even once an
    /// upgrade has replaced the file (a new binary could speak another report protocol).
    path: PathBuf,
    /// The argv[0] the supervisor shows in `ps`: the server's path.
    name: OsString,
}

impl SupervisorProgram {
    /// The running server's binary, or why it cannot be used.
    pub fn of_this_server() -> Result<SupervisorProgram, String> {
        let name = std::env::current_exe().map_err(|error| {
            format!("cannot find the server's own binary to supervise processes: {error}")
        })?;
        let path = PathBuf::from("/proc/self/exe");
        if !path.exists() {
            return Err("cannot supervise processes: /proc is not mounted".to_owned());
        }
        Ok(SupervisorProgram { path, name: name.into_os_string() })
    }
}

/// A supervisor that started its command.
pub struct Launched {
    /// The supervisor, with the capture pipes as its stdout and stderr.
    pub child: tokio::process::Child,
    /// The supervisor's pid.
    pub supervisor: Pid,
    /// The command's pid, which is also its process group.
    pub command: Pid,
    /// The server's end of the lifeline: the tree dies when it closes, so it is held as long
    /// as the supervisor runs.
    pub lifeline: UnixStream,
    /// Keeps the supervisor's pid out of the server's orphan reaping until it is waited for.
    pub tracked: Option<Tracked>,
}

/// Where and as whom a process's command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Its working directory: the spec's, else its own under the run directory.
    pub working_dir: WorkingDir,
    /// The user it runs as; `None`: the server's.
    pub user: Option<RunAs>,
    /// Its cgroup; `None`: the host gives the server no cgroups.
    pub cgroup: Option<PathBuf>,
}

/// Resolves the spec's environment, secrets included: the server's variables named in
/// `passthrough` (with `HOME`, `USER` and `LOGNAME` the process user's when it has its own),
/// then the spec's, a later one replacing an earlier one of the same name, in one pass.
pub fn environment(
    secrets: &dyn SecretStore,
    spec: &ProcessSpec,
    passthrough: &[String],
    user: Option<&ProcessUser>,
) -> Result<Vec<(String, Zeroizing<String>)>, RuntimeError> {
    let mut environment: Vec<(String, Zeroizing<String>)> = Vec::with_capacity(spec.container.env.len() + 5);
    let mut positions: HashMap<String, usize> = HashMap::with_capacity(environment.capacity());
    let mut set = |name: &str, value: Zeroizing<String>| match positions.get(name) {
        Some(&position) => environment[position].1 = value,
        None => {
            positions.insert(name.to_owned(), environment.len());
            environment.push((name.to_owned(), value));
        }
    };
    for name in passthrough {
        if let Ok(value) = std::env::var(name) {
            set(name, Zeroizing::new(value));
        }
    }
    if let Some(user) = user {
        // The server's HOME is not the process's: its user may not even enter it.
        set("HOME", Zeroizing::new(user.home.to_string_lossy().into_owned()));
        set("USER", Zeroizing::new(user.name.clone()));
        set("LOGNAME", Zeroizing::new(user.name.clone()));
    }
    for (index, variable) in spec.container.env.iter().enumerate() {
        let value = match &variable.value {
            ValueOrSecret::Value(value) => Zeroizing::new(value.clone()),
            ValueOrSecret::Secret(reference) => {
                crate::secrets::resolve_text(secrets, reference).map_err(|error| match error {
                    SecretError::NotText { reference } => RuntimeError::Unsupported {
                        field: format!("container.env[{index}].secret"),
                        message: format!(
                            "{reference} is not UTF-8 text, so it cannot be an environment variable"
                        ),
                    },
                    other => other.into(),
                })?
            }
        };
        if value.contains('\0') {
            return Err(RuntimeError::Unsupported {
                field: format!("container.env[{index}]"),
                message: "the value contains NUL, which an environment variable cannot hold".to_owned(),
            });
        }
        set(&variable.name, value);
    }
    Ok(environment)
}

/// Spawns the supervisor of `spec`'s command and reads its report; the error is why the command
/// did not start, for a FAILED status.
pub fn launch(
    program: &SupervisorProgram,
    spec: &ProcessSpec,
    environment: &[(String, Zeroizing<String>)],
    grace: Duration,
    placement: &Placement,
) -> Result<Launched, String> {
    if let Some(cgroup) = &placement.cgroup {
        // Made for every run: one that was tidied away between two runs is made again.
        super::cgroup::create(cgroup)
            .map_err(|error| format!("cannot make the process's cgroup `{}`: {error}", cgroup.display()))?;
    }
    let request = Request {
        grace,
        working_dir: placement.working_dir.clone(),
        user: placement.user.clone(),
        cgroup: placement.cgroup.clone(),
        command: spec.container.command.iter().map(OsString::from).collect(),
    };
    // Both ends are close-on-exec, so no other supervisor inherits the server's end and keeps a
    // lifeline open after the server died; std moves the supervisor's end onto its stdin.
    let (lifeline, supervisor_end) =
        UnixStream::pair().map_err(|error| format!("cannot make the supervisor's lifeline: {error}"))?;
    let mut command = tokio::process::Command::new(&program.path);
    command
        .arg0(&program.name)
        .arg(supervisor::MODE)
        .args(request.to_arguments())
        .env_clear()
        .envs(environment.iter().map(|(name, value)| (name.as_str(), value.as_str())))
        .stdin(Stdio::from(OwnedFd::from(supervisor_end)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a Ctrl-C at the server's terminal is the server's to handle.
        .process_group(0)
        // The lifeline, not the handle, ends the tree when the server goes.
        .kill_on_drop(false);
    let spawned = orphans::spawn_tracked(&mut command);
    // The server keeps no copy of the supervisor's end: a supervisor that dies before reporting
    // must read as end of file, not as a hang.
    drop(command);
    let (mut child, tracked) =
        spawned.map_err(|error| format!("cannot start the process's supervisor: {error}"))?;
    let Some(supervisor) = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw) else {
        return Err("the process's supervisor ended at once".to_owned());
    };
    match read_report(&lifeline) {
        Ok(Report::Started(command)) => Ok(Launched { child, supervisor, command, lifeline, tracked }),
        Ok(Report::Failed(message)) => Err(message),
        Ok(Report::Ended) => Err("the process's supervisor ended before starting the command".to_owned()),
        Err(message) => {
            let _ = child.start_kill();
            Err(message)
        }
    }
}

fn read_report(lifeline: &UnixStream) -> Result<Report, String> {
    lifeline
        .set_read_timeout(Some(REPORT_TIMEOUT))
        .map_err(|error| format!("cannot read the supervisor's report: {error}"))?;
    let read = read_line(lifeline);
    let _ = lifeline.set_read_timeout(None);
    match read {
        Ok(line) if line.is_empty() => {
            Err("the process's supervisor ended before starting the command".to_owned())
        }
        Ok(line) => {
            Report::from_line(&line).ok_or_else(|| format!("the supervisor's report is garbled: {line:?}"))
        }
        Err(error) => Err(format!("no report from the process's supervisor: {error}")),
    }
}

/// Reads one line, a byte at a time: a buffered reader could take the supervisor's last line
/// (`ended`, written when a command ends at once) with its first, and drop it.
fn read_line(mut lifeline: &UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < MAX_REPORT_BYTES {
        match lifeline.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Whether a supervisor that exited wrote its last line (`ended`): when not, it was killed from
/// outside and did not end its tree itself.
pub fn ended_on_its_own(lifeline: &UnixStream) -> bool {
    // The supervisor is reaped, so whatever it wrote is in the socket already.
    if lifeline.set_nonblocking(true).is_err() {
        return false;
    }
    read_line(lifeline).is_ok_and(|line| Report::from_line(&line) == Some(Report::Ended))
}
