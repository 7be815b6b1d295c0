//! A process's status, derived from its Pod alone. Pure: the index calls it on every change,
//! on the slim Pod its watch decodes.

use super::index::slim::{SlimContainerStatus, SlimPod};
use super::manifests::KEEP_STATUS_FINALIZER;

use crate::spec::ProcessStatus;

/// What a Pod says about its process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    /// The lifecycle state.
    pub status: ProcessStatus,
    /// A short machine-readable cause (`CrashLoopBackOff`, `OOMKilled`, ...).
    pub reason: Option<String>,
    /// A human-readable explanation.
    pub message: Option<String>,
    /// How often the container was restarted.
    pub restart_count: u32,
    /// The exit code of a terminated container.
    pub exit_code: Option<i32>,
}

/// Container waiting reasons that mean the process cannot run until something changes.
const FAILED_WAITING_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Derives the process's state from its Pod.
pub fn pod_state(pod: &SlimPod) -> PodState {
    let status = pod.status.as_ref();
    let container =
        status.and_then(|status| status.container_statuses.as_ref()).and_then(|statuses| statuses.first());
    let restart_count = container.map_or(0, |container| u32::try_from(container.restart_count).unwrap_or(0));
    let mut state = PodState {
        status: ProcessStatus::Starting,
        reason: None,
        message: None,
        restart_count,
        exit_code: None,
    };
    if pod.metadata.deletion_timestamp.is_some() {
        match lost(pod) {
            Some((reason, message)) => {
                state.status = ProcessStatus::Failed;
                state.reason = Some(reason.to_owned());
                state.message = Some(message);
            }
            None => state.status = ProcessStatus::Stopping,
        }
        return state;
    }
    let phase = status.and_then(|status| status.phase.as_deref()).unwrap_or("Pending");

    if let Some((reason, message, exit_code)) = container.and_then(terminated) {
        state.exit_code = Some(exit_code);
        if phase == "Succeeded" || (exit_code == 0 && phase != "Failed") {
            state.status = ProcessStatus::Exited;
            state.reason = Some(reason.unwrap_or_else(|| "Completed".to_owned()));
            state.message = message.or_else(|| Some(format!("exited with code {exit_code}")));
            return state;
        }
        state.status = ProcessStatus::Failed;
        state.reason = Some(reason.unwrap_or_else(|| "Error".to_owned()));
        state.message = message.or_else(|| Some(format!("exited with code {exit_code}")));
        return state;
    }

    if let Some(waiting) = container.and_then(|container| container.state.as_ref()?.waiting.as_ref())
        && let Some(reason) = waiting.reason.as_deref()
        && FAILED_WAITING_REASONS.contains(&reason)
    {
        state.status = ProcessStatus::Failed;
        state.reason = Some(reason.to_owned());
        let last = container.and_then(last_termination);
        state.message = match (waiting.message.clone(), last) {
            (Some(message), _) => Some(message),
            (None, Some(last)) => Some(format!("back-off after the container {last}")),
            (None, None) => None,
        };
        return state;
    }

    match phase {
        "Succeeded" => {
            state.status = ProcessStatus::Exited;
            state.reason = Some("Completed".to_owned());
            state.exit_code = Some(0);
        }
        "Failed" => {
            state.status = ProcessStatus::Failed;
            state.reason =
                status.and_then(|status| status.reason.clone()).or_else(|| Some("Failed".to_owned()));
            state.message = status.and_then(|status| status.message.clone());
        }
        _ => {
            if let Some(condition) = status
                .and_then(|status| status.conditions.as_ref())
                .and_then(|conditions| conditions.iter().find(|c| c.type_ == "PodScheduled"))
                .filter(|condition| condition.status == "False")
                && condition.reason.as_deref() == Some("Unschedulable")
            {
                state.status = ProcessStatus::Failed;
                state.reason = Some("Unschedulable".to_owned());
                state.message = condition.message.clone();
            } else if phase == "Running" && is_ready(pod, container) {
                state.status = ProcessStatus::Running;
            } else if let Some(waiting) =
                container.and_then(|container| container.state.as_ref()?.waiting.as_ref())
            {
                // Still starting (ContainerCreating, PodInitializing): say why, as kubectl does.
                state.reason = waiting.reason.clone();
                state.message = waiting.message.clone();
            }
        }
    }
    state
}

