//! The object store: every object of every kind, one global resourceVersion counter (as etcd
//! keeps), a ring of recent events for watch resumption, and a broadcast of new events.
//!
//! Start at [`Store`]. All writes take one `std::sync::Mutex` for a short, non-async critical
//! section: allocation, validation, the write and the event broadcast happen together, so a
//! watcher subscribed under the same lock never misses or duplicates an event. Objects are kept
//! as `Arc<serde_json::Value>` so lists and watch events share them without deep copies.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::admission::{self, AdmissionContext};
use crate::alloc::Allocators;
use crate::error::{ApiError, FieldError};
use crate::meta;
use crate::patch::{self, PatchType};
use crate::resources::Kind;
use crate::selector::Filter;
use crate::validation;

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

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A new object.
    Added,
    /// A changed object.
    Modified,
    /// A removed object (carrying its last state).
    Deleted,
}

impl EventType {
    /// The wire name: `ADDED`, `MODIFIED`, `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub resource_version: u64,
    /// The kind of the object.
    pub kind: Kind,
    /// The object's namespace.
    pub namespace: String,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (before it, for deletions).
    pub object: Arc<Value>,
    /// The object before a modification, so watchers can tell an object leaving their selector.
    pub previous: Option<Arc<Value>>,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteTarget {
    /// The main resource: status changes are ignored for kinds with a status subresource.
    Main,
    /// The `status` subresource: only status changes are kept.
    Status,
}

/// How dependents are treated when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the owner now; the garbage collector removes dependents shortly after.
    #[default]
    Background,
    /// Delete dependents first, then the owner.
    Foreground,
    /// Keep dependents, removing their owner references.
    Orphan,
}

/// Options of a delete request.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// The propagation policy.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Synthetic ADDED events for the current state, then changes (resourceVersion unset or 0).
    Now,
    /// Every change after this resourceVersion, or 410 Gone when it is older than the history.
    After(u64),
}

/// A started watch: what to send first, and the live feed.
pub struct Subscription {
    /// Objects to send as synthetic ADDED events (for [`WatchFrom::Now`]).
    pub initial: Vec<Arc<Value>>,
    /// Kept events after the requested resourceVersion (for [`WatchFrom::After`]).
    pub replay: Vec<Arc<Event>>,
    /// New events; those at or below `floor` are already covered above.
    pub receiver: broadcast::Receiver<Arc<Event>>,
    /// Events from `receiver` with a resourceVersion at or below this are skipped.
    pub floor: u64,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// The matching objects.
    pub items: Vec<Arc<Value>>,
    /// The list's resourceVersion.
    pub resource_version: u64,
    /// The key after which the next page starts, when there is one.
    pub next_start: Option<ObjectKey>,
    /// How many matching objects follow this page, when known.
    pub remaining: Option<u64>,
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
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings { nodes: 3, history_limit: 10_000, watch_buffer: 16_384 }
    }
}

