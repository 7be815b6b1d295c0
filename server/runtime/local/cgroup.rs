//! A cgroup (v2) per process, where the host lets the server make them: whatever a process's
//! tree does with sessions, parents or process groups, its members stay in the cgroup, so the
//! whole tree can be killed at once, even by a server started later.
//!
//! The server makes `hydroplane-<pid>` in its own cgroup (the one `/proc/self/cgroup` names,
//! under the cgroup2 mount), and one cgroup per process in it, `<name>.<n>` as its output
//! directory. Each supervisor joins its process's cgroup before it starts the command. When a
//! run ends, the server kills what is left in the cgroup before it reports the run's end. The
//! run directory records the run's cgroup (`run-<pid>/cgroup`): a server starting on the same
//! `log_dir` kills and removes the cgroups that the runs of servers now gone recorded, so that
//! even a tree orphaned in the moment a server was SIGKILLed does not outlive the next server's
//! start.
//!
//! No controller is enabled: resource limits are not set through these cgroups.
//!
//! Where the cgroup2 hierarchy is missing or not writable (no delegation to an unprivileged
//! user, a read-only mount), the runtime works without cgroups and says so once.

use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The prefix of a server run's cgroup.
const RUN_PREFIX: &str = "hydroplane-";

/// The file of a run directory that holds the path of the run's cgroup.
const RECORD: &str = "cgroup";

/// How many times the server looks whether a killed cgroup is empty, [`EMPTY_POLL`] apart.
const EMPTY_POLLS: u32 = 200;

/// The wait between two looks at a killed cgroup.
const EMPTY_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// This server run's cgroup, under which each process gets its own.
#[derive(Clone, Debug)]
pub struct RunCgroup {
    path: PathBuf,
}

impl RunCgroup {
    /// Makes this run's cgroup in the server's own and writes its path into the run directory
    /// (`run-<pid>/cgroup`), where the next server on the same `log_dir` finds it; the error says
    /// why cgroups cannot be used on this host.
    pub fn prepare(run_directory: &Path) -> Result<RunCgroup, String> {
        let base = own_cgroup_directory()?;
        let path = base.join(format!("{RUN_PREFIX}{}", std::process::id()));
        if path.exists() {
            // A dead server's, whose pid was reused: we are just starting.
            report_leftovers(remove_tree(&path));
        }
        std::fs::create_dir(&path)
            .map_err(|error| format!("cannot make a cgroup in {}: {error}", base.display()))?;
        tidy_dead_runs(&base);
        let record = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(run_directory.join(RECORD));
        record
            .and_then(|mut record| record.write_all(path.as_os_str().as_bytes()))
            .map_err(|error| format!("cannot record the run's cgroup: {error}"))?;
        Ok(RunCgroup { path })
    }

    /// The cgroup of the process whose output directory is `<name>.<n>`.
    pub fn process(&self, directory_name: &str) -> PathBuf {
        self.path.join(directory_name)
    }

    /// Removes this run's cgroup, once every process's is gone.
    pub fn remove(&self) {
        let _ = remove_tree(&self.path);
    }
}

/// Kills what is left in the cgroup that a dead server's run directory `run` records, and
/// removes it. Blocking.
pub fn end_dead_run(run: &Path) {
    let Ok(recorded) = std::fs::read(run.join(RECORD)) else { return };
    let path = PathBuf::from(std::ffi::OsString::from_vec(recorded));
    // Only a run cgroup, in the cgroup2 hierarchy, whatever the file says.
    let is_run_cgroup =
        path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with(RUN_PREFIX))
            && path.join("cgroup.procs").exists()
            && cgroup2_mount().is_ok_and(|mount| path.starts_with(mount));
    if is_run_cgroup {
        report_leftovers(remove_tree(&path));
    }
}

