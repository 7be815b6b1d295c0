//! The StatefulSet controller: keeps pods `<name>-0..N-1` of a StatefulSet's template, one per
//! ordinal and never two at once, and reports its status.
//!
//! Like the real controller it creates a pod only when no pod of that ordinal exists (a
//! terminating one included), deletes pods that failed or succeeded so that they are made
//! again, creates in order under `OrderedReady` (the next ordinal once the ones before are
//! ready), and replaces pods of an older template one at a time. Its Events are
//! SuccessfulCreate and SuccessfulDelete, as `kubectl describe statefulset` shows them.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{is_ready, record_event, template_hash};
use crate::meta;
use crate::resources::Kind;
use crate::store::{DeleteOptions, ObjectKey, Store};

/// The component name on the controller's Events.
const COMPONENT: &str = "statefulset-controller";

/// The ordinal of a pod named `<set>-<ordinal>`.
fn ordinal(set_name: &str, pod_name: &str) -> Option<usize> {
    pod_name.strip_prefix(set_name)?.strip_prefix('-')?.parse().ok()
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()
}

/// Brings a StatefulSet's pods to its spec and writes its status.
pub fn reconcile(store: &Store, namespace: &str, name: &str) {
    let Ok(set) = store.get(Kind::StatefulSet, namespace, name) else { return };
    if set.pointer("/metadata/deletionTimestamp").is_some() {
        return;
    }
    let uid = meta::uid(&set).to_string();
    let replicas = set.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1) as usize;
    let template = set.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let revision = format!("{name}-{}", template_hash(&template));
    let ordered = set.pointer("/spec/podManagementPolicy").and_then(Value::as_str) != Some("Parallel");
    let mut pods: BTreeMap<usize, Arc<Value>> = BTreeMap::new();
    for (kind, pod) in store.dependents_of(&uid) {
        if kind == Kind::Pod
            && let Some(index) = ordinal(name, meta::name(&pod))
        {
            pods.insert(index, pod);
        }
    }
    let delete = |pod: &Value| {
        let pod_name = meta::name(pod);
        if store.delete(Kind::Pod, namespace, pod_name, &DeleteOptions::default()).is_ok() {
            let message = format!("delete Pod {pod_name} in StatefulSet {name} successful");
            record_event(store, Kind::StatefulSet, &set, "Normal", "SuccessfulDelete", &message, COMPONENT);
        }
    };
    // A pod that ended is deleted and made again, as the real controller does; one being
    // deleted still holds its ordinal until it is gone.
    for pod in pods.values() {
        let ended = matches!(phase(pod), "Failed" | "Succeeded");
        if ended && pod.pointer("/metadata/deletionTimestamp").is_none() {
            delete(pod);
        }
    }
    for (_, pod) in pods.range(replicas..).rev() {
        if pod.pointer("/metadata/deletionTimestamp").is_none() {
            delete(pod);
        }
    }
    // Whatever was deleted above may be gone now: look again.
    pods.retain(|_, pod| {
        store
            .get(Kind::Pod, namespace, meta::name(pod))
            .is_ok_and(|current| meta::uid(&current) == meta::uid(pod))
    });
    for index in 0..replicas {
        match pods.get(&index) {
            Some(pod)
                if ordered && !(is_ready(pod) && pod.pointer("/metadata/deletionTimestamp").is_none()) =>
            {
                break;
            }
            Some(_) => continue,
            None => {}
        }
        match store.create(Kind::Pod, namespace, pod_for(&set, name, &uid, index, &template, &revision)) {
            Ok(created) => {
                let message = format!("create Pod {} in StatefulSet {name} successful", meta::name(&created));
                record_event(
                    store,
                    Kind::StatefulSet,
                    &set,
                    "Normal",
                    "SuccessfulCreate",
                    &message,
                    COMPONENT,
                );
                pods.insert(index, created);
            }
            Err(error) => {
                tracing::warn!(%error, statefulset = name, index, "creating a pod failed");
                break;
            }
        }
        if ordered {
            break;
        }
    }
    // A rolling update: once every pod is ready, the highest pod of an older template goes.
    let all_ready = pods.len() >= replicas && pods.values().all(|p| is_ready(p));
    let rolling = set.pointer("/spec/updateStrategy/type").and_then(Value::as_str) != Some("OnDelete");
    if rolling
        && all_ready
        && let Some(outdated) = pods.values().rev().find(|p| revision_of(p) != Some(revision.as_str()))
    {
        delete(outdated);
    }
    write_status(store, namespace, name, &set, &pods, &revision);
}

