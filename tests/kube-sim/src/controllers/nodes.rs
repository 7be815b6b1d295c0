//! Node loss: the node lifecycle controller, the taint eviction controller and the pod
//! garbage collector, as far as pods on a lost node go.
//!
//! - A deleted node's pods are deleted (pod GC, condition DisruptionTarget `DeletionByPodGC`),
//!   and their controllers make them again elsewhere.
//! - A node whose Ready condition turns False gets the `node.kubernetes.io/not-ready` NoExecute
//!   and NoSchedule taints, an Event NodeNotReady, and its pods' Ready condition False; if it is
//!   still not ready after the eviction delay (a real cluster tolerates it 300 s), its pods are
//!   deleted with an Event TaintManagerEviction `Marking for deletion Pod ns/p` (condition
//!   DisruptionTarget `DeletionByTaintManager`). The deletion is immediate, as if the node's
//!   kubelet confirmed it. Ready again: the taints go, with an Event NodeReady.
//! - A node that becomes Ready and schedulable (or is added) gets the pods the scheduler could
//!   not place before ([`Store::schedule_unbound_pods`]), as the real scheduler retries them.
//! - [`evict`] serves the Eviction subresource (`kubectl drain`): the pod is deleted with
//!   condition DisruptionTarget `EvictionByEvictionAPI`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use super::record_event;
use crate::error::ApiError;
use crate::meta;
use crate::resources::Kind;
use crate::selector::{FieldRequirement, Filter};
use crate::store::{DeleteOptions, EventType, ObjectKey, Store};

const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Whether a node's Ready condition is True.
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Follows node changes until the runtime stops.
pub(super) async fn node_controller(
    store: Arc<Store>,
    mut events: broadcast::Receiver<Arc<crate::store::Event>>,
    eviction_delay: Duration,
) {
    loop {
        let event = match events.recv().await {
            Ok(event) if event.kind == Kind::Node => event,
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let node = &event.object;
        let name = meta::name(node).to_string();
        match event.event_type {
            EventType::Deleted => {
                delete_pods_on(&store, &name, "DeletionByPodGC", "PodGC: node no longer exists", false);
            }
            EventType::Modified => {
                let was_ready = event.previous.as_ref().is_none_or(|previous| node_ready(previous));
                let ready = node_ready(node);
                let cordoned =
                    |node: &Value| node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true);
                let was_open =
                    was_ready && event.previous.as_ref().is_none_or(|previous| !cordoned(previous));
                if ready && !cordoned(node) && !was_open {
                    store.schedule_unbound_pods();
                }
                if was_ready && !ready {
                    became_not_ready(&store, node);
                    let store = store.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(eviction_delay).await;
                        let still_down =
                            store.get(Kind::Node, "", &name).is_ok_and(|node| !node_ready(&node));
                        if still_down {
                            let message = "Taint manager: deleting due to NoExecute taint";
                            delete_pods_on(&store, &name, "DeletionByTaintManager", message, true);
                        }
                    });
                } else if !was_ready && ready {
                    set_not_ready_taints(&store, node, false);
                    let message = format!("Node {name} status is now: NodeReady");
                    record_event(
                        &store,
                        Kind::Node,
                        node,
                        "Normal",
                        "NodeReady",
                        &message,
                        "node-controller",
                    );
                }
            }
            EventType::Added => {
                store.schedule_unbound_pods();
            }
        }
    }
}

/// Taints a node that stopped being ready, records it, and marks its pods not ready.
fn became_not_ready(store: &Store, node: &Value) {
    let name = meta::name(node);
    set_not_ready_taints(store, node, true);
    let message = format!("Node {name} status is now: NodeNotReady");
    record_event(store, Kind::Node, node, "Normal", "NodeNotReady", &message, "node-controller");
    let now = meta::now();
    for pod in pods_on(store, name) {
        let key = ObjectKey::new(meta::meta_str(&pod, "namespace"), meta::name(&pod));
        store.update_by_controller(Kind::Pod, &key, meta::uid(&pod), false, |pod| {
            let Some(conditions) = pod.pointer_mut("/status/conditions").and_then(Value::as_array_mut) else {
                return false;
            };
            let Some(ready) = conditions.iter_mut().find(|c| c["type"] == "Ready" && c["status"] == "True")
            else {
                return false;
            };
            *ready =
                json!({"type": "Ready", "status": "False", "lastProbeTime": null, "lastTransitionTime": now});
            true
        });
    }
}

