//! The supervisor of one local process: the server binary re-executed as
//! `hydroplane __supervise GRACE_MS WORKING_DIR USER CGROUP -- COMMAND...`, between the server and the
//! process, so that a process is its whole tree.
//!
//! - It is a child subreaper (`PR_SET_CHILD_SUBREAPER`): whatever a descendant does with
//!   sessions, process groups or double forks, once orphaned it becomes the supervisor's child,
//!   so the supervisor always knows and can signal the whole tree (found through `/proc`).
//! - It runs the command in a process group of its own, with its own environment (which the
//!   server gave the supervisor), the working directory, `/dev/null` as stdin, and the
//!   supervisor's stdout and stderr (the server's capture pipes), and no other descriptor: every
//!   one it inherited is closed on exec. Under `runtime.run_as` the command runs as that user
//!   (the user's supplementary groups set, then its group id and user id); the supervisor stays
//!   the server's user, out of the command's reach.
//! - The command gets SIGKILL when the supervisor dies (`PR_SET_PDEATHSIG`, set after the user
//!   switch, which would clear it): a command that kills its supervisor kills itself.
//! - Its stdin is the **lifeline**: one end of a socket pair whose other end only the server holds.
//!   The supervisor first writes its [`Report`] there (the command's pid, or why it could not be
//!   started); end of file later means the server is gone, and the tree gets SIGKILL.
//! - SIGTERM (a Stop) goes to every descendant; after the grace period, SIGKILL to what is left.
//! - When the command ends on its own, what it left behind gets SIGKILL at once, as in a
//!   container whose main process exits.
//! - It exits once its tree is gone, as the command did: the same exit code, or the same signal
//!   raised on itself, so the server reads the command's own status; just before, it writes
//!   `ended` on the lifeline, so that a supervisor killed from outside is told from one whose
//!   command was killed.
//!
//! A SIGKILL of the supervisor itself skips all this: then its orphans become the server's
//! children (the server is a subreaper too) and the server kills them ([`super::orphans`]).

// The supervisor has no async runtime: it is blocking code that measures real time.
#![allow(clippy::disallowed_types)]

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::procfs;

/// The first argument that makes the server binary a supervisor.
pub const MODE: &str = "__supervise";

/// The exit code of a supervisor that could not start its command (it reported why first).
const NOT_STARTED: u8 = 127;

/// What a supervisor runs: the arguments after [`MODE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// How long the tree has between SIGTERM and SIGKILL on a Stop.
    pub grace: Duration,
    /// Where the command runs.
    pub working_dir: WorkingDir,
    /// The user the command runs as; `None`: the supervisor's own.
    pub user: Option<RunAs>,
    /// The process's cgroup, which the supervisor joins before it starts the command; `None`:
    /// the host gives the server no cgroups.
    pub cgroup: Option<PathBuf>,
    /// The command's argument vector, never empty.
    pub command: Vec<OsString>,
}

impl Request {
    /// The arguments that ask a supervisor for this (after [`MODE`]).
    pub fn to_arguments(&self) -> Vec<OsString> {
        let working_dir = match &self.working_dir {
            WorkingDir::Named(path) => ("named", path),
            WorkingDir::Own(path) => ("own", path),
        };
        let mut working_dir_argument = OsString::from(working_dir.0);
        working_dir_argument.push(":");
        working_dir_argument.push(working_dir.1);
        let user = self.user.as_ref().map(RunAs::to_argument).unwrap_or_default();
        let mut arguments = vec![
            OsString::from(self.grace.as_millis().to_string()),
            working_dir_argument,
            OsString::from(user),
            self.cgroup.as_ref().map(|path| path.clone().into_os_string()).unwrap_or_default(),
            OsString::from("--"),
        ];
        arguments.extend(self.command.iter().cloned());
        arguments
    }

    /// The request these arguments (after [`MODE`]) make, if they make one.
    pub fn from_arguments(arguments: &[OsString]) -> Option<Request> {
        let [grace, working_dir, user, cgroup, separator, command @ ..] = arguments else { return None };
        if separator != "--" || command.is_empty() {
            return None;
        }
        let grace = Duration::from_millis(grace.to_str()?.parse().ok()?);
        let working_dir = working_dir.as_bytes();
        let working_dir = if let Some(path) = working_dir.strip_prefix(b"named:") {
            WorkingDir::Named(PathBuf::from(OsStr::from_bytes(path)))
        } else {
            WorkingDir::Own(PathBuf::from(OsStr::from_bytes(working_dir.strip_prefix(b"own:")?)))
        };
        let user = match user.to_str()? {
            "" => None,
            user => Some(RunAs::from_argument(user)?),
        };
        let cgroup = (!cgroup.is_empty()).then(|| PathBuf::from(cgroup));
        Some(Request { grace, working_dir, user, cgroup, command: command.to_vec() })
    }
}

