//! The simulated kubelet's containers once they run: a container that exits is restarted or
//! not by the pod's `restartPolicy`, under the kubelet's crash-loop back-off; probe results a
//! test sets make a pod unready or its container killed; a pod's `activeDeadlineSeconds` fails it.
//!
//! Start at [`Kubelet`]. Tests drive it through `/_sim/` actions (`api/admin.rs`): a container
//! exits with a code, a container's readiness or liveness result changes. What follows is what a
//! kubelet does:
//! - `Always`, or `OnFailure` with a non-zero code: the container waits in `CrashLoopBackOff`
//!   (`restartCount + 1`, `lastState.terminated`, a BackOff Event) for the back-off, then runs
//!   again. The back-off starts at the configured base (10 s on a real kubelet) and doubles per
//!   restart of that container up to 5 minutes; each wait is up to a tenth longer, at random.
//! - `Never`, or `OnFailure` with code 0: the container stays terminated; once every container
//!   has, the pod is `Succeeded` (all exited 0) or `Failed`.
//! - Readiness false: the container is not ready, nor are the pod's Ready and ContainersReady
//!   conditions (Event Unhealthy). A pod with a readinessProbe is ready once it starts, unless a
//!   test set its readiness false (the simulator runs no probes).
//! - Liveness false: Events Unhealthy and Killing, and the container exits with 137 (reason
//!   Error) and is handled as above. Each liveness failure a test reports is one kill.
//! - `activeDeadlineSeconds` after the pod started: the pod fails with reason DeadlineExceeded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

use super::record_event;
use crate::error::ApiError;
use crate::logs::LogStore;
use crate::meta;
use crate::resources::Kind;
use crate::store::{ObjectKey, Store};

/// The longest crash-loop back-off, as a real kubelet's.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The exit code of a container killed by SIGKILL, as after a failed liveness probe.
const KILLED: i64 = 137;

/// A container of a pod: the pod's UID and the container's name.
type ContainerKey = (String, String);

/// The simulated kubelet's memory of running containers: back-offs and probe results.
pub struct Kubelet {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    backoff_base: Duration,
    /// The last back-off of each container that restarted.
    backoffs: Mutex<HashMap<ContainerKey, Duration>>,
    /// The containers a test made unready.
    unready: Mutex<HashMap<ContainerKey, String>>,
}

/// What a test says a container's probes found (`POST /_sim/pods/{ns}/{name}/probes`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeResults {
    /// The container (default: the pod's first).
    pub container: Option<String>,
    /// The readiness probe's result, when it changed.
    pub readiness: Option<bool>,
    /// The liveness probe's result: `false` kills the container.
    pub liveness: Option<bool>,
    /// What the probe reported, e.g. `HTTP probe failed with statuscode: 503`.
    pub message: Option<String>,
}

impl Kubelet {
    /// A kubelet whose crash-loop back-off starts at `backoff_base`.
    pub fn new(store: Arc<Store>, logs: Arc<LogStore>, backoff_base: Duration) -> Arc<Kubelet> {
        Arc::new(Kubelet {
            store,
            logs,
            backoff_base,
            backoffs: Mutex::new(HashMap::new()),
            unready: Mutex::new(HashMap::new()),
        })
    }