/// Adds or removes the `not-ready` taints (NoSchedule and NoExecute).
fn set_not_ready_taints(store: &Store, node: &Value, present: bool) {
    let key = ObjectKey::new("", meta::name(node));
    let now = meta::now();
    store.update_by_controller(Kind::Node, &key, meta::uid(node), false, |node| {
        let spec = meta::object_mut(node, "spec");
        let mut taints: Vec<Value> =
            spec.get("taints").and_then(Value::as_array).cloned().unwrap_or_default();
        let before = taints.len();
        taints.retain(|t| t["key"] != NOT_READY_TAINT);
        if present {
            taints.push(json!({"key": NOT_READY_TAINT, "effect": "NoSchedule"}));
            taints.push(json!({"key": NOT_READY_TAINT, "effect": "NoExecute", "timeAdded": now}));
        } else if taints.len() == before {
            return false;
        }
        if taints.is_empty() {
            spec.remove("taints");
        } else {
            spec.insert("taints".into(), json!(taints));
        }
        true
    });
}

/// The pods bound to a node.
fn pods_on(store: &Store, node: &str) -> Vec<Arc<Value>> {
    let mut filter = Filter::default();
    filter.fields.requirements.push(FieldRequirement {
        field: "spec.nodeName".into(),
        equal: true,
        value: node.to_string(),
    });
    store.list(Kind::Pod, None, &filter, None, None, 0).items
}

/// Deletes every pod on a node with a DisruptionTarget condition saying why; `taint_eviction`
/// also records the taint manager's Event on each.
fn delete_pods_on(store: &Store, node: &str, reason: &str, message: &str, taint_eviction: bool) {
    for pod in pods_on(store, node) {
        if pod.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        if taint_eviction {
            let text = format!(
                "Marking for deletion Pod {}/{}",
                meta::meta_str(&pod, "namespace"),
                meta::name(&pod)
            );
            record_event(
                store,
                Kind::Pod,
                &pod,
                "Normal",
                "TaintManagerEviction",
                &text,
                "taint-eviction-controller",
            );
        }
        let _ = disrupt_and_delete(store, &pod, reason, message, &DeleteOptions::default());
    }
}

/// Adds the DisruptionTarget condition a real control plane writes before it deletes a pod
/// it disrupts, then deletes it.
fn disrupt_and_delete(
    store: &Store,
    pod: &Value,
    reason: &str,
    message: &str,
    options: &DeleteOptions,
) -> Result<Arc<Value>, ApiError> {
    let namespace = meta::meta_str(pod, "namespace");
    let key = ObjectKey::new(namespace, meta::name(pod));
    let now = meta::now();
    store.update_by_controller(Kind::Pod, &key, meta::uid(pod), false, |pod| {
        let conditions = meta::object_mut(pod, "status").entry("conditions").or_insert_with(|| json!([]));
        let Some(conditions) = conditions.as_array_mut() else { return false };
        if conditions.iter().any(|c| c["type"] == "DisruptionTarget") {
            return false;
        }
        conditions.push(json!({"type": "DisruptionTarget", "status": "True", "reason": reason,
            "message": message, "lastProbeTime": null, "lastTransitionTime": now}));
        true
    });
    store.delete(Kind::Pod, namespace, meta::name(pod), options)
}

/// The Eviction subresource: deletes the pod (no PodDisruptionBudgets are modelled) with the
/// delete options the Eviction carries.
pub fn evict(
    store: &Store,
    namespace: &str,
    name: &str,
    options: &DeleteOptions,
) -> Result<Arc<Value>, ApiError> {
    let pod = store.get(Kind::Pod, namespace, name)?;
    disrupt_and_delete(store, &pod, "EvictionByEvictionAPI", "Eviction API: evicting", options)
}

/// `POST /_sim/nodes/{name}` with `{"ready": bool}`: the node's kubelet stops (or starts
/// again) posting a ready status.
pub fn set_ready(store: &Store, name: &str, ready: bool) -> Result<Arc<Value>, ApiError> {
    let node = store.get(Kind::Node, "", name)?;
    let now = meta::now();
    let condition = if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now})
    } else {
        json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
            "message": "container runtime is down", "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let written =
        store.update_by_controller(Kind::Node, &ObjectKey::new("", name), meta::uid(&node), false, |node| {
            if node_ready(node) == ready {
                return false;
            }
            let status = meta::object_mut(node, "status");
            let conditions = status.entry("conditions").or_insert_with(|| json!([]));
            let Some(conditions) = conditions.as_array_mut() else { return false };
            conditions.retain(|c| c["type"] != "Ready");
            conditions.push(condition.clone());
            true
        });
    Ok(written.unwrap_or(node))
}
