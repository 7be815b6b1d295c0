//! The index: Pods, Services and Nodes of the cluster, followed with kube-runtime's `watcher`
//! into compact entries (only the fields a process's info needs, so 10,000 processes stay small),
//! and turned into the runtime's [`ProcessTable`] on every change. List and Watch are served from
//! the table, so they cost no API call.
//!
//! The cluster is the only source of truth: the index keeps nothing of its own, so a restarted
//! server, or a second one on the same namespace, ends up with the same view.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::manifests::{GROUP_LABEL, MANAGED_SELECTOR};
use super::status::{PodState, pod_state};
use crate::backoff::Backoff;
use crate::spec::{ProcessInfo, ProcessSpec, SocketAddress};
use crate::table::ProcessTable;

/// What the index keeps of a Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEntry {
    /// The Pod's uid.
    pub uid: String,
    /// The Pod's resourceVersion.
    pub resource_version: Option<String>,
    /// The process's group, from its label.
    pub group: Option<String>,
    /// When the Pod was created.
    pub created: jiff::Timestamp,
    /// The node the Pod is bound to.
    pub node_name: Option<String>,
    /// The process's state, derived from the Pod.
    pub state: PodState,
    /// The spec the Pod was made from.
    pub spec: Option<ProcessSpec>,
}

/// What the index keeps of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Whether it is a NodePort Service.
    pub node_port: bool,
    /// Its cluster IP.
    pub cluster_ip: Option<String>,
    /// Its ports: the service port and, for NodePort, the node port.
    pub ports: Vec<(u16, Option<u16>)>,
}

/// What the index keeps of a Node: its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// The first ExternalIP.
    pub external_ip: Option<String>,
    /// The first InternalIP.
    pub internal_ip: Option<String>,
}

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
struct IndexState {
    pods: Entries<PodEntry>,
    services: Entries<ServiceEntry>,
    nodes: Entries<NodeEntry>,
    synced: HashSet<&'static str>,
    /// The last failure of each watch. A watch that recovers without news sends no event, so
    /// a failure counts only for [`STALE_WINDOW`] unless it recurs (a watch that stays down
    /// fails again within the longest backoff).
    errors: HashMap<&'static str, (String, tokio::time::Instant)>,
}

/// The entries of one kind, by name, kept current from its watcher's events.
struct Entries<E> {
    live: HashMap<String, E>,
    /// Objects seen during a relist, which replaces `live` when it completes.
    relisting: Option<HashMap<String, E>>,
}

impl<E> Default for Entries<E> {
    fn default() -> Self {
        Entries { live: HashMap::new(), relisting: None }
    }
}

/// What one watcher event changed.
struct Applied {
    /// The names whose entries changed (or may have: every name before and after a relist).
    touched: Vec<String>,
    /// Whether a relist completed.
    relisted: bool,
}

impl<E> Entries<E> {
    fn apply<K: ResourceExt>(&mut self, event: Event<K>, entry: impl Fn(&K) -> (String, E)) -> Applied {
        let mut relisted = false;
        let touched = match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let (name, value) = entry(&object);
                self.relisting.get_or_insert_with(HashMap::new).insert(name, value);
                Vec::new()
            }
            Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                let mut touched: Vec<String> = self.live.keys().cloned().collect();
                touched.extend(fresh.keys().cloned());
                self.live = fresh;
                relisted = true;
                touched
            }
            Event::Apply(object) => {
                let (name, value) = entry(&object);
                self.live.insert(name.clone(), value);
                vec![name]
            }
            Event::Delete(object) => {
                let name = object.name_any();
                self.live.remove(&name);
                vec![name]
            }
        };
        Applied { touched, relisted }
    }
}

/// How long after its last failure a watch counts as down: longer than the longest backoff.
const STALE_WINDOW: Duration = Duration::from_secs(10);

/// The watch-fed index of one namespace.
pub struct Index {
    namespace: String,
    state: Mutex<IndexState>,
    table: Arc<ProcessTable>,
    /// Bumped on every applied event, so that callers can wait for the index to catch up.
    generation: watch::Sender<u64>,
}

