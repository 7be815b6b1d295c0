//! Processes that stay up, on the local runtime: restart policies with back-off, readiness and
//! liveness checks, and `max_run_seconds`, through the real binary and Watch.

use std::time::Duration;

use crate::common::requests::{start_request, stop_process};
use crate::common::watch::{Watch, describe, status_name};
use crate::common::{Server, free_port};
use hydroplane::proto::{self, ProcessStatus, WatchEventType};
use serde_json::{Value, json};

/// A process that runs `script` with `sh -c`, under `policy`.
fn shell(name: &str, script: &str, policy: &str) -> Value {
    json!({
        "process_name": name,
        "restart_policy": policy,
        "container": {"image_uri": "busybox", "command": ["sh", "-c", script]}
    })
}

/// A Python HTTP server on `port` that answers `GET /ready` with 200 only while the file `flag`
/// exists (503 otherwise), and every other path with 200.
fn flagged_server(name: &str, port: u16, flag: &std::path::Path) -> Value {
    let script = format!(
        r#"
import http.server, os
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path != "/ready" or os.path.exists({flag:?})
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", {port}), Handler).serve_forever()
"#,
        flag = flag.display().to_string()
    );
    json!({
        "process_name": name,
        "container": {
            "image_uri": "python:3.11",
            "command": ["python3", "-c", script],
            "ports": [{"container_port": port}]
        }
    })
}

