//! The `kubernetes` runtime finishing what a Start left half-made, and its namespace checks: a
//! server killed with SIGKILL during 200 Starts (with 150 ms of API latency), then restarted
//! and sent the same Starts, leaves 200 complete processes and no orphans; a retried Start
//! makes each kind of missing dependent again; a missing namespace stops start-up with one line
//! and makes a call FAILED_PRECONDITION.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::requests::start_request;
use crate::common::watch::Watch;
use crate::common::{KubeSim, Server, eventually, local_secret_store};
use hydroplane::proto::{self, ProcessStatus, process_service_client::ProcessServiceClient};
use tonic::Code;
use tonic::transport::Channel;

const PASSWORD: &str = "repair test password";
const TOKEN: &str = "s3cr3t-token-value";

/// A local secret store with the secret `app` (keys `token` and `registry`).
fn store_with_app_secret(directory: &Path) -> PathBuf {
    let store = directory.join("secrets");
    let run = |args: &[&str]| {
        let output = local_secret_store(PASSWORD)
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .expect("run local-secret-store");
        assert!(
            output.status.success(),
            "local-secret-store {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&["init"]);
    let file = directory.join("app.json");
    std::fs::write(&file, format!(r#"{{"token": "{TOKEN}", "registry": "registry-password"}}"#))
        .expect("write");
    run(&["add", "-f", file.to_str().expect("path"), "app"]);
    std::fs::remove_file(&file).expect("rm");
    store
}

/// A server on the simulator with the secret store, and `namespace` when given.
fn server(sim: &KubeSim, directory: &Path, store: &Path, namespace: Option<&str>) -> Server {
    let namespace = namespace.map(|namespace| format!("  namespace: {namespace}\n")).unwrap_or_default();
    let config = format!(
        "{}{namespace}secret_store:\n  secret_store_type: local\n  store_location: {}\n",
        sim.hydroplane_config(""),
        store.display()
    );
    let path = directory.join("hydroplane.yml");
    std::fs::write(&path, config).expect("write config");
    Server::start_with_env(
        &["-c", path.to_str().expect("path")],
        &[("HYDROPLANE_SECRET_STORE_PASSWORD", PASSWORD)],
    )
}

/// A process with a port (so a Service) and a secret env var (so an env Secret).
fn web(name: &str) -> serde_json::Value {
    serde_json::json!({"process_name": name, "group": "repair", "container": {"image_uri": "nginx",
        "ports": [{"container_port": 8080}],
        "env": [{"name": "TOKEN", "value": {"secret_name": "app", "key": "token"}}]}})
}

/// Start, retried while the server answers UNAVAILABLE or ABORTED.
async fn start(client: &mut ProcessServiceClient<Channel>, spec: &serde_json::Value) -> proto::StartResponse {
    let what = format!("Start of {} gets through", spec["process_name"]);
    eventually(&what, Duration::from_secs(30), async || {
        match client.start(start_request(spec.clone())).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted) => Err(status),
            Err(status) => panic!("start {}: {status:?}", spec["process_name"]),
        }
    })
    .await
}

/// The uids of the objects of a kind by name, and the uid of the object (a StatefulSet, a Job
/// or a bare Pod) that controls each one.
fn objects(sim: &KubeSim, kind: &str) -> BTreeMap<String, (String, Option<String>)> {
    let list: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", kind, "-o", "json"])).expect("kubectl prints JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            let metadata = &item["metadata"];
            let owner = metadata["ownerReferences"]
                .as_array()
                .and_then(|owners| owners.iter().find(|owner| owner["controller"] == true))
                .and_then(|owner| owner["uid"].as_str())
                .map(str::to_owned);
            (
                metadata["name"].as_str().expect("name").to_owned(),
                (metadata["uid"].as_str().expect("uid").to_owned(), owner),
            )
        })
        .collect()
}