/// Where a command runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkingDir {
    /// The directory the spec names, entered as the command's user (whose rights to reach it
    /// are checked).
    Named(PathBuf),
    /// The process's own directory, made by the server: the supervisor enters it before the
    /// command starts, so that a command running as another user needs no right on its parents.
    Own(PathBuf),
}

/// A user and groups a command runs as, by number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// The supplementary groups: the user's own list from the group database (as `initgroups`
    /// makes it), `gid` included.
    pub groups: Vec<u32>,
}

impl RunAs {
    /// `UID:GID:G1,G2,...`, for a supervisor's arguments.
    fn to_argument(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        format!("{}:{}:{}", self.uid, self.gid, groups.join(","))
    }

    /// The user of an argument [`RunAs::to_argument`] made.
    fn from_argument(argument: &str) -> Option<RunAs> {
        let mut parts = argument.splitn(3, ':');
        let (uid, gid, groups) = (parts.next()?, parts.next()?, parts.next()?);
        let groups = match groups {
            "" => Vec::new(),
            groups => groups.split(',').map(|group| group.parse().ok()).collect::<Option<_>>()?,
        };
        Some(RunAs { uid: uid.parse().ok()?, gid: gid.parse().ok()?, groups })
    }

    /// Becomes this user in a forked child, before exec: its supplementary groups, then its group
    /// id, then its user id (after which none of the others could be set). Only system calls,
    /// nothing allocated: it runs between fork and exec of a process that may have threads.
    pub fn become_in_child(&self) -> std::io::Result<()> {
        // SAFETY: the pointer and length describe `self.groups`, alive for the call; setgroups
        // only reads them.
        #[allow(unsafe_code)]
        let result = unsafe { nix::libc::setgroups(self.groups.len(), self.groups.as_ptr()) };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
        nix::unistd::setgid(nix::unistd::Gid::from_raw(self.gid))?;
        nix::unistd::setuid(nix::unistd::Uid::from_raw(self.uid))?;
        Ok(())
    }
}

/// The one line a supervisor writes on its lifeline before anything else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The command runs, with this pid (also its process group).
    Started(Pid),
    /// The command could not be started; the supervisor exits.
    Failed(String),
    /// The supervisor ended the tree and exits as its command did: its last line.
    Ended,
}

impl Report {
    /// The line, newline included.
    pub fn to_line(&self) -> String {
        match self {
            Report::Started(pid) => format!("started {pid}\n"),
            // One line: the message's own line ends would end the report early.
            Report::Failed(message) => format!("failed {}\n", message.replace('\n', " ")),
            Report::Ended => "ended\n".to_owned(),
        }
    }

    /// The report of a line (with or without its newline).
    pub fn from_line(line: &str) -> Option<Report> {
        let line = line.trim_end_matches('\n');
        if line == "ended" {
            return Some(Report::Ended);
        }
        if let Some(pid) = line.strip_prefix("started ") {
            return pid.parse().ok().map(|pid| Report::Started(Pid::from_raw(pid)));
        }
        line.strip_prefix("failed ").map(|message| Report::Failed(message.to_owned()))
    }
}

/// Runs the supervisor with the arguments after [`MODE`]; returns (or dies) as its command did.
pub fn run(arguments: &[OsString]) -> ExitCode {
    let Some(request) = Request::from_arguments(arguments) else {
        eprintln!("hydroplane {MODE}: this mode is for the server's own use");
        return ExitCode::from(NOT_STARTED);
    };
    match Supervisor::start(&request) {
        Ok(supervisor) => supervisor.supervise(request.grace),
        Err(message) => {
            report(&Report::Failed(message));
            ExitCode::from(NOT_STARTED)
        }
    }
}

