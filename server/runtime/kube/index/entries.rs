//! The compact entries the index keeps of Pods, Services and Nodes (only the fields a process's
//! info needs, so 10,000 processes stay small), and how a watcher's events keep them current.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::ResourceExt;
use kube::runtime::watcher::Event;

use super::super::manifests::{self, GROUP_LABEL};
use super::super::status::{PodState, pod_state};
use crate::spec::{Labels, ProcessSpec};

/// What the index keeps of a Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodEntry {
    /// The Pod's uid.
    pub uid: String,
    /// The Pod's resourceVersion.
    pub resource_version: Option<String>,
    /// The process's group, from its label.
    pub group: Option<String>,
    /// The process's own labels (see [`manifests::user_labels`]).
    pub labels: Labels,
    /// When the Pod was created.
    pub created: jiff::Timestamp,
    /// The node the Pod is bound to.
    pub node_name: Option<String>,
    /// The process's state, derived from the Pod.
    pub state: PodState,
    /// The spec the Pod was made from, as its annotation holds it: parsed only when a Start
    /// finds the name taken, not on every event of every Pod.
    pub spec_annotation: Option<String>,
    /// The objects the Pod needs besides itself, read from its own spec (so without parsing the
    /// annotation): what a half-made process lacks is told from these.
    pub needs: Needs,
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

impl PodEntry {
    /// The spec the Pod was made from, if it carries a readable one.
    pub fn spec(&self) -> Option<ProcessSpec> {
        self.spec_annotation.as_deref().and_then(manifests::parse_spec)
    }
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
    /// The uid of the Pod that owns it, so a Service left from an earlier Pod of the same name
    /// does not count as this Pod's.
    pub owner_uid: Option<String>,
}

/// What the index keeps of a Node: its addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// The first ExternalIP.
    pub external_ip: Option<String>,
    /// The first InternalIP.
    pub internal_ip: Option<String>,
}

/// The entries of one kind, by name, kept current from its watcher's events.
pub(super) struct Entries<E> {
    /// The objects as the watcher last reported them.
    pub(super) live: HashMap<String, E>,
    /// Objects seen during a relist, which replaces `live` when it completes.
    relisting: Option<HashMap<String, E>>,
}

impl<E> Default for Entries<E> {
    fn default() -> Self {
        Entries { live: HashMap::new(), relisting: None }
    }
}

/// What one watcher event changed.
pub(super) struct Applied {
    /// The names whose entries changed (or may have: every name before and after a relist).
    pub(super) touched: Vec<String>,
    /// Whether a relist completed.
    pub(super) relisted: bool,
}

impl<E> Entries<E> {
    /// Applies one watcher event; says which names it touched.
    pub(super) fn apply<K: ResourceExt>(
        &mut self,
        event: Event<K>,
        entry: impl Fn(&K) -> (String, E),
    ) -> Applied {
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

pub(super) fn pod_entry(pod: &Pod) -> (String, PodEntry) {
    let name = pod.name_any();
    let created = pod.metadata.creation_timestamp.as_ref().map_or(jiff::Timestamp::UNIX_EPOCH, |time| time.0);
    let entry = PodEntry {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        resource_version: pod.metadata.resource_version.clone(),
        group: pod.labels().get(GROUP_LABEL).cloned(),
        labels: Labels::new(manifests::user_labels(pod.labels())),
        created,
        node_name: pod.spec.as_ref().and_then(|spec| spec.node_name.clone()),
        state: pod_state(pod),
        spec_annotation: manifests::spec_annotation(pod).map(str::to_owned),
        needs: needs(pod, &name),
    };
    (name, entry)
}

/// What a process's Pod needs besides itself, from its spec.
fn needs(pod: &Pod, name: &str) -> Needs {
    let Some(spec) = pod.spec.as_ref() else { return Needs::default() };
    let container = spec.containers.first();
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

pub(super) fn service_entry(service: &Service) -> (String, ServiceEntry) {
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
        owner_uid: service
            .owner_references()
            .iter()
            .find(|owner| owner.kind == "Pod" && owner.name == service.name_any())
            .map(|owner| owner.uid.clone()),
    };
    (service.name_any(), entry)
}

pub(super) fn node_entry(node: &Node) -> NodeEntry {
    let addresses = node.status.as_ref().and_then(|status| status.addresses.as_ref());
    let first = |kind: &str| {
        addresses
            .and_then(|addresses| addresses.iter().find(|address| address.type_ == kind))
            .map(|a| a.address.clone())
    };
    NodeEntry { external_ip: first("ExternalIP"), internal_ip: first("InternalIP") }
}