/// Whether a listed process is complete: RUNNING with an address.
fn reachable(process: &proto::ProcessInfo) -> bool {
    process.status() == ProcessStatus::Running && !process.socket_addresses.is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_during_200_starts_leaves_half_made_processes_that_retried_starts_finish() {
    const COUNT: usize = 200;
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50"]);
    let store = store_with_app_secret(sim.directory());
    let directory = tempfile::tempdir().expect("tempdir");
    let first = server(&sim, directory.path(), &store, None);
    let mut client = first.client().await;
    let mut watch = Watch::all(&mut client).await;
    watch.until_synced().await;
    sim.faults(serde_json::json!({"latency_ms": 150}));

    // Starts sent a few milliseconds apart, so that at the kill some are complete, some have
    // only their Pod or their Pod and Secret, and some have nothing yet.
    let specs: Vec<serde_json::Value> = (0..COUNT).map(|index| web(&format!("p{index:03}"))).collect();
    let mut calls = Vec::new();
    for spec in &specs {
        let mut client = client.clone();
        let request = start_request(spec.clone());
        calls.push(tokio::spawn(async move { client.start(request).await.map(|_| ()) }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Early, so that even on a loaded machine, where the Watch lags, most Starts are unfinished.
    watch.until_view("a tenth of the pods exist", |view| view.len() >= COUNT / 10).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first.pid()), nix::sys::signal::Signal::SIGKILL)
        .expect("kill the server");
    for call in calls {
        let _ = call.await;
    }
    drop(first);
    sim.faults(serde_json::json!({"latency_ms": 0}));

    // Restarted (by then, requests the simulator was still delaying are done), the server shows
    // the half-made ones as such: STARTING, Incomplete.
    let second_directory = tempfile::tempdir().expect("tempdir");
    let second = server(&sim, second_directory.path(), &store, None);
    let pods = objects(&sim, "statefulsets");
    let services = objects(&sim, "services");
    assert!(
        services.len() < pods.len(),
        "some pods lack their service: {} pods, {} services",
        pods.len(),
        services.len()
    );
    let mut client = second.client().await;
    let mut watch = Watch::all(&mut client).await;
    let view = watch.until_view("the restarted server's snapshot", |_| true).await;
    let incomplete: Vec<&proto::ProcessInfo> = view.values().filter(|p| p.reason() == "Incomplete").collect();
    assert!(!incomplete.is_empty(), "half-made processes are shown as such");
    for process in &incomplete {
        assert_eq!(process.status(), ProcessStatus::Starting, "{process:?}");
        assert!(process.socket_addresses.is_empty());
        assert!(process.message().contains("retrying the same Start finishes it"), "{}", process.message());
    }

    // The same Starts again, at once.
    let calls = specs.iter().map(|spec| {
        let mut client = client.clone();
        async move { start(&mut client, spec).await }
    });
    let created: usize =
        futures::future::join_all(calls).await.iter().map(|response| usize::from(response.created)).sum();
    eprintln!(
        "after the kill: {} pods, {} services; {created} created by the retried Starts, {} finished",
        pods.len(),
        services.len(),
        pods.len() - services.len()
    );
    assert_eq!(created, COUNT - pods.len(), "only the processes the kill left no pod of are created");
    watch
        .until_view("every process is complete", |view| view.len() == COUNT && view.values().all(reachable))
        .await;

    // Complete on the cluster: a Service and an env Secret per Pod, owned by it; no orphans.
    let pods = objects(&sim, "statefulsets");
    let services = objects(&sim, "services");
    let secrets = objects(&sim, "secrets");
    assert_eq!(pods.len(), COUNT);
    assert_eq!(services.keys().collect::<Vec<_>>(), pods.keys().collect::<Vec<_>>(), "one service per pod");
    let expected_secrets: BTreeSet<String> = pods.keys().map(|name| format!("{name}-env")).collect();
    assert_eq!(secrets.keys().cloned().collect::<BTreeSet<_>>(), expected_secrets, "one env secret per pod");
    for (name, (_, owner)) in &services {
        assert_eq!(owner.as_ref(), Some(&pods[name].0), "service {name} is owned by its pod");
    }
    for (name, (_, owner)) in &secrets {
        let pod = name.trim_end_matches("-env");
        assert_eq!(owner.as_ref(), Some(&pods[pod].0), "secret {name} is owned by its pod");
    }
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert_eq!(listed.len(), COUNT);
    assert!(listed.iter().all(reachable), "each is listed with its address");
    assert!(!second.stderr().contains(TOKEN), "no secret value in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_start_makes_each_missing_dependent_again() {
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50"]);
    let store = store_with_app_secret(sim.directory());
    let server = server(&sim, sim.directory(), &store, None);
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    let mut full = web("full");
    full["container"]["username"] = "robot".into();
    full["container"]["password"] = serde_json::json!({"secret_name": "app", "key": "registry"});
    assert!(start(&mut client, &full).await.created);
    watch.until_process("full", "complete", |_, process| reachable(process)).await;
    // Under the default policy the StatefulSet owns what the process has.
    let pod_uid = objects(&sim, "statefulsets")["full"].0.clone();
    let owned_by_pod =
        |kind: &str, name: &str| objects(&sim, kind).get(name).and_then(|(_, owner)| owner.clone());

    // The Service alone: the index sees it go and says so; a retried Start makes it again.
    sim.kubectl(&["delete", "service", "full"]);
    let half = watch.until_process("full", "incomplete", |_, process| process.reason() == "Incomplete").await;
    assert_eq!(half.status(), ProcessStatus::Starting);
    assert!(half.message().contains("Service `full` is missing"), "{}", half.message());
    assert!(half.socket_addresses.is_empty());
    assert!(!start(&mut client, &full).await.created);
    watch.until_process("full", "complete again", |_, process| reachable(process)).await;
    assert_eq!(owned_by_pod("services", "full").as_deref(), Some(pod_uid.as_str()));

    // Everything the Pod owns, as a server killed right after the Pod leaves it.
    sim.kubectl(&["delete", "service/full", "secret/full-env", "secret/full-registry"]);
    watch.until_process("full", "incomplete", |_, process| process.reason() == "Incomplete").await;
    assert!(!start(&mut client, &full).await.created);
    watch.until_process("full", "complete again", |_, process| reachable(process)).await;
    for (kind, name) in [("services", "full"), ("secrets", "full-env"), ("secrets", "full-registry")] {
        assert_eq!(owned_by_pod(kind, name).as_deref(), Some(pod_uid.as_str()), "{kind}/{name} made again");
    }
    let secret: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "secret", "full-env", "-o", "json"])).expect("json");
    use base64::Engine as _;
    let value = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["TOKEN"].as_str().expect("the value"))
        .expect("base64");
    assert_eq!(value, TOKEN.as_bytes(), "the secret value is resolved again");

    // No ports, so no Service to vouch for the Secret: a retried Start makes it again.
    // A bare Pod (NEVER), put back by hand below as an older server would have left it.
    let job = serde_json::json!({"process_name": "job", "restart_policy": "never", "container": {"image_uri": "busybox",
        "env": [{"name": "TOKEN", "value": {"secret_name": "app", "key": "token"}}]}});
    assert!(start(&mut client, &job).await.created);
    let job_uid = objects(&sim, "pods")["job"].0.clone();
    sim.kubectl(&["delete", "secret", "job-env"]);
    assert!(!start(&mut client, &job).await.created);
    assert_eq!(owned_by_pod("secrets", "job-env").as_deref(), Some(job_uid.as_str()));

    // A Pod made, and its Secret never (the Pod as the server made it, put back by hand): the
    // kubelet cannot create its container, the index names the Secret, a retried Start makes
    // it, and the process runs.
    let mut pod: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "pod", "job", "-o", "json"])).expect("json");
    // Its finalizer first, which keeps a NEVER Pod deleted by anyone but Stop (as FAILED).
    sim.kubectl(&[
        "patch",
        "pod",
        "job",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    sim.kubectl(&["delete", "pod", "job", "--cascade=foreground"]);
    sim.wait_deleted(&["pod/job", "secret/job-env"]);
    watch.until_process("job", "gone", |kind, _| kind == proto::WatchEventType::Deleted).await;
    let metadata = pod["metadata"].as_object_mut().expect("metadata");
    for field in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"] {
        metadata.remove(field);
    }
    pod.as_object_mut().expect("pod").remove("status");
    let manifest = sim.directory().join("job.json");
    std::fs::write(&manifest, pod.to_string()).expect("write");
    sim.kubectl(&["apply", "-f", manifest.to_str().expect("path")]);
    let half = watch.until_process("job", "incomplete", |_, process| process.reason() == "Incomplete").await;
    assert_eq!(half.status(), ProcessStatus::Starting);
    assert!(half.message().contains("Secret `job-env` is missing"), "{}", half.message());
    assert!(!start(&mut client, &job).await.created);
    watch.until_process("job", "running", |_, process| process.status() == ProcessStatus::Running).await;
    assert!(!server.stderr().contains(TOKEN), "no secret value in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_namespace_stops_start_up_and_one_deleted_later_is_a_failed_precondition() {
    let sim = KubeSim::start(&[]);
    let store = store_with_app_secret(sim.directory());
    let config = sim.directory().join("missing.yml");
    std::fs::write(&config, sim.hydroplane_config("  namespace: nowhere\n")).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-p", "0", "-c", config.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run hydroplane");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(
        errors[0].starts_with("error: ") && errors[0].contains("namespace `nowhere` does not exist"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening"), "it never served");

    // The namespace exists at start-up, then goes: a Start names it, and is not UNAVAILABLE.
    // `kubectl create namespace` sends protobuf, which the simulator does not speak.
    let manifest = sim.directory().join("procs.yaml");
    std::fs::write(&manifest, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: procs\n").expect("write");
    sim.kubectl(&["apply", "-f", manifest.to_str().expect("path")]);
    let server = server(&sim, sim.directory(), &store, Some("procs"));
    let mut client = server.client().await;
    assert!(
        start(
            &mut client,
            &serde_json::json!({"process_name": "early", "container": {"image_uri": "nginx"}})
        )
        .await
        .created
    );
    sim.kubectl(&["delete", "namespace", "procs"]);
    let error = client
        .start(start_request(
            serde_json::json!({"process_name": "late", "container": {"image_uri": "nginx"}}),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("namespace `procs` does not exist"), "{}", error.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_that_may_not_read_namespaces_still_find_a_missing_one() {
    // Over TLS, as real clusters are: kubectl sends no bearer token over plain HTTP.
    let sim = KubeSim::start(&["--tls", "--token", "admin-token", "--namespaced-token", "role-token"]);
    let kubeconfig = std::fs::read_to_string(&sim.kubeconfig).expect("read kubeconfig");
    let role = sim.directory().join("role-kubeconfig");
    std::fs::write(&role, kubeconfig.replace("admin-token", "role-token")).expect("write");
    let config = |namespace: &str| {
        format!(
            "runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n  namespace: {namespace}\n",
            role.display()
        )
    };

    // A dry-run Pod in the namespace finds it missing.
    let path = sim.directory().join("missing.yml");
    std::fs::write(&path, config("nowhere")).expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-p", "0", "-c", path.to_str().expect("path")])
        .stdin(Stdio::null())
        .output()
        .expect("run hydroplane");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("namespace `nowhere` does not exist"), "{stderr}");

    // And lets an existing one through, storing nothing.
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(directory.path(), &config("default"));
    let mut client = server.client().await;
    let started =
        start(&mut client, &serde_json::json!({"process_name": "ok", "container": {"image_uri": "nginx"}}))
            .await;
    assert!(started.created);
    assert_eq!(sim.names("pods"), ["ok-0"], "the dry-run pod was not stored, only the StatefulSet's");
    assert!(!server.stderr().contains("cannot tell whether the namespace exists"), "{}", server.stderr());
}
