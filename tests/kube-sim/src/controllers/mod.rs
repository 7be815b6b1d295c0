//! The cluster's moving parts, each one task: the kubelet (starts scheduled pods after a delay,
//! once the Secrets their env reads exist; [`kubelet`] runs their containers after that), the
//! garbage collector (deletes dependents of deleted owners), the workload controllers
//! (Deployments, [`statefulset`], [`job`]), the node controller ([`nodes`]: pods on lost or
//! NotReady nodes) and the event recorder (the core/v1 Events `kubectl describe` shows:
//! Scheduled, FailedScheduling, Pulled, Created, Started, Killing).
//!
//! The kubelet and the garbage collector read queues the store feeds as it writes (every bound
//! pod, every deleted owner), so a burst never leaves work undone and never makes them scan
//! every object. The workload controllers read the event broadcast and resynchronise their
//! objects when they fall behind; the event recorder, like a real one, is best effort.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub mod job;
pub mod kubelet;
pub mod nodes;
pub mod statefulset;

use kubelet::Kubelet;

use crate::meta;
use crate::resources::Kind;
use crate::store::{DeleteOptions, EventType, ObjectKey, PodToStart, Store};

/// Controller tunables.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// How long a scheduled pod stays Pending before the kubelet runs it.
    pub pod_start_delay: Duration,
    /// The first crash-loop back-off of a restarting container (a real kubelet's is 10 s).
    pub crash_loop_backoff: Duration,
    /// How long pods stay on a NotReady node before they are evicted (the default
    /// `tolerationSeconds` of the `not-ready` taint is 300 s on a real cluster).
    pub not_ready_eviction: Duration,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        ControllerSettings {
            pod_start_delay: Duration::from_millis(200),
            crash_loop_backoff: Duration::from_secs(10),
            not_ready_eviction: Duration::from_secs(1),
        }
    }
}

/// Starts every controller; they run until the runtime stops. Answers the kubelet, which the
/// `/_sim/` actions drive.
pub fn spawn_all(
    store: Arc<Store>,
    logs: Arc<crate::logs::LogStore>,
    settings: ControllerSettings,
) -> Arc<Kubelet> {
    let queues = store.controller_queues();
    let containers = Kubelet::new(store.clone(), logs, settings.crash_loop_backoff);
    tokio::spawn(kubelet(
        store.clone(),
        containers.clone(),
        queues.pending,
        queues.pods_to_start,
        settings.pod_start_delay,
    ));
    tokio::spawn(garbage_collector(store.clone(), queues.deleted_owners));
    tokio::spawn(workload_controllers(store.clone(), store.subscribe()));
    tokio::spawn(event_recorder(store.clone(), store.subscribe()));
    tokio::spawn(nodes::node_controller(store.clone(), store.subscribe(), settings.not_ready_eviction));
    containers
}

// === kubelet ===

/// Starts each bound pod `delay` after it was created. One task and one timer for every pod:
/// the delay is the same for all, so the queue in creation order is also in deadline order.
async fn kubelet(
    store: Arc<Store>,
    containers: Arc<Kubelet>,
    pending: Vec<PodToStart>,
    mut created: mpsc::UnboundedReceiver<PodToStart>,
    delay: Duration,
) {
    let mut due: VecDeque<(Instant, PodToStart)> =
        pending.into_iter().map(|pod| (Instant::now() + delay, pod)).collect();
    loop {
        let next = due.front().map(|(at, _)| *at);
        tokio::select! {
            received = created.recv() => match received {
                Some(pod) => due.push_back((Instant::now() + delay, pod)),
                None => return,
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while due.front().is_some_and(|(at, _)| *at <= now) {
                    if let Some((_, pod)) = due.pop_front() {
                        start_when_configured(&store, &containers, pod);
                    }
                }
            }
        }
    }
}

/// How often the kubelet looks again for the Secrets a waiting pod's env needs.
const SECRET_RETRY: Duration = Duration::from_millis(100);

