//! Logs on the `kubernetes` runtime, end to end: the real server over gRPC against the Kubernetes
//! API simulator, whose kubelet keeps the lines tests append (`POST /_sim/logs/...`), restarts
//! containers (`POST /_sim/restart/...`) and counts its open follow streams (`GET /_sim/stats`).

use std::time::Duration;

use crate::common::requests::{sleeper, start_request, start_waiting, stop_process};
use crate::common::{self, KubeSim, Server, hpctl_json};
use hydroplane::proto::{self, LogChunk, LogsRequest};
use tonic::Code;
use tonic::codec::Streaming;

/// How long a test waits for a chunk, or for a stream to end, before failing.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

fn server_on(sim: &KubeSim) -> Server {
    Server::start_with_config(sim.directory(), &sim.hydroplane_config(""))
}

fn request(name: &str) -> LogsRequest {
    LogsRequest { process_name: name.to_owned(), ..LogsRequest::default() }
}

fn following(name: &str) -> LogsRequest {
    LogsRequest { follow: true, ..request(name) }
}

/// The Pod of a process started with the default restart policy (`ALWAYS`): its StatefulSet's.
fn pod_of(process: &str) -> String {
    format!("{process}-0")
}

/// Appends lines to the log of the process's container, as if it printed them.
#[track_caller]
fn print(sim: &KubeSim, process: &str, text: &str) {
    sim.admin("POST", &format!("logs/default/{}", pod_of(process)), text);
}

/// The simulator's count of log follow streams open now and ever opened.
fn follow_counts(sim: &KubeSim) -> (u64, u64) {
    let stats = sim.admin("GET", "stats", "");
    (stats["logFollowsOpen"].as_u64().expect("a count"), stats["logFollowsTotal"].as_u64().expect("a count"))
}