/// The reason of a `NEVER` process whose bare Pod was deleted by someone else: `kubectl
/// delete`, a controller, a person.
pub const DELETED: &str = "PodDeleted";
/// The reason of a `NEVER` process whose bare Pod was evicted (the Eviction API, as `kubectl
/// drain` uses it, or the kubelet under node pressure).
pub const EVICTED: &str = "Evicted";
/// The reason of a `NEVER` process whose bare Pod was lost with its node (deleted, or
/// unreachable and its Pods evicted by the taint manager).
pub const NODE_LOST: &str = "NodeLost";
/// The reason of a `NEVER` process whose bare Pod was preempted by the scheduler.
pub const PREEMPTED: &str = "Preempted";

/// Why a bare Pod that is being deleted was lost, when it still carries
/// [`KEEP_STATUS_FINALIZER`], which only Hydroplane's Stop removes: the reason and a message,
/// from the `DisruptionTarget` condition the control plane writes before it deletes a Pod it
/// disrupts (none: someone deleted it). `None` for a Pod Hydroplane is stopping.
fn lost(pod: &SlimPod) -> Option<(&'static str, String)> {
    let kept = pod.metadata.finalizers.as_ref()?.iter().any(|finalizer| finalizer == KEEP_STATUS_FINALIZER);
    if !kept {
        return None;
    }
    let disruption =
        pod.status.as_ref().and_then(|status| status.conditions.as_ref()).and_then(|conditions| {
            conditions.iter().find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        });
    let node = match pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()) {
        Some(node) => format!("its node `{node}`"),
        None => "its node".to_owned(),
    };
    let after = "; a process with restart policy NEVER is not made again (Stop removes it)";
    let (reason, what) = match disruption.and_then(|condition| condition.reason.as_deref()) {
        Some("EvictionByEvictionAPI" | "TerminationByKubelet") => (EVICTED, "its Pod was evicted".to_owned()),
        Some("DeletionByPodGC") => (NODE_LOST, format!("its Pod was lost with {node}, which is gone")),
        Some("DeletionByTaintManager") => {
            (NODE_LOST, format!("its Pod was evicted from {node}, which is not ready or unreachable"))
        }
        Some("PreemptionByScheduler") => {
            (PREEMPTED, "its Pod was preempted by a Pod of higher priority".to_owned())
        }
        Some(other) => (DELETED, format!("its Pod was deleted ({other})")),
        None => (DELETED, "its Pod was deleted by someone other than Hydroplane".to_owned()),
    };
    let detail = disruption.and_then(|condition| condition.message.as_deref());
    let message = match detail {
        Some(detail) => format!("{what} ({detail}){after}"),
        None => format!("{what}{after}"),
    };
    Some((reason, message))
}

/// The reason, message and exit code of a container that has terminated.
fn terminated(container: &SlimContainerStatus) -> Option<(Option<String>, Option<String>, i32)> {
    let terminated = container.state.as_ref()?.terminated.as_ref()?;
    Some((terminated.reason.clone(), terminated.message.clone(), terminated.exit_code))
}

/// How the previous run of a restarted container ended, for messages.
fn last_termination(container: &SlimContainerStatus) -> Option<String> {
    let last = container.last_state.as_ref()?.terminated.as_ref()?;
    Some(match last.reason.as_deref() {
        Some("OOMKilled") => format!("was OOMKilled (exit code {})", last.exit_code),
        Some(reason) => format!("ended with {reason} (exit code {})", last.exit_code),
        None => format!("exited with code {}", last.exit_code),
    })
}

