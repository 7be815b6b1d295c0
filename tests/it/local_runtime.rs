//! End to end on the local runtime: the real `hydroplane` binary on a free loopback port, driven
//! through the generated Rust client.

use std::time::Duration;

use crate::common::requests::{
    http_server_spec, sleeper, start_request, start_waiting, stop_group, stop_process,
};
use crate::common::watch::{Watch, describe};
use crate::common::{self, Server, eventually, free_port, http_get_status, process_alive};
use hydroplane::proto::{self, ProcessStatus, WatchEventType};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_process_is_started_reached_listed_watched_and_stopped() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    assert_eq!(describe(&watch.next().await), "SYNCED");

    let port = free_port();
    let started =
        client.start(start_waiting(http_server_spec("web", port))).await.expect("start").into_inner();
    assert!(started.created);
    let process = started.process.expect("process");
    assert_eq!(process.status(), ProcessStatus::Running, "{process:?}");
    let address = &process.socket_addresses[0];
    assert_eq!(
        (address.host.as_str(), address.port, address.is_public),
        ("127.0.0.1", u32::from(port), false)
    );
    assert!(http_get_status(&address.host, address.port).contains("200"));

    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert_eq!(listed.iter().map(|p| p.process_name.as_str()).collect::<Vec<_>>(), ["web"]);

    assert_eq!(describe(&watch.next().await), "ADDED web STARTING");
    assert_eq!(describe(&watch.next().await), "MODIFIED web RUNNING");

    let stopped = client.stop(stop_process("web")).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, ["web"]);
    assert_eq!(describe(&watch.next().await), "MODIFIED web STOPPING");
    let deleted = watch.next().await;
    assert_eq!(deleted.r#type(), WatchEventType::Deleted, "{}", describe(&deleted));
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_is_idempotent_and_a_different_spec_is_already_exists() {
    let server = Server::start();
    let mut client = server.client().await;
    let spec = sleeper("sleeper");
    let first = client.start(start_request(spec.clone())).await.expect("start").into_inner();
    let again = client.start(start_request(spec.clone())).await.expect("start again").into_inner();
    assert!(first.created);
    assert!(!again.created);
    assert_eq!(first.process.map(|p| p.created), again.process.map(|p| p.created));

    let mut different = spec;
    different["container"]["command"] = serde_json::json!(["sleep", "301"]);
    let error = client.start(start_request(different)).await.unwrap_err();
    assert_eq!(error.code(), Code::AlreadyExists, "{error:?}");
    assert!(error.message().contains("container.command"), "{}", error.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_spec_lists_every_violated_field() {
    let server = Server::start();
    let mut client = server.client().await;
    let invalid = serde_json::json!({
        "process_name": "Not_A_Label",
        "group": "",
        "container": {
            "image_uri": "",
            "command": ["true"],
            "ports": [{"container_port": 80}, {"container_port": 70000}, {"container_port": 80}],
            "env": [{"name": "9LIVES", "value": "x"}],
            "resource_request": {"memory_mib": 256},
            "resource_limit": {"memory_mib": 128}
        }
    });
    let error = client.start(start_request(invalid)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    for field in [
        "process_name:",
        "group:",
        "container.image_uri:",
        "container.ports[1].container_port:",
        "container.ports[2].container_port: port 80 is given twice",
        "container.env[0].name:",
        "container.resource_limit.memory_mib:",
    ] {
        assert!(error.message().contains(field), "`{field}` missing from:\n{}", error.message());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_processes_are_not_found_and_image_only_specs_are_refused() {
    let server = Server::start();
    let mut client = server.client().await;
    let error = client.stop(stop_process("ghost")).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    assert!(error.message().contains("ghost"));

    let nginx = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("examples/nginx.json")).expect("read"),
    )
    .expect("examples/nginx.json parses");
    let error = client.start(start_request(nginx)).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("runs commands, not images"), "{}", error.message());

    let stopped =
        client.stop(stop_group("empty")).await.expect("stopping an empty group succeeds").into_inner();
    assert!(stopped.stopped.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_that_cannot_run_or_exit_are_reported_with_their_reason() {
    let server = Server::start();
    let mut client = server.client().await;
    let missing = serde_json::json!({"process_name": "missing", "restart_policy": "never", "container": {"image_uri": "x", "command": ["/no/such/program"]}});
    let process =
        client.start(start_waiting(missing)).await.expect("start").into_inner().process.expect("process");
    assert_eq!(process.status(), ProcessStatus::Failed);
    assert_eq!(process.reason.as_deref(), Some("SpawnFailed"));
    assert!(process.message().contains("No such file or directory"), "{process:?}");

    let failing = serde_json::json!({"process_name": "failing", "restart_policy": "never", "container": {"image_uri": "x", "command": ["sh", "-c", "exit 3"]}});
    client.start(start_request(failing)).await.expect("start");
    let completing = serde_json::json!({"process_name": "completing", "restart_policy": "never", "container": {"image_uri": "x", "command": ["true"]}});
    client.start(start_request(completing)).await.expect("start");
    let mut watch = Watch::process(&mut client, "failing").await;
    let failed = watch.until_process("failing", "FAILED", |_, p| p.status() == ProcessStatus::Failed).await;
    assert_eq!((failed.exit_code, failed.reason()), (Some(3), "Error"));

    let mut watch = Watch::process(&mut client, "completing").await;
    let exited =
        watch.until_process("completing", "EXITED", |_, p| p.status() == ProcessStatus::Exited).await;
    assert_eq!(exited.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_that_runs_out_is_deadline_exceeded() {
    let server = Server::start();
    let mut client = server.client().await;
    // Declares a port it never opens, so it never becomes ready.
    let never_ready = serde_json::json!({"process_name": "never-ready", "restart_policy": "never", "container": {
        "image_uri": "x", "command": ["sleep", "300"], "ports": [{"container_port": free_port()}]}});
    let mut request = start_waiting(never_ready);
    request.wait_timeout = Some(prost_types::Duration { seconds: 0, nanos: 300_000_000 });
    let error = client.start(request).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("still STARTING"), "{}", error.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_resumes_with_exactly_what_it_missed_or_a_reset() {
    let server = Server::start();
    let mut client = server.client().await;
    client.start(start_waiting(sleeper("a"))).await.expect("start a");

    let mut watch = Watch::all(&mut client).await;
    assert_eq!(describe(&watch.next().await), "ADDED a RUNNING");
    let synced = watch.next().await;
    assert_eq!(synced.r#type(), WatchEventType::Synced);
    drop(watch);

    client.start(start_waiting(sleeper("b"))).await.expect("start b");
    client.stop(stop_process("a")).await.expect("stop a");

    let mut resumed = Watch::open(
        &mut client,
        proto::WatchRequest { since_revision: Some(synced.revision), ..Default::default() },
    )
    .await;
    let missed: Vec<String> = resumed.until_synced().await.iter().map(describe).collect();
    assert_eq!(
        missed,
        ["ADDED b STARTING", "MODIFIED b RUNNING", "MODIFIED a STOPPING", "DELETED a STOPPING"]
    );

    // Resumed from a revision of another server run.
    let mut too_old =
        Watch::open(&mut client, proto::WatchRequest { since_revision: Some(1), ..Default::default() }).await;
    let events = [too_old.next().await, too_old.next().await, too_old.next().await];
    assert_eq!(events.iter().map(describe).collect::<Vec<_>>(), ["RESET", "ADDED b RUNNING", "SYNCED"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn groups_are_listed_and_stopped_together() {
    let server = Server::start();
    let mut client = server.client().await;
    for (name, group) in [("g1-a", "g1"), ("g1-b", "g1"), ("g2-a", "g2")] {
        let mut spec = sleeper(name);
        spec["group"] = group.into();
        client.start(start_request(spec)).await.expect("start");
    }
    let group = client
        .list(proto::ListRequest { group: Some("g1".into()), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .processes;
    assert_eq!(group.iter().map(|p| p.process_name.as_str()).collect::<Vec<_>>(), ["g1-a", "g1-b"]);
    let stopped = client.stop(stop_group("g1")).await.expect("stop group").into_inner().stopped;
    assert_eq!(stopped, ["g1-a", "g1-b"]);
    let left = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert_eq!(left.iter().map(|p| p.process_name.as_str()).collect::<Vec<_>>(), ["g2-a"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_every_process_and_leaves_no_child_behind() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start_with_config(
        directory.path(),
        "runtime:\n  runtime_type: local\n  stop_grace_seconds: 0.5\n",
    );
    let mut client = server.client().await;
    let pid_file = |name: &str| directory.path().join(format!("{name}.pid"));
    // A plain child, one that ignores SIGTERM, and a grandchild left in the background.
    let commands = [
        ("plain", format!("echo $$ > {}; exec sleep 300", pid_file("plain").display())),
        (
            "stubborn",
            format!(
                "trap '' TERM; echo $$ > {}; while true; do sleep 1; done",
                pid_file("stubborn").display()
            ),
        ),
        ("parent", format!("sleep 300 & echo $! > {}; wait", pid_file("parent").display())),
    ];
    for (name, script) in &commands {
        let spec = serde_json::json!({"process_name": name, "restart_policy": "never", "container": {"image_uri": "x", "command": ["sh", "-c", script]}});
        client.start(start_waiting(spec)).await.expect("start");
    }
    let mut pids = Vec::new();
    for (name, _) in &commands {
        let path = pid_file(name);
        eventually(&format!("{name} wrote its pid"), Duration::from_secs(10), async || {
            std::fs::read_to_string(&path).is_ok_and(|text| text.trim().parse::<i32>().is_ok())
        })
        .await;
        let pid: i32 = std::fs::read_to_string(&path).expect("pid").trim().parse().expect("a pid");
        assert!(process_alive(pid), "{name} is running before the shutdown");
        pids.push(pid);
    }
    drop(client);
    assert_eq!(server.terminate(), Some(0), "a clean exit after SIGTERM");
    for pid in pids {
        assert!(!process_alive(pid), "process {pid} outlived the server");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_culler_stops_processes_older_than_the_maximum_age() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(
        directory.path(),
        "process_culling:\n  max_age_minutes: 0.005\n  culling_interval_minutes: 0.002\n",
    );
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, "old").await;
    client.start(start_request(sleeper("old"))).await.expect("start");
    watch.until("`old` is culled", |event| event.r#type() == WatchEventType::Deleted).await;
    assert!(server.stderr().contains("older than the maximum age"), "{}", server.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_are_served() {
    let server = Server::start();
    let channel =
        tonic::transport::Endpoint::from_shared(server.url()).expect("url").connect().await.expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest { service: "hydroplane.v1.ProcessService".into() })
        .await
        .expect("health check")
        .into_inner();
    assert_eq!(response.status(), tonic_health::pb::health_check_response::ServingStatus::Serving);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let describe = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("hydroplane.v1.ProcessService".into())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request, describe]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses.message().await.expect("a reflection answer").expect("one message");
    let Some(MessageResponse::ListServicesResponse(services)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<String> = services.service.into_iter().map(|service| service.name).collect();
    assert!(names.contains(&"hydroplane.v1.ProcessService".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    // grpcurl finds every call through the file that declares the service.
    let response = responses.message().await.expect("a reflection answer").expect("a second message");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("not a file descriptor: {response:?}");
    };
    let methods: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice()).expect("a file")
        })
        .flat_map(|file| file.service)
        .filter(|service| service.name() == "ProcessService")
        .flat_map(|service| service.method)
        .map(|method| method.name().to_owned())
        .collect();
    for method in ["Start", "Stop", "List", "Watch", "Describe"] {
        assert!(methods.iter().any(|name| name == method), "{method} is not in {methods:?}");
    }
}

#[test]
fn bad_configs_are_clear_errors() {
    let directory = tempfile::tempdir().expect("tempdir");
    let check = |yaml: &str, expected: &str| {
        let path = directory.path().join("bad.yml");
        std::fs::write(&path, yaml).expect("write");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
            .args(["-p", "0", "-c"])
            .arg(&path)
            .output()
            .expect("run hydroplane");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{yaml} was accepted");
        assert_eq!(output.status.code(), Some(1), "a clean failure, not a panic: {stderr}");
        assert!(stderr.contains(expected), "`{expected}` missing from:\n{stderr}");
    };
    check("runtime:\n  runtime_type: nomad\n", "unknown variant `nomad`");
    check("runtime:\n  runtime_type: local\n  bogus: 1\n", "bogus");
    check(
        "runtime:\n  runtime_type: eks\n  cluster_name: c\n  region: us-west-2\n  credentials:\n    access_key:\n      \
         access_key_id: {secret_name: aws-creds, key: AccessKeyId}\n      \
         secret_access_key: {secret_name: aws-creds, key: SecretAccessKey}\n",
        "secret `aws-creds` key `AccessKeyId` is referenced, but the server has no secret store",
    );
    check("process_culling:\n  max_age_minutes: -1\n", "max_age_minutes must be positive");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["--conf", "/no/such/file.yml"])
        .output()
        .expect("run hydroplane");
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file /no/such/file.yml"));
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_references_without_a_secret_store_are_failed_precondition() {
    let server = Server::start();
    let mut client = server.client().await;
    let spec = serde_json::json!({"process_name": "needs-secret", "restart_policy": "never", "container": {"image_uri": "x", "command": ["true"],
        "env": [{"name": "TOKEN", "value": {"secret_name": "api-token"}}]}});
    let error = client.start(start_request(spec)).await.unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert!(error.message().contains("secret `api-token`"), "{}", error.message());
}
