//! What the docker runtime knows of its containers, fed by the engine: one listing, then the
//! event stream, each event answered by an inspection of its container ([`Index::follow`]). The
//! index keeps the process table up to date, runs the server's checks of each run of a container
//! (readiness for the whole run, liveness, restarting a container whose liveness check fails
//! under its restart policy, after a back-off), enforces `max_run_seconds`, and keeps each
//! container's notable events for Describe.
//!
//! A liveness restart waits as the local runtime's restarts do: from at most 1 s, doubling up to
//! 5 min, with a little jitter, starting over after a run that lasted 10 min; meanwhile the
//! process is FAILED with reason `CrashLoopBackOff`. What the engine forgets of those restarts
//! (its count starts again at each start through its API) is kept in the [`Ledger`], so a
//! restarted server counts on from where the last one was and makes a restart that was waiting.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::exec::StartExecResults;
use bollard::models::{ContainerInspectResponse, EventMessage, ExecConfig};
use bollard::query_parameters::{EventsOptions, ListContainersOptions, StopContainerOptions};
use futures::StreamExt;
use zeroize::Zeroizing;

use super::container::{EngineState, PROCESS_LABEL, Snapshot, ours_filter};
use super::ledger::{Ledger, Record};
use super::{engine_message, failed_pull_info, probed_readiness};
use crate::backoff::Backoff;
use crate::runtime::local::health::{self, CheckTarget, Streak};
use crate::runtime::local::lifecycle::{BACKOFF_RESET_AFTER, FIRST_RESTART_DELAY, MAX_RESTART_DELAY};
use crate::runtime::{IndexSync, RuntimeError, RuntimeEvent, StopTarget};
use crate::spec::{CheckAction, HealthCheck, ProcessInfo, ProcessSpec, ProcessStatus};
use crate::table::ProcessTable;

/// How many events of one container Describe keeps (the newest).
const EVENTS_KEPT: usize = 30;
/// Between two probes of the ports of a container without a readiness check, until they answer.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one probe's connection may take.
const PROBE_TIMEOUT_SECONDS: u32 = 1;
/// How many removed containers the index remembers: enough for any inspection that raced with
/// their Stop to have been answered, few enough that a long-lived server's memory stays flat.
const REMOVED_KEPT: usize = 1024;
/// Between a broken event stream and the next listing.
const RESYNC_PAUSE: Duration = Duration::from_secs(1);
/// How many containers are inspected at once while listing.
const INSPECTIONS_AT_ONCE: usize = 16;

/// The index of one server's containers.
pub struct Index {
    docker: Docker,
    network: String,
    /// The grace a container stopped for its liveness check gets.
    stop_grace: Duration,
    table: Arc<ProcessTable>,
    /// What a restarted server must know of the restarts this one made.
    ledger: Ledger,
    /// Whether the engine runs command readiness checks as healthchecks (else the server does).
    engine_checks: bool,
    state: Mutex<State>,
    closed: AtomicBool,
}

#[derive(Default)]
struct State {
    processes: HashMap<String, Process>,
    /// Processes whose image could not be pulled: no container, kept until stopped or started
    /// again.
    failed_pulls: HashMap<String, FailedPull>,
    /// Containers a Stop removed: an inspection that raced with it must not bring them back.
    removed: Removed,
    synced: bool,
    /// Since when, and why, the index has not been following the engine.
    broken: Option<(tokio::time::Instant, String)>,
}

impl State {
    /// The process `name` while its container `id` is still in the run that started at `run`.
    fn run_mut(&mut self, name: &str, id: &str, run: &str) -> Option<&mut Process> {
        self.processes
            .get_mut(name)
            .filter(|process| process.snapshot.id == id && process.snapshot.started_at == run)
    }
}

struct Process {
    snapshot: Snapshot,
    /// The run (its start time) the server's readiness check passes for now.
    ready_run: Option<String>,
    /// Why the current run's readiness check fails, while it does.
    unready: Option<String>,
    /// The run the server's checks are running for.
    checked_run: Option<String>,
    /// The run whose liveness check failed, and how.
    unhealthy: Option<(String, String)>,
    /// Restarts before the engine's own count of the current run: the engine starts counting
    /// again when the server starts a container (as after a failed liveness check). Kept in the
    /// ledger.
    restarts_before: u32,
    /// The delays between liveness restarts.
    backoff: Backoff,
    /// How many delays the back-off has given since it last started over (kept in the ledger).
    backoff_steps: u32,
    /// A liveness restart waiting for its delay: when it is due, and what the process says
    /// meanwhile.
    restart_pending: Option<(jiff::Timestamp, String)>,
    stopping: bool,
    deadline_armed: bool,
    deadline_exceeded: bool,
    events: VecDeque<RuntimeEvent>,
}

