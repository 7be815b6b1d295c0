//! End to end on the `kubernetes` runtime: the real server against the Kubernetes API simulator
//! (`kube-sim`), checked with the real `kubectl`.

use std::collections::BTreeMap;

use crate::common::requests::{start_request, stop_group};
use crate::common::watch::Watch;
use crate::common::{self, KubeSim, Server, hpctl, hpctl_json};
use hydroplane::proto::{self, ProcessStatus, WatchEventType};
use tonic::Code;

fn server_on(sim: &KubeSim, directory: &std::path::Path) -> Server {
    Server::start_with_config(directory, &sim.hydroplane_config(""))
}

#[test]
fn the_nginx_example_is_one_stateful_set_and_one_node_port_service_and_stop_leaves_nothing() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim, sim.directory());
    assert_eq!(hpctl_json(&server, &["list"]), serde_json::json!([]));
    let nginx = common::repo_root().join("examples/nginx.json");
    let started = hpctl_json(&server, &["start", nginx.to_str().expect("path")]);
    assert_eq!(started["process_name"], "nginx");

    // Restart policy ALWAYS (the default): a StatefulSet of one, whose Pod is `nginx-0`.
    assert_eq!(sim.names("statefulsets"), ["nginx"]);
    assert_eq!(sim.names("pods"), ["nginx-0"]);
    assert_eq!(sim.names("services"), ["nginx"]);
    let service: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "service", "nginx", "-o", "json"])).expect("json");
    assert_eq!(service["spec"]["type"], "NodePort");
    let node_port = service["spec"]["ports"][0]["nodePort"].as_u64().expect("a node port");
    assert_eq!(service["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
    let pod: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "pod", "nginx-0", "-o", "json"])).expect("json");
    assert_eq!(pod["metadata"]["labels"]["hydroplane/process-id"], "nginx");
    assert_eq!(pod["metadata"]["labels"]["app.kubernetes.io/managed-by"], "hydroplane");
    let node_name = pod["spec"]["nodeName"].as_str().expect("the pod is scheduled");
    let node: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "node", node_name, "-o", "json"])).expect("json");
    let external_ip = node["status"]["addresses"]
        .as_array()
        .and_then(|addresses| addresses.iter().find(|address| address["type"] == "ExternalIP"))
        .and_then(|address| address["address"].as_str())
        .expect("the node has an ExternalIP")
        .to_owned();

    let listed = hpctl_json(&server, &["list"]);
    let addresses = &listed[0]["socket_addresses"];
    assert_eq!(addresses.as_array().map(Vec::len), Some(1), "only the pod's node: {listed}");
    assert_eq!(addresses[0]["host"], external_ip.as_str());
    assert_eq!(addresses[0]["port"], node_port);
    assert_eq!(addresses[0]["is_public"], true);
    assert_eq!(listed[0]["node"], node_name);

    assert_eq!(hpctl_json(&server, &["stop", "nginx"]), serde_json::json!(["nginx"]));
    sim.wait_deleted(&["statefulset/nginx", "pod/nginx-0", "service/nginx"]);
    assert!(sim.kubectl(&["get", "all"]).trim().is_empty(), "kubectl get all is empty");
    let after = hpctl_json(&server, &["list"]);
    assert!(after == serde_json::json!([]) || after[0]["status"] == "STOPPING", "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_follows_the_pod_through_a_crash_loop_to_deletion() {
    let sim = KubeSim::start(&["--pod-start-delay-ms", "300"]);
    let server = server_on(&sim, sim.directory());
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, "crasher").await;
    let spec = serde_json::json!({"process_name": "crasher", "group": "g", "container": {
        "image_uri": "busybox", "command": ["sh", "-c", "exit 1"]}});
    client.start(start_request(spec)).await.expect("start");
    watch.until_process("crasher", "STARTING", |_, info| info.status() == ProcessStatus::Starting).await;
    watch.until_process("crasher", "RUNNING", |_, info| info.status() == ProcessStatus::Running).await;

    sim.patch_pod_status(
        "crasher-0",
        serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "crasher", "image": "busybox", "imageID": "", "ready": false,
                "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff",
                "message": "back-off 40s restarting failed container"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
    );
    let failed =
        watch.until_process("crasher", "FAILED", |_, info| info.status() == ProcessStatus::Failed).await;
    assert_eq!(failed.reason(), "CrashLoopBackOff");
    assert_eq!(failed.restart_count, 3);
    assert!(failed.message().contains("back-off"), "{failed:?}");

    client.stop(stop_group("g")).await.expect("stop");
    watch.until_process("crasher", "DELETED", |kind, _| kind == WatchEventType::Deleted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_and_addresses_follow_the_cluster() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim, sim.directory());
    let mut client = server.client().await;
    // A bare Pod (NEVER), so that the statuses patched below are the process's own and no
    // controller replaces the Pod once it has ended.
    let spec = serde_json::json!({"process_name": "private", "restart_policy": "never", "container": {
        "image_uri": "busybox", "ports": [{"container_port": 8080, "name": "http"}, {"container_port": 9090}]}});
    let started = client.start(start_request(spec.clone())).await.expect("start").into_inner();
    assert!(started.created);
    let again = client.start(start_request(spec.clone())).await.expect("start again").into_inner();
    assert!(!again.created, "a retried Start returns the existing process");
    let mut different = spec;
    different["container"]["image_uri"] = "other".into();
    let error = client.start(start_request(different)).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists);
    assert!(error.message().contains("container.image_uri"), "{}", error.message());

    let process =
        client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes.remove(0);
    let addresses: Vec<(String, u32, bool, String)> = process
        .socket_addresses
        .iter()
        .map(|address| (address.host.clone(), address.port, address.is_public, address.dns_name().to_owned()))
        .collect();
    let service: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "service", "private", "-o", "json"])).expect("json");
    let cluster_ip = service["spec"]["clusterIP"].as_str().expect("cluster IP").to_owned();
    assert_eq!(service["spec"]["type"], "ClusterIP");
    let dns = "private.default.svc.cluster.local".to_owned();
    assert_eq!(addresses, [(cluster_ip.clone(), 8080, false, dns.clone()), (cluster_ip, 9090, false, dns)]);

    let mut watch = Watch::process(&mut client, "private").await;
    for (status, expected, reason, exit_code) in [
        (
            serde_json::json!({"phase": "Pending", "containerStatuses": [{"name": "private", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}),
            ProcessStatus::Failed,
            "ImagePullBackOff",
            None,
        ),
        (
            serde_json::json!({"phase": "Running", "containerStatuses": [{"name": "private", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 1,
                "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}),
            ProcessStatus::Failed,
            "OOMKilled",
            Some(137),
        ),
        (
            serde_json::json!({"phase": "Succeeded", "containerStatuses": [{"name": "private", "image": "busybox",
                "imageID": "", "ready": false, "restartCount": 1,
                "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}),
            ProcessStatus::Exited,
            "Completed",
            Some(0),
        ),
    ] {
        sim.patch_pod_status("private", status);
        let process = watch
            .until_process("private", &format!("{expected:?} {reason}"), |_, p| {
                p.status() == expected && p.reason() == reason
            })
            .await;
        assert_eq!(process.exit_code, exit_code);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_that_fails_half_way_leaves_no_orphan() {
    let sim = KubeSim::start(&[]);
    // A Service Hydroplane did not make takes the name, so creating the process's Service fails
    // after its Pod was created.
    let manifest = sim.directory().join("clash.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash\nspec:\n  ports:\n  - port: 80\n",
    )
    .expect("write");
    sim.kubectl(&["apply", "-f", manifest.to_str().expect("path")]);
    let server = server_on(&sim, sim.directory());
    let mut client = server.client().await;
    let spec = serde_json::json!({"process_name": "clash", "container": {"image_uri": "nginx", "ports": [{"container_port": 80}]}});
    let error = client.start(start_request(spec)).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");
    assert!(error.message().contains("service"), "{}", error.message());
    sim.wait_deleted(&["statefulset/clash", "pod/clash-0"]);
    assert!(sim.names("statefulsets").is_empty(), "the half-made StatefulSet is deleted");
    assert!(sim.names("pods").is_empty(), "and its Pod");
    assert_eq!(sim.names("services"), ["clash"], "the other service is left alone");
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert!(listed.iter().all(|process| process.status() == ProcessStatus::Stopping), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_see_the_same_processes_and_a_restart_loses_nothing() {
    let sim = KubeSim::start(&[]);
    let first_directory = tempfile::tempdir().expect("tempdir");
    let second_directory = tempfile::tempdir().expect("tempdir");
    let mut first = server_on(&sim, first_directory.path());
    let second = server_on(&sim, second_directory.path());
    let mut second_client = second.client().await;
    let mut second_watch = Watch::all(&mut second_client).await;
    let directory = tempfile::tempdir().expect("tempdir");
    for name in ["one", "two"] {
        let path = directory.path().join(format!("{name}.json"));
        let spec =
            serde_json::json!({"process_name": name, "group": "shared", "container": {"image_uri": "nginx"}});
        std::fs::write(&path, spec.to_string()).expect("write");
        hpctl_json(&first, &["start", "--wait", path.to_str().expect("path")]);
    }
    let names = |server: &Server| -> Vec<String> {
        let listed = hpctl_json(server, &["list"]);
        listed
            .as_array()
            .expect("array")
            .iter()
            .map(|p| p["process_name"].as_str().expect("name").to_owned())
            .collect()
    };
    second_watch
        .until_view("the second server sees both", |view| view.keys().map(String::as_str).eq(["one", "two"]))
        .await;
    assert_eq!(names(&second), ["one", "two"]);

    assert_eq!(first.terminate(), Some(0));
    assert_eq!(sim.names("statefulsets"), ["one", "two"], "processes on a cluster outlive the server");
    let restarted = server_on(&sim, first_directory.path());
    assert_eq!(names(&restarted), ["one", "two"]);
    let created: BTreeMap<String, String> = hpctl_json(&restarted, &["list"])
        .as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["process_name"].as_str().expect("name").to_owned(),
                p["created"].as_str().expect("created").to_owned(),
            )
        })
        .collect();
    assert_eq!(created.len(), 2);

    let mut restarted_client = restarted.client().await;
    let mut restarted_watch = Watch::all(&mut restarted_client).await;
    assert_eq!(hpctl_json(&second, &["stop", "-g", "shared"]), serde_json::json!(["one", "two"]));
    restarted_watch
        .until_view("the restarted server sees them go", |view| {
            view.values().all(|process| process.status() == ProcessStatus::Stopping)
        })
        .await;
    let after = hpctl_json(&restarted, &["list"]);
    assert!(
        after.as_array().is_some_and(|processes| processes.iter().all(|p| p["status"] == "STOPPING")),
        "{after}"
    );
    let output = hpctl(&restarted, &["stop", "ghost"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("`ghost` does not exist"));
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_and_missing_permissions_are_clear() {
    // Over TLS, as real clusters are: kubectl sends no bearer token over plain HTTP.
    let sim = KubeSim::start(&["--tls", "--token", "admin-token", "--read-only-token", "reader-token"]);
    let kubeconfig = std::fs::read_to_string(&sim.kubeconfig).expect("read kubeconfig");
    assert!(kubeconfig.contains("admin-token"), "the simulator writes its first token");

    // A token the cluster does not know: the server says so at start-up and exits.
    let wrong = sim.directory().join("wrong-kubeconfig");
    std::fs::write(&wrong, kubeconfig.replace("admin-token", "stolen-token")).expect("write");
    let config = sim.directory().join("wrong.yml");
    std::fs::write(
        &config,
        format!("runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n", wrong.display()),
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-p", "0", "-c", config.to_str().expect("path")])
        .output()
        .expect("run hydroplane");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused our credentials"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"));

    // A token that may only read: List works, Start is PERMISSION_DENIED with the cluster's word.
    let reader = sim.directory().join("reader-kubeconfig");
    std::fs::write(&reader, kubeconfig.replace("admin-token", "reader-token")).expect("write");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(
        directory.path(),
        &format!("runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n", reader.display()),
    );
    let mut client = server.client().await;
    client.list(proto::ListRequest::default()).await.expect("reading is allowed");
    let spec = serde_json::json!({"process_name": "denied", "container": {"image_uri": "nginx"}});
    let error = client.start(start_request(spec)).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    assert!(error.message().contains("create the statefulset"), "{}", error.message());
    assert!(sim.names("statefulsets").is_empty());
    assert!(sim.names("pods").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_shows_why_a_pod_cannot_be_scheduled() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim, sim.directory());
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, "nowhere").await;
    let spec = serde_json::json!({"process_name": "nowhere", "container": {
        "image_uri": "busybox", "node_selector": {"zone": "on-no-node"}}});
    client.start(start_request(spec.clone())).await.expect("start");
    watch.until_process("nowhere", "Unschedulable", |_, process| process.reason() == "Unschedulable").await;

    // The simulator's scheduler records its Event on its own time, as a cluster's does.
    let has_event = |detail: &serde_json::Value| {
        detail["history"]
            .as_array()
            .is_some_and(|history| history.iter().any(|entry| entry["reason"] == "FailedScheduling"))
    };
    let mut detail = serde_json::Value::Null;
    common::eventually(
        "the FailedScheduling event in the history",
        std::time::Duration::from_secs(20),
        async || {
            detail = hpctl_json(&server, &["describe", "nowhere"]);
            has_event(&detail)
        },
    )
    .await;
    let event = detail["history"]
        .as_array()
        .and_then(|history| history.iter().find(|entry| entry["reason"] == "FailedScheduling"))
        .expect("the event");
    let message = event["message"].as_str().expect("a message");
    assert!(message.contains("didn't match Pod's node affinity/selector"), "{detail:#}");
    assert!(event["status"] == "STARTING" || event["status"] == "FAILED", "{detail:#}");
    let stored: hydroplane::spec::ProcessSpec = serde_json::from_value(spec).expect("a spec");
    assert_eq!(detail["spec"], serde_json::to_value(&stored).expect("JSON"), "the spec annotation");
    assert_eq!(detail["process"]["reason"], "Unschedulable");
    let times: Vec<jiff::Timestamp> = detail["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|entry| entry["time"].as_str().expect("a time").parse().expect("RFC 3339"))
        .collect();
    assert!(times.is_sorted(), "oldest first: {detail:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_without_permission_for_events_answers_with_the_table_and_warns_once() {
    // Over TLS, as real clusters are, so that kubectl sends its token too.
    let sim = KubeSim::start(&["--tls", "--token", "admin-token", "--no-events-token", "no-events-token"]);
    let kubeconfig = std::fs::read_to_string(&sim.kubeconfig).expect("read kubeconfig");
    let restricted = sim.directory().join("no-events-kubeconfig");
    std::fs::write(&restricted, kubeconfig.replace("admin-token", "no-events-token")).expect("write");
    let directory = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with_config(
        directory.path(),
        &format!("runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n", restricted.display()),
    );
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, "nowhere").await;
    let spec = serde_json::json!({"process_name": "nowhere", "container": {
        "image_uri": "busybox", "node_selector": {"zone": "on-no-node"}}});
    client.start(start_request(spec)).await.expect("start");
    watch.until_process("nowhere", "Unschedulable", |_, process| process.reason() == "Unschedulable").await;
    for _ in 0..3 {
        let detail = hpctl_json(&server, &["describe", "nowhere"]);
        let reasons: Vec<&str> = detail["history"]
            .as_array()
            .expect("a history")
            .iter()
            .filter_map(|entry| entry["reason"].as_str())
            .collect();
        assert!(reasons.contains(&"Unschedulable"), "the table's history: {detail:#}");
        assert!(!reasons.contains(&"FailedScheduling"), "no events could be read: {detail:#}");
    }
    server.terminate();
    let stderr = server.stderr();
    assert_eq!(stderr.matches("does not let Hydroplane list Events").count(), 1, "{stderr}");
}
