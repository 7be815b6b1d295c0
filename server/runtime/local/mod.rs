//! The local runtime, embedded in the server: each process is a tree of host processes under a
//! [`supervisor`] (the server binary re-executed), which runs `container.command` (an argument
//! vector, no shell) and answers for everything the command starts.
//!
//! - A process is its whole tree: the supervisor is the subreaper of every descendant, so a
//!   grandchild that left for another session (`setsid`, a double fork, `nohup`, a daemon) is
//!   still signalled on Stop, killed when the command itself ends, and killed when the server dies
//!   (the supervisor's lifeline closes). Stop answers within the grace period and one second:
//!   after grace + 0.5 s the server SIGKILLs the supervisor and the command's group itself.
//! - Addresses are `127.0.0.1:<container_port>`: there is no network namespace, so the process
//!   listens on the host and `host_port` has no meaning here.
//! - Status: STARTING once spawned; RUNNING once its readiness check passes, or without one once
//!   the tree itself listens on every declared TCP port (a socket of one of its processes in
//!   LISTEN state on it, from `/proc`: a port another program serves does not count), at once
//!   when there are none; then EXITED (code 0) or FAILED (non-zero code, signal, or a command
//!   that could not be spawned, with the reason) as soon as the command itself ends, whatever its
//!   descendants held open, unless its restart policy starts it again ([`lifecycle`]).
//! - The environment is the spec's `env` on top of the server's variables named in
//!   `env_passthrough` (by default `PATH`, `HOME`, `LANG`, `LC_ALL`, `TZ`, `TMPDIR`): never the
//!   whole environment, which may hold the server's own credentials. No descriptor but 0, 1 and
//!   2 reaches the command. It runs in `container.working_dir`, else in a 0700 directory of its
//!   own under the run directory, as the user `run_as_by_group` or `run_as` gives its group
//!   ([`users`]), else as the server's user. docs/local-runtime-security.md says what this
//!   contains and what it does not.
//! - The server is a subreaper too ([`orphans`]): a supervisor killed from outside leaves its
//!   tree to the server, which kills it before the status says the run ended.
//! - A Start does its blocking work (secrets, environment, fork and exec, the supervisor's report)
//!   on a blocking thread, outside the runtime's lock: the name is reserved under the lock first,
//!   so two Starts of one name spawn once.
//!
//! - Output is kept twice: the newest in memory (`output_buffer_bytes`), and up to
//!   `max_log_bytes` on disk under `log_dir`, in a directory of this server run's; Logs reads
//!   both. A process's files are removed `log_retention_seconds` after its Stop (at once by
//!   default), and this run's directory when the server shuts down (unless retention is set: then
//!   the next server to start on that `log_dir` removes it).
//!
//! Where to read: [`launch`] (environment and spawning), [`supervisor`] (the tree), [`lifecycle`]
//! (restarts and the deadline), [`monitor`] (one run: status, checks and output), [`health`] (the
//! checks), [`procfs`] (what `/proc` says), [`orphans`] (the server as subreaper), [`users`]
//! (who runs a process), [`output`] (the bounded buffer),
//! [`disk`] (the files and their format), [`logs`] (serving Logs).

mod cgroup;
pub mod disk;
// The docker runtime runs the same checks at its containers' addresses.
pub(crate) mod health;
mod launch;
pub(crate) mod lifecycle;
pub mod logs;
mod monitor;
mod orphans;
pub mod output;
mod procfs;
pub mod supervisor;
pub mod users;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use self::launch::{Placement, SupervisorProgram};
use self::logs::ProcessOutput;
use self::supervisor::WorkingDir;
use self::users::{ProcessUser, ProcessUsers};
use super::logs::{LogPieces, LogsQuery};
use super::{Runtime, RuntimeError, SetupError, Started, StopTarget, name_taken};
use crate::config::LocalRuntimeSettings;
use crate::secrets::SecretStore;
use crate::spec::{ProcessInfo, ProcessSpec, ProcessStatus, SocketAddress, ValidSpec};
use crate::table::ProcessTable;

