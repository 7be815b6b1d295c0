//! The compact entries the index keeps of Pods, Services, Nodes, StatefulSets and Jobs (only the
//! fields a process's info needs, so 150,000 processes stay small), and how a watcher's events
//! keep them current. Pods are kept by process ([`PodSets`]): a process's controller may have
//! two at a time (one being replaced), named otherwise than the process.
//! Strings many entries repeat (groups, node names) and label sets are shared through an
//! [`Interned`] pool, and an event that leaves an entry as it was touches no process.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::super::manifests::{self, GROUP_LABEL, PROCESS_LABEL};
use super::super::status::{PodState, pod_state};
use super::slim::{SlimJob, SlimNode, SlimPod, SlimService, SlimStatefulSet};
use crate::spec::{Labels, ProcessStatus};

/// What the index keeps of a Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEntry {
    /// The Pod's name: the process's for a bare Pod, `NAME-0` for a StatefulSet's, `NAME-xxxxx`
    /// for a Job's.
    pub name: Box<str>,
    /// The Pod's uid.
    pub uid: Uid,
    /// The process's group, from its label (shared by the group's entries).
    pub group: Option<Arc<str>>,
    /// The process's own labels (see [`manifests::user_labels`]), shared by every entry with the
    /// same set and by the process's info in the table.
    pub labels: Labels,
    /// When the Pod was created.
    pub created: jiff::Timestamp,
    /// The node the Pod is bound to (shared by the node's entries).
    pub node_name: Option<Arc<str>>,
    /// The process's state, derived from the Pod.
    pub state: PodState,
    /// The objects the Pod needs besides itself, read from its own spec (so without parsing the
    /// annotation, which the index does not keep): what a half-made process lacks is told from
    /// these.
    pub needs: Needs,
}

/// An object's uid as the index keeps it: the 16 bytes of the UUID the API server gives (its
/// text costs a heap block per Pod and per controller), else the text as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uid {
    /// A UUID in its canonical lowercase text, which [`fmt::Display`] gives back exactly.
    Uuid([u8; 16]),
    /// Any other text.
    Other(Box<str>),
}

impl Uid {
    /// The uid `text`, kept as 16 bytes when it is a canonical lowercase UUID.
    pub fn new(text: &str) -> Uid {
        uuid_bytes(text).map_or_else(|| Uid::Other(text.into()), Uid::Uuid)
    }

    /// Whether this is the uid `text`.
    pub fn is(&self, text: &str) -> bool {
        match self {
            Uid::Uuid(bytes) => uuid_bytes(text).as_ref() == Some(bytes),
            Uid::Other(other) => **other == *text,
        }
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uid::Uuid(bytes) => {
                for (index, byte) in bytes.iter().enumerate() {
                    if matches!(index, 4 | 6 | 8 | 10) {
                        formatter.write_str("-")?;
                    }
                    write!(formatter, "{byte:02x}")?;
                }
                Ok(())
            }
            Uid::Other(text) => formatter.write_str(text),
        }
    }
}

/// The bytes of a UUID written as `8-4-4-4-12` lowercase hex digits; `None` for any other text,
/// so that a uid kept as bytes always prints as it came.
fn uuid_bytes(text: &str) -> Option<[u8; 16]> {
    let text = text.as_bytes();
    if text.len() != 36 || [8, 13, 18, 23].iter().any(|&dash| text[dash] != b'-') {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut digits = text.iter().filter(|&&c| c != b'-');
    let mut bytes = [0u8; 16];
    for byte in &mut bytes {
        *byte = (digit(*digits.next()?)? << 4) | digit(*digits.next()?)?;
    }
    Some(bytes)
}

/// The objects a process's Pod needs besides itself, as its Pod spec says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// A Service: the container has ports.
    pub service: bool,
    /// The env Secret: an env var reads it through `secretKeyRef`.
    pub env_secret: bool,
    /// The registry Secret: it is in `imagePullSecrets`.
    pub registry_secret: bool,
}

/// A Service's load balancer, as far as the index cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Not a LoadBalancer Service.
    NotOne,
    /// A LoadBalancer Service whose load balancer has no address yet.
    Pending,
    /// The load balancer's address: its hostname, else its IP.
    At(Box<str>),
}

