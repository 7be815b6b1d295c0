//! The local runtime, embedded in the server: each process is a child process of the server,
//! running `container.command` (an argument vector, no shell) in a process group of its own.
//!
//! - Addresses are `127.0.0.1:<container_port>`: there is no network namespace, so the process
//!   listens on the host and `host_port` has no meaning here.
//! - Status: STARTING once spawned, RUNNING once every TCP port accepts connections (at once when
//!   there are none), then EXITED (code 0) or FAILED (non-zero code, signal, or a command that
//!   could not be spawned, with the OS's reason).
//! - The environment is the spec's `env` on top of a few variables of the server's (`PATH`,
//!   `HOME`, `LANG`, `TZ`, `TMPDIR`): never the whole environment, which may hold the server's own
//!   credentials.
//! - Stop sends SIGTERM to the process group, then SIGKILL after the grace period. Nothing
//!   outlives the server: it stops every process when it shuts down, and a child whose server
//!   dies without shutting down gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`).

pub mod output;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use self::output::{OutputBuffer, OutputStream};
use super::{Runtime, RuntimeError, Started, StopTarget, name_taken};
use crate::config::LocalRuntimeSettings;
use crate::secrets::SecretError;
use crate::secrets::SecretStore;
use crate::spec::{
    ProcessInfo, ProcessSpec, ProcessStatus, Protocol, SocketAddress, ValidSpec, ValueOrSecret,
};
use crate::table::ProcessTable;

/// Variables of the server's own environment that processes inherit.
const INHERITED_ENVIRONMENT: &[&str] = &["PATH", "HOME", "LANG", "TZ", "TMPDIR"];

/// How often a starting process's ports are tried.
const READINESS_PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Runs processes as children of the server.
pub struct LocalRuntime {
    table: Arc<ProcessTable>,
    secrets: Arc<dyn SecretStore>,
    settings: LocalRuntimeSettings,
    processes: Mutex<HashMap<String, Arc<LocalProcess>>>,
}

/// One process of the local runtime.
struct LocalProcess {
    spec: ProcessSpec,
    /// The process group (the child's pid), or `None` when the command could not be spawned.
    process_group: Option<Pid>,
    /// The current state; changed only together with the table, under this lock, so that the
    /// table sees the changes in the order they were made.
    info: Mutex<ProcessInfo>,
    /// Set once the child has been reaped.
    exited: watch::Receiver<bool>,
    output: Arc<Mutex<OutputBuffer>>,
}

/// How a child ended, as the process info reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ExitOutcome {
    status: ProcessStatus,
    reason: &'static str,
    message: String,
    exit_code: i32,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a holder panicked: every update is a single
    // assignment or insert.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl LocalRuntime {
    /// A local runtime with no processes yet.
    pub fn new(settings: LocalRuntimeSettings, secrets: Arc<dyn SecretStore>) -> Arc<LocalRuntime> {
        Arc::new(LocalRuntime {
            table: ProcessTable::starting_now(),
            secrets,
            settings,
            processes: Mutex::new(HashMap::new()),
        })
    }

    /// The captured output of a process, oldest first, or `None` for an unknown process.
    pub fn output(&self, process_name: &str) -> Option<Vec<output::OutputChunk>> {
        let process = lock(&self.processes).get(process_name).cloned()?;
        let output = lock(&process.output);
        Some(output.chunks().cloned().collect())
    }

    /// Resolves the spec's environment, secrets included.
    fn environment(
        &self,
        spec: &ProcessSpec,
    ) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, RuntimeError> {
        let mut environment = Vec::new();
        for name in INHERITED_ENVIRONMENT {
            if let Ok(value) = std::env::var(name) {
                environment.push(((*name).to_owned(), zeroize::Zeroizing::new(value)));
            }
        }
        for (index, variable) in spec.container.env.iter().enumerate() {
            let value = match &variable.value {
                ValueOrSecret::Value(value) => zeroize::Zeroizing::new(value.clone()),
                ValueOrSecret::Secret(reference) => crate::secrets::resolve_text(&*self.secrets, reference)
                    .map_err(|error| match error {
                    SecretError::NotText { reference } => RuntimeError::Unsupported {
                        field: format!("container.env[{index}].secret"),
                        message: format!(
                            "{reference} is not UTF-8 text, so it cannot be an environment variable"
                        ),
                    },
                    other => other.into(),
                })?,
            };
            if value.contains('\0') {
                return Err(RuntimeError::Unsupported {
                    field: format!("container.env[{index}]"),
                    message: "the value contains NUL, which an environment variable cannot hold".to_owned(),
                });
            }
            environment.retain(|(name, _)| name != &variable.name);
            environment.push((variable.name.clone(), value));
        }
        Ok(environment)
    }

    /// Spawns the process; a command that cannot be spawned is a FAILED process, not an error.
    /// Returns the child and the notifier of its exit for [`monitor`], unless spawning failed.
    fn spawn(&self, spec: ProcessSpec) -> Result<(Arc<LocalProcess>, Option<Monitored>), RuntimeError> {
        let environment = self.environment(&spec)?;
        let argv = &spec.container.command;
        let mut command = tokio::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .env_clear()
            .envs(environment.iter().map(|(name, value)| (name.as_str(), value.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(directory) = &spec.container.working_dir {
            command.current_dir(directory);
        }
        // SAFETY: the closure runs in the child between fork and exec, and only makes one
        // async-signal-safe system call (prctl). No safe API sets the parent-death signal.
        #[allow(unsafe_code)]
        unsafe {
            command
                .pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from));
        }

        let mut info = ProcessInfo::starting(&spec, jiff::Timestamp::now());
        info.socket_addresses = socket_addresses(&spec);
        let (exited_sender, exited) = watch::channel(false);
        let output = Arc::new(Mutex::new(OutputBuffer::new(self.settings.output_buffer_bytes)));
        let (child, process_group) = match command.spawn() {
            Ok(child) => {
                let process_group = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw);
                (Some(child), process_group)
            }
            Err(error) => {
                info.status = ProcessStatus::Failed;
                info.reason = Some("SpawnFailed".to_owned());
                info.message = Some(format!("cannot run `{}`: {error}", argv[0]));
                exited_sender.send_replace(true);
                (None, None)
            }
        };
        let process = Arc::new(LocalProcess { spec, process_group, info: Mutex::new(info), exited, output });
        Ok((process, child.map(|child| (child, exited_sender))))
    }

    async fn stop_process(&self, process: Arc<LocalProcess>) -> String {
        let name = process.spec.process_name.clone();
        process.update(&self.table, |info| {
            info.status = ProcessStatus::Stopping;
        });
        if let Some(process_group) = process.process_group {
            signal_group(process_group, Signal::SIGTERM);
            let mut exited = process.exited.clone();
            let grace = tokio::time::timeout(self.settings.stop_grace(), exited.wait_for(|done| *done));
            let reaped = grace.await.is_ok();
            if !reaped {
                tracing::warn!(process = %name, "still running after the grace period; sending SIGKILL");
            }
            // SIGKILL also reaches what the process left behind in its group.
            signal_group(process_group, Signal::SIGKILL);
            let _ = exited.wait_for(|done| *done).await;
        }
        {
            let mut processes = lock(&self.processes);
            if processes.get(&name).is_some_and(|current| Arc::ptr_eq(current, &process)) {
                processes.remove(&name);
            }
        }
        self.table.remove(&name);
        name
    }
}