/// Writes a report on the lifeline (stdin, a socket); a server that is gone cannot read it, and
/// the tree is killed once the lifeline is seen closed.
fn report(report: &Report) {
    let line = report.to_line();
    let mut written = 0;
    while written < line.len() {
        match nix::unistd::write(std::io::stdin().as_fd(), &line.as_bytes()[written..]) {
            Ok(count) => written += count,
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// A running command and the signals that drive its supervisor.
struct Supervisor {
    command: Pid,
    signals: SignalFd,
}

impl Supervisor {
    /// Becomes the subreaper, takes SIGTERM, SIGINT and SIGCHLD as readable events, and starts
    /// the command; the error is the report's message.
    fn start(request: &Request) -> Result<Supervisor, String> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|error| format!("cannot become the subreaper of the process tree: {error}"))?;
        let supervisor = nix::unistd::getpid();
        if let Some(cgroup) = &request.cgroup {
            // Before the command exists: everything it starts is born in the cgroup.
            super::cgroup::join(cgroup)
                .map_err(|error| format!("cannot join the cgroup `{}`: {error}", cgroup.display()))?;
        }
        let program = &request.command[0];
        let mut command = std::process::Command::new(program);
        command.args(&request.command[1..]).stdin(Stdio::null()).process_group(0);
        match &request.working_dir {
            WorkingDir::Named(directory) => {
                // Said plainly: a missing directory would otherwise read as a missing program.
                // Checked as the supervisor's user; the command's own user enters it (below).
                check_directory(directory)?;
                if request.user.is_none() {
                    command.current_dir(directory);
                }
            }
            WorkingDir::Own(directory) => {
                check_directory(directory)?;
                std::env::set_current_dir(directory).map_err(|error| {
                    format!("the working directory `{}` cannot be entered: {error}", directory.display())
                })?;
            }
        }
        // Under run_as the command enters a named directory as its own user, once it is that user:
        // std would enter it before the switch below, as the supervisor's (root).
        let named_directory = match (&request.user, &request.working_dir) {
            (Some(_), WorkingDir::Named(directory)) => Some(
                std::ffi::CString::new(directory.as_os_str().as_bytes())
                    .map_err(|_| format!("the working directory `{}` holds NUL", directory.display()))?,
            ),
            _ => None,
        };
        let user = request.user.clone();
        // SAFETY: the closure runs in the forked child before exec and makes only system calls
        // that are async-signal-safe (setgroups, setgid, setuid, chdir, prctl, getppid,
        // close_range), allocating nothing: the group list and the path were made before the fork.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(move || {
                if let Some(user) = &user {
                    // The user's own groups, not std's empty list: the supervisor runs as root to
                    // switch users, and std drops every group but the one it is given.
                    user.become_in_child()?;
                }
                if let Some(directory) = &named_directory
                    && nix::libc::chdir(directory.as_ptr()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                // After the user switch (std's, just before), which would clear it.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The supervisor died between the fork and the line above: no signal will come.
                if nix::unistd::getppid() != supervisor {
                    return Err(std::io::Error::other("the supervisor is gone"));
                }
                // Whatever the server inherited from its own parent and did not mark
                // close-on-exec must not reach the command: only 0, 1 and 2 do (std's own
                // error pipe is close-on-exec already).
                if nix::libc::close_range(3, nix::libc::c_uint::MAX, nix::libc::CLOSE_RANGE_CLOEXEC as i32)
                    != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|error| format!("cannot run `{}`: {error}", program.to_string_lossy()))?;
        let command = Pid::from_raw(child.id() as i32);
        // The child is reaped through waitpid below, not through the handle.
        drop(child);
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
            mask.add(signal);
        }
        // Blocked only once the command runs: std's posix_spawn would pass the mask on to it. A
        // SIGCHLD before this is not lost (the loop reaps before it polls), and the server sends
        // SIGTERM only after the report below.
        let signals = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(|error| format!("cannot block signals: {error}"))
            .and_then(|()| {
                SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                    .map_err(|error| format!("cannot open a signalfd: {error}"))
            });
        let signals = match signals {
            Ok(signals) => signals,
            Err(message) => {
                // Unsupervised, the command must not run on.
                let _ = nix::sys::signal::killpg(command, Signal::SIGKILL);
                return Err(message);
            }
        };

        report(&Report::Started(command));
        Ok(Supervisor { command, signals })
    }

    /// Waits for the command, a Stop or the server's end; returns once the tree is gone.
    fn supervise(self, grace: Duration) -> ExitCode {
        let mut command_status = None;
        let mut stop_deadline: Option<Instant> = None;
        loop {
            let children_left = self.reap(&mut command_status);
            if !children_left {
                break;
            }
            if command_status.is_some() && stop_deadline.is_none() {
                // The command ended on its own: nothing it left behind may outlive it.
                break;
            }
            let timeout = match stop_deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                    _ => break,
                },
                None => PollTimeout::NONE,
            };
            let stdin = std::io::stdin();
            let mut fds = [
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
            let lifeline_ready = fds[0].any().unwrap_or(true);
            let signals_ready = fds[1].any().unwrap_or(false);
            if lifeline_ready && server_gone() {
                break;
            }
            if signals_ready {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    let signal = Signal::try_from(info.ssi_signo as i32);
                    if matches!(signal, Ok(Signal::SIGTERM | Signal::SIGINT)) && stop_deadline.is_none() {
                        stop_deadline = Some(Instant::now() + grace);
                        signal_tree(Signal::SIGTERM);
                    }
                }
            }
        }
        kill_tree(self.command, &mut command_status);
        report(&Report::Ended);
        exit_as(command_status)
    }

    /// Reaps every child that ended (orphans included), keeping the command's status; returns
    /// whether any child is left.
    fn reap(&self, command_status: &mut Option<WaitStatus>) -> bool {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(status) => {
                    if status.pid() == Some(self.command) {
                        *command_status = Some(status);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }
}

/// Whether the lifeline, readable, is closed: the server is gone. Anything the server wrote is
/// ignored.
fn server_gone() -> bool {
    let mut buffer = [0u8; 64];
    match nix::unistd::read(std::io::stdin().as_fd(), &mut buffer) {
        Ok(0) => true,
        Ok(_) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => false,
        Err(_) => true,
    }
}

/// Whether `directory` is one, said plainly when not.
fn check_directory(directory: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(directory) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(format!("the working directory `{}` is not a directory", directory.display())),
        Err(error) => Err(format!("the working directory `{}` cannot be used: {error}", directory.display())),
    }
}

