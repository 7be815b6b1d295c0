//! The index: Pods, Services and Nodes of the cluster, followed with kube-runtime's `watcher`
//! ([`follow`]) into compact entries ([`entries`]), and turned into the runtime's [`ProcessTable`]
//! on every change by the join that makes a process's info ([`join`]). List and Watch are served from
//! the table, so they cost no API call.
//!
//! The cluster is the only source of truth: the index keeps nothing of its own, so a restarted
//! server, or a second one on the same namespace, ends up with the same view. That view includes
//! half-made processes (a Pod whose Start did not finish, so its Service or Secrets are missing):
//! they show as STARTING with reason [`INCOMPLETE`] and a message naming what is missing, until a
//! retried Start finishes them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::log_limit::LogLimit;
use super::manifests::MANAGED_SELECTOR;
use crate::table::ProcessTable;

mod entries;
mod follow;
mod join;

use entries::{Entries, node_entry, pod_entry, service_entry};
pub use entries::{Needs, NodeEntry, PodEntry, ServiceEntry};
use follow::follow;
pub use join::INCOMPLETE;
use join::process_info;

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
    pods: Entries<PodEntry>,
    services: Entries<ServiceEntry>,
    nodes: Entries<NodeEntry>,
    synced: HashSet<&'static str>,
    /// The last failure of each watch. A watch that recovers without news sends no event, so
    /// a failure counts only for [`STALE_WINDOW`] unless it recurs (a watch that stays down
    /// fails again within the longest backoff).
    errors: HashMap<&'static str, (String, tokio::time::Instant)>,
    /// When a watch last brought an event (none yet: when the index was made).
    last_heard: Option<tokio::time::Instant>,
}

/// How long after its last failure a watch counts as down: longer than the longest backoff.
const STALE_WINDOW: Duration = Duration::from_secs(10);

/// At most one warning per watch and cause this often: a watch that cannot reach the API
/// server fails at every backoff step (four times a second at first).
const WARNING_WINDOW: Duration = Duration::from_secs(5);

/// The watch-fed index of one namespace.
pub struct Index {
    namespace: String,
    state: Mutex<IndexState>,
    table: Arc<ProcessTable>,
    /// Bumped on every applied event, so that callers can wait for the index to catch up.
    generation: watch::Sender<u64>,
    /// Keeps repeated watch failures to a line every few seconds.
    warnings: LogLimit,
}

impl Index {
    /// An empty index that publishes into `table`.
    pub fn new(namespace: String, table: Arc<ProcessTable>) -> Arc<Index> {
        let (generation, _) = watch::channel(0);
        Arc::new(Index {
            namespace,
            state: Mutex::new(IndexState {
                last_heard: Some(tokio::time::Instant::now()),
                ..IndexState::default()
            }),
            table,
            generation,
            warnings: LogLimit::new(WARNING_WINDOW),
        })
    }

