//! The Job controller: runs a Job's pods to completion, replacing the ones that fail or go
//! away, and gives up past `backoffLimit` failures or `activeDeadlineSeconds`.
//!
//! As the real controller does since Kubernetes 1.26, every pod it makes carries the
//! `batch.kubernetes.io/job-tracking` finalizer: a pod that ended or is being deleted is counted
//! (`status.succeeded` or `status.failed`) before the finalizer comes off, so that no pod goes
//! uncounted and a deleted or evicted pod counts as a failure. The pod is then replaced while the
//! Job still needs one. Pods whose Job is gone (deleted with `Orphan`, which is what a delete
//! that names no policy does to a batch/v1 Job) lose the finalizer and stay.
//!
//! Its Events are SuccessfulCreate, SuccessfulDelete, Completed, BackoffLimitExceeded and
//! DeadlineExceeded, with the real controller's messages.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::record_event;
use crate::meta;
use crate::resources::Kind;
use crate::store::{DeleteOptions, ObjectKey, Store};

/// The finalizer that keeps a Job's pod until the controller counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

const COMPONENT: &str = "job-controller";

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()
}

fn condition_holds(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind && c["status"] == "True"))
}

fn has_tracking_finalizer(pod: &Value) -> bool {
    pod.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// The UID of the Job that controls `pod`, if a Job does.
pub fn controlling_job(pod: &Value) -> Option<(String, String)> {
    let reference = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["kind"] == "Job" && r["controller"] == true)?;
    Some((reference["name"].as_str()?.to_string(), reference["uid"].as_str()?.to_string()))
}

/// Takes the tracking finalizer off a pod (which removes it when it is being deleted).
fn release(store: &Store, pod: &Value) {
    let key = ObjectKey::new(meta::meta_str(pod, "namespace"), meta::name(pod));
    store.update_by_controller(Kind::Pod, &key, meta::uid(pod), false, |pod| {
        let Some(finalizers) = pod.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) else {
            return false;
        };
        let before = finalizers.len();
        finalizers.retain(|f| f != TRACKING_FINALIZER);
        let (changed, empty) = (finalizers.len() != before, finalizers.is_empty());
        if empty {
            meta::metadata_mut(pod).remove("finalizers");
        }
        changed
    });
}

/// Releases a pod that carries the tracking finalizer but whose Job is gone (or that a
/// Job no longer controls), as the real controller does with orphans.
pub fn release_orphan(store: &Store, pod: &Value) {
    if !has_tracking_finalizer(pod) {
        return;
    }
    let job_exists = controlling_job(pod).is_some_and(|(name, uid)| {
        store.get(Kind::Job, meta::meta_str(pod, "namespace"), &name).is_ok_and(|job| meta::uid(&job) == uid)
    });
    if !job_exists {
        release(store, pod);
    }
}

/// How long after `startTime` the Job's deadline falls, when it has one and still runs.
fn deadline_left(job: &Value) -> Option<Duration> {
    let seconds = job.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64)?;
    let start: jiff::Timestamp = job.pointer("/status/startTime")?.as_str()?.parse().ok()?;
    let end = start.as_second() + seconds;
    let now = jiff::Timestamp::now();
    let left_ms = (end * 1000 - now.as_millisecond()).max(0);
    Some(Duration::from_millis(left_ms as u64))
}