/// The ids of the last [`REMOVED_KEPT`] containers a Stop removed, oldest forgotten first.
#[derive(Default)]
struct Removed {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Removed {
    fn insert(&mut self, id: &str) {
        if self.ids.insert(id.to_owned()) {
            self.order.push_back(id.to_owned());
            while self.order.len() > REMOVED_KEPT {
                if let Some(oldest) = self.order.pop_front() {
                    self.ids.remove(&oldest);
                }
            }
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

struct FailedPull {
    spec: ProcessSpec,
    info: ProcessInfo,
    event: RuntimeEvent,
}

/// A process of that name the index knows.
pub enum Existing {
    /// A container.
    Container {
        /// Its last inspection.
        snapshot: Box<Snapshot>,
        /// Whether a Stop is removing it.
        stopping: bool,
        /// What the server tells of it.
        info: ProcessInfo,
    },
    /// A Start whose image could not be pulled.
    FailedPull {
        /// Its spec.
        spec: Box<ProcessSpec>,
        /// What the server tells of it.
        info: ProcessInfo,
    },
}

/// What the server checks of one run of a container.
#[derive(Clone, Debug, Default)]
struct RunChecks {
    /// The spec's readiness check, run for the whole run (a command check is the engine's
    /// healthcheck instead where the engine runs them).
    readiness: Option<HealthCheck>,
    /// Without a readiness check: the declared TCP ports, probed until they all accept a
    /// connection once (as on the local runtime).
    ports: Vec<u16>,
    /// The spec's liveness check.
    liveness: Option<HealthCheck>,
}

impl RunChecks {
    /// The checks of a container's runs, from its spec; `engine_checks`: whether the engine runs
    /// a command readiness check itself.
    fn of(snapshot: &Snapshot, engine_checks: bool) -> RunChecks {
        let Some(spec) = snapshot.spec.as_ref() else { return RunChecks::default() };
        let liveness = spec.liveness.clone();
        match spec.readiness.as_ref() {
            Some(check) if engine_checks && matches!(check.action, CheckAction::Exec { .. }) => {
                RunChecks { readiness: None, ports: Vec::new(), liveness }
            }
            Some(check) => RunChecks { readiness: Some(check.clone()), ports: Vec::new(), liveness },
            None => RunChecks { readiness: None, ports: snapshot.tcp_ports(), liveness },
        }
    }

    /// Whether a check connects to the container's address.
    fn connects(&self) -> bool {
        let connects = |check: &HealthCheck| !matches!(check.action, CheckAction::Exec { .. });
        !self.ports.is_empty()
            || self.readiness.as_ref().is_some_and(connects)
            || self.liveness.as_ref().is_some_and(connects)
    }
}

/// A container as the target of the shared health checks: its address on the network, and its
/// commands run through the engine's exec API.
struct ContainerTarget {
    docker: Docker,
    id: String,
    ip: Option<IpAddr>,
}

impl CheckTarget for ContainerTarget {
    fn address(&self) -> IpAddr {
        // Checks that connect are only run once the container has an address.
        self.ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn exec(&self, command: &[String]) -> impl Future<Output = Result<(), String>> + Send {
        let config = ExecConfig {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        async move {
            let created = self
                .docker
                .create_exec(&self.id, config)
                .await
                .map_err(|error| format!("could not be started: {}", engine_message(&error)))?;
            // Attached, so that the end of its output is the end of the command. A command that
            // outlives the check's timeout keeps running in the container: the engine cannot
            // kill an exec.
            match self.docker.start_exec(&created.id, None).await {
                Ok(StartExecResults::Attached { mut output, .. }) => while output.next().await.is_some() {},
                Ok(StartExecResults::Detached) => {}
                Err(error) => return Err(format!("could not be started: {}", engine_message(&error))),
            }
            let inspected = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|error| format!("could not be inspected: {}", engine_message(&error)))?;
            match inspected.exit_code {
                Some(0) => Ok(()),
                Some(code) => Err(format!("exited with code {code}")),
                None => Err("ended without an exit code".to_owned()),
            }
        }
    }
}

/// Inspects a container. Podman 4's compatible API may answer with its own state `stopped` (a
/// run that ended, before its clean-up or the restart policy's next run), which the Engine API
/// does not have and bollard cannot read: such an answer is read again with `exited`. The
/// answer holds the container's environment, so a failure never carries it.
async fn inspect(docker: &Docker, id: &str) -> Result<ContainerInspectResponse, EngineError> {
    match docker.inspect_container(id, None).await {
        Err(EngineError::JsonDataError { message, contents, column }) => {
            let contents = Zeroizing::new(contents);
            let failed =
                || EngineError::JsonDataError { message: message.clone(), contents: String::new(), column };
            let mut value: serde_json::Value = serde_json::from_str(&contents).map_err(|_| failed())?;
            match value.pointer_mut("/State/Status") {
                Some(status) if status == "stopped" => *status = "exited".into(),
                _ => return Err(failed()),
            }
            serde_json::from_value(value).map_err(|_| failed())
        }
        other => other,
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update is a few assignments: a holder that panicked leaves it usable.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Index {
    /// An empty index of `network`'s containers.
    pub fn new(
        docker: Docker,
        network: String,
        stop_grace: Duration,
        table: Arc<ProcessTable>,
        ledger: Ledger,
        engine_checks: bool,
    ) -> Arc<Index> {
        Arc::new(Index {
            docker,
            network,
            stop_grace,
            table,
            ledger,
            engine_checks,
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
        })
    }

    /// The table the index keeps.
    pub fn table(&self) -> &Arc<ProcessTable> {
        &self.table
    }

    /// Lists the network's containers and makes the table say what they are; a container that is
    /// no longer there leaves the table. False when the engine could not be listed.
    pub async fn sync_once(self: &Arc<Self>) -> bool {
        let options = ListContainersOptions {
            all: true,
            filters: Some(ours_filter(&self.network)),
            ..Default::default()
        };
        let listed = match self.docker.list_containers(Some(options)).await {
            Ok(listed) => listed,
            Err(error) => {
                self.mark_broken(format!("cannot list the containers: {}", engine_message(&error)));
                return false;
            }
        };
        let ids: Vec<String> = listed.into_iter().filter_map(|summary| summary.id).collect();
        let snapshots: Vec<Snapshot> = futures::stream::iter(ids)
            .map(|id| async move { inspect(&self.docker, &id).await.ok() })
            .buffer_unordered(INSPECTIONS_AT_ONCE)
            .filter_map(
                |inspect| async move { inspect.and_then(|inspect| Snapshot::of(&inspect, &self.network)) },
            )
            .collect()
            .await;
        let present: HashSet<String> =
            snapshots.iter().map(|snapshot| snapshot.process_name.clone()).collect();
        self.ledger.retain(&snapshots.iter().map(|snapshot| snapshot.id.clone()).collect());
        {
            let mut state = lock(&self.state);
            let gone: Vec<String> = state
                .processes
                .iter()
                .filter(|(name, process)| !present.contains(*name) && !process.stopping)
                .map(|(name, _)| name.clone())
                .collect();
            for name in gone {
                state.processes.remove(&name);
                self.table.remove(&name);
            }
            state.synced = true;
            state.broken = None;
        }
        for snapshot in snapshots {
            self.apply(snapshot);
        }
        true
    }

    /// Follows the engine's events from now on, in a task of its own; lists again whenever the
    /// stream breaks.
    pub fn follow(self: &Arc<Self>) {
        let index = Arc::clone(self);
        // Replayed from a little before the listing that was just made: an event in between is
        // seen twice (harmless: each is answered by an inspection), never missed.
        let since = jiff::Timestamp::now().as_second() - 5;
        tokio::spawn(async move { index.follow_events(since).await });
    }

    async fn follow_events(self: Arc<Self>, mut since: i64) {
        let mut first = true;
        while !self.closed.load(Ordering::Relaxed) {
            if !first && !self.sync_once().await {
                tokio::time::sleep(RESYNC_PAUSE).await;
                continue;
            }
            first = false;
            let filters = HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("label".to_owned(), vec![format!("{}={}", super::container::NETWORK_LABEL, self.network)]),
            ]);
            let options =
                EventsOptions { since: Some(since.to_string()), until: None, filters: Some(filters) };
            let mut events = self.docker.events(Some(options));
            let problem = loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        if let Some(time) = event.time {
                            since = since.max(time - 1);
                        }
                        self.handle(event).await;
                    }
                    Some(Err(error)) => {
                        break format!("the engine's event stream broke: {}", engine_message(&error));
                    }
                    None => break "the engine ended its event stream".to_owned(),
                }
                if self.closed.load(Ordering::Relaxed) {
                    return;
                }
            };
            tracing::warn!(%problem, "listing the containers again");
            self.mark_broken(problem);
            tokio::time::sleep(RESYNC_PAUSE).await;
        }
    }

    fn mark_broken(&self, problem: String) {
        let mut state = lock(&self.state);
        match &mut state.broken {
            Some((_, why)) => *why = problem,
            None => state.broken = Some((tokio::time::Instant::now(), problem)),
        }
    }

    /// Stops following the engine.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    async fn handle(self: &Arc<Self>, event: EventMessage) {
        let Some(actor) = event.actor else { return };
        let Some(id) = actor.id else { return };
        let attributes = actor.attributes.unwrap_or_default();
        let action = event.action.unwrap_or_default();
        if action.starts_with("exec_")
            || matches!(action.as_str(), "attach" | "resize" | "top" | "archive-path" | "export" | "commit")
        {
            return;
        }
        let time = event
            .time_nano
            .and_then(|nanos| jiff::Timestamp::from_nanosecond(i128::from(nanos)).ok())
            .unwrap_or_else(jiff::Timestamp::now);
        if let Some(name) = attributes.get(PROCESS_LABEL)
            && let Some(recorded) = notable(&action, &attributes, time)
        {
            let mut state = lock(&self.state);
            if let Some(process) = state.processes.get_mut(name).filter(|process| process.snapshot.id == id) {
                // A replayed event (the stream resumes from a little before it broke) is kept once.
                let seen = process
                    .events
                    .iter()
                    .any(|event| event.time == recorded.time && event.reason == recorded.reason);
                if !seen {
                    push_event(process, recorded);
                }
            }
        }
        // Podman says `remove` where Docker says `destroy`.
        if action == "destroy" || action == "remove" {
            self.gone(&id);
        } else {
            self.refresh(&id).await;
        }
    }

