//! What the docker runtime knows of its containers, fed by the engine: one listing, then the
//! event stream, each event answered by an inspection of its container ([`Index::follow`]). The
//! index keeps the process table up to date, probes running containers for readiness, enforces
//! `max_run_seconds`, and keeps each container's notable events for Describe.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, ListContainersOptions, StopContainerOptions};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::container::{EngineState, PROCESS_LABEL, Snapshot, ours_filter};
use super::{engine_message, failed_pull_info, probed_readiness};
use crate::runtime::{IndexSync, RuntimeError, RuntimeEvent, StopTarget};
use crate::spec::{CheckAction, ProcessInfo, ProcessSpec};
use crate::table::ProcessTable;

/// How many events of one container Describe keeps (the newest).
const EVENTS_KEPT: usize = 30;
/// Between two probes of a container that is not ready yet.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long one probe's connection may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Between a broken event stream and the next listing.
const RESYNC_PAUSE: Duration = Duration::from_secs(1);
/// How many containers are inspected at once while listing.
const INSPECTIONS_AT_ONCE: usize = 16;

/// The index of one server's containers.
pub struct Index {
    docker: Docker,
    network: String,
    table: Arc<ProcessTable>,
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
    removed: HashSet<String>,
    synced: bool,
    /// Since when, and why, the index has not been following the engine.
    broken: Option<(tokio::time::Instant, String)>,
}