/// Brings a Job to its spec. Answers how long until its deadline when it is still running and
/// has one, so that the caller can look at it again then.
pub fn reconcile(store: &Store, namespace: &str, name: &str) -> Option<Duration> {
    let job = store.get(Kind::Job, namespace, name).ok()?;
    if job.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    let uid = meta::uid(&job).to_string();
    let pods: Vec<Arc<Value>> = store
        .dependents_of(&uid)
        .into_iter()
        .filter(|(kind, pod)| {
            *kind == Kind::Pod && controlling_job(pod).is_some_and(|(_, owner)| owner == uid)
        })
        .map(|(_, pod)| pod)
        .collect();
    let finished = condition_holds(&job, "Complete") || condition_holds(&job, "Failed");
    // Count what ended (a deleted pod that had not succeeded is a failure), then let it go.
    let mut newly_succeeded = 0;
    let mut newly_failed = 0;
    for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
        let deleting = pod.pointer("/metadata/deletionTimestamp").is_some();
        match phase(pod) {
            "Succeeded" => newly_succeeded += 1,
            "Failed" => newly_failed += 1,
            _ if deleting => newly_failed += 1,
            _ => continue,
        }
        release(store, pod);
    }
    let active: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| {
            p.pointer("/metadata/deletionTimestamp").is_none() && !matches!(phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let number =
        |pointer: &str, default: i64| job.pointer(pointer).and_then(Value::as_i64).unwrap_or(default);
    let succeeded = number("/status/succeeded", 0) + newly_succeeded;
    let failed = number("/status/failed", 0) + newly_failed;
    let completions = number("/spec/completions", 1);
    let parallelism = number("/spec/parallelism", 1);
    let backoff_limit = number("/spec/backoffLimit", 6);
    let now = meta::now();
    let start_time = job.pointer("/status/startTime").and_then(Value::as_str).unwrap_or(&now).to_string();
    let mut started = (*job).clone();
    started["status"]["startTime"] = json!(start_time);
    let ending = if finished {
        None
    } else if succeeded >= completions {
        Some(("Complete", "CompletionsReached", "Reached expected number of succeeded pods"))
    } else if failed > backoff_limit {
        Some(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    } else if deadline_left(&started).is_some_and(|left| left.is_zero()) {
        Some(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"))
    } else {
        None
    };
    let mut active_count = active.len() as i64;
    if finished || ending.is_some() {
        for pod in &active {
            delete_pod(store, &job, pod);
        }
        active_count = 0;
    } else {
        let wanted = parallelism.min(completions - succeeded).max(0);
        while active_count < wanted {
            match store.create(Kind::Pod, namespace, pod_for(&job, name, &uid)) {
                Ok(created) => {
                    let message = format!("Created pod: {}", meta::name(&created));
                    record_event(store, Kind::Job, &job, "Normal", "SuccessfulCreate", &message, COMPONENT);
                    active_count += 1;
                }
                Err(error) => {
                    tracing::warn!(%error, job = name, "creating a pod failed");
                    break;
                }
            }
        }
    }
    let ready = active.iter().filter(|p| super::is_ready(p)).count();
    let mut conditions =
        job.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if let Some((kind, reason, message)) = ending {
        let condition = |kind: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now})
        };
        // The interim condition first, as Kubernetes 1.31 and later record it.
        conditions.push(condition(if kind == "Complete" { "SuccessCriteriaMet" } else { "FailureTarget" }));
        conditions.push(condition(kind));
        let (event_type, event_reason, event_message) = match reason {
            "CompletionsReached" => ("Normal", "Completed", "Job completed"),
            other => ("Warning", other, message),
        };
        record_event(store, Kind::Job, &job, event_type, event_reason, event_message, COMPONENT);
    }
    let mut status = json!({
        "startTime": start_time,
        "active": active_count,
        "ready": if ending.is_some() || finished { 0 } else { ready },
        "terminating": 0,
        "uncountedTerminatedPods": {},
    });
    if succeeded > 0 {
        status["succeeded"] = json!(succeeded);
    }
    if failed > 0 {
        status["failed"] = json!(failed);
    }
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    if let Some(time) = job.pointer("/status/completionTime") {
        status["completionTime"] = time.clone();
    } else if ending.is_some_and(|(kind, _, _)| kind == "Complete") {
        status["completionTime"] = json!(now);
    }
    let key = ObjectKey::new(namespace, name);
    store.update_by_controller(Kind::Job, &key, &uid, false, |job| {
        if job.get("status") == Some(&status) {
            return false;
        }
        job["status"] = status.clone();
        true
    });
    if finished || ending.is_some() { None } else { deadline_left(&started) }
}

fn delete_pod(store: &Store, job: &Value, pod: &Value) {
    let pod_name = meta::name(pod);
    if store.delete(Kind::Pod, meta::meta_str(pod, "namespace"), pod_name, &DeleteOptions::default()).is_ok()
    {
        let message = format!("Deleted pod: {pod_name}");
        record_event(store, Kind::Job, job, "Normal", "SuccessfulDelete", &message, COMPONENT);
    }
}