    /// Inspects one container and records what it says; its info, or `None` when it is not (or no
    /// longer) one of this server's.
    pub async fn refresh(self: &Arc<Self>, id: &str) -> Option<ProcessInfo> {
        match inspect(&self.docker, id).await {
            Ok(inspect) => {
                let snapshot = Snapshot::of(&inspect, &self.network)?;
                self.apply(snapshot)
            }
            Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => {
                self.gone(id);
                None
            }
            // Podman 4 may answer 500 for a container removed meanwhile.
            Err(EngineError::DockerResponseServerError { message, .. })
                if message.contains("no such container") =>
            {
                self.gone(id);
                None
            }
            Err(error) => {
                tracing::warn!(container = %id, error = %engine_message(&error), "cannot inspect the container");
                None
            }
        }
    }

    /// Like [`Index::refresh`], for the container of that name.
    pub async fn refresh_by_name(self: &Arc<Self>, name: &str) -> Option<ProcessInfo> {
        self.refresh(name).await
    }

    /// Records a container's inspection, and starts what its state calls for (the checks of a new
    /// run, the deadline).
    fn apply(self: &Arc<Self>, snapshot: Snapshot) -> Option<ProcessInfo> {
        let mut state = lock(&self.state);
        if state.removed.contains(&snapshot.id) {
            return None;
        }
        let name = snapshot.process_name.clone();
        state.failed_pulls.remove(&name);
        let replace = state.processes.get(&name).is_none_or(|process| process.snapshot.id != snapshot.id);
        let mut resume = None;
        if replace {
            // A container this server has not seen yet: one it just made (no record), or one a
            // server before it made, whose restarts the ledger counts on.
            let record = self.ledger.load(&snapshot.id);
            let mut backoff = restart_backoff();
            for _ in 0..record.backoff_steps.min(64) {
                backoff.next_delay();
            }
            let restart_pending = record
                .restart_at_ms
                .filter(|_| snapshot.state == EngineState::Exited)
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|at| (at, format!("its liveness check failed; restarting at {at:.0}")));
            if let Some((at, _)) = &restart_pending {
                resume = Some(*at);
            }
            state.processes.insert(
                name.clone(),
                Process {
                    snapshot: snapshot.clone(),
                    ready_run: None,
                    unready: None,
                    checked_run: None,
                    unhealthy: None,
                    restarts_before: record.restarts,
                    backoff,
                    backoff_steps: record.backoff_steps,
                    restart_pending,
                    stopping: false,
                    deadline_armed: false,
                    deadline_exceeded: false,
                    events: VecDeque::new(),
                },
            );
        }
        let process = state.processes.get_mut(&name)?;
        process.snapshot = snapshot;
        let snapshot = &process.snapshot;
        let running = snapshot.state == EngineState::Running;
        let run = snapshot.started_at.clone();
        if running && !process.stopping && process.checked_run.as_ref() != Some(&run) {
            let checks = RunChecks::of(snapshot, self.engine_checks);
            if checks.readiness.is_none()
                && checks.ports.is_empty()
                && probed_readiness(snapshot.spec.as_ref(), self.engine_checks)
            {
                // Nothing to wait for: ready as soon as it runs.
                process.ready_run = Some(run.clone());
            }
            let idle = checks.readiness.is_none() && checks.ports.is_empty() && checks.liveness.is_none();
            // Checks that connect wait for an inspection that shows the container's address.
            if !idle && (snapshot.ip.is_some() || !checks.connects()) {
                process.checked_run = Some(run.clone());
                process.unready = None;
                let index = Arc::clone(self);
                let target =
                    ContainerTarget { docker: self.docker.clone(), id: snapshot.id.clone(), ip: snapshot.ip };
                let name = name.clone();
                tokio::spawn(async move { index.check_run(name, target, run, checks).await });
            }
        }
        let snapshot = &process.snapshot;
        if !process.deadline_armed
            && let Some(seconds) = snapshot.spec.as_ref().and_then(|spec| spec.max_run_seconds)
        {
            process.deadline_armed = true;
            let index = Arc::clone(self);
            let (id, name) = (snapshot.id.clone(), name.clone());
            let deadline = snapshot.created
                + jiff::SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
            tokio::spawn(async move { index.enforce_deadline(name, id, deadline).await });
        }
        if let Some(at) = resume {
            let index = Arc::clone(self);
            let (id, name) = (snapshot.id.clone(), name.clone());
            tokio::spawn(async move { index.restart_when_due(&name, &id, at).await });
        }
        let info = process_info(process);
        self.table.upsert(info.clone());
        Some(info)
    }