/// A spawned child and the notifier its monitor sends on once the child is reaped.
type Monitored = (tokio::process::Child, watch::Sender<bool>);

fn signal_group(process_group: Pid, signal: Signal) {
    match killpg(process_group, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => tracing::warn!(%process_group, %signal, %error, "cannot signal process group"),
    }
}

fn socket_addresses(spec: &ProcessSpec) -> Vec<SocketAddress> {
    spec.container
        .ports
        .iter()
        .filter_map(|port| u16::try_from(port.container_port).ok())
        .map(|port| SocketAddress {
            host: "127.0.0.1".to_owned(),
            port,
            is_public: spec.has_public_ip,
            dns_name: None,
        })
        .collect()
}

impl LocalProcess {
    /// Changes the process's info and records it in the table, unless a stop has begun (from
    /// then on only the stop changes the info).
    fn update(&self, table: &ProcessTable, change: impl FnOnce(&mut ProcessInfo)) {
        let mut info = lock(&self.info);
        change(&mut info);
        table.upsert(info.clone());
    }

    fn update_unless_stopping(&self, table: &ProcessTable, change: impl FnOnce(&mut ProcessInfo)) {
        let mut info = lock(&self.info);
        if info.status == ProcessStatus::Stopping {
            return;
        }
        change(&mut info);
        table.upsert(info.clone());
    }
}

/// Watches a child until it is reaped: captures its output, marks it RUNNING once ready, and
/// records how it ended.
async fn monitor(
    mut child: tokio::process::Child,
    table: Arc<ProcessTable>,
    process: Arc<LocalProcess>,
    exited: watch::Sender<bool>,
) {
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
    let status = {
        let wait = child.wait();
        tokio::pin!(wait);
        tokio::select! {
            status = &mut wait => status,
            () = ready(&tcp_ports) => {
                process.update_unless_stopping(&table, |info| {
                    if info.status == ProcessStatus::Starting {
                        info.status = ProcessStatus::Running;
                    }
                });
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
    for reader in readers {
        let _ = reader.await;
    }
    process.update_unless_stopping(&table, |info| {
        info.status = outcome.status;
        info.reason = Some(outcome.reason.to_owned());
        info.message = Some(outcome.message.clone());
        info.exit_code = Some(outcome.exit_code);
    });
    exited.send_replace(true);
}

/// Resolves once every port accepts a TCP connection on loopback.
async fn ready(ports: &[u16]) {
    for &port in ports {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(READINESS_PROBE_INTERVAL).await;
        }
    }
}

async fn capture(mut pipe: impl AsyncRead + Unpin, stream: OutputStream, output: Arc<Mutex<OutputBuffer>>) {
    let mut buffer = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => lock(&output).push(stream, &buffer[..read]),
        }
    }
}

fn exit_outcome(status: ExitStatus) -> ExitOutcome {
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
        let (process, child) = {
            let mut processes = lock(&self.processes);
            if let Some(existing) = processes.get(&spec.process_name) {
                let info = lock(&existing.info).clone();
                name_taken(&spec, &existing.spec, info.status == ProcessStatus::Stopping)?;
                return Ok(Started { process: info, created: false });
            }
            // Spawning under the lock keeps two Starts of one name from both spawning; a fork
            // and exec take about a millisecond.
            let (process, child) = self.spawn(spec.into_inner())?;
            processes.insert(process.spec.process_name.clone(), Arc::clone(&process));
            (process, child)
        };
        let info = lock(&process.info).clone();
        self.table.upsert(info.clone());
        if let Some((child, exited)) = child {
            tokio::spawn(monitor(child, Arc::clone(&self.table), Arc::clone(&process), exited));
        }
        Ok(Started { process: info, created: true })
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

    async fn shutdown(&self) {
        let all: Vec<Arc<LocalProcess>> = lock(&self.processes).values().cloned().collect();
        if !all.is_empty() {
            tracing::info!(count = all.len(), "stopping every local process");
        }
        futures::future::join_all(all.into_iter().map(|process| self.stop_process(process))).await;
    }
}