    fn unready(&self) -> MutexGuard<'_, HashMap<ContainerKey, String>> {
        self.unready.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The pod and the container (default: its first) a test names.
    fn target(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
    ) -> Result<(Arc<Value>, String), ApiError> {
        let pod = self.store.get(Kind::Pod, namespace, name)?;
        let container = match container {
            Some(container) => container.to_string(),
            None => pod
                .pointer("/spec/containers/0/name")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::BadRequest("the pod has no containers".into()))?
                .to_string(),
        };
        if container_status(&pod, &container).is_none() {
            return Err(ApiError::BadRequest(format!(
                "pod {name} has no status for container {container:?}"
            )));
        }
        Ok((pod, container))
    }

    /// A running container exits with `exit_code`; the pod's restart policy decides what
    /// follows. Answers the pod as written.
    pub fn exit(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        exit_code: i64,
    ) -> Result<Arc<Value>, ApiError> {
        let (pod, container) = self.target(namespace, name, container)?;
        self.end_container(&pod, &container, exit_code)
    }

    /// Ends a running container and restarts it, or not, as the restart policy says.
    fn end_container(
        self: &Arc<Self>,
        pod: &Value,
        container: &str,
        exit_code: i64,
    ) -> Result<Arc<Value>, ApiError> {
        let running = container_status(pod, container).and_then(|s| s.pointer("/state/running")).is_some();
        if !running || pod.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::BadRequest(format!("container {container:?} is not running")));
        }
        let uid = meta::uid(pod).to_string();
        let policy = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always");
        let restart = policy == "Always" || (policy == "OnFailure" && exit_code != 0);
        let key = ObjectKey::new(meta::meta_str(pod, "namespace"), meta::name(pod));
        let now = meta::now();
        let delay = restart.then(|| self.next_backoff(&uid, container));
        let message = format!(
            "back-off {} restarting failed container={container} pod={}_{}({uid})",
            human(delay.unwrap_or_default()),
            meta::name(pod),
            key.namespace
        );
        let written = self
            .store
            .update_by_controller(Kind::Pod, &key, &uid, false, |pod| {
                terminate(pod, container, exit_code, &now, restart.then_some(message.as_str()))
            })
            .ok_or_else(|| ApiError::Conflict {
                kind: Kind::Pod,
                name: key.name.clone(),
                detail: "the pod changed while its container exited".into(),
            })?;
        // The run that ended becomes the previous log, as on a node.
        self.logs.restart(&uid, container);
        if let Some(delay) = delay {
            let event_message = format!(
                "Back-off restarting failed container {container} in pod {}_{}({uid})",
                key.name, key.namespace
            );
            record_event(&self.store, Kind::Pod, &written, "Warning", "BackOff", &event_message, "kubelet");
            let kubelet = self.clone();
            let container = container.to_string();
            let restarts = restart_count(&written, &container);
            tokio::spawn(async move {
                tokio::time::sleep(jittered(delay)).await;
                kubelet.start_again(&key, &uid, &container, restarts);
            });
        }
        Ok(written)
    }

    /// The back-off before a container's next start: the base, then double the last, up to
    /// [`MAX_BACKOFF`].
    /// The nominal back-off of a container's next restart, as the kubelet reports it; the wait
    /// itself is [`jittered`].
    fn next_backoff(&self, uid: &str, container: &str) -> Duration {
        let mut backoffs = self.backoffs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = match backoffs.get(&(uid.to_string(), container.to_string())) {
            Some(last) => (*last * 2).min(MAX_BACKOFF),
            None => self.backoff_base.min(MAX_BACKOFF),
        };
        backoffs.insert((uid.to_string(), container.to_string()), next);
        next
    }

    /// Runs a container again after its back-off, unless the pod went or it already did.
    fn start_again(&self, key: &ObjectKey, uid: &str, container: &str, restarts: u64) {
        let ready = !self.unready().contains_key(&(uid.to_string(), container.to_string()));
        let now = meta::now();
        let started = self.store.update_by_controller(Kind::Pod, key, uid, false, |pod| {
            if pod.pointer("/metadata/deletionTimestamp").is_some() {
                return false;
            }
            let Some(status) = container_status_mut(pod, container) else { return false };
            let backing_off =
                status.pointer("/state/waiting/reason").and_then(Value::as_str) == Some("CrashLoopBackOff");
            if !backing_off || status.get("restartCount").and_then(Value::as_u64) != Some(restarts) {
                return false;
            }
            status["state"] = json!({"running": {"startedAt": now}});
            status["ready"] = json!(ready);
            status["started"] = json!(true);
            status["containerID"] = json!(format!(
                "containerd://{}",
                super::hex64(format!("{uid}{container}{restarts}").as_bytes())
            ));
            refresh_conditions(pod, &now);
            true
        });
        if let Some(pod) = started {
            let image = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["name"] == container))
                .and_then(|c| c["image"].as_str())
                .unwrap_or_default()
                .to_string();
            for (reason, message) in [
                ("Pulled", format!("Container image \"{image}\" already present on machine")),
                ("Created", format!("Created container: {container}")),
                ("Started", format!("Started container {container}")),
            ] {
                record_event(&self.store, Kind::Pod, &pod, "Normal", reason, &message, "kubelet");
            }
        }
    }

    /// Applies what a test says a container's probes found.
    pub fn set_probes(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        results: &ProbeResults,
    ) -> Result<Arc<Value>, ApiError> {
        let (pod, container) = self.target(namespace, name, results.container.as_deref())?;
        let uid = meta::uid(&pod).to_string();
        let key = ObjectKey::new(namespace, name);
        let message = results.message.clone().unwrap_or_default();
        let mut current = pod;
        if let Some(ready) = results.readiness {
            let container_key = (uid.clone(), container.clone());
            if ready {
                self.unready().remove(&container_key);
            } else {
                self.unready().insert(container_key, message.clone());
                let text = format!("Readiness probe failed: {message}");
                record_event(&self.store, Kind::Pod, &current, "Warning", "Unhealthy", &text, "kubelet");
            }
            let now = meta::now();
            if let Some(written) = self.store.update_by_controller(Kind::Pod, &key, &uid, false, |pod| {
                let Some(status) = container_status_mut(pod, &container) else { return false };
                let running = status.pointer("/state/running").is_some();
                if status.get("ready") == Some(&json!(ready && running)) {
                    return false;
                }
                status["ready"] = json!(ready && running);
                refresh_conditions(pod, &now);
                true
            }) {
                current = written;
            }
        }
        if results.liveness == Some(false) {
            let text = format!("Liveness probe failed: {message}");
            record_event(&self.store, Kind::Pod, &current, "Warning", "Unhealthy", &text, "kubelet");
            let text = format!("Container {container} failed liveness probe, will be restarted");
            record_event(&self.store, Kind::Pod, &current, "Normal", "Killing", &text, "kubelet");
            current = self.end_container(&current, &container, KILLED)?;
        }
        Ok(current)
    }

    /// Makes a pod that just started unready where a test said so before it started.
    pub(super) fn apply_readiness(&self, pod: &mut Value) {
        let uid = meta::uid(pod).to_string();
        let unready = self.unready();
        let Some(statuses) = pod.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut)
        else {
            return;
        };
        let mut changed = false;
        for status in statuses {
            let name = status["name"].as_str().unwrap_or_default().to_string();
            if unready.contains_key(&(uid.clone(), name)) {
                status["ready"] = json!(false);
                changed = true;
            }
        }
        if changed {
            refresh_conditions(pod, &meta::now());
        }
    }

    /// Fails a pod whose `activeDeadlineSeconds` passed since it started, as the kubelet does.
    pub(super) fn watch_deadline(self: &Arc<Self>, pod: &Value) {
        let Some(seconds) = pod.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_u64) else {
            return;
        };
        let key = ObjectKey::new(meta::meta_str(pod, "namespace"), meta::name(pod));
        let uid = meta::uid(pod).to_string();
        let kubelet = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
            let now = meta::now();
            let failed = kubelet.store.update_by_controller(Kind::Pod, &key, &uid, false, |pod| {
                if matches!(phase(pod), "Succeeded" | "Failed")
                    || pod.pointer("/metadata/deletionTimestamp").is_some()
                {
                    return false;
                }
                fail_pod(
                    pod,
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                    &now,
                );
                true
            });
            if let Some(pod) = failed {
                let message = "Pod was active on the node longer than the specified deadline";
                record_event(
                    &kubelet.store,
                    Kind::Pod,
                    &pod,
                    "Warning",
                    "DeadlineExceeded",
                    message,
                    "kubelet",
                );
            }
        });
    }
}

