//! The index: Pods, Services, Nodes, StatefulSets and Jobs of the cluster, followed with kube-runtime's `watcher`
//! ([`follow`]) as slim objects that decode only what the index reads ([`slim`]), kept as
//! compact entries ([`entries`]), and turned into the runtime's [`ProcessTable`]
//! on every change by the join that makes a process's info ([`join`]). A process is one entry
//! whatever objects back it, keyed by its process label: its StatefulSet or Job (none for a bare
//! Pod), its current Pod, its Service. List and Watch are served from
//! the table, so they cost no API call. The index keeps no spec: a Start whose name is taken
//! and a Describe read it from the Pod.
//!
//! The cluster is the only source of truth: the index keeps nothing of its own, so a restarted
//! server, or a second one on the same namespace, ends up with the same view. That view includes
//! half-made processes (a Pod whose Start did not finish, so its Service or Secrets are missing):
//! they show as STARTING with reason [`INCOMPLETE`] and a message naming what is missing, until a
//! retried Start finishes them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use super::log_limit::LogLimit;
use super::manifests::MANAGED_SELECTOR;
use crate::table::ProcessTable;

mod entries;
mod follow;
mod join;
pub mod slim;

pub use entries::{ControllerEntry, Needs, NodeEntry, PodEntry, ServiceEntry, Uid, current_pod};
use entries::{Entries, Interned, PodSets, job_entry, node_entry, service_entry, stateful_set_entry};
use follow::follow;
use join::process_info;
pub use join::{AWAITING_POD, INCOMPLETE, REPLACING};
use slim::{SlimJob, SlimNode, SlimPod, SlimService, SlimStatefulSet};

use super::manifests::Controller;
use crate::spec::ProcessStatus;

/// The kinds the index watches; it is synced once each has been listed.
const WATCHED_KINDS: usize = 5;

/// How the index stands with the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexHealth {
    /// Not every watch has completed its first list yet.
    Syncing,
    /// Every watch is up.
    Synced,
    /// A watch failed; the index serves what it has and retries with backoff.
    Stale(String),
}

#[derive(Default)]
pub(super) struct IndexState {
    pods: PodSets,
    services: Entries<ServiceEntry>,
    nodes: Entries<NodeEntry>,
    stateful_sets: Entries<ControllerEntry>,
    jobs: Entries<ControllerEntry>,
    /// The groups, node names and label sets the entries share.
    interned: Interned,
    synced: HashSet<&'static str>,
    /// The last failure of each watch. A watch that recovers without news sends no event, so
    /// a failure counts only for [`STALE_WINDOW`] unless it recurs (a watch that stays down
    /// fails again within the longest backoff).
    errors: HashMap<&'static str, (String, tokio::time::Instant)>,
    /// When a watch last brought an event (none yet: when the index was made).
    last_heard: Option<tokio::time::Instant>,
    /// The processes a Start of this server is making now ([`Index::making`]): between their
    /// Pod and their Service they are not half-made, only not made yet.
    making: HashSet<String>,
    /// The StatefulSets with a `max_run_seconds`, which the deadline task checks (few, so it
    /// never scans every process).
    limited: HashSet<String>,
}

/// How long after its last failure a watch counts as down: longer than the longest backoff.
const STALE_WINDOW: Duration = Duration::from_secs(10);

/// At most one warning per watch and cause this often: a watch that cannot reach the API
/// server fails at every backoff step (four times a second at first).
const WARNING_WINDOW: Duration = Duration::from_secs(5);