    /// A container that is gone from the engine leaves the index (unless a Stop is on it: the
    /// Stop removes it when done).
    fn gone(&self, id: &str) {
        let mut state = lock(&self.state);
        let name = state
            .processes
            .iter()
            .find(|(_, process)| process.snapshot.id == id && !process.stopping)
            .map(|(name, _)| name.clone());
        if let Some(name) = name {
            state.processes.remove(&name);
            self.table.remove(&name);
        }
        drop(state);
        self.ledger.forget(id);
    }

    /// Whether the run of the container is the process's current one, running, not stopping.
    fn is_current(&self, name: &str, id: &str, run: &str) -> bool {
        !self.closed.load(Ordering::Relaxed)
            && lock(&self.state).processes.get(name).is_some_and(|process| {
                process.snapshot.id == id
                    && process.snapshot.started_at == run
                    && process.snapshot.state == EngineState::Running
                    && !process.stopping
            })
    }

    /// Runs the server's checks of one run until the run ends: the ports until they answer, the
    /// readiness check for the whole run, the liveness check until it fails.
    async fn check_run(
        self: Arc<Self>,
        name: String,
        target: ContainerTarget,
        run: String,
        checks: RunChecks,
    ) {
        let readiness = async {
            if !checks.ports.is_empty() {
                self.probe_ports(&name, &target, &run, &checks.ports).await;
            }
            if let Some(check) = &checks.readiness {
                self.check_readiness(&name, &target, &run, check).await;
            }
        };
        let liveness = async {
            if let Some(check) = &checks.liveness {
                self.check_liveness(&name, &target, &run, check).await;
            }
        };
        tokio::join!(readiness, liveness);
    }