/// A back-off made up to a tenth longer, at random: containers that crashed together (a bad
/// rollout, a lost dependency) then do not all restart on the same tick, against the same API
/// server and logs.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(1.0 + fastrand::f64() / 10.0)
}

fn phase(pod: &Value) -> &str {
    pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()
}

/// A container's status in a pod, by name.
fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    pod.pointer("/status/containerStatuses")?.as_array()?.iter().find(|s| s["name"] == container)
}

fn container_status_mut<'a>(pod: &'a mut Value, container: &str) -> Option<&'a mut Value> {
    pod.pointer_mut("/status/containerStatuses")?.as_array_mut()?.iter_mut().find(|s| s["name"] == container)
}

fn restart_count(pod: &Value, container: &str) -> u64 {
    container_status(pod, container).and_then(|s| s.get("restartCount")).and_then(Value::as_u64).unwrap_or(0)
}

/// A back-off as the kubelet prints it: `10s`, `1m20s`, `50ms`.
fn human(delay: Duration) -> String {
    if delay < Duration::from_secs(1) {
        format!("{}ms", delay.as_millis())
    } else if delay < Duration::from_secs(60) {
        format!("{}s", delay.as_secs())
    } else if delay.as_secs().is_multiple_of(60) {
        format!("{}m", delay.as_secs() / 60)
    } else {
        format!("{}m{}s", delay.as_secs() / 60, delay.as_secs() % 60)
    }
}