/// How long after the grace period a supervisor gets to report its tree gone before the server
/// kills it: the supervisor SIGKILLs the tree at the grace period itself.
const SUPERVISOR_MARGIN: Duration = Duration::from_millis(500);

/// The directory of the run directory that holds the processes' own working directories.
const WORK_DIRECTORIES: &str = "work";

/// How long the last resort may take before Stop answers anyway.
const LAST_RESORT_WAIT: Duration = Duration::from_millis(400);

/// Runs processes as supervised trees of host processes.
pub struct LocalRuntime {
    table: Arc<ProcessTable>,
    secrets: Arc<dyn SecretStore>,
    settings: LocalRuntimeSettings,
    /// The binary that supervises each process, found once; without it every Start is FAILED.
    supervisor: Result<SupervisorProgram, String>,
    /// Shared with the launches, which run as tasks of their own.
    processes: ProcessesByName,
    /// This run's directory of output files, `run-<pid>` in the log directory.
    run_directory: PathBuf,
    /// How many processes were reserved, to name each one's directory.
    reserved: AtomicU64,
    /// The user each group's processes run as.
    users: ProcessUsers,
    /// This run's cgroup, where the host lets the server make one.
    cgroups: Option<cgroup::RunCgroup>,
}

/// The processes by name, reservations included.
type ProcessesByName = Arc<Mutex<HashMap<String, Arc<LocalProcess>>>>;

/// One process of the local runtime, from its reservation on.
struct LocalProcess {
    spec: ProcessSpec,
    /// Where and as whom its command runs.
    placement: Placement,
    /// The user it runs as, when not the server's.
    user: Option<ProcessUser>,
    /// The current state; changed only together with the table, under this lock, so that the
    /// table sees the changes in the order they were made.
    info: Mutex<ProcessInfo>,
    /// How its launch went.
    launch: watch::Receiver<Launch>,
    /// Set once no run is left: the last supervisor was reaped and no restart follows (at once
    /// when nothing was spawned).
    exited: watch::Receiver<bool>,
    /// Set when a Stop begins: no run starts after it, and a wait to restart ends.
    stop_requested: watch::Sender<bool>,
    output: Arc<ProcessOutput>,
}

/// The senders a reservation's owner fills in.
struct Reservation {
    process: Arc<LocalProcess>,
    launch: watch::Sender<Launch>,
    exited: watch::Sender<bool>,
}

