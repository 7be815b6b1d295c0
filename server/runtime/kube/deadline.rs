//! `max_run_seconds` under `ALWAYS`: a StatefulSet's Pod cannot use `activeDeadlineSeconds`
//! (the controller would only make the Pod again), so the server ends the process itself. A few
//! times a second it asks the index which StatefulSets carrying a
//! [`MAX_RUN_SECONDS_LABEL`](manifests::MAX_RUN_SECONDS_LABEL) are past their creation plus that
//! many seconds, and scales each to zero with the [`ENDED_LABEL`](manifests::ENDED_LABEL) set to
//! [`DEADLINE_EXCEEDED`](manifests::DEADLINE_EXCEEDED): its Pod goes (with its stop grace), and
//! the process stays listed, FAILED, as a Job past its deadline does, until it is stopped.
//!
//! The deadline is enforced while a server runs; one started after it passed ends the process at
//! once. A failed patch is logged and tried again at the next check.

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams};

use super::index::Index;
use super::index::slim::SlimStatefulSet;
use super::manifests;
use crate::report::error_chain;

/// How often the deadlines are checked: well within the 2 s a deadline may be late by.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Ends the processes past their deadline until the task is dropped.
pub async fn run(index: Arc<Index>, stateful_sets: Api<SlimStatefulSet>) {
    let mut interval = tokio::time::interval(CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let due = index.read(|view| view.past_deadline(jiff::Timestamp::now()));
        for (name, uid) in due {
            end(&stateful_sets, &name, &uid).await;
        }
    }
}

/// Scales the StatefulSet `name` (if its uid is still `uid`) to zero, marked as ended.
async fn end(stateful_sets: &Api<SlimStatefulSet>, name: &str, uid: &str) {
    // The uid in the patch is its precondition: an object of the same name made since is not
    // touched (the API server refuses to change a uid).
    let patch = serde_json::json!({
        "metadata": {"uid": uid, "labels": {manifests::ENDED_LABEL: manifests::DEADLINE_EXCEEDED}},
        "spec": {"replicas": 0},
    });
    match stateful_sets.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(process = %name, "stopped a process past its max_run_seconds"),
        // Gone meanwhile, or another object of its name now: nothing to end.
        Err(kube::Error::Api(response)) if matches!(response.code, 404 | 409 | 422) => {}
        Err(error) => {
            tracing::warn!(process = %name, error = %error_chain(&error), "cannot stop a process past its max_run_seconds; trying again")
        }
    }
}