/// Records that a running container exited: waiting in CrashLoopBackOff with `back_off`'s
/// message when it is to restart (its restartCount counting the restart), else terminated; a
/// pod whose containers all terminated is Succeeded or Failed.
fn terminate(pod: &mut Value, container: &str, exit_code: i64, now: &str, back_off: Option<&str>) -> bool {
    let Some(status) = container_status_mut(pod, container) else { return false };
    let Some(started) = status.pointer("/state/running/startedAt").cloned() else { return false };
    let terminated = json!({
        "exitCode": exit_code,
        "reason": if exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": started,
        "finishedAt": now,
        "containerID": status.get("containerID").cloned().unwrap_or(Value::Null),
    });
    status["ready"] = json!(false);
    status["started"] = json!(false);
    match back_off {
        Some(message) => {
            let restarts = status.get("restartCount").and_then(Value::as_u64).unwrap_or(0) + 1;
            status["restartCount"] = json!(restarts);
            status["lastState"] = json!({"terminated": terminated});
            status["state"] = json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}});
        }
        None => status["state"] = json!({"terminated": terminated}),
    }
    let statuses =
        pod.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let all_terminated = statuses.iter().all(|s| s.pointer("/state/terminated").is_some());
    if all_terminated {
        let all_succeeded =
            statuses.iter().all(|s| s.pointer("/state/terminated/exitCode") == Some(&json!(0)));
        pod["status"]["phase"] = json!(if all_succeeded { "Succeeded" } else { "Failed" });
    }
    refresh_conditions(pod, now);
    true
}

/// Fails a pod as the kubelet does (deadline, eviction): every running container killed.
pub(super) fn fail_pod(pod: &mut Value, reason: &str, message: &str, now: &str) {
    for status in
        pod.pointer_mut("/status/containerStatuses").and_then(Value::as_array_mut).into_iter().flatten()
    {
        let started = status.pointer("/state/running/startedAt").cloned();
        if let Some(started) = started {
            status["state"] = json!({"terminated": {
                "exitCode": KILLED, "reason": "Error", "startedAt": started, "finishedAt": now,
                "containerID": status.get("containerID").cloned().unwrap_or(Value::Null),
            }});
        } else if status.pointer("/state/terminated").is_none() {
            status["state"] =
                json!({"terminated": {"exitCode": KILLED, "reason": "Error", "finishedAt": now}});
        }
        status["ready"] = json!(false);
        status["started"] = json!(false);
    }
    pod["status"]["phase"] = json!("Failed");
    pod["status"]["reason"] = json!(reason);
    pod["status"]["message"] = json!(message);
    refresh_conditions(pod, now);
}