/// How far a process's launch got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Launch {
    /// The name is reserved; the supervisor is being spawned.
    Pending,
    /// The supervisor runs the command.
    Running {
        /// The supervisor's pid.
        supervisor: Pid,
        /// The command's pid and process group.
        command: Pid,
    },
    /// Nothing runs now: between two runs, after the last one, or when none could be started.
    NotStarted,
    /// The Start failed with an error and the reservation was released.
    Withdrawn,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: every update is a single
    // assignment or insert.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalRuntime {
    /// A local runtime with no processes yet, supervising them with the server's own binary;
    /// fails when the log directory cannot be made.
    pub fn new(
        settings: LocalRuntimeSettings,
        secrets: Arc<dyn SecretStore>,
    ) -> Result<Arc<LocalRuntime>, SetupError> {
        let log_dir_error = |source| SetupError::LogDirectory { path: settings.log_dir.clone(), source };
        let log_dir = crate::secrets::expand_home(&settings.log_dir).map_err(|error| {
            log_dir_error(std::io::Error::new(std::io::ErrorKind::NotFound, error.to_string()))
        })?;
        let users = ProcessUsers::resolve(&settings).map_err(|message| SetupError::RunAs { message })?;
        let run_directory = disk::prepare_run_directory(&log_dir).map_err(log_dir_error)?;
        tracing::debug!(directory = %run_directory.display(), "keeping the output of local processes here");
        disk::create_private_directory(&run_directory.join(WORK_DIRECTORIES)).map_err(log_dir_error)?;
        if let Err(error) = orphans::become_subreaper() {
            tracing::warn!(
                %error,
                "the server cannot be the subreaper of its processes: a process that kills its own \
                 supervisor leaves its descendants running"
            );
        }
        if users.is_shared() {
            tracing::warn!(
                "local processes run as the server's own user (id {}): each can read the others' \
                 environment and output and signal them and the server, whatever the groups of the \
                 tokens that started them; set runtime.run_as_by_group (or runtime.run_as) to run \
                 them as other users",
                nix::unistd::geteuid()
            );
        }
        let cgroups = match cgroup::RunCgroup::prepare(&run_directory) {
            Ok(run) => Some(run),
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "no cgroup per local process: a tree orphaned in the moment the server is SIGKILLed \
                     is not ended by the next server"
                );
                None
            }
        };
        let supervisor = SupervisorProgram::of_this_server();
        if let Err(error) = &supervisor {
            tracing::error!(%error, "local processes cannot be started");
        }
        Ok(Arc::new(LocalRuntime {
            table: ProcessTable::starting_now(),
            secrets,
            settings,
            supervisor,
            processes: Arc::new(Mutex::new(HashMap::new())),
            run_directory,
            reserved: AtomicU64::new(0),
            users,
            cgroups,
        }))
    }

    /// Reserves the spec's name with a process that is not launched yet, or returns the process
    /// that has it (and the spec back).
    fn reserve(&self, spec: ProcessSpec) -> Result<Reservation, Box<(Arc<LocalProcess>, ProcessSpec)>> {
        let mut processes = lock(&self.processes);
        if let Some(existing) = processes.get(&spec.process_name) {
            return Err(Box::new((Arc::clone(existing), spec)));
        }
        let mut info = ProcessInfo::starting(&spec, jiff::Timestamp::now());
        info.socket_addresses = socket_addresses(&spec);
        let (launch, launch_receiver) = watch::channel(Launch::Pending);
        let (exited, exited_receiver) = watch::channel(false);
        // The number makes a name started again a new directory: it never reads old output.
        let number = self.reserved.fetch_add(1, Ordering::Relaxed) + 1;
        let directory_name = format!("{}.{number}", spec.process_name);
        let directory = self.run_directory.join(&directory_name);
        let output = ProcessOutput::new(
            self.settings.output_buffer_bytes,
            Some(directory),
            self.settings.max_log_bytes,
        );
        let user = self.users.for_group(spec.group.as_deref()).cloned();
        let working_dir = match &spec.container.working_dir {
            Some(directory) => WorkingDir::Named(PathBuf::from(directory)),
            None => WorkingDir::Own(
                self.run_directory.join(WORK_DIRECTORIES).join(format!("{}.{number}", spec.process_name)),
            ),
        };
        let process = Arc::new(LocalProcess {
            placement: Placement {
                working_dir,
                user: user.as_ref().map(|user| user.ids.clone()),
                cgroup: self.cgroups.as_ref().map(|cgroups| cgroups.process(&directory_name)),
            },
            user,
            spec,
            info: Mutex::new(info),
            launch: launch_receiver,
            exited: exited_receiver,
            stop_requested: watch::Sender::new(false),
            output: Arc::new(output),
        });
        processes.insert(process.spec.process_name.clone(), Arc::clone(&process));
        Ok(Reservation { process, launch, exited })
    }

    /// Launches a reserved process in a task of its own, so that a Start whose caller hangs up
    /// still finishes (or withdraws) its reservation.
    async fn launch(&self, reservation: Reservation) -> Result<Started, RuntimeError> {
        let launching = Launching {
            table: Arc::clone(&self.table),
            processes: Arc::clone(&self.processes),
            secrets: Arc::clone(&self.secrets),
            program: self.supervisor.clone(),
            grace: self.settings.stop_grace(),
            env_passthrough: self.settings.env_passthrough.clone(),
        };
        tokio::spawn(launching.run(reservation)).await.unwrap_or_else(|error| {
            Err(RuntimeError::Internal(format!("the launch of a process failed: {error}")))
        })
    }

    async fn stop_process(&self, process: Arc<LocalProcess>) -> String {
        let name = process.spec.process_name.clone();
        process.update(&self.table, |info| {
            info.status = ProcessStatus::Stopping;
        });
        // Before the launch is read: a run that the lifecycle starts after this sees it and ends
        // itself, and one it started before is the one read here.
        process.stop_requested.send_replace(true);
        let mut launch = process.launch.clone();
        let launched = launch
            .wait_for(|launch| *launch != Launch::Pending)
            .await
            .map_or(Launch::NotStarted, |launch| *launch);
        if let Launch::Running { supervisor, command } = launched {
            // The supervisor passes SIGTERM to the tree and SIGKILLs it after the grace period.
            signal_process(supervisor, Signal::SIGTERM);
            let mut exited = process.exited.clone();
            let bound = self.settings.stop_grace() + SUPERVISOR_MARGIN;
            if tokio::time::timeout(bound, exited.wait_for(|done| *done)).await.is_err() {
                tracing::warn!(process = %name, "the supervisor did not end the tree in time; killing it");
                let _ = tokio::task::spawn_blocking(move || last_resort(supervisor, command)).await;
                if tokio::time::timeout(LAST_RESORT_WAIT, exited.wait_for(|done| *done)).await.is_err() {
                    tracing::warn!(process = %name, "the supervisor is still not reaped; forgetting it");
                }
            }
        }
        if launched == Launch::Withdrawn {
            // The Start failed and freed the name; only the STOPPING shown above is left, unless
            // another Start took the name since.
            if !lock(&self.processes).contains_key(&name) {
                self.table.remove(&name);
            }
        } else {
            forget(&self.processes, &process);
            self.table.remove(&name);
        }
        if let Some(directory) = process.output.close() {
            self.remove_output_files(directory).await;
        }
        if let WorkingDir::Own(directory) = &process.placement.working_dir {
            // What the process left in its own directory is not output: it goes with the Stop.
            let directory = directory.clone();
            let _ = tokio::task::spawn_blocking(move || disk::remove_directory(&directory)).await;
        }
        if let Some(path) = process.placement.cgroup.clone() {
            // Empty by now (each run's end killed what was left), unless the last resort ran.
            let _ = tokio::task::spawn_blocking(move || cgroup::remove_tree(&path)).await;
        }
        name
    }

    /// Removes a stopped process's files, at once (before the Stop answers) or once the
    /// retention has passed.
    async fn remove_output_files(&self, directory: PathBuf) {
        let retention = self.settings.log_retention;
        if retention.is_zero() {
            let _ = tokio::task::spawn_blocking(move || disk::remove_directory(&directory)).await;
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(retention).await;
                let _ = tokio::task::spawn_blocking(move || disk::remove_directory(&directory)).await;
            });
        }
    }
}

