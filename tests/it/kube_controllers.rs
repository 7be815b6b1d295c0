//! Processes owned by Kubernetes' own controllers, on the simulator: a StatefulSet of one
//! (`ALWAYS`), a Job (`ON_FAILURE`) or a bare Pod (`NEVER`). A Pod deleted, evicted or lost
//! with its node while no Hydroplane server runs comes back under the first two (the
//! controllers did the work) and is FAILED with the reason under the third (its finalizer kept
//! it); Stop leaves no object of any kind behind; probes and the run-time limit reach the
//! process's status.

use std::time::Duration;

use crate::common::{KubeSim, Server, hpctl_json, wait_until};

/// The kinds of object the Kubernetes runtime creates, as kubectl names them.
const KINDS: &[&str] = &["statefulsets", "jobs", "pods", "services", "secrets"];

/// The three policies, as a process's name and its `restart_policy`.
const POLICIES: &[(&str, &str)] = &[("always", "always"), ("onfailure", "on_failure"), ("never", "never")];

fn server_on(sim: &KubeSim) -> Server {
    Server::start_with_config(sim.directory(), &sim.hydroplane_config(""))
}

/// Starts `name` with `policy` through hpctl, with a port (so a Service) and a secret-free env.
fn start(server: &Server, sim: &KubeSim, name: &str, policy: &str, extra: serde_json::Value) {
    let mut spec = serde_json::json!({"process_name": name, "group": "lossy", "restart_policy": policy,
        "container": {"image_uri": "nginx", "ports": [{"container_port": 80}]}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let path = sim.directory().join(format!("{name}.json"));
    std::fs::write(&path, spec.to_string()).expect("write the spec");
    hpctl_json(server, &["start", path.to_str().expect("path")]);
}

/// The process `name` as `hpctl list` shows it, if it is listed.
fn listed(server: &Server, name: &str) -> Option<serde_json::Value> {
    let list = hpctl_json(server, &["list"]);
    list.as_array()?.iter().find(|process| process["process_name"] == name).cloned()
}

/// Waits until `hpctl list` shows `name` with `status`; returns it.
#[track_caller]
fn wait_status(server: &Server, name: &str, status: &str) -> serde_json::Value {
    let mut last = None;
    let mut reached = None;
    wait_until(&format!("{name} {status}"), Duration::from_secs(60), || {
        last = listed(server, name);
        let done = last.as_ref().is_some_and(|process| process["status"] == status);
        if done {
            reached = last.clone();
        }
        done
    });
    reached.unwrap_or_else(|| panic!("{name} never {status}: {last:?}"))
}

/// The Pods of a process, as kubectl lists them: (name, node, uid), not being deleted.
fn pods_of(sim: &KubeSim, name: &str) -> Vec<(String, String, String)> {
    let selector = format!("hydroplane/process-id={name}");
    let list: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "pods", "-l", &selector, "-o", "json"])).expect("json");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .map(|pod| {
            let field =
                |pointer: &str| pod.pointer(pointer).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            (field("/metadata/name"), field("/spec/nodeName"), field("/metadata/uid"))
        })
        .collect()
}

/// Every object of the runtime's kinds left in the namespace.
fn objects_left(sim: &KubeSim) -> Vec<String> {
    KINDS
        .iter()
        .flat_map(|kind| sim.names(kind).into_iter().map(move |name| format!("{kind}/{name}")))
        .collect()
}

/// How a process's Pod is lost.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Loss {
    /// `kubectl delete pod`.
    Deleted,
    /// The Eviction subresource, as `kubectl drain` uses it.
    Evicted,
    /// Its node deleted (`kubectl delete node`).
    NodeDeleted,
}

impl Loss {
    /// The reason a `NEVER` process shows after this loss.
    fn reason(self) -> &'static str {
        match self {
            Loss::Deleted => "PodDeleted",
            Loss::Evicted => "Evicted",
            Loss::NodeDeleted => "NodeLost",
        }
    }
}