#[derive(Clone)]
struct Entry {
    object: Arc<Value>,
    /// Set once a client wrote the status subresource: the simulated kubelet then leaves it alone.
    status_owned_by_client: bool,
}

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
    allocators: Allocators,
    next_node: usize,
    pod_ips: HashMap<String, Ipv4Addr>,
    sender: broadcast::Sender<Arc<Event>>,
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
                allocators: Allocators::default(),
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
            let _ = store.create(Kind::Node, "", node_object(index));
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
                allocators: inner.allocators.clone(),
                next_node: inner.next_node,
                pod_ips: inner.pod_ips.clone(),
                sender: sender.clone(),
            }
        };
        operation(&Store { inner: Mutex::new(scratch), sender })
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock().resource_version
    }

    /// A receiver of every future event, for controllers.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Creates an object in `namespace` (ignored for cluster-scoped kinds).
    pub fn create(&self, kind: Kind, namespace: &str, object: Value) -> Result<Arc<Value>, ApiError> {
        self.lock().create(kind, namespace, object)
    }

    /// Reads one object.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        let inner = self.lock();
        inner
            .table(kind)
            .and_then(|t| t.get(&ObjectKey::new(scope(kind, namespace), name)))
            .map(|e| e.object.clone())
            .ok_or_else(|| ApiError::NotFound { kind, name: name.to_string() })
    }

    /// Lists objects of `kind` in `namespace` (all when `None`) that pass `filter`, at most
    /// `limit` of them, starting after `start_after`.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        limit: Option<usize>,
        start_after: Option<&ObjectKey>,
    ) -> ListPage {
        let inner = self.lock();
        let resource_version = inner.resource_version;
        let Some(table) = inner.table(kind) else {
            return ListPage { items: Vec::new(), resource_version, next_start: None, remaining: None };
        };
        let namespace = namespace.filter(|_| kind.info().namespaced);
        let lower = match (start_after, namespace) {
            (Some(key), _) => std::ops::Bound::Excluded(key.clone()),
            (None, Some(namespace)) => std::ops::Bound::Included(ObjectKey::new(namespace, "")),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let mut matching = table
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
            .filter(|(_, entry)| filter.matches(&entry.object));
        let mut items = Vec::new();
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut last_key = None;
        for (key, entry) in matching.by_ref() {
            items.push(entry.object.clone());
            if items.len() >= limit {
                last_key = Some(key.clone());
                break;
            }
        }
        let (next_start, remaining) = match last_key {
            Some(key) => {
                let remaining = matching.count() as u64;
                if remaining == 0 { (None, None) } else { (Some(key), Some(remaining)) }
            }
            None => (None, None),
        };
        ListPage { items, resource_version, next_start, remaining }
    }

    /// Replaces an object (PUT), or its status.
    pub fn update(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        object: Value,
        target: WriteTarget,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = ObjectKey::new(scope(kind, namespace), name);
        if meta::name(&object) != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta::name(&object)
            )));
        }
        inner.update(kind, &key, object, target, true)
    }

    /// Applies a patch to an object or its status.
    pub fn patch(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        patch_type: PatchType,
        patch_body: &Value,
        target: WriteTarget,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        let key = ObjectKey::new(scope(kind, namespace), name);
        let current =
            inner.entry(kind, &key).ok_or_else(|| ApiError::NotFound { kind, name: name.to_string() })?;
        let mut patched = (*current).clone();
        // A patch without a resourceVersion applies to whatever is current; one with it is a
        // precondition, as on a real server.
        meta::metadata_mut(&mut patched).remove("resourceVersion");
        patch::apply(patch_type, &mut patched, patch_body).map_err(|error| match error {
            patch::PatchError::Malformed(message) => ApiError::BadRequest(message),
            other => ApiError::Invalid {
                kind,
                name: name.to_string(),
                causes: vec![FieldError::invalid("patch", Value::Null, other.to_string())],
            },
        })?;
        if meta::name(&patched) != name {
            return Err(ApiError::BadRequest("metadata.name may not be changed by a patch".into()));
        }
        inner.update(kind, &key, patched, target, true)
    }

    /// Deletes an object, honouring finalizers, preconditions and the propagation policy.
    pub fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let mut inner = self.lock();
        inner.delete(kind, &ObjectKey::new(scope(kind, namespace), name), options)
    }

    /// Deletes every object of `kind` in `namespace` (all when `None`) that passes `filter`.
    pub fn delete_collection(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        options: &DeleteOptions,
    ) -> Result<Vec<Arc<Value>>, ApiError> {
        let page = self.list(kind, namespace, filter, None, None);
        let mut inner = self.lock();
        let mut deleted = Vec::new();
        for object in page.items {
            let key = ObjectKey::new(scope(kind, meta::meta_str(&object, "namespace")), meta::name(&object));
            match inner.delete(kind, &key, options) {
                Ok(object) => deleted.push(object),
                Err(ApiError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(deleted)
    }

    /// Starts a watch on `kind` in `namespace` (all when `None`).
    pub fn watch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        filter: &Filter,
        from: WatchFrom,
    ) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        let namespace = namespace.filter(|_| kind.info().namespaced);
        let receiver = inner.sender.subscribe();
        match from {
            WatchFrom::Now => {
                let initial = inner
                    .table(kind)
                    .into_iter()
                    .flat_map(|t| t.iter())
                    .filter(|(key, _)| namespace.is_none_or(|ns| key.namespace == ns))
                    .filter(|(_, entry)| filter.matches(&entry.object))
                    .map(|(_, entry)| entry.object.clone())
                    .collect();
                Ok(Subscription { initial, replay: Vec::new(), receiver, floor: inner.resource_version })
            }
            WatchFrom::After(version) => {
                if version < inner.min_resumable {
                    return Err(ApiError::Gone(format!(
                        "too old resource version: {version} ({})",
                        inner.min_resumable
                    )));
                }
                let replay = inner
                    .history
                    .iter()
                    .filter(|e| e.resource_version > version && e.kind == kind)
                    .filter(|e| namespace.is_none_or(|ns| e.namespace == ns))
                    .cloned()
                    .collect();
                Ok(Subscription {
                    initial: Vec::new(),
                    replay,
                    receiver,
                    floor: inner.resource_version.max(version),
                })
            }
        }
    }

    /// Forgets the event history and moves the counter on, so every watch resuming from a
    /// version seen so far gets 410 Gone, while a fresh list gives a version that works.
    pub fn force_gone(&self) -> u64 {
        let mut inner = self.lock();
        inner.history.clear();
        inner.resource_version += 1;
        inner.min_resumable = inner.resource_version;
        inner.resource_version
    }

    /// Changes an object on behalf of a controller. `change` returns whether it changed
    /// anything. Does nothing when the object is gone, has another UID, or (with
    /// `respect_client_status`) a client owns its status. Returns the new object when written.
    pub fn update_by_controller(
        &self,
        kind: Kind,
        key: &ObjectKey,
        expected_uid: &str,
        respect_client_status: bool,
        change: impl FnOnce(&mut Value) -> bool,
    ) -> Option<Arc<Value>> {
        let mut inner = self.lock();
        let entry = inner.tables.get(&kind)?.get(key)?;
        if meta::uid(&entry.object) != expected_uid || (respect_client_status && entry.status_owned_by_client)
        {
            return None;
        }
        let mut object = (*entry.object).clone();
        if !change(&mut object) {
            return None;
        }
        inner.write(kind, key, object, false).ok()
    }

    /// The pod IP allocated to a pod and its node's InternalIP.
    pub fn pod_addresses(&self, pod_uid: &str, node_name: &str) -> Option<(Ipv4Addr, String)> {
        let inner = self.lock();
        let pod_ip = *inner.pod_ips.get(pod_uid)?;
        let node = inner.table(Kind::Node)?.get(&ObjectKey::new("", node_name))?;
        let host_ip = node
            .object
            .pointer("/status/addresses")
            .and_then(Value::as_array)?
            .iter()
            .find(|a| a["type"] == "InternalIP")?
            .get("address")?
            .as_str()?
            .to_string();
        Some((pod_ip, host_ip))
    }

    /// The objects owned by the object with `owner_uid`.
    pub fn dependents_of(&self, owner_uid: &str) -> Vec<(Kind, Arc<Value>)> {
        let inner = self.lock();
        inner
            .dependents
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|(kind, key)| inner.entry(*kind, key).map(|object| (*kind, object)))
            .collect()
    }

    /// Garbage-collects the dependents of a deleted owner: a dependent whose owners are all
    /// gone is deleted (in the background, so its own dependents follow); one with a living
    /// owner just loses the dangling reference.
    pub fn collect_garbage(&self, owner_uid: &str) {
        let mut inner = self.lock();
        let Some(dependents) = inner.dependents.get(owner_uid).cloned() else { return };
        for (kind, key) in dependents {
            inner.collect_dependent(kind, &key);
        }
    }

    /// Garbage-collects every object none of whose owners exist, for when events were missed.
    pub fn collect_all_garbage(&self) {
        let mut inner = self.lock();
        let candidates: Vec<(Kind, ObjectKey)> = inner
            .tables
            .iter()
            .flat_map(|(kind, table)| {
                table
                    .iter()
                    .filter(|(_, e)| !meta::owner_uids(&e.object).is_empty())
                    .map(|(key, _)| (*kind, key.clone()))
            })
            .collect();
        for (kind, key) in candidates {
            inner.collect_dependent(kind, &key);
        }
    }

    /// Every pod the simulated kubelet has yet to start: (key, uid, node).
    pub fn pending_pods(&self) -> Vec<(ObjectKey, String, String)> {
        let inner = self.lock();
        inner
            .table(Kind::Pod)
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(|(_, e)| {
                !e.status_owned_by_client && e.object.pointer("/status/phase") == Some(&json!("Pending"))
            })
            .filter_map(|(key, e)| {
                let node = e.object.pointer("/spec/nodeName")?.as_str()?.to_string();
                Some((key.clone(), meta::uid(&e.object).to_string(), node))
            })
            .collect()
    }
}