struct Process {
    snapshot: Snapshot,
    /// The run (its start time) the server's probe passed for.
    ready_run: Option<String>,
    /// The run a probe is running for.
    probing_run: Option<String>,
    stopping: bool,
    deadline_armed: bool,
    deadline_exceeded: bool,
    events: VecDeque<RuntimeEvent>,
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

/// What tells that a running container is ready, when the engine does not.
#[derive(Clone, Debug)]
enum Probe {
    /// Every one of these ports accepts a connection.
    Ports(Vec<u16>),
    /// An HTTP GET answers 200 to 399.
    Http { port: u16, path: String },
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every update is a few assignments: a holder that panicked leaves it usable.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Index {
    /// An empty index of `network`'s containers.
    pub fn new(docker: Docker, network: String, table: Arc<ProcessTable>) -> Arc<Index> {
        Arc::new(Index {
            docker,
            network,
            table,
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
            .map(|id| async move { self.docker.inspect_container(&id, None).await.ok() })
            .buffer_unordered(INSPECTIONS_AT_ONCE)
            .filter_map(
                |inspect| async move { inspect.and_then(|inspect| Snapshot::of(&inspect, &self.network)) },
            )
            .collect()
            .await;
        let present: HashSet<String> =
            snapshots.iter().map(|snapshot| snapshot.process_name.clone()).collect();
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
                let seen = process
                    .events
                    .iter()
                    .any(|event| event.time == recorded.time && event.reason == recorded.reason);
                if !seen {
                    process.events.push_back(recorded);
                    while process.events.len() > EVENTS_KEPT {
                        process.events.pop_front();
                    }
                }
            }
        }
        if action == "destroy" {
            self.gone(&id);
        } else {
            self.refresh(&id).await;
        }
    }

    /// Inspects one container and records what it says; its info, or `None` when it is not (or no
    /// longer) one of this server's.
    pub async fn refresh(self: &Arc<Self>, id: &str) -> Option<ProcessInfo> {
        match self.docker.inspect_container(id, None).await {
            Ok(inspect) => {
                let snapshot = Snapshot::of(&inspect, &self.network)?;
                self.apply(snapshot)
            }
            Err(EngineError::DockerResponseServerError { status_code: 404, .. }) => {
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

    /// Records a container's inspection, and starts what its state calls for (a readiness probe,
    /// the deadline).
    fn apply(self: &Arc<Self>, snapshot: Snapshot) -> Option<ProcessInfo> {
        let mut state = lock(&self.state);
        if state.removed.contains(&snapshot.id) {
            return None;
        }
        let name = snapshot.process_name.clone();
        state.failed_pulls.remove(&name);
        let replace = state.processes.get(&name).is_none_or(|process| process.snapshot.id != snapshot.id);
        if replace {
            state.processes.insert(
                name.clone(),
                Process {
                    snapshot: snapshot.clone(),
                    ready_run: None,
                    probing_run: None,
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
        if running && snapshot.health.is_none() && probed_readiness(snapshot.spec.as_ref()) {
            let probe = probe_of(snapshot);
            let needs_probe =
                process.ready_run.as_ref() != Some(&run) && process.probing_run.as_ref() != Some(&run);
            match probe {
                Some(Probe::Ports(ports)) if ports.is_empty() => process.ready_run = Some(run.clone()),
                Some(probe) if needs_probe => {
                    if let Some(ip) = snapshot.ip {
                        process.probing_run = Some(run.clone());
                        let index = Arc::clone(self);
                        let (id, name) = (snapshot.id.clone(), name.clone());
                        tokio::spawn(async move { index.probe(name, id, run, ip, probe).await });
                    }
                }
                _ => {}
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
    }

    async fn probe(self: Arc<Self>, name: String, id: String, run: String, ip: IpAddr, probe: Probe) {
        loop {
            let current = {
                let state = lock(&self.state);
                state.processes.get(&name).is_some_and(|process| {
                    process.snapshot.id == id
                        && process.snapshot.started_at == run
                        && process.snapshot.state == EngineState::Running
                        && !process.stopping
                })
            };
            if !current || self.closed.load(Ordering::Relaxed) {
                let mut state = lock(&self.state);
                if let Some(process) = state
                    .processes
                    .get_mut(&name)
                    .filter(|process| process.probing_run.as_ref() == Some(&run))
                {
                    process.probing_run = None;
                }
                return;
            }
            if passes(ip, &probe).await {
                let mut state = lock(&self.state);
                if let Some(process) =
                    state.processes.get_mut(&name).filter(|process| process.snapshot.id == id)
                {
                    process.probing_run = None;
                    process.ready_run = Some(run);
                    self.table.upsert(process_info(process));
                }
                return;
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
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
            process.events.push_back(RuntimeEvent {
                time: jiff::Timestamp::now(),
                reason: Some("DeadlineExceeded".to_owned()),
                message: Some("max_run_seconds passed: stopping the container".to_owned()),
            });
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
        state.removed.insert(id.to_owned());
        if state.processes.get(name).is_some_and(|process| process.snapshot.id == id) {
            state.processes.remove(name);
            self.table.remove(name);
        }
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
    let ready = process.ready_run.as_ref() == Some(&process.snapshot.started_at);
    process.snapshot.info(ready, process.stopping, process.deadline_exceeded)
}

/// The server's probe of a container: the spec's readiness check (TCP or HTTP), else its TCP ports.
fn probe_of(snapshot: &Snapshot) -> Option<Probe> {
    let spec = snapshot.spec.as_ref()?;
    Some(match spec.readiness.as_ref().map(|check| &check.action) {
        Some(CheckAction::TcpSocket { port }) => Probe::Ports(vec![u16::try_from(*port).ok()?]),
        Some(CheckAction::HttpGet { port, path }) => {
            Probe::Http { port: u16::try_from(*port).ok()?, path: path.clone() }
        }
        Some(CheckAction::Exec { .. }) => return None,
        None => Probe::Ports(snapshot.tcp_ports()),
    })
}

async fn passes(ip: IpAddr, probe: &Probe) -> bool {
    match probe {
        Probe::Ports(ports) => {
            for port in ports {
                let connect = tokio::net::TcpStream::connect(SocketAddr::new(ip, *port));
                if !matches!(tokio::time::timeout(PROBE_TIMEOUT, connect).await, Ok(Ok(_))) {
                    return false;
                }
            }
            true
        }
        Probe::Http { port, path } => {
            let exchange = async {
                let mut stream = tokio::net::TcpStream::connect(SocketAddr::new(ip, *port)).await.ok()?;
                let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
                stream.write_all(request.as_bytes()).await.ok()?;
                let mut head = vec![0_u8; 64];
                let read = stream.read(&mut head).await.ok()?;
                let line = String::from_utf8_lossy(&head[..read]).into_owned();
                line.split_whitespace().nth(1)?.parse::<u16>().ok()
            };
            matches!(tokio::time::timeout(PROBE_TIMEOUT, exchange).await, Ok(Some(200..=399)))
        }
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