    fn lock(&self) -> MutexGuard<'_, IndexState> {
        // Every update is applied whole under the lock; a panic cannot leave it half-done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows the cluster until the returned task is dropped or aborted.
    pub fn spawn(self: &Arc<Self>, client: Client) -> tokio::task::JoinHandle<()> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        let services: Api<Service> = Api::namespaced(client.clone(), &self.namespace);
        let nodes: Api<Node> = Api::all(client);
        let managed = watcher::Config::default().labels(MANAGED_SELECTOR);
        let index = Arc::clone(self);
        tokio::spawn(async move {
            let pods = follow(watcher::watcher(pods, managed.clone()), "pods", &index, Index::apply_pod);
            let services =
                follow(watcher::watcher(services, managed), "services", &index, Index::apply_service);
            let nodes = follow(
                watcher::watcher(nodes, watcher::Config::default()),
                "nodes",
                &index,
                Index::apply_node,
            );
            tokio::join!(pods, services, nodes);
        })
    }

    /// How the index stands.
    pub fn health(&self) -> IndexHealth {
        let state = self.lock();
        let recent = state.errors.iter().find(|(_, (_, at))| at.elapsed() < STALE_WINDOW);
        if let Some((kind, (error, _))) = recent {
            return IndexHealth::Stale(format!("watching {kind} failed ({error}); retrying"));
        }
        if state.synced.len() < 3 { IndexHealth::Syncing } else { IndexHealth::Synced }
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

    /// Reads the index.
    pub fn read<T>(&self, read: impl FnOnce(&IndexView<'_>) -> T) -> T {
        read(&IndexView { state: &self.lock() })
    }

    fn bump(&self) {
        self.generation.send_modify(|generation| *generation += 1);
    }

    pub(super) fn apply_pod(&self, event: Event<Pod>) {
        let mut state = self.lock();
        let applied = state.pods.apply(event, pod_entry);
        self.finish(state, "pods", applied.relisted, applied.touched);
    }

    pub(super) fn apply_service(&self, event: Event<Service>) {
        let mut state = self.lock();
        let applied = state.services.apply(event, service_entry);
        self.finish(state, "services", applied.relisted, applied.touched);
    }

    pub(super) fn apply_node(&self, event: Event<Node>) {
        let mut state = self.lock();
        let applied = state.nodes.apply(event, |node| (node.name_any(), node_entry(node)));
        // A node's addresses are part of the info of every process on it; after a relist, any
        // node may have changed.
        let touched: Vec<String> = state
            .pods
            .live
            .iter()
            .filter(|(_, pod)| {
                applied.relisted || pod.node_name.as_ref().is_some_and(|node| applied.touched.contains(node))
            })
            .map(|(name, _)| name.clone())
            .collect();
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

    /// Brings the table up to date for the named processes.
    fn publish(&self, state: &IndexState, names: Vec<String>) {
        for name in names {
            match process_info(state, &self.namespace, &name) {
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

/// A read-only view of the index.
pub struct IndexView<'a> {
    state: &'a IndexState,
}

impl IndexView<'_> {
    /// Whether pods, services and nodes have all been listed once.
    pub fn synced(&self) -> bool {
        self.state.synced.len() == 3
    }

    /// The Pod of a process.
    pub fn pod(&self, name: &str) -> Option<&PodEntry> {
        self.state.pods.live.get(name)
    }

    /// The Service of a process.
    pub fn service(&self, name: &str) -> Option<&ServiceEntry> {
        self.state.services.live.get(name)
    }

    /// The processes of a group.
    pub fn group(&self, group: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .state
            .pods
            .live
            .iter()
            .filter(|(_, pod)| pod.group.as_deref() == Some(group))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ProcessStatus;
    use crate::table::Filter;

    fn pod(name: &str, node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"hydroplane/group-id": "g"},
                "creationTimestamp": "2025-01-02T03:04:05Z"},
            "spec": {"containers": [{"name": name}], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]}
        }))
        .expect("a pod")
    }

    fn service(name: &str, node_port: bool) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"type": if node_port { "NodePort" } else { "ClusterIP" }, "clusterIP": "10.96.0.9",
                "ports": [{"port": 80, "nodePort": if node_port { Some(30080) } else { None }}]}
        }))
        .expect("a service")
    }

    fn node(name: &str, external: Option<&str>) -> Node {
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
                let addresses = p.socket_addresses.iter().map(|a| (a.host.clone(), a.port)).collect();
                (p.process_name.clone(), p.status, addresses)
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

        // The node loses its ExternalIP: the InternalIP serves.
        index.apply_node(Event::Apply(node("n1", None)));
        assert_eq!(listed(&table)[1].2, [("10.0.0.1".to_owned(), 30080)]);

        // A relist (after a 410) that no longer has `db` deletes it, without touching `web`.
        let revision = table.revision();
        index.apply_pod(Event::Init);
        index.apply_pod(Event::InitApply(pod("web", Some("n1"), "Running")));
        index.apply_pod(Event::InitDone);
        assert_eq!(listed(&table).len(), 1);
        assert_eq!(table.revision(), revision + 1, "one change: db deleted");
        assert_eq!(index.read(|view| view.group("g")), ["web"]);
    }

    /// A Pod as Hydroplane makes it: ports, an env var from its Secret, registry credentials.
    fn full_pod(name: &str, uid: &str, ports: bool, status: serde_json::Value) -> Pod {
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

    fn owned_service(name: &str, owner_uid: &str) -> Service {
        let mut service = service(name, false);
        service.metadata.owner_references =
            Some(vec![super::super::manifests::owned_by_pod(name, owner_uid)]);
        service
    }

    /// (status, reason, message, address count) of one process.
    fn shown(table: &ProcessTable, name: &str) -> (ProcessStatus, Option<String>, String, usize) {
        let process = table.get(name).expect("listed");
        (process.status, process.reason, process.message.unwrap_or_default(), process.socket_addresses.len())
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
}