/// Marks the process's container as exited, as a kubelet reports it.
#[track_caller]
fn exit_container(sim: &KubeSim, process: &str) {
    sim.patch_pod_status(
        &pod_of(process),
        serde_json::json!({"phase": "Succeeded", "containerStatuses": [{"name": process, "image": "busybox",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
}

async fn start_running(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
    name: &str,
) {
    let started = client.start(start_waiting(sleeper(name))).await.expect("start").into_inner();
    assert_eq!(started.process.expect("the process").status(), proto::ProcessStatus::Running);
}

async fn open(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
    request: LogsRequest,
) -> Result<Streaming<LogChunk>, tonic::Status> {
    client.logs(request).await.map(tonic::Response::into_inner)
}

/// The next chunk, `None` at the end; panics on an error or when none comes in time.
async fn next_chunk(stream: &mut Streaming<LogChunk>) -> Option<LogChunk> {
    tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
        .await
        .expect("a chunk or the end in time")
        .expect("no error")
}

/// Every chunk until the stream ends, as text.
async fn read_to_end(stream: &mut Streaming<LogChunk>) -> String {
    let mut text = String::new();
    while let Some(chunk) = next_chunk(stream).await {
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    text
}

/// Reads until the text read ends with `last`, and returns it all.
async fn read_until(stream: &mut Streaming<LogChunk>, last: &str) -> String {
    let mut text = String::new();
    while !text.ends_with(last) {
        let chunk =
            next_chunk(stream).await.unwrap_or_else(|| panic!("the stream ended before {last:?}: {text:?}"));
        assert_eq!(chunk.stream(), proto::LogStream::Combined);
        text.push_str(&String::from_utf8_lossy(&chunk.data));
    }
    text
}

async fn logs_text(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
    request: LogsRequest,
) -> String {
    read_to_end(&mut open(client, request).await.expect("logs")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_answers_the_lines_printed_with_tail_and_since() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    let mut client = server.client().await;
    start_running(&mut client, "printer").await;
    assert_eq!(logs_text(&mut client, request("printer")).await, "", "nothing printed yet");
    print(&sim, "printer", "one\ntwo\nthree\n");

    assert_eq!(logs_text(&mut client, request("printer")).await, "one\ntwo\nthree\n");
    let tail = LogsRequest { tail_lines: Some(2), ..request("printer") };
    assert_eq!(logs_text(&mut client, tail).await, "two\nthree\n");

    // Times come from the kubelet, one per line, strictly increasing.
    let mut stream =
        open(&mut client, LogsRequest { timestamps: true, ..request("printer") }).await.expect("logs");
    let mut chunks = Vec::new();
    while let Some(chunk) = next_chunk(&mut stream).await {
        chunks.push(chunk);
    }
    let times: Vec<prost_types::Timestamp> =
        chunks.iter().map(|chunk| chunk.timestamp.expect("a time on every chunk")).collect();
    assert_eq!(times.len(), 3);
    assert!(
        times.windows(2).all(|pair| (pair[0].seconds, pair[0].nanos) < (pair[1].seconds, pair[1].nanos)),
        "{times:?}"
    );
    // `since` the second line's time, to the nanosecond (the cluster only takes whole seconds).
    let since =
        LogsRequest { since: Some(proto::logs_request::Since::SinceTime(times[1])), ..request("printer") };
    assert_eq!(logs_text(&mut client, since).await, "two\nthree\n");
    let recent = LogsRequest {
        since: Some(proto::logs_request::Since::SinceDuration(prost_types::Duration {
            seconds: 3600,
            nanos: 0,
        })),
        ..request("printer")
    };
    assert_eq!(logs_text(&mut client, recent).await, "one\ntwo\nthree\n");
    let without_times = logs_text(&mut client, request("printer")).await;
    assert!(!without_times.contains('Z'), "the kubelet's time prefix is stripped: {without_times:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_sends_new_lines_in_order_once_and_ends_when_the_container_exits_or_is_stopped() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    let mut client = server.client().await;
    start_running(&mut client, "talker").await;
    print(&sim, "talker", "before\n");
    let mut stream = open(&mut client, following("talker")).await.expect("follow");
    // The backlog comes once the follow is live: what is printed from now on is new.
    assert_eq!(read_until(&mut stream, "before\n").await, "before\n");
    print(&sim, "talker", "a\nb\n");
    print(&sim, "talker", "c\n");
    assert_eq!(read_until(&mut stream, "c\n").await, "a\nb\nc\n");
    exit_container(&sim, "talker");
    assert_eq!(read_to_end(&mut stream).await, "", "the stream ends Ok when the container exits");

    start_running(&mut client, "stopped").await;
    let mut stream =
        open(&mut client, LogsRequest { tail_lines: Some(0), ..following("stopped") }).await.expect("follow");
    // With `tail_lines: 0` nothing comes first; wait until the simulator has the follow open.
    common::eventually("the upstream follow is open", CHUNK_TIMEOUT, async || follow_counts(&sim).0 == 1)
        .await;
    print(&sim, "stopped", "last words\n");
    assert_eq!(read_until(&mut stream, "last words\n").await, "last words\n");
    client.stop(stop_process("stopped")).await.expect("stop");
    assert_eq!(read_to_end(&mut stream).await, "", "the stream ends Ok when the process is stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn previous_shows_the_run_before_a_restart_and_is_refused_before_one() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    let mut client = server.client().await;
    start_running(&mut client, "phoenix").await;
    let previous = LogsRequest { previous: true, ..request("phoenix") };
    let refused = open(&mut client, previous.clone()).await.expect_err("no previous run yet");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("no previous run"), "{}", refused.message());

    print(&sim, "phoenix", "run one\n");
    let mut follower = open(&mut client, following("phoenix")).await.expect("follow");
    assert_eq!(read_until(&mut follower, "run one\n").await, "run one\n");
    let restarted =
        sim.admin("POST", &format!("restart/default/{}", pod_of("phoenix")), r#"{"exitCode": 2}"#);
    assert_eq!(restarted["restartCount"], 1);
    assert_eq!(read_to_end(&mut follower).await, "", "a follow of the run ends Ok with it");
    print(&sim, "phoenix", "run two\n");

    assert_eq!(logs_text(&mut client, previous.clone()).await, "run one\n");
    assert_eq!(
        logs_text(&mut client, LogsRequest { follow: true, ..previous }).await,
        "run one\n",
        "a previous run has ended"
    );
    assert_eq!(logs_text(&mut client, request("phoenix")).await, "run two\n");
    let pod: serde_json::Value =
        serde_json::from_str(&sim.kubectl(&["get", "pod", &pod_of("phoenix"), "-o", "json"])).expect("json");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 2, "{status}");
    assert!(status["state"]["running"].is_object(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stream_and_unknown_processes_are_refused() {
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    let mut client = server.client().await;
    start_running(&mut client, "mixed").await;
    for stream in [proto::LogStream::Stdout, proto::LogStream::Stderr] {
        let error = open(&mut client, LogsRequest { stream: stream.into(), ..request("mixed") })
            .await
            .expect_err("one stream cannot be had");
        assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
        assert!(error.message().contains("does not separate"), "{}", error.message());
    }
    let unknown = open(&mut client, request("ghost")).await.expect_err("no such process");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let unknown = open(&mut client, following("ghost")).await.expect_err("no such process");
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_followers_share_one_upstream_and_each_gets_every_line_once() {
    const FOLLOWERS: usize = 50;
    const LINES: usize = 2000;
    let sim = KubeSim::start(&[]);
    let server = server_on(&sim);
    let mut client = server.client().await;
    start_running(&mut client, "popular").await;
    print(&sim, "popular", "first\n");
    let mut streams = Vec::new();
    for _ in 0..FOLLOWERS {
        streams.push(open(&mut client, following("popular")).await.expect("follow"));
    }
    for stream in &mut streams {
        assert_eq!(read_until(stream, "first\n").await, "first\n");
    }
    assert_eq!(follow_counts(&sim), (1, 1), "one upstream follow for every follower");

    // Long lines, so that a follower that is not read falls behind the shared broadcast.
    let text: String = (0..LINES).map(|n| format!("line {n:05} {}\n", "x".repeat(100))).collect();
    print(&sim, "popular", &text);
    let mut slow = streams.pop().expect("a follower");
    let last = format!("line {:05} {}\n", LINES - 1, "x".repeat(100));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let last = last.clone();
            tokio::spawn(async move { read_until(&mut stream, &last).await })
        })
        .collect();
    for reader in readers {
        assert!(reader.await.expect("a reader") == text, "every line, in order, once");
    }
    assert_eq!(read_until(&mut slow, &last).await, text, "the follower read last lost nothing");
    assert_eq!(follow_counts(&sim).1, 1, "catching up is a short request, not another follow");

    // The last follower leaves: the hub goes, and with it the upstream follow.
    drop(slow);
    common::eventually("the upstream follow is closed", CHUNK_TIMEOUT, async || follow_counts(&sim).0 == 0)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unschedulable_process_has_no_output_and_describe_says_why() {
    let sim = KubeSim::start(&["--nodes", "1"]);
    let server = server_on(&sim);
    let mut client = server.client().await;
    let spec = serde_json::json!({"process_name": "nowhere", "container": {
        "image_uri": "busybox", "node_selector": {"zone": "on-no-node"}}});
    client.start(start_request(spec)).await.expect("start");
    assert_eq!(
        logs_text(&mut client, request("nowhere")).await,
        "",
        "a container that never started printed nothing"
    );
    let mut follower = open(&mut client, following("nowhere")).await.expect("follow");

    let mut detail = serde_json::Value::Null;
    common::eventually("the FailedScheduling event in the history", CHUNK_TIMEOUT, async || {
        detail = hpctl_json(&server, &["describe", "nowhere"]);
        detail["history"]
            .as_array()
            .is_some_and(|history| history.iter().any(|entry| entry["reason"] == "FailedScheduling"))
    })
    .await;
    let event = detail["history"]
        .as_array()
        .and_then(|history| history.iter().find(|entry| entry["reason"] == "FailedScheduling"))
        .expect("the event");
    assert_eq!(
        event["message"],
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
        "{detail:#}"
    );

    // A follow waits for the container to start; stopping the process ends it.
    client.stop(stop_process("nowhere")).await.expect("stop");
    assert_eq!(read_to_end(&mut follower).await, "");
}