/// Sends a signal to every process of the tree.
fn signal_tree(signal: Signal) {
    for pid in procfs::descendants(nix::unistd::getpid()) {
        let _ = kill(pid, signal);
    }
}

/// SIGKILLs the tree and reaps it until no child is left: a process forked while the tree was
/// being listed is orphaned by its parent's death, becomes a child, and is found next round.
fn kill_tree(command: Pid, command_status: &mut Option<WaitStatus>) {
    loop {
        // No child means no descendant (every orphan becomes ours), and then the scan of /proc,
        // the costly part of a Stop on a host with many processes, is not needed.
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                if status.pid() == Some(command) {
                    *command_status = Some(status);
                }
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
        signal_tree(Signal::SIGKILL);
        match waitpid(None, None) {
            Ok(status) => {
                if status.pid() == Some(command) {
                    *command_status = Some(status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Ends the supervisor as the command ended.
fn exit_as(status: Option<WaitStatus>) -> ExitCode {
    match status {
        Some(WaitStatus::Exited(_, code)) => ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX)),
        Some(WaitStatus::Signaled(_, signal, _)) => raise(signal),
        _ => {
            let _ = std::io::stderr().write_all(b"hydroplane supervisor: the command's status was lost\n");
            ExitCode::from(NOT_STARTED)
        }
    }
}

/// Dies of `signal`, without a core dump (the command's own dump, if any, was already made).
fn raise(signal: Signal) -> ExitCode {
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    if signal != Signal::SIGKILL && signal != Signal::SIGSTOP {
        // SAFETY: SIG_DFL installs no handler, so no handler code can run at a bad moment; the
        // supervisor is single-threaded and about to die. Resetting is needed because Rust
        // programs start with SIGPIPE ignored, and an ignored signal would not end us.
        #[allow(unsafe_code)]
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    let mut mask = SigSet::empty();
    mask.add(signal);
    let _ = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
    let _ = kill(nix::unistd::getpid(), signal);
    // Only a signal whose default is to be ignored gets here; the shell's convention instead.
    ExitCode::from(128u8.wrapping_add(signal as u8))
}

/// Whether `argument` (the server binary's first) asks for the supervisor.
pub fn is_mode(argument: &OsStr) -> bool {
    argument.as_bytes() == MODE.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_reports_survive_their_encoding() {
        let request = Request {
            grace: Duration::from_millis(1500),
            working_dir: WorkingDir::Named(PathBuf::from("/srv/app dir")),
            user: Some(RunAs { uid: 1001, gid: 1002, groups: vec![1002, 27, 1003] }),
            cgroup: Some(PathBuf::from("/sys/fs/cgroup/hydroplane-1/web.1")),
            command: vec!["sh".into(), "-c".into(), "echo -- \"$1\"".into(), "--".into()],
        };
        assert_eq!(Request::from_arguments(&request.to_arguments()), Some(request.clone()));
        let own = Request {
            working_dir: WorkingDir::Own(PathBuf::from("/state/run-1/a.1/work")),
            user: None,
            cgroup: None,
            ..request
        };
        assert_eq!(Request::from_arguments(&own.to_arguments()), Some(own.clone()));
        let groupless = Request { user: Some(RunAs { uid: 7, gid: 8, groups: Vec::new() }), ..own };
        assert_eq!(Request::from_arguments(&groupless.to_arguments()), Some(groupless));
        assert_eq!(
            Request::from_arguments(&["1".into(), "own:/".into(), "".into(), "".into(), "--".into()]),
            None
        );
        assert_eq!(
            Request::from_arguments(&[
                "1".into(),
                "/x".into(),
                "".into(),
                "".into(),
                "--".into(),
                "sh".into()
            ]),
            None
        );

        for report in [
            Report::Started(Pid::from_raw(4242)),
            Report::Failed("cannot run `x`: gone".into()),
            Report::Ended,
        ] {
            assert_eq!(Report::from_line(&report.to_line()), Some(report));
        }
        assert_eq!(
            Report::from_line(&Report::Failed("two\nlines".into()).to_line()),
            Some(Report::Failed("two lines".into()))
        );
    }
}