/// Sets the pod's Ready and ContainersReady conditions from its containers' readiness.
fn refresh_conditions(pod: &mut Value, now: &str) {
    let statuses =
        pod.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let unready: Vec<&str> =
        statuses.iter().filter(|s| s["ready"] != true).filter_map(|s| s["name"].as_str()).collect();
    let terminal = matches!(phase(pod), "Succeeded" | "Failed");
    let (status, reason, message) = if terminal {
        ("False", Some("PodCompleted"), None)
    } else if unready.is_empty() {
        ("True", None, None)
    } else {
        (
            "False",
            Some("ContainersNotReady"),
            Some(format!("containers with unready status: [{}]", unready.join(" "))),
        )
    };
    let Some(conditions) = pod.pointer_mut("/status/conditions").and_then(Value::as_array_mut) else {
        return;
    };
    for kind in ["Ready", "ContainersReady"] {
        let mut condition =
            json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(reason) = reason {
            condition["reason"] = json!(reason);
        }
        if let Some(message) = &message {
            condition["message"] = json!(message);
        }
        match conditions.iter_mut().find(|c| c["type"] == kind) {
            Some(existing) if existing["status"] == status => {
                // The transition time stays that of the last change.
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
                *existing = condition;
            }
            Some(existing) => *existing = condition,
            None => conditions.push(condition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(restart_policy: &str) -> Value {
        let mut pod = json!({"spec": {"restartPolicy": restart_policy, "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        assert!(super::super::start_pod(&mut pod, "10.244.0.2", "10.0.0.1"));
        pod
    }

    #[test]
    fn exits_follow_the_restart_policy() {
        let mut always = running("Always");
        assert!(terminate(&mut always, "c", 0, "t", Some("back-off 10s")));
        let status = &always["status"]["containerStatuses"][0];
        assert_eq!(status["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(status["lastState"]["terminated"]["exitCode"], 0);
        assert_eq!(status["restartCount"], 1);
        assert_eq!(always["status"]["phase"], "Running");
        assert!(!super::super::is_ready(&always));

        let mut never = running("Never");
        assert!(terminate(&mut never, "c", 2, "t", None));
        assert_eq!(never["status"]["phase"], "Failed");
        assert_eq!(never["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 2);
        let mut done = running("OnFailure");
        assert!(terminate(&mut done, "c", 0, "t", None));
        assert_eq!(done["status"]["phase"], "Succeeded");
        assert!(!terminate(&mut done, "c", 0, "t", None), "a terminated container does not exit again");
    }

    #[test]
    fn back_offs_double_up_to_five_minutes() {
        let kubelet = Kubelet::new(
            Store::new(&crate::store::StoreSettings::default()),
            Default::default(),
            Duration::from_secs(10),
        );
        let delays: Vec<Duration> = (0..7).map(|_| kubelet.next_backoff("u", "c")).collect();
        let seconds: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
        assert_eq!(seconds, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(human(Duration::from_millis(50)), "50ms");
        assert_eq!(human(Duration::from_secs(80)), "1m20s");
    }

    #[test]
    fn waits_are_up_to_a_tenth_longer_than_the_back_off() {
        let delay = Duration::from_secs(10);
        let waits: Vec<Duration> = (0..100).map(|_| jittered(delay)).collect();
        assert!(waits.iter().all(|wait| (delay..=delay.mul_f64(1.1)).contains(wait)), "{waits:?}");
        assert!(waits.iter().any(|wait| *wait != waits[0]), "the waits differ");
    }
}
