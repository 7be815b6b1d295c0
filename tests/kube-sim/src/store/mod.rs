//! The object store: every object of every kind, one global resourceVersion counter (as etcd
//! keeps), a ring of recent events for watch resumption, and a broadcast of new events.
//!
//! Start at [`Store`]. All writes take one `std::sync::Mutex` for a short, non-async critical
//! section: allocation, validation, the write and the event broadcast happen together, so a
//! watcher subscribed under the same lock never misses or duplicates an event. Objects are kept
//! as `Arc<serde_json::Value>` so lists and watch events share them without deep copies.
//!
//! This file holds the state ([`Store`] and its locked `Inner`), the seed objects and the
//! bookkeeping every job shares (tables, the owner index, admission's context). The jobs are
//! the submodules: `reads` (get, list pages, the controllers' queries), `writes` (create,
//! update, patch, controller writes), `deletes` (delete, deletecollection, finalizers, garbage
//! collection by ownerReference) and `history` (the resourceVersion counter, the event history
//! and what watches replay or find expired).

mod deletes;
mod history;
mod reads;
mod writes;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::admission::AdmissionContext;
use crate::alloc::Allocators;
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;

pub use deletes::{DeleteOptions, Propagation};
pub use history::{Event, EventType, Subscription, WatchFrom};
pub use reads::ListPage;
pub use writes::WriteTarget;

/// Where an object lives: its namespace ("" for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// The namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A key from borrowed parts.
    pub fn new(namespace: &str, name: &str) -> ObjectKey {
        ObjectKey { namespace: namespace.to_string(), name: name.to_string() }
    }
}

/// Tunables of the store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// How many nodes to create.
    pub nodes: usize,
    /// How many recent events are kept for watch resumption.
    pub history_limit: usize,
    /// How many events a watcher may fall behind before it is closed.
    pub watch_buffer: usize,
    /// How many core/v1 Events are kept (0: all); past it the oldest goes, as the API server's
    /// event TTL removes them.
    pub max_events: usize,
    /// The NodePort range, both ends included (`--service-node-port-range`).
    pub node_port_range: (u16, u16),
    /// Whether nodes have an ExternalIP (not in private subnets).
    pub external_ips: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            nodes: 3,
            history_limit: 10_000,
            watch_buffer: 16_384,
            max_events: 20_000,
            node_port_range: (30000, 32767),
            external_ips: true,
        }
    }
}

/// One stored object.
#[derive(Clone)]
struct Entry {
    object: Arc<Value>,
    /// Set once a client wrote the status subresource: the simulated kubelet then leaves it alone.
    status_owned_by_client: bool,
}

/// Everything behind the store's lock; the submodules add the operations of their job.
struct Inner {
    resource_version: u64,
    tables: HashMap<Kind, BTreeMap<ObjectKey, Entry>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The oldest resourceVersion a watch may resume from.
    min_resumable: u64,
    /// Dependents by owner UID.
    dependents: HashMap<String, BTreeSet<(Kind, ObjectKey)>>,
    /// Every object's place by UID.
    by_uid: HashMap<String, (Kind, ObjectKey)>,
    /// How many objects of a kind each namespace holds, so that a page of a list can tell how
    /// many follow without counting them.
    counts: HashMap<(Kind, String), usize>,
    /// The core/v1 Events by age (key and UID; deleted ones are skipped when they come up).
    event_order: VecDeque<(ObjectKey, String)>,
    /// See [`StoreSettings::max_events`].
    max_events: usize,
    /// Where created pods go for the kubelet, once it asked ([`Store::controller_queues`]).
    pods_to_start: Option<mpsc::UnboundedSender<PodToStart>>,
    /// Where deleted owners go for the garbage collector, once it asked.
    deleted_owners: Option<mpsc::UnboundedSender<String>>,
    allocators: Allocators,
    next_node: usize,
    pod_ips: HashMap<String, Ipv4Addr>,
    sender: broadcast::Sender<Arc<Event>>,
}

/// A pod the simulated kubelet is to start: its key, UID and node.
pub type PodToStart = (ObjectKey, String, String);