/// Starts one process per policy, stops the server, loses their Pods, starts a server again:
/// `ALWAYS` and `ON_FAILURE` are RUNNING again on new Pods, `NEVER` is FAILED with the reason
/// (its Pod kept, marked for deletion, by Hydroplane's finalizer); Stop of the group then
/// leaves nothing behind.
fn check_loss(loss: Loss) {
    // Four nodes, the fourth cordoned while the processes start so that it is free for their
    // replacements when the others go.
    let sim = KubeSim::start(&["--nodes", "4", "--pod-start-delay-ms", "100"]);
    sim.kubectl(&["cordon", "node-4"]);
    let mut server = server_on(&sim);
    for (name, policy) in POLICIES {
        start(&server, &sim, name, policy, serde_json::json!({}));
    }
    let mut before = Vec::new();
    for (name, _) in POLICIES {
        wait_status(&server, name, "RUNNING");
        let pods = pods_of(&sim, name);
        assert_eq!(pods.len(), 1, "{name}: one Pod: {pods:?}");
        before.push(pods[0].clone());
    }
    assert_eq!(before[0].0, "always-0", "a StatefulSet's Pod");
    assert!(before[1].0.starts_with("onfailure-"), "a Job's Pod: {:?}", before[1]);
    assert_eq!(before[2].0, "never", "a bare Pod named after the process");

    server.terminate();
    sim.kubectl(&["uncordon", "node-4"]);
    for (pod, node, _) in &before {
        match loss {
            Loss::Deleted => {
                sim.kubectl(&["delete", "pod", pod, "--wait=false"]);
            }
            Loss::Evicted => {
                let eviction = sim.directory().join(format!("{pod}-eviction.json"));
                let body = serde_json::json!({"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod, "namespace": "default"}});
                std::fs::write(&eviction, body.to_string()).expect("write the eviction");
                let path = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
                sim.kubectl(&["create", "--raw", &path, "-f", eviction.to_str().expect("path")]);
            }
            Loss::NodeDeleted => {
                let _ = sim.kubectl_command().args(["delete", "node", node, "--wait=false"]).output();
            }
        }
    }
    // The bare Pod stays, marked for deletion, while no server runs: its finalizer holds it.
    let kept: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "pod", "never", "-o", "json"])).expect("json");
    assert!(!kept["metadata"]["deletionTimestamp"].is_null(), "{loss:?}: {kept}");
    // The controllers make the Pods again while no server runs.
    for (index, (name, _)) in POLICIES.iter().take(2).enumerate() {
        wait_until(&format!("{name} has a new Pod"), Duration::from_secs(30), || {
            pods_of(&sim, name).iter().any(|(_, _, uid)| *uid != before[index].2)
        });
    }

    let server = server_on(&sim);
    let always = wait_status(&server, "always", "RUNNING");
    let on_failure = wait_status(&server, "onfailure", "RUNNING");
    if let Loss::NodeDeleted = loss {
        assert_eq!(always["node"], "node-4", "made again on the node left: {always}");
        assert_eq!(on_failure["node"], "node-4", "{on_failure}");
    }
    // A Job counts the Pod it replaced.
    assert!(on_failure["restart_count"].as_u64() >= Some(1), "{loss:?}: {on_failure}");
    let history = hpctl_json(&server, &["describe", "always"]).to_string();
    assert!(history.contains("SuccessfulCreate"), "{loss:?}: the StatefulSet's Events: {history}");
    // A bare Pod is not made again: the process is FAILED, saying why.
    let never = wait_status(&server, "never", "FAILED");
    assert_eq!(never["reason"], loss.reason(), "{never}");
    assert!(never["message"].as_str().is_some_and(|message| message.contains("NEVER")), "{never}");
    if loss == Loss::NodeDeleted {
        let message = never["message"].as_str().unwrap_or_default();
        assert!(message.contains(&before[2].1), "names its node: {never}");
    }

    let stopped = hpctl_json(&server, &["stop", "lossy", "-g"]);
    assert_eq!(stopped, serde_json::json!(["always", "never", "onfailure"]), "{loss:?}");
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
}

#[test]
fn pods_deleted_while_no_server_runs_come_back_under_their_controllers() {
    check_loss(Loss::Deleted);
}

#[test]
fn pods_evicted_while_no_server_runs_come_back_under_their_controllers() {
    check_loss(Loss::Evicted);
}

#[test]
fn pods_lost_with_their_node_while_no_server_runs_come_back_under_their_controllers() {
    check_loss(Loss::NodeDeleted);
}

#[test]
fn stop_by_name_leaves_no_object_of_any_policy_behind() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    for (name, policy) in POLICIES {
        start(&server, &sim, name, policy, serde_json::json!({}));
        wait_status(&server, name, "RUNNING");
    }
    let set: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "statefulset", "always", "-o", "json"])).expect("json");
    assert_eq!(set["metadata"]["labels"]["app.kubernetes.io/managed-by"], "hydroplane");
    assert_eq!(set["spec"]["template"]["metadata"]["labels"]["hydroplane/group-id"], "lossy");
    let service: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "service", "onfailure", "-o", "json"])).expect("json");
    assert_eq!(service["metadata"]["ownerReferences"][0]["kind"], "Job");
    for (name, _) in POLICIES {
        assert_eq!(hpctl_json(&server, &["stop", name]), serde_json::json!([name]));
    }
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
}

