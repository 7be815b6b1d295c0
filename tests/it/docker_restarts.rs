//! The docker runtime's liveness restarts against a real engine (`scripts/dockerd`): they back
//! off as the local runtime's restarts do, and their count, and a restart waiting for its delay,
//! survive a SIGKILL of the server.

use std::path::Path;
use std::time::Duration;

use hydroplane::proto::{self, ProcessStatus};
use prost_types::Timestamp;
use serde_json::json;

use crate::common::docker::{BUSYBOX, DockerNetwork};
use crate::common::requests::start_request;
use crate::common::watch::Watch;
use crate::common::{Server, eventually};

/// A server of `engine`'s network whose state directory (where it keeps what the engine forgets
/// of its restarts) is `state`, so that the next server there finds it.
fn server_with_state(engine: &DockerNetwork, directory: &Path, state: &Path) -> Server {
    let path = directory.join("hydroplane.yml");
    std::fs::write(&path, engine.config("")).expect("write config");
    Server::start_with_env(
        &["-c", path.to_str().expect("utf-8 path")],
        &[("XDG_STATE_HOME", state.to_str().expect("utf-8 path"))],
    )
}

/// The delay a CrashLoopBackOff message announces (`...; restarting in 1.8 s`).
fn delay_in(message: &str) -> f64 {
    message
        .rsplit_once("restarting in ")
        .and_then(|(_, rest)| rest.strip_suffix(" s"))
        .and_then(|delay| delay.parse().ok())
        .unwrap_or_else(|| panic!("no delay in `{message}`"))
}

fn seconds(time: &Option<Timestamp>) -> f64 {
    let time = time.as_ref().expect("a time");
    time.seconds as f64 + f64::from(time.nanos) / 1e9
}

/// The engine's `Died` then next `Started` events in the history: how long the container stayed
/// down before each restart, oldest first.
fn downtimes(detail: &proto::ProcessDetail) -> Vec<f64> {
    let mut downtimes = Vec::new();
    let mut died = None;
    for step in &detail.history {
        match step.reason.as_deref() {
            Some("Died") => died = Some(seconds(&step.time)),
            Some("Started") => {
                if let Some(died) = died.take() {
                    downtimes.push(seconds(&step.time) - died);
                }
            }
            _ => {}
        }
    }
    downtimes
}

#[tokio::test(flavor = "multi_thread")]
async fn liveness_restarts_back_off_and_their_count_survives_a_killed_server() {
    let engine = DockerNetwork::new("backoff");
    let directory = tempfile::tempdir().expect("tempdir");
    let state = directory.path().join("state");
    let name = format!("flaky-{}", std::process::id());
    // Its liveness check never passes: every run ends one period after it starts. It ends at
    // once on SIGTERM (as PID 1, a shell without a trap would wait for the SIGKILL).
    let spec = json!({"process_name": name, "restart_policy": "always",
        "container": {"image_uri": BUSYBOX, "command": ["sh", "-c", "trap 'exit 143' TERM; sleep 300 & wait"]},
        "liveness": {"exec": {"command": ["false"]}, "period_seconds": 1, "failure_threshold": 1}});

    let server = server_with_state(&engine, directory.path(), &state);
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, &name).await;
    client.start(start_request(spec)).await.expect("start");

    // Between two runs the process waits, FAILED with reason CrashLoopBackOff, as on the local
    // runtime; the first delay is at most 1 s.
    let waiting = watch
        .until_process(&name, "waiting to restart", |_, info| {
            info.reason.as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    assert_eq!(waiting.status(), ProcessStatus::Failed, "{waiting:?}");
    assert_eq!(waiting.restart_count, 0, "{waiting:?}");
    assert!(
        waiting.message().starts_with("liveness check failed: exec false exited with code 1"),
        "{waiting:?}"
    );
    let first = delay_in(waiting.message());
    assert!((0.8..=1.0).contains(&first), "the first delay is at most 1 s, less a fifth of jitter: {first}");

    // Two restarts later, the history shows the delays announced, growing, and the container
    // down at least that long before each restart.
    watch.until_process(&name, "restarted twice", |_, info| info.restart_count >= 2).await;
    let mut detail = proto::ProcessDetail::default();
    eventually("the engine's events of two restarts", Duration::from_secs(30), async || {
        detail = client
            .describe(proto::DescribeRequest { process_name: name.clone() })
            .await
            .expect("describe")
            .into_inner();
        downtimes(&detail).len() >= 2
    })
    .await;
    let announced: Vec<f64> = detail
        .history
        .iter()
        .filter(|step| step.reason.as_deref() == Some("CrashLoopBackOff"))
        .map(|step| delay_in(step.message()))
        .collect();
    let downtimes = downtimes(&detail);
    assert!(announced.len() >= 2, "{:?}", detail.history);
    assert!((0.8..=1.0).contains(&announced[0]), "the first delay is at most 1 s: {announced:?}");
    assert!((1.6..=2.0).contains(&announced[1]), "the second is twice as long: {announced:?}");
    for (down, delay) in downtimes.iter().zip(&announced) {
        assert!(
            *down >= delay - 0.01,
            "down {down} s, for a delay of {delay} s: {downtimes:?} {announced:?}"
        );
    }
    assert!(downtimes[0] < 3.0, "down {downtimes:?} before the first restart");

    // The server dies while the third restart waits; the next one counts on from two and makes
    // the restart that was waiting (the engine's own count started again at each of our starts).
    watch
        .until_process(&name, "waiting for the third restart", |_, info| {
            info.reason.as_deref() == Some("CrashLoopBackOff") && info.restart_count == 2
        })
        .await;
    let pid = nix::unistd::Pid::from_raw(server.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill the server");
    drop(watch);
    drop(server);
    let engine_count = engine.docker_ok(&["inspect", "--format", "{{.RestartCount}}", &name]);
    assert_eq!(engine_count.trim(), "0", "the engine forgot the restarts it did not make");

    let server = server_with_state(&engine, directory.path(), &state);
    let mut client = server.client().await;
    let mut watch = Watch::process(&mut client, &name).await;
    let adopted = watch.until_process(&name, "adopted", |_, _| true).await;
    assert!(adopted.restart_count >= 2, "the count continues: {adopted:?}");
    watch.until_process(&name, "the waiting restart made", |_, info| info.restart_count >= 3).await;
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0].restart_count >= 3, "{listed:?}");
}