impl Index {
    /// An empty index that publishes into `table`.
    pub fn new(namespace: String, table: Arc<ProcessTable>) -> Arc<Index> {
        let (generation, _) = watch::channel(0);
        Arc::new(Index { namespace, state: Mutex::new(IndexState::default()), table, generation })
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

    fn apply_pod(&self, event: Event<Pod>) {
        let mut state = self.lock();
        let applied = state.pods.apply(event, pod_entry);
        self.finish(state, "pods", applied.relisted, applied.touched);
    }

    fn apply_service(&self, event: Event<Service>) {
        let mut state = self.lock();
        let applied = state.services.apply(event, service_entry);
        self.finish(state, "services", applied.relisted, applied.touched);
    }

    fn apply_node(&self, event: Event<Node>) {
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
        self.publish(&state, touched);
        drop(state);
        self.bump();
    }

    fn record_error(&self, kind: &'static str, error: &watcher::Error) {
        tracing::warn!(kind, %error, "watch failed; serving the index as it is and retrying");
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

/// The delay between attempts to re-establish a failed watch: doubling from 250 ms up to 5 s, so
/// that an API server that comes back is followed again within seconds (kube-runtime's default
/// waits up to 30 s), yet one that stays down is not hammered.
const RECONNECT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// Drives one watcher into the index, retrying failed watches after the [`RECONNECT`] delays.
async fn follow<K>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    kind: &'static str,
    index: &Arc<Index>,
    apply: fn(&Index, Event<K>),
) {
    let stream = stream.backoff(RECONNECT);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => apply(index, event),
            Err(error) => index.record_error(kind, &error),
        }
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

fn pod_entry(pod: &Pod) -> (String, PodEntry) {
    let name = pod.name_any();
    let created = pod.metadata.creation_timestamp.as_ref().map_or(jiff::Timestamp::UNIX_EPOCH, |time| time.0);
    let entry = PodEntry {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        resource_version: pod.metadata.resource_version.clone(),
        group: pod.labels().get(GROUP_LABEL).cloned(),
        created,
        node_name: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        state: pod_state(pod),
        spec: super::manifests::spec_of(pod),
    };
    (name, entry)
}

fn service_entry(service: &Service) -> (String, ServiceEntry) {
    let spec = service.spec.as_ref();
    let entry = ServiceEntry {
        node_port: spec.and_then(|spec| spec.type_.as_deref()) == Some("NodePort"),
        cluster_ip: spec.and_then(|spec| spec.cluster_ip.clone()).filter(|ip| !ip.is_empty() && ip != "None"),
        ports: spec
            .and_then(|spec| spec.ports.as_ref())
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|port| {
                        let service_port = u16::try_from(port.port).ok()?;
                        Some((
                            service_port,
                            port.node_port.and_then(|node_port| u16::try_from(node_port).ok()),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    (service.name_any(), entry)
}

fn node_entry(node: &Node) -> NodeEntry {
    let addresses = node.status.as_ref().and_then(|status| status.addresses.as_ref());
    let first = |kind: &str| {
        addresses
            .and_then(|addresses| addresses.iter().find(|address| address.type_ == kind))
            .map(|a| a.address.clone())
    };
    NodeEntry { external_ip: first("ExternalIP"), internal_ip: first("InternalIP") }
}

/// A process's info from its Pod, Service and Node; `None` when it has no Pod.
fn process_info(state: &IndexState, namespace: &str, name: &str) -> Option<ProcessInfo> {
    let pod = state.pods.live.get(name)?;
    let service = state.services.live.get(name);
    let node = pod.node_name.as_ref().and_then(|node| state.nodes.live.get(node));
    Some(ProcessInfo {
        process_name: name.to_owned(),
        group: pod.group.clone(),
        socket_addresses: addresses(name, namespace, service, node),
        created: pod.created,
        status: pod.state.status,
        reason: pod.state.reason.clone(),
        message: pod.state.message.clone(),
        restart_count: pod.state.restart_count,
        exit_code: pod.state.exit_code,
        node: pod.node_name.clone(),
    })
}

/// Public: the node the pod runs on (its ExternalIP, else its InternalIP) and the NodePort, only
/// that node, as the Hydroplane guide explains. Private: the ClusterIP and port, with the DNS
/// name. None before the pod is scheduled (public) or the Service has its IP (private).
fn addresses(
    name: &str,
    namespace: &str,
    service: Option<&ServiceEntry>,
    node: Option<&NodeEntry>,
) -> Vec<SocketAddress> {
    let Some(service) = service else { return Vec::new() };
    if service.node_port {
        let Some(host) = node.and_then(|node| node.external_ip.clone().or_else(|| node.internal_ip.clone()))
        else {
            return Vec::new();
        };
        service
            .ports
            .iter()
            .filter_map(|(_, node_port)| *node_port)
            .map(|port| SocketAddress { host: host.clone(), port, is_public: true, dns_name: None })
            .collect()
    } else {
        let Some(cluster_ip) = &service.cluster_ip else { return Vec::new() };
        service
            .ports
            .iter()
            .map(|(port, _)| SocketAddress {
                host: cluster_ip.clone(),
                port: *port,
                is_public: false,
                dns_name: Some(format!("{name}.{namespace}.svc.cluster.local")),
            })
            .collect()
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
                (p.process_name, p.status, p.socket_addresses.into_iter().map(|a| (a.host, a.port)).collect())
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
}
