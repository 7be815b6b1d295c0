//! The docker runtime against a real engine (`scripts/dockerd`: the engine at `DOCKER_HOST`, or
//! a private dockerd): the real `hydroplane` binary on a free loopback port, each test on a
//! network of its own, its containers removed when it ends.

use std::time::Duration;

use hydroplane::proto::{self, ProcessStatus, WatchEventType};
use serde_json::{Value, json};
use tonic::Code;

use crate::common::docker::{BUSYBOX, DockerNetwork, EngineProxy};
use crate::common::requests::{start_request, start_waiting, stop_group, stop_process};
use crate::common::watch::Watch;
use crate::common::{
    Server, create_token, eventually, free_port, hpctl, hpctl_json, http_get, http_get_status,
    local_secret_store, repo_root, token_client, wait_until,
};

/// A name unique to this test process: container names are the engine's, shared by every test.
fn unique(base: &str) -> String {
    format!("{base}-{}", std::process::id())
}

/// A busybox process running `script` with `sh -c`.
fn shell(name: &str, script: &str) -> Value {
    json!({"process_name": name, "container": {"image_uri": BUSYBOX, "command": ["sh", "-c", script]}})
}

/// A busybox HTTP server on `port` (inside the container).
fn web(name: &str, port: u16) -> Value {
    json!({"process_name": name, "container": {"image_uri": BUSYBOX,
        "command": ["httpd", "-f", "-p", port.to_string(), "-h", "/www"],
        "ports": [{"container_port": port}]}})
}

async fn list(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
) -> Vec<proto::ProcessInfo> {
    client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes
}

async fn describe(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
    name: &str,
) -> proto::ProcessDetail {
    client
        .describe(proto::DescribeRequest { process_name: name.to_owned() })
        .await
        .expect("describe")
        .into_inner()
}

async fn logs(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
    request: proto::LogsRequest,
) -> Vec<proto::LogChunk> {
    let mut stream = client.logs(request).await.expect("logs").into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.expect("a log chunk") {
        chunks.push(chunk);
    }
    chunks
}