/// Waits until the process has been restarted `count` times and returns what Watch said of it.
async fn until_restarted(watch: &mut Watch, name: &str, count: u32) -> proto::ProcessInfo {
    watch.until_process(name, &format!("restart {count}"), |_, info| info.restart_count >= count).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_is_restarted_with_back_off_unless_its_policy_is_never() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut always = Watch::process(&mut client, "always").await;
    let mut on_failure = Watch::process(&mut client, "on-failure").await;
    for (name, policy) in [("always", "always"), ("on-failure", "on_failure"), ("never", "never")] {
        client.start(start_request(shell(name, "echo run; exit 1", policy))).await.expect("start");
    }
    // Both restarting policies restart it, and say so while they wait.
    for (name, watch) in [("always", &mut always), ("on-failure", &mut on_failure)] {
        let backing_off = watch
            .until_process(name, "the back-off", |_, info| info.reason.as_deref() == Some("CrashLoopBackOff"))
            .await;
        assert_eq!(backing_off.status(), ProcessStatus::Failed, "{backing_off:?}");
        assert_eq!(backing_off.exit_code, Some(1));
        let message = backing_off.message.clone().unwrap_or_default();
        assert_eq!(message, "exited with code 1; restarting in 1 s");
        let restarted = until_restarted(watch, name, 1).await;
        assert_eq!(restarted.status(), ProcessStatus::Starting, "{restarted:?}");
    }
    // Each wait is twice the one before.
    for (restarts, delay) in [(1, 2), (2, 4)] {
        let waiting = always
            .until_process("always", "the next back-off", |_, info| {
                info.reason.as_deref() == Some("CrashLoopBackOff")
            })
            .await;
        assert_eq!(waiting.restart_count, restarts, "{waiting:?}");
        assert_eq!(
            waiting.message.as_deref(),
            Some(format!("exited with code 1; restarting in {delay} s").as_str())
        );
    }

    let described = client
        .describe(proto::DescribeRequest { process_name: "never".into() })
        .await
        .expect("describe")
        .into_inner();
    let never = described.process.expect("process");
    assert_eq!((never.status(), never.restart_count, never.exit_code), (ProcessStatus::Failed, 0, Some(1)));
    assert_eq!(never.reason.as_deref(), Some("Error"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_exits_0_is_restarted_only_under_always() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut watch = Watch::all(&mut client).await;
    for (name, policy) in [("always", "always"), ("on-failure", "on_failure"), ("never", "never")] {
        client.start(start_request(shell(name, "exit 0", policy))).await.expect("start");
    }
    for name in ["on-failure", "never"] {
        let done =
            watch.until_process(name, "the exit", |_, info| info.status() == ProcessStatus::Exited).await;
        assert_eq!(
            (done.restart_count, done.exit_code, done.reason.as_deref()),
            (0, Some(0), Some("Completed"))
        );
    }
    let always = until_restarted(&mut watch, "always", 1).await;
    assert_eq!(always.status(), ProcessStatus::Starting, "{always:?}");
    // The others stay as they ended.
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    for process in listed.iter().filter(|process| process.process_name != "always") {
        assert_eq!((process.status(), process.restart_count), (ProcessStatus::Exited, 0), "{process:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_during_the_back_off_ends_the_process_at_once() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, "flapping").await;
    client.start(start_request(shell("flapping", "exit 2", "always"))).await.expect("start");
    watch
        .until_process("flapping", "the third back-off", |_, info| {
            info.message.as_deref().is_some_and(|message| message.ends_with("restarting in 4 s"))
        })
        .await;
    let began = tokio::time::Instant::now();
    let stopped = client.stop(stop_process("flapping")).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, ["flapping"]);
    // The back-off (4 s) does not hold the Stop up.
    assert!(began.elapsed() < Duration::from_secs(2), "{:?}", began.elapsed());
    let deleted = watch.until("the deletion", |event| event.r#type() == WatchEventType::Deleted).await;
    assert_eq!(describe(&deleted), "DELETED flapping STOPPING");
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_keeps_a_process_out_of_running_while_it_fails() {
    let server = Server::start();
    let mut client = server.client().await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let flag = scratch.path().join("ready");
    let port = free_port();
    let mut spec = flagged_server("web", port, &flag);
    spec["readiness"] =
        json!({"http_get": {"port": port, "path": "/ready"}, "period_seconds": 1, "failure_threshold": 1});
    let mut watch = Watch::process(&mut client, "web").await;
    client.start(start_request(spec)).await.expect("start");
    // It listens, but is not ready: STARTING, saying why.
    let said = format!("readiness check failed: GET :{port}/ready returned 503");
    let unready = watch
        .until_process("web", "the failed readiness check", |_, info| {
            info.message.as_deref() == Some(said.as_str())
        })
        .await;
    assert_eq!((unready.status(), unready.reason.as_deref()), (ProcessStatus::Starting, Some("Unready")));
    std::fs::write(&flag, "").expect("flag");
    let ready =
        watch.until_process("web", "readiness", |_, info| info.status() == ProcessStatus::Running).await;
    assert_eq!(ready.reason, None);
    std::fs::remove_file(&flag).expect("flag removed");
    let out =
        watch.until_process("web", "unreadiness", |_, info| info.status() == ProcessStatus::Starting).await;
    assert_eq!(out.reason.as_deref(), Some("Unready"));
    assert_eq!(out.restart_count, 0, "readiness never restarts a process");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_liveness_check_restarts_the_process_and_history_says_why() {
    let server = Server::start();
    let mut client = server.client().await;
    // A check that fails whatever the machine's load, so the test waits on nothing slow.
    let mut spec = shell("web", "exec sleep 300", "always");
    spec["liveness"] =
        json!({"exec": {"command": ["sh", "-c", "exit 7"]}, "period_seconds": 1, "failure_threshold": 2});
    let mut watch = Watch::process(&mut client, "web").await;
    client.start(start_request(spec)).await.expect("start");
    watch.until_process("web", "running", |_, info| info.status() == ProcessStatus::Running).await;
    let restarted = until_restarted(&mut watch, "web", 1).await;
    assert_eq!(restarted.restart_count, 1);
    let history = client
        .describe(proto::DescribeRequest { process_name: "web".into() })
        .await
        .expect("describe")
        .into_inner()
        .history;
    let said = history.iter().map(|entry| {
        format!(
            "{} {} {}",
            status_name(entry.status()),
            entry.reason.as_deref().unwrap_or("-"),
            entry.message.as_deref().unwrap_or("-")
        )
    });
    let unhealthy = "RUNNING Unhealthy liveness check failed: exec sh -c exit 7 exited with code 7";
    assert!(said.clone().any(|entry| entry == unhealthy), "{:#?}", said.collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn max_run_seconds_stops_a_process_with_deadline_exceeded() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut spec = shell("bounded", "exec sleep 300", "always");
    spec["max_run_seconds"] = json!(2);
    let mut watch = Watch::process(&mut client, "bounded").await;
    let began = tokio::time::Instant::now();
    client.start(start_request(spec)).await.expect("start");
    let ended = watch
        .until_process("bounded", "the deadline", |_, info| {
            info.reason.as_deref() == Some("DeadlineExceeded")
        })
        .await;
    // 2 s, plus the stop grace (sleep ends at SIGTERM), plus slack for a loaded machine.
    assert!(began.elapsed() < Duration::from_secs(2 + 10 + 1), "{:?}", began.elapsed());
    assert!(began.elapsed() >= Duration::from_secs(2), "{:?}", began.elapsed());
    assert_eq!(ended.status(), ProcessStatus::Failed);
    assert_eq!(ended.message.as_deref(), Some("stopped after its max_run_seconds (2 s)"));
    assert_eq!(ended.restart_count, 0, "a deadline is not restarted, whatever the policy");
}