/// What the store hands the simulated kubelet and garbage collector as it happens. They read
/// these instead of the event broadcast, where falling behind meant scanning every object
/// again (at 150,000 pods, again and again, under the store's lock).
pub struct ControllerQueues {
    /// The pods bound before the queues existed, to start first.
    pub pending: Vec<PodToStart>,
    /// Each bound pod as it is created.
    pub pods_to_start: mpsc::UnboundedReceiver<PodToStart>,
    /// The UID of each deleted object that had dependents.
    pub deleted_owners: mpsc::UnboundedReceiver<String>,
}

/// The simulated cluster's state. Cheap to share behind an `Arc`.
pub struct Store {
    inner: Mutex<Inner>,
    sender: broadcast::Sender<Arc<Event>>,
}

impl Store {
    /// A store with the standard namespaces and `settings.nodes` ready nodes.
    pub fn new(settings: &StoreSettings) -> Arc<Store> {
        let (sender, _) = broadcast::channel(settings.watch_buffer.max(16));
        let store = Arc::new(Store {
            inner: Mutex::new(Inner {
                resource_version: 0,
                tables: HashMap::new(),
                history: VecDeque::new(),
                history_limit: settings.history_limit.max(1),
                min_resumable: 0,
                dependents: HashMap::new(),
                by_uid: HashMap::new(),
                counts: HashMap::new(),
                event_order: VecDeque::new(),
                max_events: settings.max_events,
                pods_to_start: None,
                deleted_owners: None,
                allocators: Allocators::with_node_port_range(
                    settings.node_port_range.0,
                    settings.node_port_range.1,
                ),
                next_node: 0,
                pod_ips: HashMap::new(),
                sender: sender.clone(),
            }),
            sender,
        });
        for namespace in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = store.create(Kind::Namespace, "", json!({"metadata": {"name": namespace}}));
        }
        for index in 1..=settings.nodes {
            let _ = store.create(Kind::Node, "", node_object(index, settings.external_ips));
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (writes are single inserts),
        // so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `operation` against a throw-away copy of the store, as `dryRun=All` asks: the
    /// answer is what the real operation would return, and nothing changes or is announced.
    pub fn dry_run<T>(&self, operation: impl FnOnce(&Store) -> Result<T, ApiError>) -> Result<T, ApiError> {
        let (sender, _) = broadcast::channel(16);
        let scratch = {
            let inner = self.lock();
            Inner {
                resource_version: inner.resource_version,
                tables: inner.tables.clone(),
                history: VecDeque::new(),
                history_limit: 1,
                min_resumable: inner.min_resumable,
                dependents: inner.dependents.clone(),
                by_uid: inner.by_uid.clone(),
                counts: inner.counts.clone(),
                // A dry run creates at most one Event, and expires none.
                event_order: VecDeque::new(),
                max_events: 0,
                // Nothing a dry run does may reach the controllers.
                pods_to_start: None,
                deleted_owners: None,
                allocators: inner.allocators.clone(),
                next_node: inner.next_node,
                pod_ips: inner.pod_ips.clone(),
                sender: sender.clone(),
            }
        };
        operation(&Store { inner: Mutex::new(scratch), sender })
    }
}

/// The namespace part of a key: empty for cluster-scoped kinds.
fn scope(kind: Kind, namespace: &str) -> &str {
    if kind.info().namespaced { namespace } else { "" }
}

/// One of the seed nodes, `node-{index}`, ready and with the addresses the README lists.
fn node_object(index: usize, external_ip: bool) -> Value {
    let name = format!("node-{index}");
    let zone = ["a", "b", "c"][(index - 1) % 3];
    json!({
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m5.large",
                "topology.kubernetes.io/region": "us-east-1",
                "topology.kubernetes.io/zone": format!("us-east-1{zone}"),
            }
        },
        "spec": {"podCIDR": format!("10.244.{index}.0/24"), "providerID": format!("aws:///us-east-1{zone}/i-{index:017x}")},
        "status": {
            "addresses": if external_ip {
                json!([
                    {"type": "InternalIP", "address": format!("10.0.0.{index}")},
                    {"type": "ExternalIP", "address": format!("203.0.113.{index}")},
                    {"type": "Hostname", "address": name},
                ])
            } else {
                json!([
                    {"type": "InternalIP", "address": format!("10.0.0.{index}")},
                    {"type": "Hostname", "address": name},
                ])
            },
            "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "80Gi"},
            "allocatable": {"cpu": "1930m", "memory": "7Gi", "pods": "110", "ephemeral-storage": "76Gi"},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": meta::now(), "lastTransitionTime": meta::now()
            }],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0", "containerRuntimeVersion": "containerd://1.7.0",
                "operatingSystem": "linux", "architecture": "amd64", "osImage": "kube-sim", "kernelVersion": "6.1.0",
                "machineID": "", "systemUUID": "", "bootID": ""
            }
        }
    })
}