/// What the index keeps of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Whether it is a NodePort Service.
    pub node_port: bool,
    /// Its load balancer, for a LoadBalancer Service.
    pub load_balancer: LoadBalancer,
    /// Its cluster IP.
    pub cluster_ip: Option<Box<str>>,
    /// Its ports: the service port and, for NodePort, the node port.
    pub ports: Box<[(u16, Option<u16>)]>,
    /// The uid of the Pod that owns it, so a Service left from an earlier Pod of the same name
    /// does not count as this Pod's.
    pub owner_uid: Option<Uid>,
}

/// What the index keeps of a Node: its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// The first ExternalIP.
    pub external_ip: Option<String>,
    /// The first InternalIP.
    pub internal_ip: Option<String>,
}

/// What the index keeps of a process's StatefulSet or Job.
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerEntry {
    /// The object's uid: what the process's Service and Secrets are owned by.
    pub uid: Uid,
    /// The process's group, from its label.
    pub group: Option<Arc<str>>,
    /// The process's own labels.
    pub labels: Labels,
    /// When the object was created: when the process was.
    pub created: jiff::Timestamp,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// How a Job ended (`Complete`: EXITED; `Failed`: FAILED with its reason, such as
    /// `DeadlineExceeded` or `BackoffLimitExceeded`), with its message. Boxed: few processes
    /// have ended, and every process has an entry.
    pub ended: Option<Box<Ended>>,
    /// How many Pods a Job replaced (deleted, evicted or lost with their node).
    pub replaced: u32,
    /// A StatefulSet's `max_run_seconds` (its label), which the server enforces (at most
    /// `i32::MAX`, as a spec allows).
    pub max_run_seconds: Option<u32>,
}

/// How a process's controller says it ended: its status, reason and message.
pub type Ended = (ProcessStatus, Box<str>, Option<Box<str>>);

/// The Pods of each process, by the process label: usually one, two while one is replaced.
#[derive(Default)]
pub(super) struct PodSets {
    /// The Pods as the watcher last reported them, each process's sorted by Pod name.
    pub(super) live: HashMap<Box<str>, Vec<PodEntry>>,
    /// Pods seen during a relist, which replaces `live` when it completes.
    relisting: Option<HashMap<Box<str>, Vec<PodEntry>>>,
}

/// Puts a Pod into its process's set, replacing the one of the same name; says whether it
/// changed anything.
fn put(set: &mut Vec<PodEntry>, entry: PodEntry) -> bool {
    match set.binary_search_by(|pod| pod.name.cmp(&entry.name)) {
        Ok(at) if set[at] == entry => false,
        Ok(at) => {
            set[at] = entry;
            true
        }
        Err(at) => {
            set.insert(at, entry);
            true
        }
    }
}

/// The process a Pod belongs to: its process label (every Pod Hydroplane's objects make has it),
/// else its name.
fn process_of(pod: &SlimPod) -> String {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(PROCESS_LABEL))
        .or(pod.metadata.name.as_ref())
        .cloned()
        .unwrap_or_default()
}

impl PodSets {
    /// Applies one watcher event; says which processes it touched.
    pub(super) fn apply(&mut self, event: Event<SlimPod>, interned: &mut Interned) -> Applied {
        let mut relisted = false;
        let touched = match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(pod) => {
                let process = process_of(&pod);
                let entry = pod_entry(pod, &process, interned);
                put(
                    self.relisting.get_or_insert_with(HashMap::new).entry(process.into()).or_default(),
                    entry,
                );
                Vec::new()
            }
            Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                let touched = relist_changes(&self.live, &fresh);
                self.live = fresh;
                relisted = true;
                touched
            }
            Event::Apply(pod) => {
                let process = process_of(&pod);
                let entry = pod_entry(pod, &process, interned);
                let changed = match self.live.get_mut(process.as_str()) {
                    Some(set) => put(set, entry),
                    None => put(self.live.entry(process.as_str().into()).or_default(), entry),
                };
                if changed { vec![process] } else { Vec::new() }
            }
            Event::Delete(pod) => {
                let process = process_of(&pod);
                let name = pod.metadata.name.unwrap_or_default();
                match self.live.get_mut(process.as_str()) {
                    Some(set) => {
                        let before = set.len();
                        set.retain(|entry| *entry.name != *name);
                        let changed = set.len() != before;
                        if set.is_empty() {
                            self.live.remove(process.as_str());
                        }
                        if changed { vec![process] } else { Vec::new() }
                    }
                    None => Vec::new(),
                }
            }
        };
        Applied { touched, relisted }
    }
}