    async fn probe_ports(&self, name: &str, target: &ContainerTarget, run: &str, ports: &[u16]) {
        let checks: Vec<HealthCheck> = ports
            .iter()
            .map(|port| HealthCheck {
                timeout_seconds: PROBE_TIMEOUT_SECONDS,
                ..HealthCheck::new(CheckAction::TcpSocket { port: i64::from(*port) })
            })
            .collect();
        loop {
            if !self.is_current(name, &target.id, run) {
                return;
            }
            let mut passed = true;
            for check in &checks {
                if health::run_check(check, target).await.is_err() {
                    passed = false;
                    break;
                }
            }
            if passed {
                self.set_ready(name, &target.id, run, true, None);
                return;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// Ready after one pass, not ready after `failure_threshold` failures in a row, for as long
    /// as the run lasts (as on the local runtime).
    async fn check_readiness(&self, name: &str, target: &ContainerTarget, run: &str, check: &HealthCheck) {
        let mut streak = Streak::new(check);
        let mut ready = false;
        tokio::time::sleep(health::FIRST_CHECK_DELAY).await;
        loop {
            if !self.is_current(name, &target.id, run) {
                return;
            }
            match health::run_check(check, target).await {
                Ok(()) => {
                    streak.record(true);
                    if !ready {
                        ready = true;
                        self.set_ready(name, &target.id, run, true, None);
                    }
                }
                Err(why) => {
                    // While not ready, each failure says why (a refused connection that becomes
                    // a 503); once ready, only the threshold takes it out.
                    if streak.record(false) || !ready {
                        ready = false;
                        self.set_ready(name, &target.id, run, false, Some(why));
                    }
                }
            }
            tokio::time::sleep(check.period()).await;
        }
    }

    /// First one period after the run starts (the time a process gets to come up); when it fails
    /// its threshold, the container is restarted under its policy.
    async fn check_liveness(
        self: &Arc<Self>,
        name: &str,
        target: &ContainerTarget,
        run: &str,
        check: &HealthCheck,
    ) {
        let mut streak = Streak::new(check);
        loop {
            tokio::time::sleep(check.period()).await;
            if !self.is_current(name, &target.id, run) {
                return;
            }
            match health::run_check(check, target).await {
                Ok(()) => {
                    streak.record(true);
                }
                Err(why) => {
                    if streak.record(false) {
                        self.liveness_failed(name, &target.id, run, why).await;
                        return;
                    }
                }
            }
        }
    }

    fn set_ready(&self, name: &str, id: &str, run: &str, ready: bool, why: Option<String>) {
        let mut state = lock(&self.state);
        let Some(process) = state.run_mut(name, id, run) else {
            return;
        };
        let ready_run = ready.then(|| run.to_owned());
        if process.ready_run != ready_run || process.unready != why {
            process.ready_run = ready_run;
            process.unready = why;
            self.table.upsert(process_info(process));
        }
    }

    /// The liveness check of the run failed: the container is stopped (with the grace) and, when
    /// its restart policy restarts a failed run, started again after the back-off's delay.
    async fn liveness_failed(self: &Arc<Self>, name: &str, id: &str, run: &str, why: String) {
        let restarts = {
            let mut state = lock(&self.state);
            let Some(process) = state.run_mut(name, id, run) else {
                return;
            };
            if process.stopping {
                return;
            }
            let restarts =
                process.snapshot.spec.as_ref().is_some_and(|spec| spec.restart_policy.restarts_after(false));
            let then = if restarts { "restarting the container" } else { "stopping the container" };
            process.unhealthy = Some((run.to_owned(), why.clone()));
            push_event(
                process,
                RuntimeEvent {
                    time: jiff::Timestamp::now(),
                    reason: Some("Unhealthy".to_owned()),
                    message: Some(format!("liveness check failed: {why}; {then}")),
                },
            );
            self.table.upsert(process_info(process));
            restarts
        };
        tracing::info!(process = %name, %why, restarts, "the liveness check failed; stopping the container");
        let grace = i32::try_from(self.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions { t: Some(grace), signal: None };
        if let Err(error) = self.docker.stop_container(id, Some(options)).await {
            tracing::warn!(process = %name, error = %engine_message(&error), "cannot stop the unhealthy container");
        }
        if !restarts {
            self.refresh(id).await;
            return;
        }
        // The delay counts from the end of the run, as on the local runtime.
        let due = {
            let mut state = lock(&self.state);
            let Some(process) = state.run_mut(name, id, run) else { return };
            if process.stopping || process.deadline_exceeded {
                return;
            }
            let lasted = run
                .parse::<jiff::Timestamp>()
                .ok()
                .and_then(|started| Duration::try_from(jiff::Timestamp::now().duration_since(started)).ok());
            if lasted.is_some_and(|lasted| lasted >= BACKOFF_RESET_AFTER) {
                process.backoff = restart_backoff();
                process.backoff_steps = 0;
            }
            let delay = process.backoff.next_delay();
            process.backoff_steps = process.backoff_steps.saturating_add(1);
            let due = jiff::Timestamp::now() + delay;
            let seconds = delay.as_secs_f64();
            process.restart_pending =
                Some((due, format!("liveness check failed: {why}; restarting in {seconds:.2} s")));
            self.ledger.save(id, &record_of(process));
            self.table.upsert(process_info(process));
            due
        };
        self.refresh(id).await;
        self.restart_when_due(name, id, due).await;
    }

    /// Starts the container of a liveness restart once its delay is over, unless a Stop, the
    /// deadline or a start by someone else came first.
    async fn restart_when_due(self: &Arc<Self>, name: &str, id: &str, due: jiff::Timestamp) {
        if let Ok(left) = Duration::try_from(due.duration_since(jiff::Timestamp::now())) {
            tokio::time::sleep(left).await;
        }
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let start = {
            let mut state = lock(&self.state);
            match state.processes.get_mut(name).filter(|process| process.snapshot.id == id) {
                Some(process) if process.restart_pending.is_some() => {
                    // Not when someone started it meanwhile: that start is no restart of ours.
                    let start = !process.stopping
                        && !process.deadline_exceeded
                        && process.snapshot.state != EngineState::Running;
                    if start {
                        // The engine's count of this container starts again with a start of ours.
                        process.restarts_before = process
                            .restarts_before
                            .saturating_add(process.snapshot.restart_count)
                            .saturating_add(1);
                    }
                    let record = Record { restart_at_ms: None, ..record_of(process) };
                    self.ledger.save(id, &record);
                    start
                }
                _ => false,
            }
        };
        // Still waiting, as the process says, until the engine has started it.
        if start && let Err(error) = self.docker.start_container(id, None).await {
            tracing::warn!(process = %name, error = %engine_message(&error), "cannot start the unhealthy container again");
        }
        if let Some(process) =
            lock(&self.state).processes.get_mut(name).filter(|process| process.snapshot.id == id)
        {
            process.restart_pending = None;
        }
        self.refresh(id).await;
    }

    /// Counts a start of a stopped container that a Start asked for (the engine's count starts
    /// again with it); false when a liveness restart is waiting for its delay (it makes the start).
    pub fn count_repair(&self, name: &str, id: &str, ended: bool) -> bool {
        let mut state = lock(&self.state);
        let Some(process) = state.processes.get_mut(name).filter(|process| process.snapshot.id == id) else {
            return true;
        };
        if process.restart_pending.is_some() {
            return false;
        }
        let before = process.restarts_before;
        process.restarts_before =
            before.saturating_add(process.snapshot.restart_count).saturating_add(u32::from(ended));
        if process.restarts_before != before {
            self.ledger.save(id, &record_of(process));
        }
        true
    }

    async fn enforce_deadline(self: Arc<Self>, name: String, id: String, deadline: jiff::Timestamp) {
        let left = deadline.duration_since(jiff::Timestamp::now());
        if let Ok(left) = Duration::try_from(left) {
            tokio::time::sleep(left).await;
        }
        {
            let mut state = lock(&self.state);
            let Some(process) = state.processes.get_mut(&name).filter(|process| process.snapshot.id == id)
            else {
                return;
            };
            if process.stopping {
                return;
            }
            process.deadline_exceeded = true;
            push_event(
                process,
                RuntimeEvent {
                    time: jiff::Timestamp::now(),
                    reason: Some("DeadlineExceeded".to_owned()),
                    message: Some("max_run_seconds passed: stopping the container".to_owned()),
                },
            );
            self.table.upsert(process_info(process));
        }
        tracing::info!(process = %name, "max_run_seconds passed; stopping the container");
        let options = StopContainerOptions { t: Some(1), signal: None };
        if let Err(error) = self.docker.stop_container(&id, Some(options)).await {
            tracing::warn!(process = %name, error = %engine_message(&error), "cannot stop the container at its deadline");
        }
    }

    /// The process of that name, if the index knows one.
    pub fn existing(&self, name: &str) -> Option<Existing> {
        let state = lock(&self.state);
        if let Some(process) = state.processes.get(name) {
            return Some(Existing::Container {
                snapshot: Box::new(process.snapshot.clone()),
                stopping: process.stopping,
                info: process_info(process),
            });
        }
        state.failed_pulls.get(name).map(|failed| Existing::FailedPull {
            spec: Box::new(failed.spec.clone()),
            info: failed.info.clone(),
        })
    }

    /// Drops a failed pull, for a Start that tries again.
    pub fn forget_failed_pull(&self, name: &str) {
        lock(&self.state).failed_pulls.remove(name);
    }

    /// Records a Start whose image could not be pulled; its info.
    pub fn failed_pull(&self, spec: &ProcessSpec, message: String) -> ProcessInfo {
        let info = failed_pull_info(spec, message.clone());
        let event = RuntimeEvent {
            time: jiff::Timestamp::now(),
            reason: Some("ErrImagePull".to_owned()),
            message: Some(message),
        };
        let mut state = lock(&self.state);
        state
            .failed_pulls
            .insert(spec.process_name.clone(), FailedPull { spec: spec.clone(), info: info.clone(), event });
        self.table.upsert(info.clone());
        info
    }

    /// What the server tells of the process now.
    pub fn info(&self, name: &str) -> Option<ProcessInfo> {
        let state = lock(&self.state);
        match state.processes.get(name) {
            Some(process) => Some(process_info(process)),
            None => state.failed_pulls.get(name).map(|failed| failed.info.clone()),
        }
    }

    /// Whether the process was stopped for its `max_run_seconds`.
    pub fn is_deadline_exceeded(&self, name: &str) -> bool {
        lock(&self.state).processes.get(name).is_some_and(|process| process.deadline_exceeded)
    }

    /// Marks the process STOPPING and returns its container; a failed pull is forgotten at once
    /// (`None`).
    pub fn begin_stop(&self, name: &str) -> Option<String> {
        let mut state = lock(&self.state);
        if state.failed_pulls.remove(name).is_some() {
            self.table.remove(name);
            return None;
        }
        let process = state.processes.get_mut(name)?;
        process.stopping = true;
        let id = process.snapshot.id.clone();
        self.table.upsert(process_info(process));
        Some(id)
    }

    /// A Stop removed the container: the process leaves the index and the table.
    pub fn stopped(&self, name: &str, id: &str) {
        let mut state = lock(&self.state);
        state.removed.insert(id);
        if state.processes.get(name).is_some_and(|process| process.snapshot.id == id) {
            state.processes.remove(name);
            self.table.remove(name);
        }
        drop(state);
        self.ledger.forget(id);
    }

    /// The processes a Stop is for; NOT_FOUND for one process the index does not know.
    pub fn names_for(&self, target: &StopTarget) -> Result<Vec<String>, RuntimeError> {
        let state = lock(&self.state);
        let all = || {
            state
                .processes
                .iter()
                .map(|(name, process)| (name, process.snapshot.spec.as_ref()))
                .chain(state.failed_pulls.iter().map(|(name, failed)| (name, Some(&failed.spec))))
        };
        Ok(match target {
            StopTarget::Process(name) => {
                if !state.processes.contains_key(name) && !state.failed_pulls.contains_key(name) {
                    return Err(RuntimeError::NotFound { name: name.clone() });
                }
                vec![name.clone()]
            }
            StopTarget::Group(group) => all()
                .filter(|(_, spec)| spec.and_then(|spec| spec.group.as_ref()) == Some(group))
                .map(|(name, _)| name.clone())
                .collect(),
            StopTarget::Selector(selector) => all()
                .filter(|(_, spec)| spec.is_some_and(|spec| selector.matches(&spec.labels)))
                .map(|(name, _)| name.clone())
                .collect(),
            StopTarget::Processes(names) => {
                all().filter(|(name, _)| names.contains(name)).map(|(name, _)| name.clone()).collect()
            }
        })
    }

    /// The spec the process was started from.
    pub fn spec(&self, name: &str) -> Option<ProcessSpec> {
        let state = lock(&self.state);
        match state.processes.get(name) {
            Some(process) => process.snapshot.spec.clone(),
            None => state.failed_pulls.get(name).map(|failed| failed.spec.clone()),
        }
    }

    /// The engine's notable events about the process's container, oldest first.
    pub fn events(&self, name: &str) -> Vec<RuntimeEvent> {
        let state = lock(&self.state);
        match state.processes.get(name) {
            Some(process) => process.events.iter().cloned().collect(),
            None => state.failed_pulls.get(name).map(|failed| vec![failed.event.clone()]).unwrap_or_default(),
        }
    }

    /// The process's container.
    pub fn container_id(&self, name: &str) -> Option<String> {
        lock(&self.state).processes.get(name).map(|process| process.snapshot.id.clone())
    }

    /// Why the table may be out of date.
    pub fn health(&self) -> Option<String> {
        let state = lock(&self.state);
        if let Some((_, problem)) = &state.broken {
            return Some(format!("the docker engine's events are not followed: {problem}"));
        }
        (!state.synced).then(|| "the docker engine's containers are not listed yet".to_owned())
    }

    /// How the index stands, for the metrics.
    pub fn sync_state(&self) -> IndexSync {
        let state = lock(&self.state);
        IndexSync {
            synced: state.synced && state.broken.is_none(),
            staleness: state.broken.as_ref().map_or(Duration::ZERO, |(since, _)| since.elapsed()),
            node_ports_in_use: None,
        }
    }
}

fn process_info(process: &Process) -> ProcessInfo {
    let snapshot = &process.snapshot;
    let ready = process.ready_run.as_ref() == Some(&snapshot.started_at);
    let mut info = snapshot.info(ready, process.stopping, process.deadline_exceeded);
    info.restart_count = info.restart_count.saturating_add(process.restarts_before);
    if process.stopping || process.deadline_exceeded {
        return info;
    }
    if let Some((_, message)) = &process.restart_pending
        && snapshot.state != EngineState::Running
    {
        // Waiting for the back-off's delay, as a Kubernetes container in the same state.
        info.status = ProcessStatus::Failed;
        info.reason = Some("CrashLoopBackOff".into());
        info.message = Some(message.clone());
        return info;
    }
    match &process.unhealthy {
        // Until its next run, the run that failed its liveness check is FAILED for it.
        Some((run, why)) if *run == snapshot.started_at => {
            info.status = ProcessStatus::Failed;
            info.reason = Some("Unhealthy".into());
            info.message = Some(format!("liveness check failed: {why}"));
        }
        _ => {
            if info.status == ProcessStatus::Starting
                && snapshot.state == EngineState::Running
                && let Some(why) = &process.unready
            {
                info.reason = Some("Unready".into());
                info.message = Some(format!("readiness check failed: {why}"));
            }
        }
    }
    info
}

/// The back-off of liveness restarts: the local runtime's restart delays, with jitter.
fn restart_backoff() -> Backoff {
    Backoff::new(FIRST_RESTART_DELAY, MAX_RESTART_DELAY).with_jitter()
}

/// What the ledger keeps of a process.
fn record_of(process: &Process) -> Record {
    Record {
        restarts: process.restarts_before,
        backoff_steps: process.backoff_steps,
        restart_at_ms: process.restart_pending.as_ref().map(|(due, _)| due.as_millisecond()),
    }
}

/// Keeps an event for Describe, the newest [`EVENTS_KEPT`].
fn push_event(process: &mut Process, event: RuntimeEvent) {
    process.events.push_back(event);
    while process.events.len() > EVENTS_KEPT {
        process.events.pop_front();
    }
}

/// The event Describe shows for an engine event, when it is one worth showing.
fn notable(
    action: &str,
    attributes: &HashMap<String, String>,
    time: jiff::Timestamp,
) -> Option<RuntimeEvent> {
    let (reason, message) = match action {
        "create" => ("Created", "the container was made".to_owned()),
        "start" => ("Started", "the container started".to_owned()),
        "restart" => ("Restarted", "the container was restarted".to_owned()),
        "die" => {
            let code = attributes.get("exitCode").map_or("?", String::as_str);
            ("Died", format!("the container's process ended with code {code}"))
        }
        "oom" => {
            ("OOMKilled", "the kernel killed a process of the container for its memory limit".to_owned())
        }
        "kill" => {
            let signal = attributes.get("signal").map_or("?", String::as_str);
            ("Killing", format!("the engine sent signal {signal}"))
        }
        "stop" => ("Stopped", "the container was stopped".to_owned()),
        "health_status: healthy" => ("Healthy", "the readiness check passed".to_owned()),
        "health_status: unhealthy" => ("Unhealthy", "the readiness check failed".to_owned()),
        _ => return None,
    };
    Some(RuntimeEvent { time, reason: Some(reason.to_owned()), message: Some(message) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_removed_containers_are_bounded_and_the_oldest_forgotten_first() {
        let mut removed = Removed::default();
        for number in 0..REMOVED_KEPT + 10 {
            removed.insert(&format!("id{number}"));
        }
        removed.insert(&format!("id{}", REMOVED_KEPT + 9));
        assert_eq!((removed.ids.len(), removed.order.len()), (REMOVED_KEPT, REMOVED_KEPT));
        assert!(!removed.contains("id0") && !removed.contains("id9"));
        assert!(removed.contains("id10") && removed.contains(&format!("id{}", REMOVED_KEPT + 9)));
    }
}