/// Ready by the Pod's Ready condition, or by the container's own flag when there is none.
fn is_ready(pod: &SlimPod, container: Option<&SlimContainerStatus>) -> bool {
    let ready_condition = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|condition| condition.type_ == "Ready"));
    match ready_condition {
        Some(condition) => condition.status == "True",
        None => container.is_some_and(|container| container.ready),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> SlimPod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": status
        }))
        .expect("a pod")
    }

    #[track_caller]
    fn check(status: serde_json::Value, expected: (ProcessStatus, Option<&str>, u32, Option<i32>)) {
        let state = pod_state(&pod(status));
        assert_eq!(
            (state.status, state.reason.as_deref(), state.restart_count, state.exit_code),
            expected,
            "{state:?}"
        );
    }

    fn container(state: serde_json::Value, restarts: i32, ready: bool) -> serde_json::Value {
        serde_json::json!([{"name": "p", "image": "i", "imageID": "", "ready": ready,
            "restartCount": restarts, "state": state}])
    }

    #[test]
    fn statuses_follow_the_pod() {
        use ProcessStatus::*;
        check(serde_json::json!({"phase": "Pending"}), (Starting, None, 0, None));
        check(
            serde_json::json!({"phase": "Pending", "containerStatuses": container(
                serde_json::json!({"waiting": {"reason": "ContainerCreating"}}), 0, false)}),
            (Starting, Some("ContainerCreating"), 0, None),
        );
        check(
            serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": container(serde_json::json!({"running": {}}), 0, true)}),
            (Running, None, 0, None),
        );
        check(
            serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": container(serde_json::json!({"running": {}}), 0, false)}),
            (Starting, None, 0, None),
        );
        check(
            serde_json::json!({"phase": "Pending", "containerStatuses": container(
                serde_json::json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}), 0, false)}),
            (Failed, Some("ImagePullBackOff"), 0, None),
        );
        check(
            serde_json::json!({"phase": "Running", "containerStatuses": container(
                serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}}), 4, false)}),
            (Failed, Some("CrashLoopBackOff"), 4, None),
        );
        check(
            serde_json::json!({"phase": "Running", "containerStatuses": container(
                serde_json::json!({"terminated": {"reason": "OOMKilled", "exitCode": 137}}), 1, false)}),
            (Failed, Some("OOMKilled"), 1, Some(137)),
        );
        check(
            serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
            (Failed, Some("Unschedulable"), 0, None),
        );
        check(
            serde_json::json!({"phase": "Succeeded", "containerStatuses": container(
                serde_json::json!({"terminated": {"reason": "Completed", "exitCode": 0}}), 0, false)}),
            (Exited, Some("Completed"), 0, Some(0)),
        );
        check(
            serde_json::json!({"phase": "Failed", "containerStatuses": container(
                serde_json::json!({"terminated": {"reason": "Error", "exitCode": 2}}), 0, false)}),
            (Failed, Some("Error"), 0, Some(2)),
        );
        check(
            serde_json::json!({"phase": "Failed", "reason": "Evicted"}),
            (Failed, Some("Evicted"), 0, None),
        );
    }

    #[test]
    fn crash_loops_say_how_the_last_run_ended() {
        let state = pod_state(&pod(serde_json::json!({"phase": "Running", "containerStatuses": [{
            "name": "p", "image": "i", "imageID": "", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]})));
        assert_eq!(
            state.message.as_deref(),
            Some("back-off after the container was OOMKilled (exit code 137)")
        );
    }

    #[test]
    fn a_pod_being_deleted_is_stopping() {
        let mut pod = pod(serde_json::json!({"phase": "Running"}));
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(pod_state(&pod).status, ProcessStatus::Stopping);
    }

    #[test]
    fn a_bare_pod_deleted_by_someone_else_is_failed_with_why() {
        #[track_caller]
        fn check_lost(conditions: serde_json::Value, reason: &str, says: &str) {
            let mut pod = pod(serde_json::json!({"phase": "Running", "conditions": conditions}));
            pod.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH));
            pod.metadata.finalizers = Some(vec![KEEP_STATUS_FINALIZER.to_owned()]);
            let state = pod_state(&pod);
            assert_eq!((state.status, state.reason.as_deref()), (ProcessStatus::Failed, Some(reason)));
            let message = state.message.unwrap_or_default();
            assert!(message.contains(says), "{message}");
        }
        let disrupted = |reason: &str| serde_json::json!([{"type": "DisruptionTarget", "status": "True", "reason": reason, "message": "why"}]);
        check_lost(serde_json::json!([]), DELETED, "deleted by someone other than Hydroplane");
        check_lost(disrupted("EvictionByEvictionAPI"), EVICTED, "evicted (why)");
        check_lost(disrupted("DeletionByPodGC"), NODE_LOST, "which is gone");
        check_lost(disrupted("DeletionByTaintManager"), NODE_LOST, "not ready");
    }
}