#[test]
fn probes_keep_a_process_out_of_running_or_restart_it_and_max_run_seconds_ends_it() {
    let sim = KubeSim::start(&["--crash-loop-backoff-ms", "100"]);
    let server = server_on(&sim);
    let check = serde_json::json!({"http_get": {"port": 80, "path": "/healthz"}});
    start(&server, &sim, "probed", "always", serde_json::json!({"readiness": check, "liveness": check}));
    wait_status(&server, "probed", "RUNNING");
    let set_probes =
        |body: serde_json::Value| sim.admin("POST", "pods/default/probed-0/probes", &body.to_string());
    set_probes(serde_json::json!({"readiness": false, "message": "HTTP probe failed with statuscode: 503"}));
    wait_status(&server, "probed", "STARTING");
    set_probes(serde_json::json!({"readiness": true}));
    wait_status(&server, "probed", "RUNNING");
    set_probes(serde_json::json!({"liveness": false}));
    wait_until("a restart", Duration::from_secs(30), || {
        listed(&server, "probed").is_some_and(|process| {
            process["restart_count"].as_u64() >= Some(1) && process["status"] == "RUNNING"
        })
    });

    // A Job's deadline: FAILED with DeadlineExceeded within 2 s and the stop grace.
    start(&server, &sim, "limited", "on_failure", serde_json::json!({"max_run_seconds": 2}));
    let begun = std::time::Instant::now();
    let failed = wait_status(&server, "limited", "FAILED");
    assert_eq!(failed["reason"], "DeadlineExceeded", "{failed}");
    assert!(begun.elapsed() < Duration::from_secs(2 + 30), "{:?}", begun.elapsed());

    // A StatefulSet's Pod has no deadline of its own: the server scales it to zero in time.
    start(&server, &sim, "limited-always", "always", serde_json::json!({"max_run_seconds": 2}));
    let begun = std::time::Instant::now();
    let failed = wait_status(&server, "limited-always", "FAILED");
    assert_eq!(failed["reason"], "DeadlineExceeded", "{failed}");
    assert!(begun.elapsed() < Duration::from_secs(2 + 30), "{:?}", begun.elapsed());
    wait_until("its Pod gone", Duration::from_secs(30), || pods_of(&sim, "limited-always").is_empty());
    assert_eq!(
        listed(&server, "limited-always").map(|process| process["status"].clone()),
        Some("FAILED".into())
    );
    // The same Start again answers the ended process; Stop leaves nothing.
    start(&server, &sim, "limited-always", "always", serde_json::json!({"max_run_seconds": 2}));
    assert!(sim.names("pods").iter().all(|pod| pod != "limited-always-0"), "not started again");
    for name in ["probed", "limited", "limited-always"] {
        assert_eq!(hpctl_json(&server, &["stop", name]), serde_json::json!([name]));
    }
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
}

#[test]
fn a_lost_never_process_can_be_stopped_by_name_and_started_again() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    start(&server, &sim, "once", "never", serde_json::json!({}));
    wait_status(&server, "once", "RUNNING");
    sim.kubectl(&["delete", "pod", "once", "--wait=false"]);
    let failed = wait_status(&server, "once", "FAILED");
    assert_eq!(failed["reason"], "PodDeleted", "{failed}");
    // The same Start answers the FAILED process rather than refusing a name being stopped.
    start(&server, &sim, "once", "never", serde_json::json!({}));
    assert_eq!(hpctl_json(&server, &["stop", "once"]), serde_json::json!(["once"]));
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
    // Stopped by Hydroplane, a Pod is not kept: a new process of the name starts.
    start(&server, &sim, "once", "never", serde_json::json!({}));
    wait_status(&server, "once", "RUNNING");
    assert_eq!(hpctl_json(&server, &["stop", "once"]), serde_json::json!(["once"]));
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
}