/// What a launch needs of the runtime.
struct Launching {
    table: Arc<ProcessTable>,
    processes: ProcessesByName,
    secrets: Arc<dyn SecretStore>,
    program: Result<SupervisorProgram, String>,
    grace: Duration,
    env_passthrough: Vec<String>,
}

impl Launching {
    /// Makes the environment and spawns the supervisor on a blocking thread: a command that
    /// cannot be started is a FAILED process; an environment that cannot be made is an error,
    /// and frees the name.
    async fn run(self, reservation: Reservation) -> Result<Started, RuntimeError> {
        let Reservation { process, launch, exited } = reservation;
        let Launching { table, processes, secrets, program, grace, env_passthrough } = self;
        let for_launch = Arc::clone(&process);
        let started = tokio::time::Instant::now();
        let launched = tokio::task::spawn_blocking(move || {
            let environment =
                launch::environment(&*secrets, &for_launch.spec, &env_passthrough, for_launch.user.as_ref())?;
            Ok(program.and_then(|program| {
                if let WorkingDir::Own(directory) = &for_launch.placement.working_dir {
                    disk::create_working_directory(directory, for_launch.placement.user.as_ref()).map_err(
                        |error| {
                            format!("cannot make the working directory `{}`: {error}", directory.display())
                        },
                    )?;
                }
                let launched =
                    launch::launch(&program, &for_launch.spec, &environment, grace, &for_launch.placement)?;
                Ok((launched, program, environment))
            }))
        })
        .await
        .unwrap_or_else(|error| {
            Err(RuntimeError::Internal(format!("the launch of a process failed: {error}")))
        });
        match launched {
            Err(error) => {
                forget(&processes, &process);
                process.output.close();
                launch.send_replace(Launch::Withdrawn);
                exited.send_replace(true);
                Err(error)
            }
            Ok(Err(message)) => {
                let info = process.update_unless_stopping(&table, |info| {
                    info.status = ProcessStatus::Failed;
                    info.reason = Some("SpawnFailed".into());
                    info.message = Some(message);
                });
                process.output.finish();
                launch.send_replace(Launch::NotStarted);
                exited.send_replace(true);
                Ok(Started { process: info, created: true })
            }
            Ok(Ok((launched, program, environment))) => {
                let info = process.update_unless_stopping(&table, |_| {});
                launch.send_replace(Launch::Running {
                    supervisor: launched.supervisor,
                    command: launched.command,
                });
                let lifecycle = lifecycle::Lifecycle {
                    table: Arc::clone(&table),
                    stop_requested: process.stop_requested.subscribe(),
                    process,
                    program,
                    environment: Arc::new(environment),
                    grace,
                    launch,
                    exited,
                };
                tokio::spawn(lifecycle.run(launched, started));
                Ok(Started { process: info, created: true })
            }
        }
    }
}