/// The Pod that stands for a process among its Pods: one not being deleted and not ended (the
/// replacement) first, then one not being deleted, then any; the newest of those.
pub fn current_pod(pods: &[PodEntry]) -> Option<&PodEntry> {
    let rank = |pod: &PodEntry| match pod.state.status {
        ProcessStatus::Stopping => 0,
        ProcessStatus::Exited | ProcessStatus::Failed => 1,
        _ => 2,
    };
    pods.iter().max_by(|a, b| rank(a).cmp(&rank(b)).then(a.created.cmp(&b.created)).then(a.name.cmp(&b.name)))
}

/// One pool of shared values: an entry takes the pool's copy of a value instead of its own.
/// Values no entry holds any more are dropped now and then ([`Interner::prune`]).
pub(super) struct Interner<T: ?Sized> {
    values: HashSet<Arc<T>>,
    /// The pool's size after its last pruning: it is pruned again once it has doubled.
    pruned_size: usize,
}

impl<T: ?Sized> Default for Interner<T> {
    fn default() -> Self {
        Interner { values: HashSet::new(), pruned_size: 0 }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The pool's copy of `value`, if it has one.
    fn get(&self, value: &T) -> Option<Arc<T>> {
        self.values.get(value).cloned()
    }

    /// Adds a value the pool does not have yet, and returns it.
    fn insert(&mut self, value: Arc<T>) -> Arc<T> {
        if self.values.len() >= 2 * self.pruned_size + 64 {
            self.prune();
        }
        self.values.insert(Arc::clone(&value));
        value
    }

    /// Drops the values only the pool holds.
    fn prune(&mut self) {
        self.values.retain(|value| Arc::strong_count(value) > 1);
        self.pruned_size = self.values.len();
    }
}

/// The shared strings and label sets of the index's entries.
#[derive(Default)]
pub(super) struct Interned {
    /// Groups and node names.
    strings: Interner<str>,
    /// The processes' own label sets (most processes have none, or one of a few).
    labels: Interner<BTreeMap<String, String>>,
}

impl Interned {
    fn string(&mut self, value: &str) -> Arc<str> {
        self.strings.get(value).unwrap_or_else(|| self.strings.insert(Arc::from(value)))
    }