/// Starts a pod now, or, when a Secret its env reads is missing, marks it waiting and keeps
/// trying in a task of its own.
fn start_when_configured(store: &Arc<Store>, containers: &Arc<Kubelet>, (key, uid, node): PodToStart) {
    if try_start(store, containers, &key, &uid, &node) == Attempt::WaitingForSecret {
        let store = store.clone();
        let containers = containers.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SECRET_RETRY).await;
                if try_start(&store, &containers, &key, &uid, &node) != Attempt::WaitingForSecret {
                    return;
                }
            }
        });
    }
}

/// What one attempt to start a pod came to.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// Started, or nothing to do (the pod is gone, replaced, or being deleted).
    Done,
    /// A Secret (or key) its env reads does not exist yet.
    WaitingForSecret,
}

fn try_start(store: &Store, containers: &Arc<Kubelet>, key: &ObjectKey, uid: &str, node: &str) -> Attempt {
    let Ok(pod) = store.get(Kind::Pod, &key.namespace, &key.name) else { return Attempt::Done };
    if meta::uid(&pod) != uid || pod.pointer("/metadata/deletionTimestamp").is_some() {
        return Attempt::Done;
    }
    // As a real kubelet: a container whose env Secret (or key) is missing is not created;
    // the pod waits with CreateContainerConfigError until the Secret is there.
    if let Some(message) = missing_env_secret(store, &key.namespace, &pod) {
        store.update_by_controller(Kind::Pod, key, uid, true, |pod| wait_for_config(pod, &message));
        return Attempt::WaitingForSecret;
    }
    let Some((pod_ip, host_ip)) = store.pod_addresses(uid, node) else { return Attempt::Done };
    let started = store.update_by_controller(Kind::Pod, key, uid, true, |pod| {
        let started = start_pod(pod, &pod_ip.to_string(), &host_ip);
        if started {
            containers.apply_readiness(pod);
        }
        started
    });
    if let Some(pod) = started {
        containers.watch_deadline(&pod);
    }
    Attempt::Done
}

/// The containers of a pod's spec (none when the spec has no list of them).
fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten()
}

/// The kubelet's message for the first env `secretKeyRef` (not optional) of a pod whose Secret
/// or key does not exist, as it reports it; `None` when every one resolves.
fn missing_env_secret(store: &Store, namespace: &str, pod: &Value) -> Option<String> {
    for variable in containers(pod).filter_map(|c| c.get("env").and_then(Value::as_array)).flatten() {
        let Some(reference) = variable.pointer("/valueFrom/secretKeyRef") else { continue };
        if reference.get("optional").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let key = reference.get("key").and_then(Value::as_str).unwrap_or_default();
        match store.get(Kind::Secret, namespace, name) {
            Err(_) => return Some(format!("secret \"{name}\" not found")),
            Ok(secret) if secret.pointer(&format!("/data/{key}")).is_none() => {
                return Some(format!("couldn't find key {key} in Secret {namespace}/{name}"));
            }
            Ok(_) => {}
        }
    }
    None
}

/// Marks a Pending pod's containers as waiting with CreateContainerConfigError.
fn wait_for_config(pod: &mut Value, message: &str) -> bool {
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Pending") {
        return false;
    }
    let statuses: Vec<Value> = containers(pod)
        .map(|container| {
            json!({
                "name": container.get("name").cloned().unwrap_or(json!("")),
                "image": container.get("image").cloned().unwrap_or(json!("")),
                "imageID": "", "ready": false, "started": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}},
                "lastState": {}
            })
        })
        .collect();
    let status = &pod["status"];
    if status.get("containerStatuses") == Some(&json!(statuses)) {
        return false;
    }
    pod["status"]["containerStatuses"] = json!(statuses);
    true
}