/// Drops the process from the runtime, unless its name went to another process already.
fn forget(processes: &ProcessesByName, process: &Arc<LocalProcess>) {
    let mut processes = lock(processes);
    if processes.get(&process.spec.process_name).is_some_and(|current| Arc::ptr_eq(current, process)) {
        processes.remove(&process.spec.process_name);
    }
}

/// Kills a supervisor that did not do its job, its command's process group, and every descendant
/// that can still be found from it (listed before the kill, which would orphan them).
fn last_resort(supervisor: Pid, command: Pid) {
    let tree = procfs::descendants(supervisor);
    signal_process(supervisor, Signal::SIGKILL);
    match killpg(command, Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => tracing::warn!(%command, %error, "cannot kill the process group"),
    }
    for pid in tree {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

fn signal_process(pid: Pid, signal: Signal) {
    match kill(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => tracing::warn!(%pid, %signal, %error, "cannot signal the supervisor"),
    }
}

fn socket_addresses(spec: &ProcessSpec) -> Vec<SocketAddress> {
    spec.container
        .ports
        .iter()
        .filter_map(|port| u16::try_from(port.container_port).ok())
        .map(|port| SocketAddress {
            host: "127.0.0.1".into(),
            port,
            is_public: spec.has_public_ip,
            dns_name: None,
        })
        .collect()
}

impl LocalProcess {
    /// Changes the process's info and records it in the table.
    fn update(&self, table: &ProcessTable, change: impl FnOnce(&mut ProcessInfo)) {
        let mut info = lock(&self.info);
        change(&mut info);
        table.upsert(info.clone());
    }

    /// Like [`LocalProcess::update`], unless a stop has begun (from then on only the stop
    /// changes the info); returns the info as it is now.
    fn update_unless_stopping(
        &self,
        table: &ProcessTable,
        change: impl FnOnce(&mut ProcessInfo),
    ) -> ProcessInfo {
        let mut info = lock(&self.info);
        if info.status != ProcessStatus::Stopping {
            change(&mut info);
            table.upsert(info.clone());
        }
        info.clone()
    }
}

#[async_trait]
impl Runtime for LocalRuntime {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn start(&self, spec: ValidSpec) -> Result<Started, RuntimeError> {
        if spec.container.command.is_empty() {
            return Err(RuntimeError::Unsupported {
                field: "container.command".to_owned(),
                message: format!(
                    "the local runtime runs commands, not images: give the command that runs \
                     `{}` on this host, e.g. [\"python3\", \"-m\", \"http.server\", \"8000\"]",
                    spec.container.image_uri
                ),
            });
        }
        let mut spec = spec.into_inner();
        loop {
            let (existing, returned) = match self.reserve(spec) {
                Ok(reservation) => return self.launch(reservation).await,
                Err(taken) => *taken,
            };
            spec = returned;
            // A process still being launched answers once it is (or is withdrawn: then retry).
            let mut launch = existing.launch.clone();
            let launched = launch.wait_for(|launch| *launch != Launch::Pending).await.map(|launch| *launch);
            match launched {
                Ok(Launch::Withdrawn) => continue,
                Err(_) => {
                    return Err(RuntimeError::Internal("a launch ended without its outcome".to_owned()));
                }
                Ok(_) => {}
            }
            let info = lock(&existing.info).clone();
            name_taken(&spec, &existing.spec, info.status == ProcessStatus::Stopping)?;
            return Ok(Started { process: info, created: false });
        }
    }

    async fn stop(&self, target: StopTarget) -> Result<Vec<String>, RuntimeError> {
        let targets: Vec<Arc<LocalProcess>> = {
            let processes = lock(&self.processes);
            match &target {
                StopTarget::Process(name) => match processes.get(name) {
                    Some(process) => vec![Arc::clone(process)],
                    None => return Err(RuntimeError::NotFound { name: name.clone() }),
                },
                StopTarget::Group(group) => processes
                    .values()
                    .filter(|process| process.spec.group.as_ref() == Some(group))
                    .cloned()
                    .collect(),
                StopTarget::Selector(selector) => processes
                    .values()
                    .filter(|process| selector.matches(&process.spec.labels))
                    .cloned()
                    .collect(),
                StopTarget::Processes(names) => {
                    names.iter().filter_map(|name| processes.get(name)).cloned().collect()
                }
            }
        };
        let mut stopped =
            futures::future::join_all(targets.into_iter().map(|process| self.stop_process(process))).await;
        stopped.sort();
        Ok(stopped)
    }

    fn table(&self) -> &Arc<ProcessTable> {
        &self.table
    }

    async fn stored_spec(&self, process_name: &str) -> Option<ProcessSpec> {
        lock(&self.processes).get(process_name).map(|process| process.spec.clone())
    }

    async fn logs(&self, process_name: &str, query: LogsQuery) -> Result<LogPieces, RuntimeError> {
        let process = lock(&self.processes)
            .get(process_name)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound { name: process_name.to_owned() })?;
        if query.previous && process.output.previous_run().is_none() {
            return Err(RuntimeError::NotServable {
                message: format!("process `{process_name}` has not restarted: there is no previous run"),
            });
        }
        Ok(logs::serve(Arc::clone(&process.output), query))
    }

    async fn shutdown(&self) {
        let all: Vec<Arc<LocalProcess>> = lock(&self.processes).values().cloned().collect();
        if !all.is_empty() {
            tracing::info!(count = all.len(), "stopping every local process");
        }
        futures::future::join_all(all.into_iter().map(|process| self.stop_process(process))).await;
        if let Some(cgroups) = self.cgroups.clone() {
            let _ = tokio::task::spawn_blocking(move || cgroups.remove()).await;
        }
        if self.settings.log_retention.is_zero() {
            let run_directory = self.run_directory.clone();
            let _ = tokio::task::spawn_blocking(move || disk::remove_directory(&run_directory)).await;
        } else {
            tracing::info!(
                directory = %self.run_directory.display(),
                "keeping the output files of this run (log_retention_seconds is set); the next server \
                 started on this log_dir removes them"
            );
        }
    }
}
