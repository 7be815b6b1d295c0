//! The real `kubectl` against the simulator, through the kubeconfig it writes: apply, get,
//! get -w, status patches via `--subresource=status`, describe, delete by label, validation
//! errors, and the same over TLS with a bearer token.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::Simulator;
use common::child::Follow;
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: web
    image: nginx:1.27
    ports: [{containerPort: 80, name: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, name: http}]
"#;

/// A running `kubectl get -w` (or `logs -f`), killed on drop, whose output lines are read.
struct Watcher(Follow);

impl Watcher {
    fn start(simulator: &Simulator, args: &[&str]) -> Watcher {
        let mut command = simulator.kubectl();
        command.args(args).stderr(Stdio::inherit());
        Watcher(Follow::spawn(&format!("kubectl {}", args.join(" ")), &mut command))
    }

    /// Reads lines until one satisfies `wanted`, failing after `timeout`.
    #[track_caller]
    fn wait_for(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> String {
        self.0.wait_for(timeout, wanted)
    }
}

fn write_manifest(simulator: &Simulator) -> String {
    let path = simulator.directory().join("web.yaml");
    std::fs::write(&path, MANIFEST).expect("writing the manifest");
    path.to_string_lossy().into_owned()
}

#[track_caller]
fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn kubectl_apply_get_watch_patch_describe_delete() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "100"]);
    let manifest = write_manifest(&simulator);

    let applied = simulator.kubectl_ok(&["apply", "-f", &manifest]);
    assert!(applied.contains("pod/web created") && applied.contains("service/web created"), "{applied}");
    let again = simulator.kubectl_ok(&["apply", "-f", &manifest]);
    assert!(again.contains("pod/web unchanged"), "{again}");

    let service = json(&simulator.kubectl_ok(&["get", "service", "web", "-o", "json"]));
    let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().expect("a nodePort");
    assert!((30000..=32767).contains(&node_port));
    assert!(service["spec"]["clusterIP"].as_str().is_some_and(|ip| ip.starts_with("10.")));

    // The pod runs on its own after the start delay; get -w shows it, then a status patch.
    let watcher = Watcher::start(&simulator, &["get", "pods", "-w"]);
    watcher.wait_for(Duration::from_secs(20), |line| line.starts_with("web") && line.contains("Running"));
    let pod = json(&simulator.kubectl_ok(&["get", "pod", "web", "-o", "json"]));
    assert_eq!(pod["status"]["phase"], "Running");
    let node = pod["spec"]["nodeName"].as_str().expect("a node").to_string();
    let node_object = json(&simulator.kubectl_ok(&["get", "node", &node, "-o", "json"]));
    let internal_ip = node_object["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .clone();
    assert_eq!(pod["status"]["hostIP"], internal_ip);

    let patch = r#"{"status":{"phase":"Running","containerStatuses":[{"name":"web","ready":false,"restartCount":4,"image":"nginx:1.27","imageID":"","state":{"waiting":{"reason":"CrashLoopBackOff","message":"back-off"}}}]}}"#;
    simulator.kubectl_ok(&["patch", "pod", "web", "--subresource=status", "--type=merge", "-p", patch]);
    let line = watcher.wait_for(Duration::from_secs(20), |line| line.contains("CrashLoopBackOff"));
    assert!(line.contains(" 4"), "restart count shown: {line}");
    drop(watcher);

    // A changed manifest applies as a strategic merge patch.
    std::fs::write(&manifest, MANIFEST.replace("nginx:1.27", "nginx:1.28")).unwrap();
    let reapplied = simulator.kubectl_ok(&["apply", "-f", &manifest]);
    assert!(reapplied.contains("pod/web configured"), "{reapplied}");
    let image = simulator.kubectl_ok(&["get", "pod", "web", "-o", "jsonpath={.spec.containers[0].image}"]);
    assert_eq!(image, "nginx:1.28");
    // The client owns the status now: the simulated kubelet left it alone.
    let status = simulator.kubectl_ok(&[
        "get",
        "pod",
        "web",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
    ]);
    assert_eq!(status, "CrashLoopBackOff");

    let described = simulator.kubectl_ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Name:") && described.contains("web") && described.contains(&node),
        "{described}"
    );
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(described.contains(reason), "describe shows the {reason} event: {described}");
    }

    let labelled = simulator.kubectl_ok(&["get", "pods,services", "-l", "app=web", "-o", "name"]);
    assert_eq!(labelled.lines().collect::<Vec<_>>(), ["pod/web", "service/web"]);
    let deleted = simulator.kubectl_ok(&["delete", "pods,services", "-l", "app=web"]);
    assert!(
        deleted.contains("pod \"web\" deleted") && deleted.contains("service \"web\" deleted"),
        "{deleted}"
    );
    let left = simulator.kubectl_ok(&["get", "pods,services", "-l", "app=web", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn kubectl_sees_validation_and_allocation_errors() {
    let simulator = Simulator::start(&[]);
    let bad = simulator.directory().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}, {port: 81}]\n",
    )
    .unwrap();
    let error = simulator.kubectl_err(&["apply", "-f", &bad.to_string_lossy()]);
    assert!(error.contains("spec.ports[0].name: Required value"), "{error}");

    let first = simulator.directory().join("first.yaml");
    std::fs::write(&first, "apiVersion: v1\nkind: Service\nmetadata: {name: first}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n").unwrap();
    simulator.kubectl_ok(&["apply", "-f", &first.to_string_lossy()]);
    let clash = simulator.directory().join("clash.yaml");
    std::fs::write(&clash, "apiVersion: v1\nkind: Service\nmetadata: {name: clash}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 30080}]\n").unwrap();
    let error = simulator.kubectl_err(&["apply", "-f", &clash.to_string_lossy()]);
    assert!(
        error.contains("spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
        "{error}"
    );

    let missing = simulator.kubectl_err(&["get", "pod", "nope"]);
    assert!(missing.contains("pods \"nope\" not found"), "{missing}");
}