fn revision_of(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/labels/controller-revision-hash").and_then(Value::as_str)
}

/// The pod of one ordinal, as the controller makes it.
fn pod_for(set: &Value, name: &str, uid: &str, index: usize, template: &Value, revision: &str) -> Value {
    let pod_name = format!("{name}-{index}");
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    labels["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    labels["controller-revision-hash"] = json!(revision);
    labels["apps.kubernetes.io/pod-index"] = json!(index.to_string());
    let mut metadata = json!({
        "name": pod_name,
        "labels": labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true
        }]
    });
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    if let Some(service) = set.pointer("/spec/serviceName").and_then(Value::as_str).filter(|s| !s.is_empty())
    {
        spec["subdomain"] = json!(service);
    }
    json!({"metadata": metadata, "spec": spec})
}

fn write_status(
    store: &Store,
    namespace: &str,
    name: &str,
    set: &Value,
    pods: &BTreeMap<usize, Arc<Value>>,
    revision: &str,
) {
    let living: Vec<&Arc<Value>> =
        pods.values().filter(|p| p.pointer("/metadata/deletionTimestamp").is_none()).collect();
    let ready = living.iter().filter(|p| is_ready(p)).count();
    let current = living.iter().filter(|p| revision_of(p) == Some(revision)).count();
    let generation = set.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
    let status = json!({
        "observedGeneration": generation,
        "replicas": living.len(),
        "readyReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": current,
        "availableReplicas": ready,
        "currentRevision": revision,
        "updateRevision": revision,
        "collisionCount": 0,
    });
    let key = ObjectKey::new(namespace, name);
    store.update_by_controller(Kind::StatefulSet, &key, meta::uid(set), false, |set| {
        if set.get("status") == Some(&status) {
            return false;
        }
        set["status"] = status.clone();
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreSettings;

    fn set(replicas: u64) -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}
            }
        })
    }

    #[test]
    fn pods_are_named_by_ordinal_and_made_again_when_gone() {
        let store = Store::new(&StoreSettings::default());
        let created = store.create(Kind::StatefulSet, "default", set(2)).unwrap();
        reconcile(&store, "default", "web");
        let pod = store.get(Kind::Pod, "default", "web-0").unwrap();
        assert_eq!(pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-0");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], meta::uid(&created));
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert!(store.get(Kind::Pod, "default", "web-1").is_ok());
        let old_uid = meta::uid(&pod).to_string();
        store.delete(Kind::Pod, "default", "web-0", &DeleteOptions::default()).unwrap();
        reconcile(&store, "default", "web");
        let again = store.get(Kind::Pod, "default", "web-0").unwrap();
        assert_ne!(meta::uid(&again), old_uid);
        store
            .patch(
                Kind::StatefulSet,
                "default",
                "web",
                crate::patch::PatchType::Merge,
                &json!({"spec": {"replicas": 1}}),
                crate::store::WriteTarget::Main,
            )
            .unwrap();
        reconcile(&store, "default", "web");
        assert!(store.get(Kind::Pod, "default", "web-1").is_err());
        assert_eq!(store.get(Kind::StatefulSet, "default", "web").unwrap()["status"]["replicas"], 1);
    }

    #[test]
    fn a_terminating_pod_holds_its_ordinal() {
        let store = Store::new(&StoreSettings::default());
        store.create(Kind::StatefulSet, "default", set(1)).unwrap();
        reconcile(&store, "default", "web");
        store
            .patch(
                Kind::Pod,
                "default",
                "web-0",
                crate::patch::PatchType::Merge,
                &json!({"metadata": {"finalizers": ["example.com/hold"]}}),
                crate::store::WriteTarget::Main,
            )
            .unwrap();
        let old = store.delete(Kind::Pod, "default", "web-0", &DeleteOptions::default()).unwrap();
        reconcile(&store, "default", "web");
        let still = store.get(Kind::Pod, "default", "web-0").unwrap();
        assert_eq!(meta::uid(&still), meta::uid(&old), "no second copy while the first terminates");
    }
}