#[test]
fn a_bare_pod_an_older_version_made_keeps_working_and_can_be_stopped() {
    let sim = KubeSim::start(&[]);
    // The Pod as an older Hydroplane made it: a bare Pod named after the process, whose spec
    // annotation has no restart policy.
    let spec = serde_json::json!({"process_name": "old", "container": {"image_uri": "nginx"}});
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "old",
        "labels": {"hydroplane/process-id": "old", "app.kubernetes.io/managed-by": "hydroplane"},
        "annotations": {"hydroplane/spec": spec.to_string()}},
        "spec": {"restartPolicy": "OnFailure", "containers": [{"name": "old", "image": "nginx"}]}});
    let manifest = sim.directory().join("old-pod.json");
    std::fs::write(&manifest, pod.to_string()).expect("write the pod");
    sim.kubectl(&["apply", "-f", manifest.to_str().expect("path")]);
    let server = server_on(&sim);
    wait_status(&server, "old", "RUNNING");
    // The same spec started again is that process, not a new StatefulSet beside it.
    let path = sim.directory().join("old.json");
    std::fs::write(&path, spec.to_string()).expect("write the spec");
    hpctl_json(&server, &["start", path.to_str().expect("path")]);
    assert!(sim.names("statefulsets").is_empty(), "no new object for an old process");
    assert_eq!(sim.names("pods"), ["old"]);
    assert_eq!(hpctl_json(&server, &["stop", "old"]), serde_json::json!(["old"]));
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
}

/// The objects that run a process named `name` and are not being deleted: its StatefulSet, Job
/// or bare Pod (named after it), as `kind/name`.
fn running_objects(sim: &KubeSim, name: &str) -> Vec<String> {
    ["statefulset", "job", "pod"]
        .iter()
        .filter(|kind| {
            let output = sim
                .kubectl_command()
                .args(["get", kind, name, "--ignore-not-found", "-o", "json"])
                .output()
                .expect("run kubectl");
            let text = String::from_utf8_lossy(&output.stdout);
            let object: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            object.is_object() && object["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|kind| format!("{kind}/{name}"))
        .collect()
}

#[test]
fn starts_of_one_name_with_two_policies_racing_on_two_servers_never_leave_two_objects() {
    let sim = KubeSim::start(&[]);
    let (first, second) = (server_on(&sim), server_on(&sim));
    let names: Vec<String> = (0..6).map(|index| format!("raced-{index}")).collect();
    // Half with a port: their Services share the name too. Without one, only the Start's own
    // check of the index stands between the two objects.
    let spec_file = |name: &str, policy: &str| {
        let ports = if name.ends_with(['0', '2', '4']) {
            serde_json::json!([{"container_port": 80}])
        } else {
            serde_json::json!([])
        };
        let spec = serde_json::json!({"process_name": name, "group": "lossy", "restart_policy": policy,
            "container": {"image_uri": "nginx", "ports": ports}});
        let path = sim.directory().join(format!("{name}-{policy}.json"));
        std::fs::write(&path, spec.to_string()).expect("write the spec");
        path
    };
    let files: Vec<(std::path::PathBuf, std::path::PathBuf)> =
        names.iter().map(|name| (spec_file(name, "always"), spec_file(name, "never"))).collect();
    // Both Starts of each name at once, one on each server, before either index can have seen
    // the other's object.
    let outcomes: Vec<(std::process::Output, std::process::Output)> = std::thread::scope(|scope| {
        let runs: Vec<_> = files
            .iter()
            .map(|(always, never)| {
                let first =
                    scope.spawn(|| crate::common::hpctl(&first, &["start", always.to_str().expect("path")]));
                let second =
                    scope.spawn(|| crate::common::hpctl(&second, &["start", never.to_str().expect("path")]));
                (first, second)
            })
            .collect();
        runs.into_iter()
            .map(|(first, second)| (first.join().expect("hpctl"), second.join().expect("hpctl")))
            .collect()
    });
    for (name, (always, never)) in names.iter().zip(&outcomes) {
        let said = |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!(always.status.success() && never.status.success()), "{name}: both started");
        for output in [always, never].into_iter().filter(|output| !output.status.success()) {
            let said = said(output);
            assert!(said.contains("already exists") || said.contains("try again"), "{name}: {said}");
        }
        let objects = running_objects(&sim, name);
        assert!(objects.len() <= 1, "{name}: two objects for one process: {objects:?}");
        let started = usize::from(always.status.success()) + usize::from(never.status.success());
        assert_eq!(objects.len(), started, "{name}: {objects:?}");
    }
    let stopped = hpctl_json(&first, &["stop", "lossy", "-g"]);
    assert!(stopped.as_array().is_some_and(|stopped| stopped.len() <= names.len()), "{stopped}");
    wait_until("no object left", Duration::from_secs(30), || objects_left(&sim).is_empty());
}