/// The watch-fed index of one namespace.
pub struct Index {
    namespace: String,
    /// What follows a process's name in its DNS name: `.NAMESPACE.svc.cluster.local`.
    dns_suffix: String,
    state: Mutex<IndexState>,
    table: Arc<ProcessTable>,
    /// Bumped on every applied event, so that callers can wait for the index to catch up.
    generation: watch::Sender<u64>,
    /// Keeps repeated watch failures to a line every few seconds.
    warnings: LogLimit,
    /// The processes callers wait on by name ([`Index::wait_for`]), each with what wakes them:
    /// an event wakes only those waiting on what it touched, not every waiter.
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Index {
    /// An empty index that publishes into `table`.
    pub fn new(namespace: String, table: Arc<ProcessTable>) -> Arc<Index> {
        let (generation, _) = watch::channel(0);
        Arc::new(Index {
            dns_suffix: format!(".{namespace}.svc.cluster.local"),
            namespace,
            state: Mutex::new(IndexState {
                last_heard: Some(tokio::time::Instant::now()),
                ..IndexState::default()
            }),
            table,
            generation,
            warnings: LogLimit::new(WARNING_WINDOW),
            waiting: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, IndexState> {
        // Every update is applied whole under the lock; a panic cannot leave it half-done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the cluster until the returned task is dropped or aborted.
    pub fn spawn(self: &Arc<Self>, client: Client) -> tokio::task::JoinHandle<()> {
        let pods: Api<SlimPod> = Api::namespaced(client.clone(), &self.namespace);
        let services: Api<SlimService> = Api::namespaced(client.clone(), &self.namespace);
        let stateful_sets: Api<SlimStatefulSet> = Api::namespaced(client.clone(), &self.namespace);
        let jobs: Api<SlimJob> = Api::namespaced(client.clone(), &self.namespace);
        let nodes: Api<SlimNode> = Api::all(client);
        let managed = watcher::Config::default().labels(MANAGED_SELECTOR);
        let index = Arc::clone(self);
        tokio::spawn(async move {
            let pods = follow(watcher::watcher(pods, managed.clone()), "pods", &index, Index::apply_pod);
            let services =
                follow(watcher::watcher(services, managed.clone()), "services", &index, Index::apply_service);
            let stateful_sets = follow(
                watcher::watcher(stateful_sets, managed.clone()),
                "statefulsets",
                &index,
                Index::apply_stateful_set,
            );
            let jobs = follow(watcher::watcher(jobs, managed), "jobs", &index, Index::apply_job);
            let nodes = follow(
                watcher::watcher(nodes, watcher::Config::default()),
                "nodes",
                &index,
                Index::apply_node,
            );
            tokio::join!(pods, services, nodes, stateful_sets, jobs);
        })
    }

    /// How the index stands.
    pub fn health(&self) -> IndexHealth {
        let state = self.lock();
        let recent = state.errors.iter().find(|(_, (_, at))| at.elapsed() < STALE_WINDOW);
        if let Some((kind, (error, _))) = recent {
            return IndexHealth::Stale(format!("watching {kind} failed ({error}); retrying"));
        }
        if state.synced.len() < WATCHED_KINDS { IndexHealth::Syncing } else { IndexHealth::Synced }
    }

    /// How long since a watch last brought an event (or since the index was made).
    pub fn since_last_heard(&self) -> Duration {
        self.lock().last_heard.map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// Waits until `condition` holds of the index, or `timeout` passes; returns whether it holds.
    pub async fn wait_until(&self, timeout: Duration, condition: impl Fn(&IndexView<'_>) -> bool) -> bool {
        let mut generation = self.generation.subscribe();
        let check = |index: &Index| condition(&IndexView { state: &index.lock() });
        tokio::time::timeout(timeout, async {
            loop {
                if check(self) {
                    return;
                }
                if generation.changed().await.is_err() {
                    // The index is gone: nothing will change any more.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Waits until `condition` holds of the index, or `timeout` passes, when the condition reads
    /// only the process `name` (its Pod, its Service, its node's addresses): woken by the changes
    /// of that process only, so that many concurrent Starts do not each wake at every event.
    /// Returns whether it holds.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        condition: impl Fn(&IndexView<'_>) -> bool,
    ) -> bool {
        let waiting = Waiting::new(self, name);
        tokio::time::timeout(timeout, async {
            loop {
                let notified = waiting.notify.notified();
                futures::pin_mut!(notified);
                // Enabled before the check, so that a change published in between still wakes it.
                notified.as_mut().enable();
                if self.read(&condition) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .is_ok()
    }

    /// Marks `name` as being made by a Start of this server until the guard is dropped: its Pod
    /// without its Service is then not shown as half-made (`Incomplete`), a state that lasts a
    /// moment in every Start. Only a Start that stopped half-way (its server died) leaves a Pod
    /// that no guard covers, which is shown half-made; dropping the guard publishes the process
    /// again, so a Start that gave up shows what it left.
    pub fn making(&self, name: &str) -> Making<'_> {
        self.lock().making.insert(name.to_owned());
        Making { index: self, name: name.to_owned() }
    }

    /// Marks `name` as being made by a Start of this server, as [`Index::making`] does, unless
    /// another Start of this server is making it already: `None` then.
    pub fn try_making(&self, name: &str) -> Option<Making<'_>> {
        let inserted = self.lock().making.insert(name.to_owned());
        inserted.then(|| Making { index: self, name: name.to_owned() })
    }

    /// Reads the index.
    pub fn read<T>(&self, read: impl FnOnce(&IndexView<'_>) -> T) -> T {
        read(&IndexView { state: &self.lock() })
    }

    fn bump(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    pub(super) fn apply_pod(&self, event: Event<SlimPod>) {
        let mut state = self.lock();
        let IndexState { pods, interned, .. } = &mut *state;
        let applied = pods.apply(event, interned);
        self.finish(state, "pods", applied.relisted, applied.touched);
    }

    pub(super) fn apply_stateful_set(&self, event: Event<SlimStatefulSet>) {
        let mut state = self.lock();
        let IndexState { stateful_sets, interned, .. } = &mut *state;
        let applied = stateful_sets.apply(event, |set| stateful_set_entry(set, interned));
        let IndexState { stateful_sets, limited, .. } = &mut *state;
        for name in &applied.touched {
            if stateful_sets.live.get(name.as_str()).is_some_and(|set| set.max_run_seconds.is_some()) {
                limited.insert(name.clone());
            } else {
                limited.remove(name);
            }
        }
        self.finish(state, "statefulsets", applied.relisted, applied.touched);
    }

    pub(super) fn apply_job(&self, event: Event<SlimJob>) {
        let mut state = self.lock();
        let IndexState { jobs, interned, .. } = &mut *state;
        let applied = jobs.apply(event, |job| job_entry(job, interned));
        self.finish(state, "jobs", applied.relisted, applied.touched);
    }

    pub(super) fn apply_service(&self, event: Event<SlimService>) {
        let mut state = self.lock();
        let applied = state.services.apply(event, service_entry);
        self.finish(state, "services", applied.relisted, applied.touched);
    }

    pub(super) fn apply_node(&self, event: Event<SlimNode>) {
        let mut state = self.lock();
        let applied = state.nodes.apply(event, node_entry);
        // A node's addresses are part of the info of every process on it. Only a node whose
        // addresses changed costs a pass over the pods: its status heartbeats do not.
        let touched: Vec<String> = if applied.touched.is_empty() {
            Vec::new()
        } else {
            let nodes: HashSet<&str> = applied.touched.iter().map(String::as_str).collect();
            state
                .pods
                .live
                .iter()
                .filter(|(_, pods)| {
                    pods.iter().any(|pod| pod.node_name.as_deref().is_some_and(|node| nodes.contains(node)))
                })
                .map(|(name, _)| name.to_string())
                .collect()
        };
        self.finish(state, "nodes", applied.relisted, touched);
    }

    /// Records that a watch of `kind` works, publishes the processes `touched`, and wakes those
    /// waiting for the index.
    fn finish(
        &self,
        mut state: MutexGuard<'_, IndexState>,
        kind: &'static str,
        relisted: bool,
        touched: Vec<String>,
    ) {
        if relisted {
            state.synced.insert(kind);
        }
        state.errors.remove(kind);
        state.last_heard = Some(tokio::time::Instant::now());
        self.publish(&state, touched);
        drop(state);
        self.bump();
    }

    pub(super) fn record_error(&self, kind: &'static str, error: &watcher::Error) {
        if let Some(suppressed) = self.warnings.allow(&format!("{kind}: {}", cause(error))) {
            tracing::warn!(kind, %error, suppressed, "watch failed; serving the index as it is and retrying (`suppressed` counts the like failures not logged since the last line)");
        }
        if let Some(metrics) = crate::metrics::backend() {
            metrics
                .index_watch_errors
                .get_or_create(&crate::metrics::rest::ResourceLabels { resource: kind })
                .inc();
        }
        self.lock().errors.insert(kind, (error.to_string(), tokio::time::Instant::now()));
        self.bump();
    }

    /// Brings the table up to date for the named processes, and wakes those waiting on them.
    fn publish(&self, state: &IndexState, names: Vec<String>) {
        {
            let waiting = lock(&self.waiting);
            if !waiting.is_empty() {
                for name in &names {
                    if let Some(notify) = waiting.get(name) {
                        notify.notify_waiters();
                    }
                }
            }
        }
        for name in names {
            match process_info(state, &self.dns_suffix, &name) {
                Some(info) => {
                    self.table.upsert(info);
                }
                None => {
                    self.table.remove(&name);
                }
            }
        }
    }
}

/// A Start's mark on the process it is making ([`Index::making`]), removed when dropped.
pub struct Making<'a> {
    index: &'a Index,
    name: String,
}

impl Drop for Making<'_> {
    fn drop(&mut self) {
        let mut state = self.index.lock();
        state.making.remove(&self.name);
        self.index.publish(&state, vec![self.name.clone()]);
        drop(state);
        self.index.bump();
    }
}

/// Locks a mutex whose holders leave it whole even when they panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A caller's registration in [`Index::waiting`], removed when the last waiter on the name goes.
struct Waiting<'a> {
    index: &'a Index,
    name: &'a str,
    notify: Arc<Notify>,
}

impl<'a> Waiting<'a> {
    fn new(index: &'a Index, name: &'a str) -> Self {
        let notify = Arc::clone(lock(&index.waiting).entry(name.to_owned()).or_default());
        Waiting { index, name, notify }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut waiting = lock(&self.index.waiting);
        // Two holders: this waiter and the map. Checked under the lock, so no waiter can join
        // in between.
        if Arc::strong_count(&self.notify) == 2 {
            waiting.remove(self.name);
        }
    }
}

/// What a watch failure is, for rate-limiting its warnings: the step that failed and the API
/// server's code, not the message (which names resource versions that change every time).
fn cause(error: &watcher::Error) -> String {
    let client_cause = |error: &kube::Error| match error {
        kube::Error::Api(status) => format!("HTTP {}", status.code),
        _ => "transport".to_owned(),
    };
    match error {
        watcher::Error::InitialListFailed(error) => format!("list: {}", client_cause(error)),
        watcher::Error::WatchStartFailed(error) => format!("watch: {}", client_cause(error)),
        watcher::Error::WatchFailed(error) => format!("stream: {}", client_cause(error)),
        watcher::Error::WatchError(status) => format!("event: HTTP {}", status.code),
        watcher::Error::NoResourceVersion => "no resourceVersion".to_owned(),
    }
}

/// The StatefulSet or Job of a process in `state`.
fn controller_of<'a>(state: &'a IndexState, name: &str) -> Option<(Controller, &'a ControllerEntry)> {
    let set = state.stateful_sets.live.get(name).map(|entry| (Controller::StatefulSet, entry));
    set.or_else(|| state.jobs.live.get(name).map(|entry| (Controller::Job, entry)))
}

/// A read-only view of the index.
pub struct IndexView<'a> {
    state: &'a IndexState,
}

impl IndexView<'_> {
    /// Whether every watched kind has been listed once.
    pub fn synced(&self) -> bool {
        self.state.synced.len() == WATCHED_KINDS
    }

    /// The current Pod of a process (see [`current_pod`]).
    pub fn pod(&self, name: &str) -> Option<&PodEntry> {
        self.state.pods.live.get(name).and_then(|pods| current_pod(pods))
    }

    /// Every Pod of a process, sorted by name.
    pub fn pods(&self, name: &str) -> &[PodEntry] {
        self.state.pods.live.get(name).map_or(&[], Vec::as_slice)
    }

    /// The StatefulSet or Job of a process, if it has one.
    pub fn controller(&self, name: &str) -> Option<(Controller, &ControllerEntry)> {
        controller_of(self.state, name)
    }

    /// What a process's Service and Secrets are owned by: its StatefulSet or Job, else its bare
    /// Pod; with that object's uid.
    pub fn owner(&self, name: &str) -> Option<(Controller, &Uid)> {
        match self.controller(name) {
            Some((controller, entry)) => Some((controller, &entry.uid)),
            None => self.pod(name).map(|pod| (Controller::Pod, &pod.uid)),
        }
    }

    /// Whether the process whose object had uid `uid` is stopping or gone: that object is gone
    /// or being deleted (a controller's), or its bare Pod is stopping.
    pub fn stopping_or_gone(&self, name: &str, uid: &str) -> bool {
        match self.controller(name) {
            Some((_, controller)) => !controller.uid.is(uid) || controller.deleting,
            None => self
                .pod(name)
                .is_none_or(|pod| !pod.uid.is(uid) || pod.state.status == ProcessStatus::Stopping),
        }
    }

    /// Whether the process `name`, whatever its objects, is stopping or gone.
    pub fn stopping_or_gone_any(&self, name: &str) -> bool {
        match self.controller(name) {
            Some((_, controller)) => controller.deleting,
            None => self.pod(name).is_none_or(|pod| pod.state.status == ProcessStatus::Stopping),
        }
    }

    /// The StatefulSets past their `max_run_seconds` at `now` that are still running: each
    /// process's name and its StatefulSet's uid. Read by the
    /// deadline task a few times a second: only those with a `max_run_seconds` are looked at.
    pub fn past_deadline(&self, now: jiff::Timestamp) -> Vec<(String, String)> {
        self.state
            .limited
            .iter()
            .filter_map(|name| Some((name, self.state.stateful_sets.live.get(name.as_str())?)))
            .filter(|(_, set)| !set.deleting && set.ended.is_none())
            .filter(|(_, set)| {
                set.max_run_seconds.is_some_and(|seconds| {
                    set.created
                        .checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)))
                        .is_ok_and(|due| due <= now)
                })
            })
            .map(|(name, set)| (name.clone(), set.uid.to_string()))
            .collect()
    }

    /// Whether a Start of this server is making the process now.
    pub fn making(&self, name: &str) -> bool {
        self.state.making.contains(name)
    }

    /// Whether the index has the object `uid` that runs the process `name`: its StatefulSet, its
    /// Job or its bare Pod (named after the process).
    pub fn has_object(&self, name: &str, uid: &str) -> bool {
        self.objects(name).any(|(_, object_uid, _)| object_uid.is(uid))
    }

    /// The kind of an object other than `uid` that runs a process named `name` and is not being
    /// deleted: a second object for one name, which a Start racing another Start of another
    /// restart policy (on another server) can make, since the kinds do not share names.
    pub fn other_object(&self, name: &str, uid: &str) -> Option<Controller> {
        self.objects(name)
            .find(|(_, object_uid, deleting)| !object_uid.is(uid) && !deleting)
            .map(|(controller, _, _)| controller)
    }

    /// Every object that runs a process named `name`, with its uid and whether it is being
    /// deleted (or, for a Pod, stopping).
    fn objects<'b>(&'b self, name: &'b str) -> impl Iterator<Item = (Controller, &'b Uid, bool)> + 'b {
        let set = self
            .state
            .stateful_sets
            .live
            .get(name)
            .map(|set| (Controller::StatefulSet, &set.uid, set.deleting));
        let job = self.state.jobs.live.get(name).map(|job| (Controller::Job, &job.uid, job.deleting));
        let bare = self
            .pods(name)
            .iter()
            .filter(move |pod| *pod.name == *name)
            .map(|pod| (Controller::Pod, &pod.uid, pod.state.status == ProcessStatus::Stopping));
        set.into_iter().chain(job).chain(bare)
    }

    /// Whether the index has anything of a process: a controller or a Pod.
    pub fn has(&self, name: &str) -> bool {
        self.controller(name).is_some() || self.state.pods.live.contains_key(name)
    }

    /// The Service of a process.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.state.services.live.get(name)
    }

    /// How many nodes there are, when none of them has an ExternalIP (so that a NodePort
    /// reaches no one outside the cluster's network); `None` when one has, or there are none.
    pub fn nodes_without_external_ip(&self) -> Option<usize> {
        let nodes = &self.state.nodes.live;
        (!nodes.is_empty() && nodes.values().all(|node| node.external_ip.is_none())).then_some(nodes.len())
    }

    /// How many NodePorts Hydroplane's Services hold (one pass over the Services: for a scrape
    /// or a refused Start, not for every request).
    pub fn node_ports_in_use(&self) -> usize {
        let services = self.state.services.live.values();
        services
            .map(|service| service.ports.iter().filter(|(_, node_port)| node_port.is_some()).count())
            .sum()
    }

    /// The processes of a group.
    pub fn group(&self, group: &str) -> Vec<String> {
        let state = self.state;
        let in_group = |entry_group: &Option<Arc<str>>| entry_group.as_deref() == Some(group);
        let names: std::collections::BTreeSet<&Box<str>> = state
            .pods
            .live
            .iter()
            .filter(|(_, pods)| pods.iter().any(|pod| in_group(&pod.group)))
            .map(|(name, _)| name)
            .chain(state.stateful_sets.live.iter().filter(|(_, c)| in_group(&c.group)).map(|(name, _)| name))
            .chain(state.jobs.live.iter().filter(|(_, c)| in_group(&c.group)).map(|(name, _)| name))
            .collect();
        names.into_iter().map(|name| name.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::kube::manifests;
    use crate::table::Filter;

    fn pod(name: &str, node: Option<&str>, phase: &str) -> SlimPod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"hydroplane/group-id": "g"},
                "creationTimestamp": "2025-01-02T03:04:05Z"},
            "spec": {"containers": [{"name": name}], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]}
        }))
        .expect("a pod")
    }

    fn service(name: &str, node_port: bool) -> SlimService {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"type": if node_port { "NodePort" } else { "ClusterIP" }, "clusterIP": "10.96.0.9",
                "ports": [{"port": 80, "nodePort": if node_port { Some(30080) } else { None }}]}
        }))
        .expect("a service")
    }

    fn load_balanced(name: &str, ingress: serde_json::Value) -> SlimService {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9", "ports": [{"port": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": ingress}}
        }))
        .expect("a service")
    }

    #[test]
    fn a_load_balanced_process_is_starting_until_its_load_balancer_has_an_address() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        index.apply_node(Event::Init);
        index.apply_node(Event::InitApply(node("n1", None)));
        index.apply_node(Event::InitDone);
        index.apply_service(Event::Init);
        index.apply_service(Event::InitApply(load_balanced("web", serde_json::json!([]))));
        index.apply_service(Event::InitDone);
        index.apply_pod(Event::Init);
        index.apply_pod(Event::InitApply(pod("web", Some("n1"), "Running")));
        index.apply_pod(Event::InitDone);
        let web = table.get("web").expect("web");
        assert_eq!(
            (web.status, web.reason.as_deref()),
            (ProcessStatus::Starting, Some(join::LOAD_BALANCER_PENDING))
        );
        assert!(web.socket_addresses.is_empty(), "{web:?}");

        let hostname = "k8s-default-web-0123456789.elb.us-east-1.amazonaws.com";
        index.apply_service(Event::Apply(load_balanced("web", serde_json::json!([{"hostname": hostname}]))));
        let web = table.get("web").expect("web");
        assert_eq!((web.status, web.reason.as_deref()), (ProcessStatus::Running, None));
        let addresses: Vec<_> =
            web.socket_addresses.iter().map(|a| (a.host.to_string(), a.port, a.is_public)).collect();
        assert_eq!(addresses, [(hostname.to_owned(), 8080, true)]);

        index.apply_service(Event::Apply(load_balanced("web", serde_json::json!([{"ip": "198.51.100.7"}]))));
        assert_eq!(table.get("web").expect("web").socket_addresses[0].host, "198.51.100.7");
        assert_eq!(
            index.read(|view| view.node_ports_in_use()),
            1,
            "a LoadBalancer Service holds a NodePort too"
        );
    }

    fn node(name: &str, external: Option<&str>) -> SlimNode {
        let mut addresses = vec![serde_json::json!({"type": "InternalIP", "address": "10.0.0.1"})];
        if let Some(external) = external {
            addresses.push(serde_json::json!({"type": "ExternalIP", "address": external}));
        }
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "status": {"addresses": addresses}}),
        )
        .expect("a node")
    }

    /// A process as the tests compare it: name, status, and (host, port) addresses.
    type Listed = (String, ProcessStatus, Vec<(String, u16)>);

    fn listed(table: &ProcessTable) -> Vec<Listed> {
        table
            .list(&Filter::default())
            .into_iter()
            .map(|p| {
                let addresses = p.socket_addresses.iter().map(|a| (a.host.to_string(), a.port)).collect();
                (p.process_name.to_string(), p.status, addresses)
            })
            .collect()
    }

    #[test]
    fn processes_join_pods_services_and_nodes_and_relists_replace_everything() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        index.apply_node(Event::Init);
        index.apply_node(Event::InitApply(node("n1", Some("203.0.113.1"))));
        index.apply_node(Event::InitDone);
        index.apply_service(Event::Init);
        index.apply_service(Event::InitApply(service("web", true)));
        index.apply_service(Event::InitDone);
        index.apply_stateful_set(Event::Init);
        index.apply_stateful_set(Event::InitDone);
        index.apply_job(Event::Init);
        index.apply_job(Event::InitDone);
        assert_eq!(index.health(), IndexHealth::Syncing);
        index.apply_pod(Event::Init);
        index.apply_pod(Event::InitApply(pod("web", Some("n1"), "Running")));
        index.apply_pod(Event::InitApply(pod("db", None, "Pending")));
        assert!(listed(&table).is_empty(), "nothing is published before the list is complete");
        index.apply_pod(Event::InitDone);
        assert_eq!(index.health(), IndexHealth::Synced);
        assert_eq!(
            listed(&table),
            [
                ("db".into(), ProcessStatus::Starting, vec![]),
                ("web".into(), ProcessStatus::Running, vec![("203.0.113.1".into(), 30080)]),
            ]
        );

        // The node loses its ExternalIP: its InternalIP is given, marked not public, and the
        // process says why (never an invented public address).
        index.apply_node(Event::Apply(node("n1", None)));
        assert_eq!(listed(&table)[1].2, [("10.0.0.1".to_owned(), 30080)]);
        let web = table.get("web").expect("web");
        assert!(!web.socket_addresses[0].is_public);
        assert_eq!((web.status, web.reason.as_deref()), (ProcessStatus::Running, Some(join::NO_EXTERNAL_IP)));
        assert!(web.message.as_deref().is_some_and(|message| message.contains("no ExternalIP")), "{web:?}");
        assert_eq!(index.read(|view| view.nodes_without_external_ip()), Some(1));
        index.apply_node(Event::Apply(node("n1", Some("203.0.113.1"))));
        let web = table.get("web").expect("web");
        assert!(web.socket_addresses[0].is_public && web.reason.is_none(), "{web:?}");
        assert_eq!(index.read(|view| view.nodes_without_external_ip()), None);

        // A relist (after a 410) that no longer has `db` deletes it, without touching `web`.
        let revision = table.revision();
        index.apply_pod(Event::Init);
        index.apply_pod(Event::InitApply(pod("web", Some("n1"), "Running")));
        index.apply_pod(Event::InitDone);
        assert_eq!(listed(&table).len(), 1);
        assert_eq!(table.revision(), revision + 1, "one change: db deleted");
        assert_eq!(index.read(|view| view.group("g")), ["web"]);
    }

    /// A Pod a controller made for the process `process`.
    fn controlled_pod(process: &str, pod_name: &str, created: &str, status: serde_json::Value) -> SlimPod {
        // Only `web` has ports, so a Service.
        let ports = if process == "web" {
            serde_json::json!([{"containerPort": 80}])
        } else {
            serde_json::Value::Null
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": pod_name, "uid": format!("uid-{pod_name}"), "creationTimestamp": created,
                "labels": {"hydroplane/process-id": process, "hydroplane/group-id": "g"}},
            "spec": {"containers": [{"name": process, "ports": ports}], "nodeName": "n1"},
            "status": status,
        }))
        .expect("a pod")
    }

    fn controller_meta(name: &str, uid: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "uid": uid, "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {"hydroplane/process-id": name, "hydroplane/group-id": "g"}})
    }

    #[test]
    fn a_second_object_of_one_name_is_seen_and_deadlines_come_from_the_stateful_sets_label() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        // A process without ports (so without a Service to wait for).
        let mut meta = controller_meta("db", "uid-set");
        meta["labels"][manifests::MAX_RUN_SECONDS_LABEL] = serde_json::json!("2");
        let set: SlimStatefulSet =
            serde_json::from_value(serde_json::json!({"metadata": meta.clone()})).expect("a set");
        index.apply_stateful_set(Event::Apply(set));
        index.apply_pod(Event::Apply(controlled_pod("db", "db-0", "2025-01-01T00:00:01Z", running())));
        // Its own Pod is no second object; a bare Pod of the name (another server's Start) is.
        assert!(index.read(|view| view.has_object("db", "uid-set")));
        assert_eq!(index.read(|view| view.other_object("db", "uid-set")), None);
        index.apply_pod(Event::Apply(controlled_pod("db", "db", "2025-01-01T00:00:01Z", running())));
        assert_eq!(index.read(|view| view.other_object("db", "uid-set")), Some(manifests::Controller::Pod));
        assert_eq!(
            index.read(|view| view.other_object("db", "uid-db")),
            Some(manifests::Controller::StatefulSet)
        );

        // Created at 00:00:00 with a limit of 2 s: due from 00:00:02, once.
        let at = |time: &str| time.parse::<jiff::Timestamp>().expect("a time");
        assert!(index.read(|view| view.past_deadline(at("2025-01-01T00:00:01Z"))).is_empty());
        assert_eq!(
            index.read(|view| view.past_deadline(at("2025-01-01T00:00:02Z"))),
            [("db".to_owned(), "uid-set".to_owned())]
        );
        meta["labels"][manifests::ENDED_LABEL] = serde_json::json!(manifests::DEADLINE_EXCEEDED);
        let ended: SlimStatefulSet =
            serde_json::from_value(serde_json::json!({"metadata": meta})).expect("a set");
        index.apply_stateful_set(Event::Apply(ended));
        assert!(index.read(|view| view.past_deadline(at("2025-01-01T00:00:09Z"))).is_empty());
        let (status, reason, ..) = shown(&table, "db");
        assert_eq!((status, reason.as_deref()), (ProcessStatus::Failed, Some(manifests::DEADLINE_EXCEEDED)));
    }

    #[test]
    fn a_controlled_process_is_one_entry_by_its_label_and_stays_listed_while_its_pod_is_replaced() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        let set: SlimStatefulSet =
            serde_json::from_value(serde_json::json!({"metadata": controller_meta("web", "uid-set")}))
                .expect("a set");
        index.apply_stateful_set(Event::Apply(set));
        assert_eq!(shown(&table, "web").1.as_deref(), Some(AWAITING_POD), "its Pod is being made");
        index.apply_service(Event::Apply({
            let mut service = service("web", false);
            service.metadata.owner_references =
                Some(vec![manifests::owned_by(manifests::Controller::StatefulSet, "web", "uid-set")]);
            service
        }));
        index.apply_pod(Event::Apply(controlled_pod("web", "web-0", "2025-01-01T00:00:01Z", running())));
        assert_eq!(shown(&table, "web"), (ProcessStatus::Running, None, String::new(), 1));
        assert_eq!(listed(&table).len(), 1, "one process, not one per object");
        assert_eq!(
            index.read(|view| view.owner("web").map(|(kind, uid)| (kind, uid.to_string()))),
            Some((manifests::Controller::StatefulSet, "uid-set".to_owned()))
        );

        // Deleted by someone else: STARTING while the StatefulSet makes it again, then RUNNING.
        let mut going = controlled_pod("web", "web-0", "2025-01-01T00:00:01Z", running());
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        index.apply_pod(Event::Apply(going.clone()));
        assert_eq!(shown(&table, "web").1.as_deref(), Some(REPLACING));
        index.apply_pod(Event::Delete(going));
        assert_eq!(shown(&table, "web").0, ProcessStatus::Starting);
        index.apply_pod(Event::Apply(controlled_pod("web", "web-0", "2025-01-01T00:00:09Z", running())));
        assert_eq!(shown(&table, "web").0, ProcessStatus::Running);
        assert_eq!(index.read(|view| view.group("g")), ["web"]);

        // A Job's Pods: the replacement stands for the process beside a failed one, and the Job's
        // failed Pods count as restarts; its end is the process's.
        let job = |status: serde_json::Value| -> SlimJob {
            serde_json::from_value(
                serde_json::json!({"metadata": controller_meta("work", "uid-job"), "status": status}),
            )
            .expect("a job")
        };
        index.apply_job(Event::Apply(job(serde_json::json!({"failed": 1}))));
        index.apply_pod(Event::Apply(controlled_pod(
            "work",
            "work-aaaaa",
            "2025-01-01T00:00:01Z",
            serde_json::json!({"phase": "Failed", "reason": "Evicted"}),
        )));
        index.apply_pod(Event::Apply(controlled_pod(
            "work",
            "work-bbbbb",
            "2025-01-01T00:00:05Z",
            running(),
        )));
        let process = table.get("work").expect("listed");
        assert_eq!((process.status, process.restart_count), (ProcessStatus::Running, 1));
        assert_eq!(
            index.read(|view| view.pod("work").map(|pod| pod.name.to_string())).as_deref(),
            Some("work-bbbbb")
        );
        index.apply_job(Event::Apply(job(serde_json::json!({"failed": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}))));
        let (status, reason, message, _) = shown(&table, "work");
        assert_eq!((status, reason.as_deref()), (ProcessStatus::Failed, Some("DeadlineExceeded")));
        assert!(message.contains("deadline"), "{message}");
        index.apply_job(Event::Delete(job(serde_json::json!({}))));
        index.apply_pod(Event::Delete(controlled_pod(
            "work",
            "work-aaaaa",
            "2025-01-01T00:00:01Z",
            running(),
        )));
        index.apply_pod(Event::Delete(controlled_pod(
            "work",
            "work-bbbbb",
            "2025-01-01T00:00:05Z",
            running(),
        )));
        assert!(table.get("work").is_none(), "gone with its objects");
    }

    #[test]
    fn an_event_that_changes_no_entry_publishes_nothing_and_entries_share_their_strings() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        index.apply_pod(Event::Apply(pod("a", Some("n1"), "Running")));
        index.apply_pod(Event::Apply(pod("b", Some("n1"), "Running")));
        let revision = table.revision();
        let mut again = pod("a", Some("n1"), "Running");
        again.metadata.resource_version = Some("2".into());
        index.apply_pod(Event::Apply(again));
        index.apply_node(Event::Apply(node("n2", None)));
        assert_eq!(
            table.revision(),
            revision,
            "a new resourceVersion alone, and another node, change nothing"
        );
        index.read(|view| {
            let (a, b) = (view.pod("a").expect("a"), view.pod("b").expect("b"));
            let shared = |x: &Option<Arc<str>>, y: &Option<Arc<str>>| {
                x.as_ref().zip(y.as_ref()).is_some_and(|(x, y)| Arc::ptr_eq(x, y))
            };
            assert!(shared(&a.group, &b.group), "one group string");
            assert!(shared(&a.node_name, &b.node_name), "one node name");
            assert!(Arc::ptr_eq(&a.labels, &b.labels), "one (empty) label set");
        });
        assert!(Arc::ptr_eq(&table.get("a").expect("a").labels, &table.get("b").expect("b").labels));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_on_a_process_is_woken_by_its_changes_and_leaves_nothing_behind() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        let waiter = {
            let index = Arc::clone(&index);
            tokio::spawn(async move {
                index.wait_for("a", Duration::from_secs(10), |view| view.pod("a").is_some()).await
            })
        };
        tokio::task::yield_now().await;
        index.apply_pod(Event::Apply(pod("b", None, "Pending")));
        index.apply_pod(Event::Apply(pod("a", None, "Pending")));
        assert!(waiter.await.expect("the waiter"));
        let absent = index.wait_for("c", Duration::from_secs(1), |view| view.pod("c").is_some()).await;
        assert!(!absent, "it times out");
        assert!(lock(&index.waiting).is_empty());
    }

    /// A Pod as Hydroplane makes it: ports, an env var from its Secret, registry credentials.
    fn full_pod(name: &str, uid: &str, ports: bool, status: serde_json::Value) -> SlimPod {
        let ports = if ports { serde_json::json!([{"containerPort": 80}]) } else { serde_json::Value::Null };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": uid, "creationTimestamp": "2025-01-02T03:04:05Z"},
            "spec": {"nodeName": "n1", "imagePullSecrets": [{"name": format!("{name}-registry")}],
                "containers": [{"name": name, "ports": ports, "env": [{"name": "TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": format!("{name}-env"), "key": "TOKEN"}}}]}]},
            "status": status,
        }))
        .expect("a pod")
    }

    fn running() -> serde_json::Value {
        serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
    }

    fn owned_service(name: &str, owner_uid: &str) -> SlimService {
        let mut service = service(name, false);
        service.metadata.owner_references =
            Some(vec![manifests::owned_by(manifests::Controller::Pod, name, owner_uid)]);
        service
    }

    /// (status, reason, message, address count) of one process.
    fn shown(table: &ProcessTable, name: &str) -> (ProcessStatus, Option<String>, String, usize) {
        let process = table.get(name).expect("listed");
        (
            process.status,
            process.reason.map(Into::into),
            process.message.unwrap_or_default(),
            process.socket_addresses.len(),
        )
    }

    #[test]
    fn a_half_made_process_is_starting_and_incomplete_saying_what_is_missing_until_it_is_finished() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        index.apply_pod(Event::Apply(full_pod("web", "uid-1", true, running())));
        let (status, reason, message, addresses) = shown(&table, "web");
        assert_eq!((status, reason.as_deref(), addresses), (ProcessStatus::Starting, Some(INCOMPLETE), 0));
        assert!(message.contains("Service `web` is missing"), "{message}");
        assert!(message.contains("perhaps its Secret `web-env` and Secret `web-registry`"), "{message}");
        assert!(message.contains("retrying the same Start finishes it"), "{message}");

        // A Service left from an earlier Pod of the same name is not this Pod's.
        index.apply_service(Event::Apply(owned_service("web", "uid-0")));
        assert_eq!(shown(&table, "web").1.as_deref(), Some(INCOMPLETE));

        // Its own Service finishes it: RUNNING, with its address, and it vouches for the Secrets.
        index.apply_service(Event::Apply(owned_service("web", "uid-1")));
        assert_eq!(shown(&table, "web"), (ProcessStatus::Running, None, String::new(), 1));

        // Without ports, only the kubelet can tell that the env Secret is missing.
        index.apply_pod(Event::Apply(full_pod("job", "uid-2", false, running())));
        assert_eq!(shown(&table, "job").0, ProcessStatus::Running);
        let config_error = serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "job", "image": "i",
            "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {
                "reason": "CreateContainerConfigError", "message": "secret \"job-env\" not found"}}}]});
        index.apply_pod(Event::Apply(full_pod("job", "uid-2", false, config_error)));
        let (status, reason, message, _) = shown(&table, "job");
        assert_eq!((status, reason.as_deref()), (ProcessStatus::Starting, Some(INCOMPLETE)));
        assert!(message.contains("its Secret `job-env` is missing"), "{message}");

        // Ended, failed for another reason or stopping: shown as it is.
        let exited = serde_json::json!({"phase": "Succeeded"});
        index.apply_pod(Event::Apply(full_pod("done", "uid-3", true, exited)));
        assert_eq!(shown(&table, "done").0, ProcessStatus::Exited);
        let mut stopping = full_pod("gone", "uid-4", true, running());
        stopping.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        index.apply_pod(Event::Apply(stopping));
        assert_eq!(shown(&table, "gone").0, ProcessStatus::Stopping);
    }

    #[test]
    fn a_process_its_start_is_still_making_is_not_half_made_and_never_was() {
        let table = ProcessTable::new(0, 100);
        let index = Index::new("ns".into(), Arc::clone(&table));
        let making = index.making("web");
        index.apply_pod(Event::Apply(full_pod("web", "uid-1", true, running())));
        assert_eq!(shown(&table, "web").1, None, "its Service is being made");
        index.apply_service(Event::Apply(owned_service("web", "uid-1")));
        drop(making);
        assert_eq!(shown(&table, "web"), (ProcessStatus::Running, None, String::new(), 1));
        let (_, history) = table.get_with_history("web").expect("web is listed");
        assert!(
            history.iter().all(|transition| transition.reason.as_deref() != Some(INCOMPLETE)),
            "{history:?}"
        );

        // A Start that gave up before its Service leaves a half-made process, shown as such.
        let making = index.making("job");
        index.apply_pod(Event::Apply(full_pod("job", "uid-2", true, running())));
        assert_eq!(shown(&table, "job").1, None);
        drop(making);
        assert_eq!(shown(&table, "job").1.as_deref(), Some(INCOMPLETE));
    }
}