/// The namespace part of a key: empty for cluster-scoped kinds.
fn scope(kind: Kind, namespace: &str) -> &str {
    if kind.info().namespaced { namespace } else { "" }
}

fn node_object(index: usize) -> Value {
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
            "addresses": [
                {"type": "InternalIP", "address": format!("10.0.0.{index}")},
                {"type": "ExternalIP", "address": format!("203.0.113.{index}")},
                {"type": "Hostname", "address": name},
            ],
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
    fn table(&self, kind: Kind) -> Option<&BTreeMap<ObjectKey, Entry>> {
        self.tables.get(&kind)
    }

    fn entry(&self, kind: Kind, key: &ObjectKey) -> Option<Arc<Value>> {
        self.tables.get(&kind)?.get(key).map(|e| e.object.clone())
    }

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

    fn emit(
        &mut self,
        kind: Kind,
        namespace: &str,
        event_type: EventType,
        object: Arc<Value>,
        previous: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            resource_version: self.resource_version,
            kind,
            namespace: namespace.to_string(),
            event_type,
            object,
            previous,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.min_resumable = self.min_resumable.max(dropped.resource_version);
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(event);
    }

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

    fn create(&mut self, kind: Kind, namespace: &str, mut object: Value) -> Result<Arc<Value>, ApiError> {
        if !object.is_object() {
            return Err(ApiError::BadRequest("the body of the request was not a JSON object".into()));
        }
        let info = kind.info();
        check_type(kind, &object)?;
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(info.kind);
        let namespace = scope(kind, namespace).to_string();
        {
            let body_namespace = meta::meta_str(&object, "namespace");
            if info.namespaced && !body_namespace.is_empty() && body_namespace != namespace {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                        .into(),
                ));
            }
        }
        if info.namespaced && self.entry(Kind::Namespace, &ObjectKey::new("", &namespace)).is_none() {
            return Err(ApiError::NotFound { kind: Kind::Namespace, name: namespace });
        }
        let generate_name = meta::meta_str(&object, "generateName").to_string();
        if meta::name(&object).is_empty() && !generate_name.is_empty() {
            let table = self.tables.entry(kind).or_default();
            let name = loop {
                let candidate = format!("{generate_name}{}", meta::random_suffix(5));
                if !table.contains_key(&ObjectKey::new(&namespace, &candidate)) {
                    break candidate;
                }
            };
            meta::metadata_mut(&mut object).insert("name".into(), json!(name));
        }
        let name = meta::name(&object).to_string();
        let errors = validation::validate(kind, &object);
        if !errors.is_empty() {
            return Err(ApiError::Invalid { kind, name, causes: errors });
        }
        let key = ObjectKey::new(&namespace, &name);
        if self.tables.get(&kind).is_some_and(|t| t.contains_key(&key)) {
            return Err(ApiError::AlreadyExists { kind, name });
        }
        {
            let metadata = meta::metadata_mut(&mut object);
            if info.namespaced {
                metadata.insert("namespace".into(), json!(namespace));
            } else {
                metadata.remove("namespace");
            }
            metadata.insert("uid".into(), json!(meta::new_uid()));
            metadata.insert("creationTimestamp".into(), json!(meta::now()));
            for field in ["deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
                metadata.remove(field);
            }
            if matches!(kind, Kind::Pod | Kind::Service | Kind::Deployment) {
                metadata.insert("generation".into(), json!(1));
            }
        }
        if info.has_status
            && !matches!(kind, Kind::Node)
            && let Some(map) = object.as_object_mut()
        {
            map.remove("status");
        }
        admission::admit_create(kind, &mut object, &mut self.admission_context())?;
        self.resource_version += 1;
        meta::metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        let object = Arc::new(object);
        self.index(kind, &key, &object, true);
        self.tables
            .entry(kind)
            .or_default()
            .insert(key, Entry { object: object.clone(), status_owned_by_client: false });
        self.emit(kind, &namespace, EventType::Added, object.clone(), None);
        Ok(object)
    }

    /// An API update: checks the version, keeps what the client may not change, then writes.
    fn update(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        mut object: Value,
        target: WriteTarget,
        from_client: bool,
    ) -> Result<Arc<Value>, ApiError> {
        if !object.is_object() {
            return Err(ApiError::BadRequest("the body of the request was not a JSON object".into()));
        }
        check_type(kind, &object)?;
        let old = self.entry(kind, key).ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        let requested_version = meta::meta_str(&object, "resourceVersion").to_string();
        if !requested_version.is_empty() && requested_version != meta::meta_str(&old, "resourceVersion") {
            return Err(ApiError::Conflict {
                kind,
                name: key.name.clone(),
                detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
            });
        }
        let info = kind.info();
        let mut candidate = match target {
            WriteTarget::Status => {
                if !info.has_status {
                    return Err(ApiError::NoRoute);
                }
                let mut merged = (*old).clone();
                merged["status"] = object.get("status").cloned().unwrap_or(json!({}));
                merged
            }
            WriteTarget::Main => {
                if info.has_status && kind != Kind::Node {
                    match old.get("status") {
                        Some(status) => object["status"] = status.clone(),
                        None => {
                            if let Some(map) = object.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                {
                    let old_metadata = old.get("metadata").cloned().unwrap_or(json!({}));
                    let metadata = meta::metadata_mut(&mut object);
                    for field in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "deletionGracePeriodSeconds",
                        "generation",
                        "namespace",
                        "name",
                    ] {
                        match old_metadata.get(field) {
                            Some(value) => metadata.insert(field.to_string(), value.clone()),
                            None => metadata.remove(field),
                        };
                    }
                    metadata.remove("managedFields");
                }
                let errors = validation::validate(kind, &object);
                if !errors.is_empty() {
                    return Err(ApiError::Invalid { kind, name: key.name.clone(), causes: errors });
                }
                if let Some(error) = immutable_field_error(kind, &old, &object) {
                    return Err(ApiError::Invalid { kind, name: key.name.clone(), causes: vec![error] });
                }
                admission::admit_update(kind, &old, &mut object, &mut self.admission_context())?;
                if object.get("spec") != old.get("spec")
                    && let Some(generation) = old.pointer("/metadata/generation").and_then(Value::as_i64)
                {
                    meta::metadata_mut(&mut object).insert("generation".into(), json!(generation + 1));
                }
                object
            }
        };
        candidate["apiVersion"] = json!(kind.api_version());
        candidate["kind"] = json!(info.kind);
        let written = self.write(kind, key, candidate, from_client && target == WriteTarget::Status)?;
        Ok(written)
    }

    /// Stores a new version of an existing object, unless nothing changed, and finishes a
    /// deletion whose finalizers are now gone.
    fn write(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        mut object: Value,
        client_wrote_status: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let old = self.entry(kind, key).ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        meta::metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(meta::meta_str(&old, "resourceVersion")));
        if object == *old {
            if client_wrote_status
                && let Some(entry) = self.tables.get_mut(&kind).and_then(|t| t.get_mut(key))
            {
                entry.status_owned_by_client = true;
            }
            return Ok(old);
        }
        self.resource_version += 1;
        meta::metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        let object = Arc::new(object);
        self.index(kind, key, &old, false);
        self.index(kind, key, &object, true);
        if let Some(entry) = self.tables.get_mut(&kind).and_then(|t| t.get_mut(key)) {
            entry.object = object.clone();
            entry.status_owned_by_client |= client_wrote_status;
        }
        self.emit(kind, &key.namespace, EventType::Modified, object.clone(), Some(old));
        let finalizers_done =
            object.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
        if object.pointer("/metadata/deletionTimestamp").is_some() && finalizers_done {
            return self.remove(kind, key);
        }
        Ok(object)
    }

    fn delete(
        &mut self,
        kind: Kind,
        key: &ObjectKey,
        options: &DeleteOptions,
    ) -> Result<Arc<Value>, ApiError> {
        let current =
            self.entry(kind, key).ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        if let Some(uid) = &options.uid
            && uid != meta::uid(&current)
        {
            return Err(ApiError::Conflict {
                kind,
                name: key.name.clone(),
                detail: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(&current)
                ),
            });
        }
        if let Some(version) = &options.resource_version
            && version != meta::meta_str(&current, "resourceVersion")
        {
            return Err(ApiError::Conflict {
                kind,
                name: key.name.clone(),
                detail: format!(
                    "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                    meta::meta_str(&current, "resourceVersion")
                ),
            });
        }
        if kind == Kind::Namespace && matches!(key.name.as_str(), "default" | "kube-system" | "kube-public") {
            return Err(ApiError::Forbidden {
                kind: Some(kind),
                name: key.name.clone(),
                message: format!(
                    "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                    key.name
                ),
            });
        }
        let uid = meta::uid(&current).to_string();
        match options.propagation {
            Propagation::Orphan => {
                for (dependent_kind, dependent_key) in self.dependents.get(&uid).cloned().unwrap_or_default()
                {
                    if let Some(object) = self.entry(dependent_kind, &dependent_key) {
                        let mut object = (*object).clone();
                        remove_owner_references(&mut object, |owner| owner == uid);
                        let _ = self.write(dependent_kind, &dependent_key, object, false);
                    }
                }
            }
            Propagation::Foreground => {
                for (dependent_kind, dependent_key) in self.dependents.get(&uid).cloned().unwrap_or_default()
                {
                    let _ = self.delete(dependent_kind, &dependent_key, options);
                }
            }
            Propagation::Background => {}
        }
        if kind == Kind::Namespace {
            for contained_kind in Kind::ALL.into_iter().filter(|k| k.info().namespaced) {
                let keys: Vec<ObjectKey> = self
                    .tables
                    .get(&contained_kind)
                    .map(|t| t.keys().filter(|k| k.namespace == key.name).cloned().collect())
                    .unwrap_or_default();
                for contained in keys {
                    let _ = self.remove(contained_kind, &contained);
                }
            }
        }
        let has_finalizers =
            current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        if has_finalizers && kind != Kind::Namespace {
            if current.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(current);
            }
            let mut marked = (*current).clone();
            let metadata = meta::metadata_mut(&mut marked);
            metadata.insert("deletionTimestamp".into(), json!(meta::now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            return self.write(kind, key, marked, false);
        }
        self.remove(kind, key)
    }

    /// Removes an object at once, releasing its addresses and emitting DELETED.
    fn remove(&mut self, kind: Kind, key: &ObjectKey) -> Result<Arc<Value>, ApiError> {
        let entry = self
            .tables
            .get_mut(&kind)
            .and_then(|t| t.remove(key))
            .ok_or_else(|| ApiError::NotFound { kind, name: key.name.clone() })?;
        let old = entry.object;
        self.index(kind, key, &old, false);
        admission::release(kind, &old, &mut self.admission_context());
        self.resource_version += 1;
        let mut last = (*old).clone();
        let metadata = meta::metadata_mut(&mut last);
        metadata.insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        if kind == Kind::Pod && !metadata.contains_key("deletionTimestamp") {
            metadata.insert("deletionTimestamp".into(), json!(meta::now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        let last = Arc::new(last);
        self.emit(kind, &key.namespace, EventType::Deleted, last.clone(), None);
        Ok(last)
    }

    fn collect_dependent(&mut self, kind: Kind, key: &ObjectKey) {
        let Some(object) = self.entry(kind, key) else { return };
        let owners = meta::owner_uids(&object);
        let living: Vec<&String> = owners.iter().filter(|uid| self.by_uid.contains_key(*uid)).collect();
        if living.is_empty() {
            let _ = self.delete(kind, key, &DeleteOptions::default());
        } else if living.len() < owners.len() {
            let living: Vec<String> = living.into_iter().cloned().collect();
            let mut object = (*object).clone();
            remove_owner_references(&mut object, |owner| !living.iter().any(|l| l == owner));
            let _ = self.write(kind, key, object, false);
        }
    }
}

fn remove_owner_references(object: &mut Value, remove: impl Fn(&str) -> bool) {
    if let Some(references) = object.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
        references.retain(|r| !remove(r.get("uid").and_then(Value::as_str).unwrap_or_default()));
        if references.is_empty() {
            meta::metadata_mut(object).remove("ownerReferences");
        }
    }
}

/// The API server's immutability rules for the fields we model: a pod's spec may change only
/// in its images and a few scheduling fields; a Deployment's selector never.
fn immutable_field_error(kind: Kind, old: &Value, new: &Value) -> Option<FieldError> {
    match kind {
        Kind::Pod => {
            let comparable = |object: &Value| {
                let mut spec = object.get("spec").cloned().unwrap_or(json!({}));
                for field in ["containers", "initContainers"] {
                    for container in spec.get_mut(field).and_then(Value::as_array_mut).into_iter().flatten() {
                        if let Some(container) = container.as_object_mut() {
                            container.remove("image");
                        }
                    }
                }
                if let Some(spec) = spec.as_object_mut() {
                    // Defaults and the binding are the server's to set; mutable fields are ignored.
                    for field in
                        ["activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName"]
                    {
                        spec.remove(field);
                    }
                }
                let mut defaulted = json!({"spec": spec});
                crate::admission::default_pod_spec(defaulted.get_mut("spec"));
                defaulted
            };
            (comparable(old) != comparable(new)).then(|| {
                FieldError::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                )
            })
        }
        Kind::Deployment => {
            let selector = |object: &Value| object.pointer("/spec/selector").cloned();
            (selector(old) != selector(new)).then(|| {
                FieldError::invalid(
                    "spec.selector",
                    selector(new).unwrap_or(Value::Null),
                    "field is immutable",
                )
            })
        }
        _ => None,
    }
}

fn check_type(kind: Kind, object: &Value) -> Result<(), ApiError> {
    let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    if !api_version.is_empty() && api_version != kind.api_version() {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    if !kind_name.is_empty() && kind_name != kind.info().kind {
        return Err(ApiError::BadRequest(format!(
            "the kind in the data ({kind_name}) does not match the expected kind ({})",
            kind.info().kind
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<Store> {
        Store::new(&StoreSettings { nodes: 2, history_limit: 5, watch_buffer: 64 })
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}})
    }

    #[test]
    fn create_assigns_metadata_and_rejects_duplicates() {
        let store = store();
        let created = store.create(Kind::Pod, "default", pod("a")).unwrap();
        assert_eq!(created["metadata"]["namespace"], "default");
        assert!(!meta::uid(&created).is_empty());
        assert_eq!(meta::resource_version(&created), store.resource_version());
        assert!(matches!(store.create(Kind::Pod, "default", pod("a")), Err(ApiError::AlreadyExists { .. })));
        assert!(matches!(
            store.create(Kind::Pod, "nowhere", pod("a")),
            Err(ApiError::NotFound { kind: Kind::Namespace, .. })
        ));
        let generated = store
            .create(Kind::Pod, "default", json!({"metadata": {"generateName": "web-"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
            .unwrap();
        assert!(meta::name(&generated).starts_with("web-") && meta::name(&generated).len() == 9);
    }

    #[test]
    fn stale_updates_conflict_and_no_op_updates_keep_the_version() {
        let store = store();
        let created = store.create(Kind::Pod, "default", pod("a")).unwrap();
        let mut changed = (*created).clone();
        changed["metadata"]["labels"]["app"] = json!("db");
        let updated = store.update(Kind::Pod, "default", "a", changed.clone(), WriteTarget::Main).unwrap();
        assert!(meta::resource_version(&updated) > meta::resource_version(&created));
        let stale = store.update(Kind::Pod, "default", "a", changed, WriteTarget::Main);
        assert!(matches!(stale, Err(ApiError::Conflict { .. })));
        let same = store.update(Kind::Pod, "default", "a", (*updated).clone(), WriteTarget::Main).unwrap();
        assert_eq!(meta::resource_version(&same), meta::resource_version(&updated));
    }

    #[test]
    fn status_writes_only_touch_status() {
        let store = store();
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        let patched = store
            .patch(
                Kind::Pod,
                "default",
                "a",
                PatchType::Merge,
                &json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}}),
                WriteTarget::Status,
            )
            .unwrap();
        assert_eq!(patched["status"]["phase"], "Failed");
        assert!(patched["metadata"]["labels"].get("x").is_none());
        let main = store
            .patch(
                Kind::Pod,
                "default",
                "a",
                PatchType::Merge,
                &json!({"status": {"phase": "Running"}}),
                WriteTarget::Main,
            )
            .unwrap();
        assert_eq!(main["status"]["phase"], "Failed");
        assert!(store.pending_pods().is_empty(), "a client-owned status is not the kubelet's to start");
    }

    #[test]
    fn list_pages_and_filters() {
        let store = store();
        for index in 0..5 {
            store.create(Kind::Pod, "default", pod(&format!("p{index}"))).unwrap();
        }
        let everything = Filter::default();
        let first = store.list(Kind::Pod, Some("default"), &everything, Some(2), None);
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, Some(3));
        let second = store.list(Kind::Pod, Some("default"), &everything, Some(10), first.next_start.as_ref());
        assert_eq!(second.items.len(), 3);
        assert!(second.next_start.is_none());
        let none =
            Filter { labels: crate::selector::LabelSelector::parse("app=db").unwrap(), ..Filter::default() };
        assert!(store.list(Kind::Pod, None, &none, None, None).items.is_empty());
    }

    #[test]
    fn watches_resume_from_history_or_report_gone() {
        let store = store();
        let start = store.resource_version();
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        let subscription =
            store.watch(Kind::Pod, Some("default"), &Filter::default(), WatchFrom::After(start)).unwrap();
        assert_eq!(subscription.replay.len(), 1);
        for index in 0..10 {
            store
                .create(Kind::Secret, "default", json!({"metadata": {"name": format!("s{index}")}}))
                .unwrap();
        }
        assert!(matches!(
            store.watch(Kind::Pod, None, &Filter::default(), WatchFrom::After(start)),
            Err(ApiError::Gone(_))
        ));
        let now = store.force_gone();
        assert!(matches!(
            store.watch(Kind::Pod, None, &Filter::default(), WatchFrom::After(now - 1)),
            Err(ApiError::Gone(_))
        ));
        assert!(store.watch(Kind::Pod, None, &Filter::default(), WatchFrom::After(now)).is_ok());
    }

    #[test]
    fn deletion_propagates_to_dependents() {
        let store = store();
        let owner = store.create(Kind::Pod, "default", pod("owner")).unwrap();
        let reference =
            json!([{"apiVersion": "v1", "kind": "Pod", "name": "owner", "uid": meta::uid(&owner)}]);
        let dependent = json!({"metadata": {"name": "dep", "ownerReferences": reference}, "spec": {"ports": [{"port": 80}]}});
        store.create(Kind::Service, "default", dependent.clone()).unwrap();
        store
            .delete(
                Kind::Pod,
                "default",
                "owner",
                &DeleteOptions { propagation: Propagation::Foreground, ..Default::default() },
            )
            .unwrap();
        assert!(store.get(Kind::Service, "default", "dep").is_err());

        let owner = store.create(Kind::Pod, "default", pod("owner")).unwrap();
        let mut dependent = dependent;
        dependent["metadata"]["ownerReferences"][0]["uid"] = json!(meta::uid(&owner));
        store.create(Kind::Service, "default", dependent).unwrap();
        store.delete(Kind::Pod, "default", "owner", &DeleteOptions::default()).unwrap();
        assert!(
            store.get(Kind::Service, "default", "dep").is_ok(),
            "background deletion is the collector's job"
        );
        store.collect_garbage(meta::uid(&owner));
        assert!(store.get(Kind::Service, "default", "dep").is_err());
    }

    #[test]
    fn pod_specs_are_immutable_except_images() {
        let store = store();
        store.create(Kind::Pod, "default", pod("a")).unwrap();
        let image = json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        store.patch(Kind::Pod, "default", "a", PatchType::StrategicMerge, &image, WriteTarget::Main).unwrap();
        let labels = json!({"metadata": {"labels": {"extra": "yes"}}});
        store.patch(Kind::Pod, "default", "a", PatchType::Merge, &labels, WriteTarget::Main).unwrap();
        let command = json!({"spec": {"containers": [{"name": "c", "command": ["sleep"]}]}});
        let error = store
            .patch(Kind::Pod, "default", "a", PatchType::StrategicMerge, &command, WriteTarget::Main)
            .unwrap_err();
        assert_eq!(error.to_status()["details"]["causes"][0]["field"], "spec");
        assert_eq!(error.code(), 422);
    }

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

    #[test]
    fn finalizers_delay_deletion() {
        let store = store();
        let mut object = pod("a");
        object["metadata"]["finalizers"] = json!(["example.com/hold"]);
        store.create(Kind::Pod, "default", object).unwrap();
        let marked = store.delete(Kind::Pod, "default", "a", &DeleteOptions::default()).unwrap();
        assert!(marked.pointer("/metadata/deletionTimestamp").is_some());
        assert!(store.get(Kind::Pod, "default", "a").is_ok());
        store
            .patch(
                Kind::Pod,
                "default",
                "a",
                PatchType::Merge,
                &json!({"metadata": {"finalizers": null}}),
                WriteTarget::Main,
            )
            .unwrap();
        assert!(store.get(Kind::Pod, "default", "a").is_err());
    }
}