    fn labels(&mut self, labels: BTreeMap<String, String>) -> Labels {
        self.labels.get(&labels).unwrap_or_else(|| self.labels.insert(Arc::new(labels)))
    }
}

/// The entries of one kind, by name, kept current from its watcher's events.
pub(super) struct Entries<E> {
    /// The objects as the watcher last reported them.
    pub(super) live: HashMap<Box<str>, E>,
    /// Objects seen during a relist, which replaces `live` when it completes.
    relisting: Option<HashMap<Box<str>, E>>,
}

impl<E> Default for Entries<E> {
    fn default() -> Self {
        Entries { live: HashMap::new(), relisting: None }
    }
}

/// What one watcher event changed.
pub(super) struct Applied {
    /// The names whose entries changed (appeared, went or differ): an event that leaves an
    /// entry as it was touches nothing.
    pub(super) touched: Vec<String>,
    /// Whether a relist completed.
    pub(super) relisted: bool,
}

impl<E: PartialEq> Entries<E> {
    /// Applies one watcher event; says which names it touched. `entry` makes the name and entry
    /// of an object, taking what it keeps out of it.
    pub(super) fn apply<K: ResourceExt>(
        &mut self,
        event: Event<K>,
        mut entry: impl FnMut(K) -> (String, E),
    ) -> Applied {
        let mut relisted = false;
        let touched = match event {
            Event::Init => {
                self.relisting = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(object) => {
                let (name, value) = entry(object);
                self.relisting.get_or_insert_with(HashMap::new).insert(name.into_boxed_str(), value);
                Vec::new()
            }
            Event::InitDone => {
                let fresh = self.relisting.take().unwrap_or_default();
                let touched = relist_changes(&self.live, &fresh);
                self.live = fresh;
                relisted = true;
                touched
            }
            Event::Apply(object) => {
                let (name, value) = entry(object);
                match self.live.entry(name.into_boxed_str()) {
                    Entry::Occupied(mut occupied) if *occupied.get() != value => {
                        occupied.insert(value);
                        vec![occupied.key().to_string()]
                    }
                    Entry::Occupied(_) => Vec::new(),
                    Entry::Vacant(vacant) => {
                        let name = vacant.key().to_string();
                        vacant.insert(value);
                        vec![name]
                    }
                }
            }
            Event::Delete(object) => {
                let name = object.name_any();
                match self.live.remove(name.as_str()) {
                    Some(_) => vec![name],
                    None => Vec::new(),
                }
            }
        };
        Applied { touched, relisted }
    }
}

pub(super) fn pod_entry(pod: SlimPod, process: &str, interned: &mut Interned) -> PodEntry {
    let state = pod_state(&pod);
    let needs = needs(&pod, process);
    let SlimPod { metadata, spec, .. } = pod;
    let labels = metadata.labels.unwrap_or_default();
    PodEntry {
        name: metadata.name.unwrap_or_default().into_boxed_str(),
        uid: Uid::new(&metadata.uid.unwrap_or_default()),
        group: labels.get(GROUP_LABEL).map(|group| interned.string(group)),
        labels: interned.labels(manifests::user_labels(&labels)),
        created: metadata.creation_timestamp.map_or(jiff::Timestamp::UNIX_EPOCH, |time| time.0),
        node_name: spec.and_then(|spec| spec.node_name).map(|node| interned.string(&node)),
        state,
        needs,
    }
}

/// What the Pod of the process `name` needs besides itself, from its spec.
fn needs(pod: &SlimPod, name: &str) -> Needs {
    let Some(spec) = pod.spec.as_ref() else { return Needs::default() };
    let container = spec.containers.as_ref().and_then(|containers| containers.first());
    let env_secret = manifests::env_secret_name(name);
    let registry_secret = manifests::registry_secret_name(name);
    Needs {
        service: container.and_then(|c| c.ports.as_ref()).is_some_and(|ports| !ports.is_empty()),
        env_secret: container.and_then(|c| c.env.as_ref()).is_some_and(|env| {
            env.iter().any(|variable| {
                variable
                    .value_from
                    .as_ref()
                    .and_then(|from| from.secret_key_ref.as_ref())
                    .is_some_and(|selector| selector.name == env_secret)
            })
        }),
        registry_secret: spec
            .image_pull_secrets
            .as_ref()
            .is_some_and(|secrets| secrets.iter().any(|secret| secret.name == registry_secret)),
    }
}

pub(super) fn service_entry(service: SlimService) -> (String, ServiceEntry) {
    let SlimService { metadata, spec, status } = service;
    let name = metadata.name.unwrap_or_default();
    let spec = spec.unwrap_or_default();
    let load_balancer = if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = status.and_then(|status| status.load_balancer).and_then(|balancer| balancer.ingress);
        let address = ingress.unwrap_or_default().into_iter().find_map(|ingress| {
            ingress.hostname.filter(|host| !host.is_empty()).or(ingress.ip.filter(|ip| !ip.is_empty()))
        });
        address.map_or(LoadBalancer::Pending, |address| LoadBalancer::At(address.into_boxed_str()))
    } else {
        LoadBalancer::NotOne
    };
    let entry = ServiceEntry {
        node_port: spec.type_.as_deref() == Some("NodePort"),
        load_balancer,
        cluster_ip: spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None").map(String::into_boxed_str),
        ports: spec
            .ports
            .unwrap_or_default()
            .iter()
            .filter_map(|port| {
                let service_port = u16::try_from(port.port).ok()?;
                Some((service_port, port.node_port.and_then(|node_port| u16::try_from(node_port).ok())))
            })
            .collect(),
        owner_uid: metadata
            .owner_references
            .unwrap_or_default()
            .into_iter()
            .find(|owner| owner.name == name && manifests::Controller::of_kind(&owner.kind).is_some())
            .map(|owner| Uid::new(&owner.uid)),
    };
    (name, entry)
}

pub(super) fn node_entry(node: SlimNode) -> (String, NodeEntry) {
    let addresses = node.status.and_then(|status| status.addresses).unwrap_or_default();
    let first = |kind: &str| {
        addresses.iter().find(|address| address.type_ == kind).map(|address| address.address.clone())
    };
    let entry = NodeEntry { external_ip: first("ExternalIP"), internal_ip: first("InternalIP") };
    (node.metadata.name.unwrap_or_default(), entry)
}

/// The entry of a StatefulSet or Job's metadata, by its name (the process's).
fn controller_entry(
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    interned: &mut Interned,
) -> (String, ControllerEntry) {
    let labels = metadata.labels.unwrap_or_default();
    let entry = ControllerEntry {
        uid: Uid::new(&metadata.uid.unwrap_or_default()),
        group: labels.get(GROUP_LABEL).map(|group| interned.string(group)),
        labels: interned.labels(manifests::user_labels(&labels)),
        created: metadata.creation_timestamp.map_or(jiff::Timestamp::UNIX_EPOCH, |time| time.0),
        deleting: metadata.deletion_timestamp.is_some(),
        ended: None,
        replaced: 0,
        max_run_seconds: None,
    };
    (metadata.name.unwrap_or_default(), entry)
}

pub(super) fn stateful_set_entry(set: SlimStatefulSet, interned: &mut Interned) -> (String, ControllerEntry) {
    let labels = set.metadata.labels.as_ref();
    let max_run_seconds = labels
        .and_then(|labels| labels.get(manifests::MAX_RUN_SECONDS_LABEL))
        .and_then(|seconds| seconds.parse().ok());
    let ended = labels.and_then(|labels| labels.get(manifests::ENDED_LABEL)).map(|reason| {
        let message = match max_run_seconds {
            Some(seconds) => format!(
                "ran longer than its max_run_seconds ({seconds} s): Hydroplane scaled its StatefulSet to zero"
            ),
            None => "ended by Hydroplane: its StatefulSet is scaled to zero".to_owned(),
        };
        Box::new((ProcessStatus::Failed, reason.clone().into_boxed_str(), Some(message.into_boxed_str())))
    });
    let (name, mut entry) = controller_entry(set.metadata, interned);
    entry.max_run_seconds = max_run_seconds;
    entry.ended = ended;
    (name, entry)
}

pub(super) fn job_entry(job: SlimJob, interned: &mut Interned) -> (String, ControllerEntry) {
    let SlimJob { metadata, status } = job;
    let (name, mut entry) = controller_entry(metadata, interned);
    let status = status.unwrap_or_default();
    entry.replaced = u32::try_from(status.failed).unwrap_or(0);
    let conditions = status.conditions.unwrap_or_default();
    let holds = |kind: &str| conditions.iter().find(|c| c.type_ == kind && c.status == "True");
    entry.ended = if let Some(failed) = holds("Failed") {
        let reason = failed.reason.clone().unwrap_or_else(|| "Failed".to_owned());
        Some(Box::new((
            ProcessStatus::Failed,
            reason.into_boxed_str(),
            failed.message.clone().map(String::into_boxed_str),
        )))
    } else if holds("Complete").is_some() {
        // As its Pod says (the condition's reason, `CompletionsReached`, is the Job's).
        Some(Box::new((ProcessStatus::Exited, "Completed".into(), None)))
    } else {
        None
    };
    (name, entry)
}

/// The names a relist changed: gone from `fresh`, new in it, or with another value. Only these
/// are republished: with many processes, republishing every one after each relist would cost
/// a great deal of CPU for nothing.
fn relist_changes<V: PartialEq>(live: &HashMap<Box<str>, V>, fresh: &HashMap<Box<str>, V>) -> Vec<String> {
    let mut touched: Vec<String> =
        live.keys().filter(|name| !fresh.contains_key(*name)).map(|name| name.to_string()).collect();
    touched.extend(
        fresh.iter().filter(|(name, value)| live.get(*name) != Some(value)).map(|(name, _)| name.to_string()),
    );
    touched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entries_every_process_has_stay_small() {
        // Each process of a StatefulSet has one of each: their size is most of the index's
        // memory per process (a target of `kube_scale`).
        // 88: a uid of 16 bytes and a tag, in place of a 16-byte pointer to a 48-byte block.
        assert!(
            size_of::<ControllerEntry>() <= 88,
            "ControllerEntry is {} bytes",
            size_of::<ControllerEntry>()
        );
        assert!(size_of::<PodEntry>() <= 168, "PodEntry is {} bytes", size_of::<PodEntry>());
    }

    #[test]
    fn uids_are_kept_as_bytes_when_they_are_uuids_and_print_as_they_came() {
        let uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert!(matches!(Uid::new(uuid), Uid::Uuid(_)));
        assert_eq!(Uid::new(uuid).to_string(), uuid);
        assert!(Uid::new(uuid).is(uuid));
        assert!(!Uid::new(uuid).is("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1"));
        // Upper case, braces, a missing dash or a wrong length would not print back the same.
        for other in [
            "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0",
            "0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0-",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f",
            "uid-1",
            "",
        ] {
            let uid = Uid::new(other);
            assert!(matches!(uid, Uid::Other(_)), "{other}");
            assert_eq!(uid.to_string(), other);
            assert!(uid.is(other));
            assert!(!uid.is(uuid));
        }
        assert!(!Uid::new(uuid).is("0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"));
    }
}