#[test]
fn kubectl_over_tls_with_a_token() {
    let ca = tempfile::NamedTempFile::new().unwrap();
    let ca_path = ca.path().to_string_lossy().into_owned();
    let simulator =
        Simulator::start(&["--tls", "--token", "t0ken", "--ca-out", &ca_path, "--pod-start-delay-ms", "50"]);
    let pem = std::fs::read_to_string(ca.path()).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(simulator.url.starts_with("https://127.0.0.1:"), "{}", simulator.url);
    let manifest = write_manifest(&simulator);
    simulator.kubectl_ok(&["apply", "-f", &manifest]);
    let names = simulator.kubectl_ok(&["get", "pods", "-o", "name"]);
    assert_eq!(names.trim(), "pod/web");
    let nodes = simulator.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes.lines().count(), 3);

    let denied = simulator.kubectl_err(&["--token", "wrong", "get", "pods"]);
    assert!(denied.contains("provide credentials") || denied.contains("Unauthorized"), "{denied}");
    simulator.kubectl_ok(&["delete", "-f", &manifest]);
}

#[test]
fn kubectl_wait_and_logs_with_follow() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "50"]);
    let manifest = write_manifest(&simulator);
    simulator.kubectl_ok(&["apply", "-f", &manifest]);
    simulator.kubectl_ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=20s"]);
    assert_eq!(simulator.kubectl_ok(&["logs", "web"]), "");

    let append = |text: &str| {
        let (status, response) =
            common::raw_post(simulator.port(), "/_sim/logs/default/web", "text/plain", text);
        assert_eq!(status, 200, "{response}");
    };
    append("hello\nworld\n");
    assert_eq!(simulator.kubectl_ok(&["logs", "web"]), "hello\nworld\n");
    assert_eq!(simulator.kubectl_ok(&["logs", "web", "--tail=1"]), "world\n");
    let stamped = simulator.kubectl_ok(&["logs", "web", "--timestamps"]);
    assert!(stamped.lines().all(|line| line.contains("Z ")), "{stamped}");

    let follower = Watcher::start(&simulator, &["logs", "-f", "web"]);
    follower.wait_for(Duration::from_secs(20), |line| line == "world");
    append("later");
    follower.wait_for(Duration::from_secs(20), |line| line == "later");
    drop(follower);

    // A container that has not started has no log yet.
    let pending = simulator.directory().join("pending.yaml");
    std::fs::write(
        &pending,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pending}\nspec:\n  nodeSelector: {disk: none}\n  containers: [{name: main, image: nginx}]\n",
    )
    .unwrap();
    simulator.kubectl_ok(&["apply", "-f", &pending.to_string_lossy()]);
    let error = simulator.kubectl_err(&["logs", "pending"]);
    assert!(error.contains("is waiting to start"), "{error}");
}