/// Removes the empty cgroups that servers now gone left in `base` (one killed, or one that
/// failed after making its cgroup): a populated one is left alone, for the next server on its
/// own `log_dir` ([`end_dead_run`]), since a cgroup that still holds a process cannot be removed.
fn tidy_dead_runs(base: &Path) {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(RUN_PREFIX))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = pid > 0
            && u32::try_from(pid).is_ok_and(|pid| pid != own)
            && matches!(kill(Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH));
        if gone {
            if let Ok(processes) = std::fs::read_dir(entry.path()) {
                for process in
                    processes.flatten().filter(|process| process.file_type().is_ok_and(|kind| kind.is_dir()))
                {
                    let _ = std::fs::remove_dir(process.path());
                }
            }
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

fn report_leftovers(killed: usize) {
    if killed > 0 {
        tracing::warn!(killed, "killed the processes that a server now gone left running in its cgroups");
    }
}

/// The directory of the server's own cgroup in the cgroup2 hierarchy, or why there is none.
fn own_cgroup_directory() -> Result<PathBuf, String> {
    let mount = cgroup2_mount()?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|error| format!("cannot read /proc/self/cgroup: {error}"))?;
    let own = cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or_else(|| "the server is in no cgroup2 cgroup".to_owned())?;
    Ok(mount.join(own.trim_start_matches('/')))
}

/// Where the cgroup2 hierarchy is mounted.
fn cgroup2_mount() -> Result<PathBuf, String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| format!("cannot read /proc/self/mountinfo: {error}"))?;
    // Fields: id, parent, device, root, mount point, options..., `-`, type, source, options.
    mountinfo
        .lines()
        .find(|line| line.split_once(" - ").is_some_and(|(_, rest)| rest.starts_with("cgroup2 ")))
        .and_then(|line| line.split_whitespace().nth(4))
        .map(PathBuf::from)
        .ok_or_else(|| "no cgroup2 hierarchy is mounted".to_owned())
}

/// Makes a process's cgroup; one left by an earlier run of the process is used again.
pub fn create(path: &Path) -> io::Result<()> {
    match std::fs::create_dir(path) {
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        result => result,
    }
}

/// Moves the calling process into the cgroup at `path`: its children are born there.
pub fn join(path: &Path) -> io::Result<()> {
    std::fs::write(path.join("cgroup.procs"), b"0")
}

/// SIGKILLs every process in the cgroup at `path` and its descendants, and waits (briefly) until
/// they are gone; returns how many there were. Blocking.
pub fn kill_all(path: &Path) -> usize {
    let count = members(path);
    if count == 0 {
        return 0;
    }
    // cgroup.kill (Linux 5.14) kills the whole subtree at once, new forks included; without it,
    // each member is signalled until none is left.
    let killed_at_once = std::fs::write(path.join("cgroup.kill"), b"1").is_ok();
    for _ in 0..EMPTY_POLLS {
        if !killed_at_once {
            for pid in pids(path) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        if !populated(path) {
            break;
        }
        std::thread::sleep(EMPTY_POLL);
    }
    count
}

/// Kills what is in the cgroup at `path`, then removes it and the cgroups in it; returns how
/// many processes were killed. Blocking.
pub fn remove_tree(path: &Path) -> usize {
    let killed = kill_all(path);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    if let Err(error) = std::fs::remove_dir(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(cgroup = %path.display(), %error, "cannot remove a process cgroup");
    }
    killed
}

/// The processes in the cgroup at `path` and in those below it.
fn members(path: &Path) -> usize {
    let mut count = pids(path).len();
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                count += members(&entry.path());
            }
        }
    }
    count
}

/// The pids in `cgroup.procs` (this cgroup only).
fn pids(path: &Path) -> Vec<Pid> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .map(Pid::from_raw)
        .collect()
}

/// Whether a process is left in the cgroup or below it (`populated` of `cgroup.events`).
fn populated(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .map(|events| events.lines().any(|line| line == "populated 1"))
        .unwrap_or(false)
}