/// Moves a Pending pod to Running with every container ready, as a kubelet reports it.
pub fn start_pod(pod: &mut Value, pod_ip: &str, host_ip: &str) -> bool {
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Pending")
        || pod.pointer("/metadata/deletionTimestamp").is_some()
    {
        return false;
    }
    let now = meta::now();
    let statuses: Vec<Value> = containers(pod)
        .map(|container| {
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
            let digest = hex64(image.as_bytes());
            json!({
                "name": name,
                "image": image,
                "imageID": format!("{}@sha256:{digest}", image.split(':').next().unwrap_or(image)),
                "containerID": format!("containerd://{}", hex64(format!("{name}{now}{pod_ip}").as_bytes())),
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {}
            })
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    pod["status"] = json!({
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "qosClass": pod.pointer("/status/qosClass").cloned().unwrap_or(json!("BestEffort")),
        "conditions": [
            condition("PodReadyToStartContainers"),
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "containerStatuses": statuses,
    });
    true
}

/// 64 hex digits derived from `bytes`, shaped like a digest or container ID.
fn hex64(bytes: &[u8]) -> String {
    let first = fnv(bytes);
    format!("{first:032x}{:032x}", fnv(&first.to_le_bytes()))
}

fn fnv(bytes: &[u8]) -> u128 {
    let mut hash: u128 = 0x6c62272e07bb014262b821756295c58d;
    for byte in bytes {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(0x0000000001000000000000000000013B);
    }
    hash
}

// === garbage collector ===

/// Collects the dependents of each deleted owner the store reports.
async fn garbage_collector(store: Arc<Store>, mut deleted_owners: mpsc::UnboundedReceiver<String>) {
    while let Some(owner_uid) = deleted_owners.recv().await {
        store.collect_garbage(&owner_uid);
    }
}

// === workload controllers ===

/// What the workload controllers look at again: a Deployment, StatefulSet or Job by name.
type WorkloadKey = (Kind, String, String);

/// The Deployment, StatefulSet and Job controllers, in one task reading the event broadcast:
/// a change to one of these objects, or to a pod one of them controls, reconciles it; falling
/// behind resynchronises every one. Job deadlines come back through a timer queue.
async fn workload_controllers(store: Arc<Store>, mut events: broadcast::Receiver<Arc<crate::store::Event>>) {
    let (deadline_sender, mut deadlines) = mpsc::unbounded_channel::<(WorkloadKey, String)>();
    // The Jobs (by UID) with a deadline timer running, so that every change to a Job does not
    // start another; a timer that fires leaves the set, and the reconcile sets the next.
    let mut timed_jobs: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let targets: Vec<WorkloadKey> = tokio::select! {
            received = events.recv() => match received {
                Ok(event) => workload_targets(&store, &event),
                Err(RecvError::Lagged(_)) => {
                    let mut all = Vec::new();
                    for kind in [Kind::Deployment, Kind::StatefulSet, Kind::Job] {
                        for object in store.list(kind, None, &Default::default(), None, None, 0).items {
                            let namespace = meta::meta_str(&object, "namespace").to_string();
                            all.push((kind, namespace, meta::name(&object).to_string()));
                        }
                    }
                    all
                }
                Err(RecvError::Closed) => return,
            },
            Some((key, uid)) = deadlines.recv() => {
                timed_jobs.remove(&uid);
                vec![key]
            }
        };
        for (kind, namespace, name) in targets {
            match kind {
                Kind::Deployment => reconcile_deployment(&store, &namespace, &name),
                Kind::StatefulSet => statefulset::reconcile(&store, &namespace, &name),
                Kind::Job => {
                    let Some(left) = job::reconcile(&store, &namespace, &name) else { continue };
                    let Ok(object) = store.get(Kind::Job, &namespace, &name) else { continue };
                    let uid = meta::uid(&object).to_string();
                    if timed_jobs.insert(uid.clone()) {
                        let sender = deadline_sender.clone();
                        tokio::spawn(async move {
                            // A little past the deadline, since startTime has whole seconds.
                            tokio::time::sleep(left + Duration::from_millis(10)).await;
                            let _ = sender.send(((Kind::Job, namespace, name), uid));
                        });
                    }
                }
                _ => {}
            }
        }
    }
}

/// The workloads an event concerns: the object itself, or the controller of a pod. A Job's
/// pod whose Job is gone is released on the way (see [`job::release_orphan`]).
fn workload_targets(store: &Store, event: &crate::store::Event) -> Vec<WorkloadKey> {
    let object = &event.object;
    match event.kind {
        Kind::Deployment | Kind::StatefulSet | Kind::Job => {
            vec![(event.kind, event.namespace.clone(), meta::name(object).to_string())]
        }
        Kind::Pod => {
            if event.event_type != EventType::Deleted {
                job::release_orphan(store, object);
            }
            object
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
                .and_then(|r| {
                    let kind = match r["kind"].as_str()? {
                        "Deployment" => Kind::Deployment,
                        "StatefulSet" => Kind::StatefulSet,
                        "Job" => Kind::Job,
                        _ => return None,
                    };
                    Some(vec![(kind, event.namespace.clone(), r["name"].as_str()?.to_string())])
                })
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// A stable short hash of a pod template, like the `pod-template-hash` label.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash = fnv(template.to_string().as_bytes());
    let mut text = String::new();
    for _ in 0..10 {
        text.push(char::from(ALPHABET[(hash % ALPHABET.len() as u128) as usize]));
        hash /= ALPHABET.len() as u128;
    }
    text
}

/// Whether a pod's Ready condition is True.
pub(crate) fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Brings a Deployment's pods to `spec.replicas` copies of the current template.
pub fn reconcile_deployment(store: &Store, namespace: &str, name: &str) {
    let Ok(deployment) = store.get(Kind::Deployment, namespace, name) else { return };
    if deployment.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let uid = meta::uid(&deployment).to_string();
    let replicas = deployment.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) as usize;
    let template = deployment.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let mut current: BTreeMap<String, Arc<Value>> = BTreeMap::new();
    for (kind, pod) in store.dependents_of(&uid) {
        if kind != Kind::Pod || pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        if pod.pointer("/metadata/labels/pod-template-hash").and_then(Value::as_str) == Some(hash.as_str()) {
            current.insert(meta::name(&pod).to_string(), pod);
        } else {
            let _ = store.delete(Kind::Pod, namespace, meta::name(&pod), &DeleteOptions::default());
        }
    }
    while current.len() > replicas {
        let Some((extra, _)) = current.pop_last() else { break };
        let _ = store.delete(Kind::Pod, namespace, &extra, &DeleteOptions::default());
    }
    for _ in current.len()..replicas {
        let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
        labels["pod-template-hash"] = json!(hash);
        let mut metadata = json!({
            "generateName": format!("{name}-{hash}-"),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true
            }]
        });
        if let Some(annotations) = template.pointer("/metadata/annotations") {
            metadata["annotations"] = annotations.clone();
        }
        let pod = json!({"metadata": metadata, "spec": template.get("spec").cloned().unwrap_or(json!({}))});
        match store.create(Kind::Pod, namespace, pod) {
            Ok(created) => {
                current.insert(meta::name(&created).to_string(), created);
            }
            Err(error) => {
                tracing::warn!(%error, deployment = name, "creating a replica failed");
                break;
            }
        }
    }
    let ready = current.values().filter(|p| is_ready(p)).count();
    let generation = deployment.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
    let key = ObjectKey::new(namespace, name);
    store.update_by_controller(Kind::Deployment, &key, &uid, false, |deployment| {
        let mut status = json!({
            "observedGeneration": generation,
            "replicas": current.len(),
            "updatedReplicas": current.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [{
                "type": "Available",
                "status": if ready >= replicas { "True" } else { "False" },
                "reason": if ready >= replicas { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
            }]
        });
        if current.len() > ready {
            status["unavailableReplicas"] = json!(current.len() - ready);
        }
        if deployment.get("status") == Some(&status) {
            return false;
        }
        deployment["status"] = status;
        true
    });
}

// === event recorder ===

async fn event_recorder(store: Arc<Store>, mut events: broadcast::Receiver<Arc<crate::store::Event>>) {
    loop {
        match events.recv().await {
            Ok(event) if event.kind == Kind::Pod => {
                for (event_type, reason, message, component) in pod_events(&event) {
                    let record = event_object(&event.object, event_type, reason, &message, component);
                    // Events are best effort, as on real clusters: a vanished namespace drops them.
                    let _ = store.create(Kind::Event, &event.namespace, record);
                }
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

type EventRecord = (&'static str, &'static str, String, &'static str);

fn container_names(pod: &Value) -> Vec<String> {
    containers(pod).filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string)).collect()
}

/// The Events a scheduler and kubelet would record for this change of a pod.
fn pod_events(event: &crate::store::Event) -> Vec<EventRecord> {
    let pod = &event.object;
    let namespace = meta::meta_str(pod, "namespace");
    let name = meta::name(pod);
    let phase = |object: &Value| object.pointer("/status/phase").and_then(Value::as_str).map(str::to_string);
    match event.event_type {
        EventType::Added => match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            Some(node) => vec![(
                "Normal",
                "Scheduled",
                format!("Successfully assigned {namespace}/{name} to {node}"),
                "default-scheduler",
            )],
            None => pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["reason"] == "Unschedulable"))
                .map(|c| {
                    let message = c["message"].as_str().unwrap_or_default().to_string();
                    vec![("Warning", "FailedScheduling", message, "default-scheduler")]
                })
                .unwrap_or_default(),
        },
        EventType::Modified => {
            let node =
                |object: &Value| object.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string);
            if let (Some(node), Some(None)) = (node(pod), event.previous.as_deref().map(node)) {
                // Bound later, once a node fit (see nodes.rs).
                let message = format!("Successfully assigned {namespace}/{name} to {node}");
                return vec![("Normal", "Scheduled", message, "default-scheduler")];
            }
            let was_pending = event.previous.as_ref().and_then(|p| phase(p)).as_deref() == Some("Pending");
            if !(was_pending && phase(pod).as_deref() == Some("Running")) {
                return Vec::new();
            }
            let images: Vec<(String, String)> = containers(pod)
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["image"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            images
                .into_iter()
                .flat_map(|(container, image)| {
                    [
                        (
                            "Normal",
                            "Pulled",
                            format!("Container image \"{image}\" already present on machine"),
                            "kubelet",
                        ),
                        ("Normal", "Created", format!("Created container: {container}"), "kubelet"),
                        ("Normal", "Started", format!("Started container {container}"), "kubelet"),
                    ]
                })
                .collect()
        }
        EventType::Deleted if phase(pod).as_deref() == Some("Running") => container_names(pod)
            .into_iter()
            .map(|container| ("Normal", "Killing", format!("Stopping container {container}"), "kubelet"))
            .collect(),
        EventType::Deleted => Vec::new(),
    }
}

fn event_object(pod: &Value, event_type: &str, reason: &str, message: &str, component: &str) -> Value {
    object_event(Kind::Pod, pod, event_type, reason, message, component)
}

/// Records a core/v1 Event about `object` (best effort, as on real clusters). Events about
/// cluster-scoped objects (nodes) go to the `default` namespace, as a real node controller
/// and kubelet put them.
pub(crate) fn record_event(
    store: &Store,
    kind: Kind,
    object: &Value,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let namespace = match meta::meta_str(object, "namespace") {
        "" => "default",
        namespace => namespace,
    };
    let record = object_event(kind, object, event_type, reason, message, component);
    let _ = store.create(Kind::Event, namespace, record);
}

/// The Event object about `object` of `kind`.
fn object_event(
    kind: Kind,
    object: &Value,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> Value {
    let now = meta::now();
    let host = object.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or_default();
    let mut source = json!({"component": component});
    if component == "kubelet" {
        source["host"] = json!(host);
    }
    let mut involved = json!({
        "kind": kind.info().kind,
        "apiVersion": kind.api_version(),
        "name": meta::name(object),
        "uid": meta::uid(object),
        "resourceVersion": meta::meta_str(object, "resourceVersion"),
    });
    if kind.info().namespaced {
        involved["namespace"] = json!(meta::meta_str(object, "namespace"));
    } else {
        // A node's Events name it by its name, as the node controller records them.
        involved["uid"] = json!(meta::name(object));
    }
    json!({
        "metadata": {"name": format!("{}.{:016x}", meta::name(object), fastrand::u64(..))},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": source,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": event_type,
        "reportingComponent": component,
        "reportingInstance": host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    #[test]
    fn started_pods_report_running_and_ready() {
        let mut pod = json!({"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}, "status": {"phase": "Pending"}});
        assert!(start_pod(&mut pod, "10.244.0.5", "10.0.0.1"));
        assert_eq!(pod["status"]["phase"], "Running");
        assert_eq!(pod["status"]["hostIP"], "10.0.0.1");
        assert_eq!(pod["status"]["containerStatuses"][0]["ready"], true);
        assert!(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());
        assert!(is_ready(&pod));
        assert!(!start_pod(&mut pod, "x", "y"), "a running pod is left alone");
    }

    #[test]
    fn pods_get_scheduler_and_kubelet_events() {
        let pending = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx"}]}, "status": {"phase": "Pending"}});
        let mut running = pending.clone();
        running["status"]["phase"] = json!("Running");
        let event = |event_type, object: &Value, previous: Option<&Value>| crate::store::Event {
            resource_version: 1,
            kind: Kind::Pod,
            namespace: "default".into(),
            event_type,
            object: Arc::new(object.clone()),
            previous: previous.map(|p| Arc::new(p.clone())),
        };
        let reasons = |records: Vec<EventRecord>| records.into_iter().map(|r| r.1).collect::<Vec<_>>();
        assert_eq!(reasons(pod_events(&event(EventType::Added, &pending, None))), ["Scheduled"]);
        assert_eq!(
            reasons(pod_events(&event(EventType::Modified, &running, Some(&pending)))),
            ["Pulled", "Created", "Started"]
        );
        assert_eq!(
            reasons(pod_events(&event(EventType::Modified, &running, Some(&running)))),
            Vec::<&str>::new()
        );
        assert_eq!(reasons(pod_events(&event(EventType::Deleted, &running, None))), ["Killing"]);
        let record = event_object(&pending, "Normal", "Scheduled", "m", "default-scheduler");
        assert_eq!(record["involvedObject"]["name"], "p");
        assert!(meta::name(&record).starts_with("p."));
    }

    #[test]
    fn deployments_keep_one_pod_per_replica() {
        let store = Store::new(&StoreSettings::default());
        let deployment = json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
            }
        });
        let created = store.create(Kind::Deployment, "default", deployment).unwrap();
        reconcile_deployment(&store, "default", "web");
        let pods = store.dependents_of(meta::uid(&created));
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(|(_, p)| meta::name(p).starts_with("web-")));
        store
            .patch(
                Kind::Deployment,
                "default",
                "web",
                crate::patch::PatchType::Merge,
                &json!({"spec": {"replicas": 1}}),
                crate::store::WriteTarget::Main,
            )
            .unwrap();
        reconcile_deployment(&store, "default", "web");
        assert_eq!(store.dependents_of(meta::uid(&created)).len(), 1);
        let status = store.get(Kind::Deployment, "default", "web").unwrap();
        assert_eq!(status["status"]["replicas"], 1);
    }
}