fn text(chunks: &[proto::LogChunk]) -> String {
    chunks.iter().map(|chunk| String::from_utf8_lossy(&chunk.data).into_owned()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_reach_each_other_by_name_and_list_watch_and_stop() {
    let engine = DockerNetwork::new("byname");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    watch.until_synced().await;

    let (server_name, caller) = (unique("srv"), unique("caller"));
    let mut spec = web(&server_name, 8080);
    spec["group"] = "pair".into();
    let started = client.start(start_waiting(spec)).await.expect("start").into_inner();
    assert!(started.created);
    let process = started.process.expect("process");
    assert_eq!(process.status(), ProcessStatus::Running, "{process:?}");
    let address = &process.socket_addresses[0];
    assert_eq!((address.host.as_str(), address.is_public), ("127.0.0.1", false), "{address:?}");
    assert_ne!(address.port, 8080, "a port the engine chose");
    assert!(http_get_status(&address.host, address.port).contains("200"));

    // The second process reaches the first by its process name on the network.
    let script = format!("wget -q -O - http://{server_name}:8080/ && sleep 300");
    let mut spec = shell(&caller, &script);
    spec["group"] = "pair".into();
    client.start(start_request(spec)).await.expect("start the caller");
    watch.until_process(&caller, "the caller runs", |_, info| info.status() == ProcessStatus::Running).await;
    let request = proto::LogsRequest { process_name: caller.clone(), follow: true, ..Default::default() };
    let mut stream = client.logs(request).await.expect("logs").into_inner();
    let mut seen = String::new();
    while !seen.contains("hello from hydroplane-test") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("the caller's output in time")
            .expect("a chunk")
            .expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    drop(stream);

    let mut names: Vec<String> = list(&mut client).await.into_iter().map(|info| info.process_name).collect();
    names.sort();
    let mut expected = vec![caller.clone(), server_name.clone()];
    expected.sort();
    assert_eq!(names, expected);

    // A container Hydroplane did not make is never listed nor touched.
    let foreign = unique("foreign");
    engine.docker_ok(&["run", "-d", "--name", &foreign, "--network", "none", BUSYBOX, "sleep", "300"]);
    let refused = client.stop(stop_process(&foreign)).await.expect_err("not ours");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let taken = client.start(start_request(shell(&foreign, "sleep 1"))).await.expect_err("taken");
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().contains("did not make"), "{taken:?}");
    assert_eq!(list(&mut client).await.len(), 2);
    engine.docker_ok(&["rm", "-f", &foreign]);

    let stopped = client.stop(stop_group("pair")).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, expected);
    assert!(list(&mut client).await.is_empty());
    assert!(engine.containers().is_empty(), "{:?}", engine.containers());
    watch
        .until_process(&server_name, "the server's DELETED", |kind, _| kind == WatchEventType::Deleted)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spec_reaches_the_container_and_start_is_idempotent_and_repairing() {
    let engine = DockerNetwork::new("fields");
    let directory = tempfile::tempdir().expect("tempdir");
    let store = directory.path().join("secrets");
    let run_store = |args: &[&str]| {
        let output = local_secret_store("pw").arg("--store").arg(&store).args(args).output().expect("store");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    run_store(&["init"]);
    let token_file = directory.path().join("token");
    std::fs::write(&token_file, "s3cr3t-token-value").expect("write");
    run_store(&["add", "-f", token_file.to_str().expect("path"), "api-token"]);
    let config = engine.config(&format!(
        "secret_store:\n  secret_store_type: local\n  store_location: {}\n",
        store.display()
    ));
    let path = directory.path().join("hydroplane.yml");
    std::fs::write(&path, config).expect("write config");
    let server = Server::start_with_env(
        &["-c", path.to_str().expect("path")],
        &[("HYDROPLANE_SECRET_STORE_PASSWORD", "pw")],
    );
    let mut client = server.client().await;

    let name = unique("fields");
    let spec = json!({"process_name": name, "group": "g1", "labels": {"tier": "back"}, "has_public_ip": true,
        "restart_policy": "on_failure",
        "container": {"image_uri": BUSYBOX, "command": ["sh", "-c", "echo \"$PLAIN $TOKEN\"; exec httpd -f -p 9000"],
            "working_dir": "/tmp",
            "env": [{"name": "PLAIN", "value": "plain-value"}, {"name": "TOKEN", "secret": {"secret_name": "api-token"}}],
            "ports": [{"container_port": 9000}],
            "resource_limit": {"cpu_vcpu": 0.5, "memory_mib": 64},
            "resource_request": {"cpu_vcpu": 0.25, "memory_mib": 32}}});
    let first = client.start(start_request(spec.clone())).await.expect("start").into_inner();
    assert!(first.created);
    let again = client.start(start_request(spec.clone())).await.expect("start again").into_inner();
    assert!(!again.created);
    let mut different = spec.clone();
    different["container"]["working_dir"] = "/".into();
    let refused = client.start(start_request(different)).await.expect_err("a different spec");
    assert_eq!(refused.code(), Code::AlreadyExists);
    assert!(refused.message().contains("container.working_dir"), "{refused:?}");

    let format = "{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{.Config.WorkingDir}}|{{.HostConfig.Memory}}|\
                  {{.HostConfig.NanoCpus}}|{{.HostConfig.MemoryReservation}}|{{.HostConfig.CpuShares}}|\
                  {{.HostConfig.RestartPolicy.Name}}|{{index .Config.Labels \"hydroplane/group-id\"}}|\
                  {{index .Config.Labels \"label.hydroplane/tier\"}}|{{(index (index .HostConfig.PortBindings \"9000/tcp\") 0).HostIp}}";
    let inspected = engine.docker_ok(&["inspect", "--format", format, &name]);
    assert_eq!(
        inspected.trim(),
        format!(
            "[\"sh\"]|[\"-c\",\"echo \\\"$PLAIN $TOKEN\\\"; exec httpd -f -p 9000\"]|/tmp|{}|500000000|{}|256|on-failure|g1|back|",
            64 * 1024 * 1024,
            32 * 1024 * 1024
        )
    );
    eventually("the process prints its environment", Duration::from_secs(30), async || {
        engine.docker_ok(&["logs", &name]).contains("plain-value s3cr3t-token-value")
    })
    .await;
    let info =
        client.start(start_request(spec.clone())).await.expect("start").into_inner().process.expect("info");
    assert!(
        info.socket_addresses.iter().all(|address| address.is_public && address.host == "0.0.0.0"),
        "{info:?}"
    );
    // The secret's value is in the container's environment only: not in its labels (the stored
    // spec keeps the reference), nor in the server's output.
    let labels = engine.docker_ok(&["inspect", "--format", "{{json .Config.Labels}}", &name]);
    assert!(!labels.contains("s3cr3t"), "{labels}");
    let detail = describe(&mut client, &name).await;
    assert!(!format!("{detail:?}").contains("s3cr3t"));

    // Stopped behind the server's back, it shows so; a Start of the same spec starts it again.
    engine.docker_ok(&["stop", "-t", "0", &name]);
    let mut watch = Watch::process(&mut client, &name).await;
    watch.until_process(&name, "the stop is seen", |_, info| info.status() != ProcessStatus::Running).await;
    let repaired = client.start(start_request(spec)).await.expect("repair").into_inner();
    assert!(!repaired.created);
    watch.until_process(&name, "running again", |_, info| info.status() == ProcessStatus::Running).await;
    assert!(!server.stderr().contains("s3cr3t"), "{}", server.stderr());

    // Removed behind the server's back, it leaves the list (the engine's events, not polling).
    engine.docker_ok(&["rm", "-f", &name]);
    watch.until_process(&name, "the removal is seen", |kind, _| kind == WatchEventType::Deleted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_host_port_is_failed_precondition_and_leaves_nothing() {
    let engine = DockerNetwork::new("hostport");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let port = free_port();
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).expect("hold the port");
    let name = unique("clash");
    let mut spec = web(&name, 80);
    spec["container"]["ports"][0]["host_port"] = port.into();
    let refused = client.start(start_request(spec)).await.expect_err("the port is taken");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&format!("host_port {port}")), "{refused:?}");
    assert!(list(&mut client).await.is_empty());
    assert!(engine.containers().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_cannot_be_pulled_is_failed_with_the_reason() {
    let engine = DockerNetwork::new("pull");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    // A loopback port that refuses: the pull fails at once, and never leaves the machine.
    let refusing = free_port();
    let name = unique("nopull");
    let spec = json!({"process_name": name, "container": {"image_uri": format!("127.0.0.1:{refusing}/nothing/here")}});
    let started = client.start(start_waiting(spec.clone())).await.expect("start").into_inner();
    let process = started.process.expect("process");
    assert_eq!(process.status(), ProcessStatus::Failed, "{process:?}");
    assert_eq!(process.reason.as_deref(), Some("ErrImagePull"), "{process:?}");
    assert!(process.message().contains("cannot pull image"), "{process:?}");
    let detail = describe(&mut client, &name).await;
    assert!(detail.history.iter().any(|step| step.reason.as_deref() == Some("ErrImagePull")), "{detail:?}");
    assert_eq!(list(&mut client).await.len(), 1);
    let again = client.start(start_request(spec)).await.expect("start again").into_inner();
    assert_eq!(again.process.expect("process").reason.as_deref(), Some("ErrImagePull"));
    let stopped = client.stop(stop_process(&name)).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, [name]);
    assert!(list(&mut client).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn exits_restarts_and_an_oom_kill_are_shown_with_their_reasons() {
    let engine = DockerNetwork::new("exits");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    watch.until_synced().await;

    let (fails, done, crashes, hungry) =
        (unique("fails"), unique("done"), unique("crashes"), unique("hungry"));
    let mut spec = shell(&fails, "exit 3");
    spec["restart_policy"] = "never".into();
    client.start(start_request(spec)).await.expect("start");
    let mut spec = shell(&done, "echo bye");
    spec["restart_policy"] = "on_failure".into();
    client.start(start_request(spec)).await.expect("start");
    let mut spec = shell(&crashes, "echo crash; exit 1");
    spec["restart_policy"] = "on_failure".into();
    client.start(start_request(spec)).await.expect("start");
    let mut spec = shell(&hungry, "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done");
    spec["restart_policy"] = "never".into();
    spec["container"]["resource_limit"] = json!({"memory_mib": 8});
    client.start(start_request(spec)).await.expect("start");

    let info = watch.until_process(&fails, "FAILED", |_, info| info.status() == ProcessStatus::Failed).await;
    assert_eq!((info.reason.as_deref(), info.exit_code), (Some("Error"), Some(3)), "{info:?}");
    let info = watch.until_process(&done, "EXITED", |_, info| info.status() == ProcessStatus::Exited).await;
    assert_eq!(info.exit_code, Some(0), "{info:?}");
    // The engine restarts it within a moment: it may be seen running again already, but its
    // count and the engine's events tell.
    // The events are answered one after the other: the inspection that shows the restart may
    // come before the `die` event is read.
    watch.until_process(&crashes, "restarted", |_, info| info.restart_count >= 1).await;
    eventually("the engine's Died event in the history", Duration::from_secs(30), async || {
        let detail = describe(&mut client, &crashes).await;
        detail.history.iter().any(|step| step.reason.as_deref() == Some("Died"))
    })
    .await;
    if engine.is_podman() {
        // Podman 4.3 on cgroup v1 reports no OOM kill (`OOMKilled` false, no `oom` event): only
        // the SIGKILL's exit code.
        let info =
            watch.until_process(&hungry, "killed", |_, info| info.status() == ProcessStatus::Failed).await;
        assert_eq!((info.reason.as_deref(), info.exit_code), (Some("Error"), Some(137)), "{info:?}");
    } else {
        let info = watch
            .until_process(&hungry, "OOM-killed", |_, info| info.reason.as_deref() == Some("OOMKilled"))
            .await;
        assert_eq!(info.status(), ProcessStatus::Failed, "{info:?}");
        assert!(info.message().contains("memory limit of 8 MiB"), "{info:?}");
        let detail = describe(&mut client, &hungry).await;
        assert!(detail.history.iter().any(|step| step.reason.as_deref() == Some("OOMKilled")), "{detail:?}");
    }
    let detail = describe(&mut client, &fails).await;
    let reasons: Vec<&str> = detail.history.iter().filter_map(|step| step.reason.as_deref()).collect();
    assert!(reasons.contains(&"Died"), "the engine's events are in the history: {reasons:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_tail_since_follow_and_the_streams_apart() {
    let engine = DockerNetwork::new("logs");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let name = unique("talker");
    let script = "echo out1; echo err1 >&2; echo out2; sleep 1; echo late; sleep 300";
    client.start(start_waiting(shell(&name, script))).await.expect("start");
    let request = |stream: proto::LogStream| proto::LogsRequest {
        process_name: name.clone(),
        stream: stream.into(),
        timestamps: true,
        ..Default::default()
    };
    eventually("the process has written", Duration::from_secs(30), async || {
        engine.docker_ok(&["logs", &name]).contains("late")
    })
    .await;
    let stdout = logs(&mut client, request(proto::LogStream::Stdout)).await;
    assert_eq!(text(&stdout), "out1\nout2\nlate\n");
    assert!(
        stdout.iter().all(|chunk| chunk.timestamp.is_some() && chunk.stream() == proto::LogStream::Stdout)
    );
    let stderr = logs(&mut client, request(proto::LogStream::Stderr)).await;
    assert_eq!(text(&stderr), "err1\n");
    assert_eq!(stderr[0].stream(), proto::LogStream::Stderr);
    let tail =
        logs(&mut client, proto::LogsRequest { tail_lines: Some(1), ..request(proto::LogStream::Stdout) })
            .await;
    assert_eq!(text(&tail), "late\n");
    let late_time = stdout[2].timestamp.expect("a time");
    let since = proto::LogsRequest {
        since: Some(proto::logs_request::Since::SinceTime(late_time)),
        ..request(proto::LogStream::Unspecified)
    };
    assert_eq!(text(&logs(&mut client, since).await), "late\n");

    // Follow ends once the process is stopped.
    let follow = proto::LogsRequest { follow: true, ..request(proto::LogStream::Unspecified) };
    let mut stream = client.logs(follow).await.expect("follow").into_inner();
    let mut other = server.client().await;
    let stopper = tokio::spawn(async move { other.stop(stop_process(&name)).await });
    tokio::time::timeout(Duration::from_secs(30), async {
        while stream.message().await.expect("a chunk").is_some() {}
    })
    .await
    .expect("follow ends when the process is stopped");
    stopper.await.expect("join").expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_ports_healthchecks_and_the_deadline() {
    let engine = DockerNetwork::new("ready");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    watch.until_synced().await;
    let (slow, checked, limited) = (unique("slow"), unique("checked"), unique("limited"));

    // Without a readiness check: RUNNING once the declared port accepts connections.
    let mut spec = web(&slow, 8080);
    spec["container"]["command"] = json!(["sh", "-c", "sleep 2; exec httpd -f -p 8080 -h /www"]);
    let started = client.start(start_request(spec)).await.expect("start").into_inner();
    assert_eq!(started.process.expect("info").status(), ProcessStatus::Starting);
    // With a command check: the engine's healthcheck (Docker), or the server's through the
    // exec API (Podman, which runs healthchecks from systemd timers only).
    let mut spec = shell(&checked, "sleep 2; touch /tmp/ready; sleep 300");
    spec["readiness"] = json!({"exec": {"command": ["test", "-f", "/tmp/ready"]}, "period_seconds": 1});
    client.start(start_request(spec)).await.expect("start");
    let mut spec = shell(&limited, "sleep 300");
    spec["max_run_seconds"] = 2.into();
    client.start(start_request(spec)).await.expect("start");

    let info = watch.until_process(&slow, "RUNNING", |_, info| info.status() == ProcessStatus::Running).await;
    let address = &info.socket_addresses[0];
    assert!(http_get_status(&address.host, address.port).contains("200"));
    // The events of the two others may have come while waiting for the first: wait on the view.
    let view = watch
        .until_view("the checked one RUNNING and the limited one past its deadline", |view| {
            view.get(&checked).is_some_and(|info| info.status() == ProcessStatus::Running)
                && view.get(&limited).is_some_and(|info| info.status() == ProcessStatus::Failed)
        })
        .await;
    let info = view[&limited].clone();
    assert_eq!(info.reason.as_deref(), Some("DeadlineExceeded"), "{info:?}");
    let health = engine.docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", &checked]);
    let expected = if engine.is_podman() { "" } else { "healthy" };
    assert_eq!(health.trim(), expected, "the engine's healthcheck");
}

/// A busybox HTTP server on 8080 serving `/w`, where `files` are made at each start.
fn web_with_files(name: &str, files: &[&str]) -> Value {
    let touch: String = files.iter().map(|file| format!("echo ok > /w/{file}; ")).collect();
    let script = format!("mkdir -p /w; {touch}exec httpd -f -p 8080 -h /w");
    shell(name, &script)
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_is_checked_for_the_whole_run_and_a_failing_liveness_check_restarts_under_the_policy() {
    let engine = DockerNetwork::new("health");
    let directory = tempfile::tempdir().expect("tempdir");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    watch.until_synced().await;
    let (flappy, sick, doomed) = (unique("flappy"), unique("sick"), unique("doomed"));

    let mut spec = web_with_files(&flappy, &["ready"]);
    spec["readiness"] =
        json!({"http_get": {"port": 8080, "path": "/ready"}, "period_seconds": 1, "failure_threshold": 1});
    client.start(start_request(spec)).await.expect("start");
    let mut spec = web_with_files(&sick, &["healthz"]);
    spec["restart_policy"] = "always".into();
    spec["liveness"] =
        json!({"http_get": {"port": 8080, "path": "/healthz"}, "period_seconds": 1, "failure_threshold": 2});
    client.start(start_request(spec)).await.expect("start");
    let mut spec = shell(&doomed, "touch /tmp/alive; exec sleep 300");
    spec["restart_policy"] = "never".into();
    spec["liveness"] = json!({"exec": {"command": ["test", "-f", "/tmp/alive"]}, "period_seconds": 1, "failure_threshold": 1});
    client.start(start_request(spec)).await.expect("start");

    // Readiness comes and goes with the run: RUNNING only while the check passes.
    watch.until_process(&flappy, "ready", |_, info| info.status() == ProcessStatus::Running).await;
    engine.docker_ok(&["exec", &flappy, "rm", "/w/ready"]);
    let info = watch
        .until_process(&flappy, "no longer ready", |_, info| info.status() != ProcessStatus::Running)
        .await;
    assert_eq!(info.status(), ProcessStatus::Starting, "{info:?}");
    assert_eq!(info.reason.as_deref(), Some("Unready"), "{info:?}");
    assert!(info.message().contains("GET :8080/ready returned 404"), "{info:?}");
    engine.docker_ok(&["exec", &flappy, "sh", "-c", "echo ok > /w/ready"]);
    let info =
        watch.until_process(&flappy, "ready again", |_, info| info.status() == ProcessStatus::Running).await;
    assert_eq!(info.restart_count, 0, "readiness never restarts: {info:?}");

    // A failing liveness check restarts the container under `always`, and says why.
    // Its events may have come while waiting for another: wait on the view.
    watch
        .until_view("sick running", |view| {
            view.get(&sick).is_some_and(|info| info.status() == ProcessStatus::Running)
        })
        .await;
    let first_run = engine.docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &sick]);
    engine.docker_ok(&["exec", &sick, "rm", "/w/healthz"]);
    let info =
        watch.until_process(&sick, "unhealthy", |_, info| info.reason.as_deref() == Some("Unhealthy")).await;
    assert!(info.message().contains("GET :8080/healthz returned 404"), "{info:?}");
    let info = watch
        .until_process(&sick, "restarted and running", |_, info| {
            info.status() == ProcessStatus::Running && info.restart_count >= 1
        })
        .await;
    assert_eq!(info.restart_count, 1, "{info:?}");
    let second_run = engine.docker_ok(&["inspect", "--format", "{{.State.StartedAt}}", &sick]);
    assert_ne!(first_run, second_run, "a new run of the same container");
    let detail = describe(&mut client, &sick).await;
    // The history says why: the event of the failed check, and the transition to FAILED.
    let said = detail.history.iter().any(|step| {
        step.reason.as_deref() == Some("Unhealthy")
            && step.message().contains("liveness check failed: GET :8080/healthz returned 404")
    });
    assert!(said, "{detail:?}");

    // Under `never` the container is stopped and stays FAILED with the reason (an exec check,
    // run through the engine).
    // Its events may have come while waiting for another: wait on the view.
    watch
        .until_view("doomed running", |view| {
            view.get(&doomed).is_some_and(|info| info.status() == ProcessStatus::Running)
        })
        .await;
    engine.docker_ok(&["exec", &doomed, "rm", "/tmp/alive"]);
    let info = watch
        .until_process(&doomed, "failed for its liveness", |_, info| {
            info.reason.as_deref() == Some("Unhealthy")
        })
        .await;
    assert_eq!(info.status(), ProcessStatus::Failed, "{info:?}");
    assert!(info.message().contains("exec test -f /tmp/alive exited with code 1"), "{info:?}");
    eventually("the container is stopped", Duration::from_secs(30), async || {
        engine.docker_ok(&["inspect", "--format", "{{.State.Status}}", &doomed]).trim() == "exited"
    })
    .await;
    let info = list(&mut client).await.into_iter().find(|info| info.process_name == doomed).expect("listed");
    assert_eq!((info.status(), info.restart_count), (ProcessStatus::Failed, 0), "{info:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_and_started_again_adopts_every_container_once() {
    let engine = DockerNetwork::new("adopt");
    let directory = tempfile::tempdir().expect("tempdir");
    let names: Vec<String> = (0..3).map(|number| unique(&format!("kept{number}"))).collect();
    {
        let server = engine.server(directory.path());
        let mut client = server.client().await;
        for name in &names {
            client.start(start_waiting(shell(name, "sleep 300"))).await.expect("start");
        }
        let pid = nix::unistd::Pid::from_raw(server.pid());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill the server");
    }
    assert_eq!(engine.containers().len(), 3, "the containers outlive the server");
    let server = engine.server(directory.path());
    let mut client = server.client().await;
    let mut listed: Vec<String> = list(&mut client).await.into_iter().map(|info| info.process_name).collect();
    listed.sort();
    let mut expected = names.clone();
    expected.sort();
    assert_eq!(listed, expected, "every container listed again, none twice, none lost");
    let info = list(&mut client).await.into_iter().next().expect("one");
    assert_eq!(info.status(), ProcessStatus::Running, "{info:?}");
    let stopped = client.stop(stop_process(&names[0])).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, [names[0].clone()]);
    assert_eq!(engine.containers().len(), 2);
}

#[test]
fn an_unreachable_engine_is_one_line_at_start_up_and_exit_1_and_check_reports_the_engine() {
    let engine = DockerNetwork::new("check");
    let directory = tempfile::tempdir().expect("tempdir");
    let missing = directory.path().join("no-engine.sock");
    let config = directory.path().join("unreachable.yml");
    std::fs::write(
        &config,
        format!("runtime:\n  runtime_type: docker\n  docker_host: unix://{}\n", missing.display()),
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0", "-c", config.to_str().expect("path")])
        .output()
        .expect("run the server");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|line| line.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot reach the docker engine"), "{stderr}");

    let check = |path: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
            .args(["check", "-c", path.to_str().expect("path")])
            .output()
            .expect("run check")
    };
    let refused = check(&config);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot reach the docker engine"));
    let good = directory.path().join("good.yml");
    std::fs::write(&good, engine.config("")).expect("write");
    let checked = check(&good);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(stdout.contains("runtime_type: docker") && stdout.contains("engine: docker engine "), "{stdout}");
    assert!(stdout.contains("(API 1."), "{stdout}");
}

/// The Python Hydroplane's quickstart on its docker runtime: its `basic-config.yml` as written
/// (the engine from `DOCKER_HOST`, the network `hydroplane`), `examples/nginx.json` (the image
/// built locally under its name) and the chat example's three specs, through hpctl.
#[test]
fn the_python_hydroplanes_docker_quickstart_runs_as_written() {
    let engine = DockerNetwork {
        network: "hydroplane".to_owned(),
        host: crate::common::docker::engine_host().to_owned(),
    };
    let examples = repo_root().join("examples/docker");
    let config = examples.join("basic-config.yml");
    let server =
        Server::start_with_env(&["-c", config.to_str().expect("path")], &[("DOCKER_HOST", &engine.host)]);
    let file = |name: &str| examples.join(name).to_str().expect("path").to_owned();

    let started = hpctl(&server, &["start", "--wait", &file("nginx.json")]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));
    let listed = hpctl_json(&server, &["list", "-o", "json"]);
    let text = listed.to_string();
    assert!(text.contains("\"nginx\"") && text.contains("8080"), "{text}");
    assert!(http_get_status("127.0.0.1", 8080).contains("200"));

    for spec in ["chat/chat-server.json", "chat/chat-client-alice.json", "chat/chat-client-bob.json"] {
        let started = hpctl(&server, &["start", &file(spec)]);
        assert!(started.status.success(), "{spec}: {}", String::from_utf8_lossy(&started.stderr));
    }
    wait_until("alice talks to chat-server by name", Duration::from_secs(60), || {
        let output = hpctl(&server, &["logs", "chat-client-alice"]);
        String::from_utf8_lossy(&output.stdout).contains("server: welcome to the chat")
    });
    let listed = hpctl_json(&server, &["list", "-o", "json"]).to_string();
    for name in ["nginx", "chat-server", "chat-client-alice", "chat-client-bob", "12347", "6000", "6100"] {
        assert!(listed.contains(name), "{name} in {listed}");
    }
    for args in [&["stop", "-g", "chat-clients"][..], &["stop", "chat-server"], &["stop", "nginx"]] {
        let stopped = hpctl(&server, args);
        assert!(stopped.status.success(), "{args:?}: {}", String::from_utf8_lossy(&stopped.stderr));
    }
    let listed = hpctl_json(&server, &["list", "-o", "json"]).to_string();
    assert!(!listed.contains("chat") && !listed.contains("nginx"), "{listed}");
    assert!(engine.containers().is_empty(), "{:?}", engine.containers());
}

/// The value of the first sample of `name` whose labels include every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, rest) = series.split_once('{')?;
        (series_name == name && labels.iter().all(|label| rest.contains(label)))
            .then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_limits_audit_and_metrics_apply_to_the_docker_runtime() {
    let engine = DockerNetwork::new("secure");
    let directory = tempfile::tempdir().expect("tempdir");
    let tokens_file = directory.path().join("tokens.yml");
    let writer_token = create_token(&tokens_file, "writer", "read,write", None);
    let reader_token = create_token(&tokens_file, "reader", "read", None);
    let config = engine.config(&format!(
        "auth:\n  tokens_file: {}\nmetrics:\n  listen: 127.0.0.1:0\nlimits:\n  start_stop_per_second: 1\n  start_stop_burst: 2\n",
        tokens_file.display()
    ));
    let server = Server::start_with_config(directory.path(), &config);
    let channel =
        tonic::transport::Channel::from_shared(server.url()).expect("url").connect().await.expect("connect");
    let mut reader = token_client(channel.clone(), Some(&reader_token));
    let mut writer = token_client(channel, Some(&writer_token));

    let name = unique("guarded");
    let refused = reader.start(start_request(shell(&name, "sleep 300"))).await.expect_err("read only");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(engine.containers().is_empty(), "a refused Start makes no container");
    let started = writer.start(start_request(shell(&name, "sleep 300"))).await.expect("start").into_inner();
    assert!(started.created);
    assert_eq!(engine.containers(), std::slice::from_ref(&name));
    // Over the token's rate (one a second, a burst of two), Starts are refused before the engine.
    let again = (0..5).map(|_| {
        let mut writer = writer.clone();
        let spec = shell(&name, "sleep 300");
        async move { writer.start(start_request(spec)).await }
    });
    let outcomes = futures::future::join_all(again).await;
    let limited = outcomes
        .iter()
        .filter(|outcome| outcome.as_ref().is_err_and(|status| status.code() == Code::ResourceExhausted))
        .count();
    let answered = outcomes
        .iter()
        .filter(|outcome| outcome.as_ref().is_ok_and(|started| !started.get_ref().created))
        .count();
    assert!(limited >= 3 && limited + answered == 5, "{outcomes:?}");
    assert_eq!(engine.containers(), std::slice::from_ref(&name));

    let stderr = server.stderr();
    let audit: Vec<&str> = stderr.lines().filter(|line| line.contains("audit")).collect();
    let audited = |caller: &str, target: &str, outcome: &str| {
        audit.iter().any(|line| {
            line.contains(&format!("caller={caller}"))
                && line.contains("call=Start")
                && line.contains(target)
                && line.contains(&format!("outcome=\"{outcome}\""))
        })
    };
    assert!(
        audited("reader", "lacks the `write` scope", "refused") && audited("writer", &name, "ok"),
        "{}",
        audit.join("\n")
    );
    let (_, metrics) = http_get(&server.metrics_address().await, "/metrics");
    let handled = |code: &str| {
        sample(
            &metrics,
            "grpc_server_handled_total",
            &["grpc_method=\"Start\"", &format!("grpc_code=\"{code}\"")],
        )
    };
    assert_eq!(handled("OK"), Some((1 + answered) as f64), "{metrics}");
    assert_eq!(handled("PermissionDenied"), Some(1.0), "{metrics}");
    assert_eq!(handled("ResourceExhausted"), Some(limited as f64), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_event_stream_breaks_the_index_lists_again_and_comes_back_true() {
    let engine = DockerNetwork::new("resync");
    let directory = tempfile::tempdir().expect("tempdir");
    let proxy = EngineProxy::start(&engine.host, directory.path().join("engine.sock"));
    let through_proxy = DockerNetwork { network: engine.network.clone(), host: proxy.host.clone() };
    let server = Server::start_with_config(directory.path(), &through_proxy.config(""));
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    watch.until_synced().await;
    let (removed, stopped, kept, appeared) =
        (unique("removed"), unique("stopped"), unique("kept"), unique("appeared"));
    for name in [&removed, &stopped, &kept] {
        let mut spec = shell(name, "trap 'exit 0' TERM; sleep 300 & wait");
        spec["restart_policy"] = "never".into();
        client.start(start_waiting(spec)).await.expect("start");
    }

    // The engine's event stream breaks, and while the server cannot reach the engine, its
    // containers change behind its back.
    proxy.cut();
    eventually("the server sees its event stream break", Duration::from_secs(30), async || {
        server.stderr().contains("listing the containers again")
    })
    .await;
    engine.docker_ok(&["rm", "-f", &removed]);
    engine.docker_ok(&["stop", "-t", "5", &stopped]);
    let network_label = format!("hydroplane/network={}", engine.network);
    let process_label = format!("hydroplane/process-id={appeared}");
    engine.docker_ok(&[
        "run",
        "-d",
        "--name",
        &appeared,
        "--network",
        &engine.network,
        "--label",
        &network_label,
        "--label",
        &process_label,
        BUSYBOX,
        "sleep",
        "300",
    ]);
    assert_eq!(list(&mut client).await.len(), 3, "the index cannot know yet");

    proxy.resume();
    let view = watch
        .until_view("the index true again", |view| {
            !view.contains_key(&removed)
                && view.get(&stopped).is_some_and(|info| info.status() == ProcessStatus::Exited)
                && view.get(&kept).is_some_and(|info| info.status() == ProcessStatus::Running)
                && view.get(&appeared).is_some_and(|info| info.status() == ProcessStatus::Running)
        })
        .await;
    assert_eq!(view.len(), 3, "{view:?}");
    let mut listed: Vec<String> = list(&mut client).await.into_iter().map(|info| info.process_name).collect();
    listed.sort();
    let mut expected = vec![stopped.clone(), kept.clone(), appeared.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    // And it follows the engine again.
    engine.docker_ok(&["rm", "-f", &kept]);
    watch.until_process(&kept, "the removal is seen", |kind, _| kind == WatchEventType::Deleted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tcp_engine_with_tls_is_reached_with_the_certificates_the_settings_name() {
    let (tls_host, certs, socket) = crate::common::docker::tls_engine();
    // The containers are cleaned up through the engine's socket.
    let engine = DockerNetwork { network: format!("hpt-tls-{}", std::process::id()), host: socket };
    let directory = tempfile::tempdir().expect("tempdir");
    let config_with = |extra: &str| {
        format!(
            "runtime:\n  runtime_type: docker\n  docker_host: {tls_host}\n  network: {}\n{extra}",
            engine.network
        )
    };
    let check = |name: &str, config: String, environment: &[(&str, &std::path::Path)]| {
        let path = directory.path().join(name);
        std::fs::write(&path, config).expect("write");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"));
        command.args(["check", "-c", path.to_str().expect("path")]);
        command.env_remove("DOCKER_TLS_VERIFY").env_remove("DOCKER_CERT_PATH");
        for (variable, value) in environment {
            command.env(variable, value);
        }
        command.output().expect("run check")
    };

    // Without certificates the engine refuses the client: one line, exit 1.
    let refused = check("plain.yml", config_with(""), &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot reach the docker engine"),
        "{refused:?}"
    );
    // Certificates of another CA are refused too.
    let other = tempfile::tempdir().expect("tempdir");
    let stranger = crate::common::certs::TestCa::new("another CA");
    stranger.write_ca_file(other.path(), "ca.pem");
    let (cert, key) = stranger.write_client_files(other.path(), "client");
    std::fs::rename(cert, other.path().join("cert.pem")).expect("rename");
    std::fs::rename(key, other.path().join("key.pem")).expect("rename");
    let cert_path = |directory: &std::path::Path| format!("  docker_cert_path: {}\n", directory.display());
    let refused = check("stranger.yml", config_with(&cert_path(other.path())), &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    // The docker CLI's variables work as for the CLI.
    let checked = check(
        "environment.yml",
        config_with(""),
        &[("DOCKER_TLS_VERIFY", std::path::Path::new("1")), ("DOCKER_CERT_PATH", &certs)],
    );
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    assert!(String::from_utf8_lossy(&checked.stdout).contains(&tls_host), "{checked:?}");

    // With runtime.docker_cert_path, a server runs processes on that engine.
    let server = Server::start_with_config(directory.path(), &config_with(&cert_path(&certs)));
    let mut client = server.client().await;
    let name = unique("over-tls");
    let started = client.start(start_waiting(shell(&name, "sleep 300"))).await.expect("start").into_inner();
    assert_eq!(started.process.expect("info").status(), ProcessStatus::Running);
    assert_eq!(engine.containers(), std::slice::from_ref(&name));
    let stopped = client.stop(stop_process(&name)).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, [name]);
    assert!(engine.containers().is_empty());
}