#[test]
fn kubectl_logs_previous_and_since_across_a_restart() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "50"]);
    let manifest = write_manifest(&simulator);
    simulator.kubectl_ok(&["apply", "-f", &manifest]);
    simulator.kubectl_ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=20s"]);
    let post = |path: &str, body: &str| {
        let (status, response) = common::raw_post(simulator.port(), path, "application/json", body);
        assert_eq!(status, 200, "{response}");
        json(response.split_once("\r\n\r\n").map_or("", |(_, body)| body))
    };
    let none = simulator.kubectl_err(&["logs", "web", "--previous"]);
    assert!(none.contains("previous terminated container \"web\" in pod \"web\" not found"), "{none}");

    post("/_sim/logs/default/web", "first run\n");
    let stamped = simulator.kubectl_ok(&["logs", "web", "--timestamps"]);
    let (stamp, _) = stamped.split_once(' ').expect("a time prefix");
    assert_eq!(simulator.kubectl_ok(&["logs", "web", &format!("--since-time={stamp}")]), "first run\n");
    assert_eq!(simulator.kubectl_ok(&["logs", "web", "--since=1h"]), "first run\n");

    assert_eq!(post("/_sim/restart/default/web", r#"{"exitCode": 137}"#)["restartCount"], 1);
    post("/_sim/logs/default/web", "second run\n");
    assert_eq!(simulator.kubectl_ok(&["logs", "web", "--previous"]), "first run\n");
    assert_eq!(simulator.kubectl_ok(&["logs", "web"]), "second run\n");
    let pod = json(&simulator.kubectl_ok(&["get", "pod", "web", "-o", "json"]));
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 1, "{status}");
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 137, "{status}");
    assert!(status["state"]["running"]["startedAt"].is_string(), "{status}");
    let (status_code, stats) = common::raw_get(simulator.port(), "/_sim/stats");
    assert_eq!(status_code, 200);
    let stats = stats.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(json(stats)["logFollowsTotal"], 0, "no follow was asked for: {stats}");
}

#[test]
fn kubectl_rollout_scale_dry_run_and_namespaces() {
    let simulator = Simulator::start(&["--pod-start-delay-ms", "30"]);
    let deployment = simulator.directory().join("deployment.yaml");
    std::fs::write(
        &deployment,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx:1.27}]}\n",
    )
    .unwrap();
    simulator.kubectl_ok(&["apply", "-f", &deployment.to_string_lossy()]);
    let rollout = simulator.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    simulator.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    simulator.kubectl_ok(&[
        "wait",
        "--for=jsonpath={.status.readyReplicas}=3",
        "deployment/web",
        "--timeout=20s",
    ]);
    assert_eq!(simulator.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "name"]).lines().count(), 3);

    // A server-side dry run validates and answers, but stores nothing.
    let manifest = write_manifest(&simulator);
    let dry = simulator.kubectl_ok(&["apply", "--dry-run=server", "-f", &manifest]);
    assert!(dry.contains("pod/web created (server dry run)"), "{dry}");
    let missing = simulator.kubectl_err(&["get", "pod", "web"]);
    assert!(missing.contains("not found"), "{missing}");

    // Deleting a namespace deletes what is in it.
    let namespace = simulator.directory().join("team.yaml");
    std::fs::write(
        &namespace,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: worker, namespace: team}\nspec: {containers: [{name: main, image: nginx}]}\n",
    )
    .unwrap();
    simulator.kubectl_ok(&["apply", "-f", &namespace.to_string_lossy()]);
    assert_eq!(simulator.kubectl_ok(&["get", "pods", "-n", "team", "-o", "name"]).trim(), "pod/worker");
    simulator.kubectl_ok(&["delete", "namespace", "team"]);
    assert!(
        simulator.kubectl_ok(&["get", "pods", "-A", "-o", "name"]).lines().all(|line| line != "pod/worker")
    );
    let forbidden = simulator.kubectl_err(&["delete", "namespace", "default"]);
    assert!(forbidden.contains("forbidden"), "{forbidden}");
}