impl Inner {
    /// The objects of one kind, if any was ever stored.
    fn table(&self, kind: Kind) -> Option<&BTreeMap<ObjectKey, Entry>> {
        self.tables.get(&kind)
    }

    /// One object, shared.
    fn entry(&self, kind: Kind, key: &ObjectKey) -> Option<Arc<Value>> {
        self.tables.get(&kind)?.get(key).map(|e| e.object.clone())
    }

    /// How many objects of `kind` live in `namespace` (in all namespaces when `None`).
    fn count(&self, kind: Kind, namespace: Option<&str>) -> usize {
        match namespace {
            Some(namespace) => self.counts.get(&(kind, namespace.to_string())).copied().unwrap_or(0),
            None => self.table(kind).map_or(0, |t| t.len()),
        }
    }

    /// What admission may read (the nodes) and allocate from.
    fn admission_context(&mut self) -> AdmissionContext<'_> {
        let nodes = self
            .tables
            .get(&Kind::Node)
            .map(|t| t.values().map(|e| e.object.clone()).collect())
            .unwrap_or_default();
        AdmissionContext {
            allocators: &mut self.allocators,
            nodes,
            next_node: &mut self.next_node,
            pod_ips: &mut self.pod_ips,
        }
    }

    /// Adds `object` to (or, without `add`, removes it from) the owner and UID indexes that
    /// garbage collection reads.
    fn index(&mut self, kind: Kind, key: &ObjectKey, object: &Value, add: bool) {
        for owner in meta::owner_uids(object) {
            if add {
                self.dependents.entry(owner).or_default().insert((kind, key.clone()));
            } else if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(&(kind, key.clone()));
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
        if add {
            self.by_uid.insert(meta::uid(object).to_string(), (kind, key.clone()));
        } else {
            self.by_uid.remove(meta::uid(object));
        }
    }
}

/// What the tests of every store module start from.
#[cfg(test)]
mod fixtures {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::{Store, StoreSettings};

    /// A store with two nodes and a history of five events, so tests can outrun it.
    pub(super) fn store() -> Arc<Store> {
        Store::new(&StoreSettings {
            nodes: 2,
            history_limit: 5,
            watch_buffer: 64,
            max_events: 0,
            ..Default::default()
        })
    }

    /// A valid pod labelled `app=web`.
    pub(super) fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}})
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{pod, store};
    use super::*;

    #[test]
    fn dry_runs_change_nothing() {
        let store = store();
        let version = store.resource_version();
        let created = store.dry_run(|scratch| scratch.create(Kind::Pod, "default", pod("a"))).unwrap();
        assert_eq!(meta::name(&created), "a");
        assert!(store.get(Kind::Pod, "default", "a").is_err());
        assert_eq!(store.resource_version(), version);
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        store
            .dry_run(|scratch| scratch.delete(Kind::Pod, "default", "a", &DeleteOptions::default()))
            .unwrap();
        assert!(store.get(Kind::Pod, "default", "a").is_ok());
        let invalid = store.dry_run(|scratch| scratch.create(Kind::Pod, "default", pod("B")));
        assert!(matches!(invalid, Err(ApiError::Invalid { .. })));
    }
}