/// A new pod of the Job: `<job>-<5 random characters>`, its template's labels (the API server
/// added the Job's own), owned by the Job and held by the tracking finalizer.
fn pod_for(job: &Value, name: &str, uid: &str) -> Value {
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut metadata = json!({
        "generateName": format!("{name}-"),
        "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
        "finalizers": [TRACKING_FINALIZER],
        "ownerReferences": [{
            "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true
        }]
    });
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    json!({"metadata": metadata, "spec": template.get("spec").cloned().unwrap_or(json!({}))})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PatchType;
    use crate::store::{StoreSettings, WriteTarget};

    fn job(backoff_limit: i64) -> Value {
        json!({
            "metadata": {"name": "work"},
            "spec": {
                "backoffLimit": backoff_limit,
                "template": {"metadata": {"labels": {"app": "work"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1"}]}}
            }
        })
    }

    fn only_pod(store: &Store, job_uid: &str) -> Arc<Value> {
        let pods: Vec<Arc<Value>> = store
            .dependents_of(job_uid)
            .into_iter()
            .filter(|(_, p)| p.pointer("/metadata/deletionTimestamp").is_none() && phase(p) != "Failed")
            .map(|(_, p)| p)
            .collect();
        assert_eq!(pods.len(), 1, "{pods:?}");
        pods[0].clone()
    }

    fn set_phase(store: &Store, pod: &Value, phase: &str) {
        store
            .patch(
                Kind::Pod,
                "default",
                meta::name(pod),
                PatchType::Merge,
                &json!({"status": {"phase": phase}}),
                WriteTarget::Status,
            )
            .unwrap();
    }

    #[test]
    fn pods_are_replaced_until_one_succeeds() {
        let store = Store::new(&StoreSettings::default());
        let created = store.create(Kind::Job, "default", job(6)).unwrap();
        let uid = meta::uid(&created).to_string();
        assert_eq!(created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
        reconcile(&store, "default", "work");
        let first = only_pod(&store, &uid);
        assert!(meta::name(&first).starts_with("work-") && meta::name(&first).len() == 10);
        assert_eq!(first["metadata"]["labels"]["job-name"], "work");
        assert_eq!(first["metadata"]["labels"]["controller-uid"], uid);
        assert_eq!(first["metadata"]["labels"]["app"], "work");
        // A deleted pod is counted as failed and replaced.
        store.delete(Kind::Pod, "default", meta::name(&first), &DeleteOptions::default()).unwrap();
        reconcile(&store, "default", "work");
        assert!(store.get(Kind::Pod, "default", meta::name(&first)).is_err(), "the finalizer came off");
        let second = only_pod(&store, &uid);
        assert_ne!(meta::name(&second), meta::name(&first));
        set_phase(&store, &second, "Succeeded");
        reconcile(&store, "default", "work");
        let done = store.get(Kind::Job, "default", "work").unwrap();
        assert!(condition_holds(&done, "Complete"), "{done}");
        assert_eq!(
            (done["status"]["succeeded"].as_i64(), done["status"]["failed"].as_i64()),
            (Some(1), Some(1))
        );
    }

    #[test]
    fn failures_past_the_backoff_limit_fail_the_job() {
        let store = Store::new(&StoreSettings::default());
        let uid = meta::uid(&store.create(Kind::Job, "default", job(1)).unwrap()).to_string();
        for _ in 0..2 {
            reconcile(&store, "default", "work");
            set_phase(&store, &only_pod(&store, &uid), "Failed");
        }
        reconcile(&store, "default", "work");
        let failed = store.get(Kind::Job, "default", "work").unwrap();
        assert!(condition_holds(&failed, "Failed"), "{failed}");
        let conditions = failed["status"]["conditions"].as_array().unwrap();
        assert!(conditions.iter().any(|c| c["reason"] == "BackoffLimitExceeded"));
        assert_eq!(failed["status"]["failed"], 2);
    }
}
