//! The local runtime's process tree, on the real binaries: grandchildren that escape their
//! process group or session (setsid, a double fork, nohup) die with their process on Stop, on the
//! server's SIGTERM and on its SIGKILL; a command that ends is reported at once, whatever its
//! grandchildren hold open; readiness counts only the tree's own listeners; and the process's
//! environment and working directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::requests::{start_request, start_waiting, stop_group, stop_process};
use crate::common::watch::Watch;
use crate::common::{Server, eventually, free_port, process_alive};
use hydroplane::proto::{self, ProcessStatus};
use tonic::Code;

/// The grace period of these tests' servers.
const GRACE: Duration = Duration::from_secs(1);

fn config(directory: &Path) -> Server {
    Server::start_with_config(directory, "runtime:\n  runtime_type: local\n  stop_grace_seconds: 1\n")
}

/// Processes that each leave a grandchild outside their process group, writing its pid to
/// `<name>.pid`; the command itself keeps running. The last also ignores SIGTERM, grandchild
/// included.
fn escaping(directory: &Path) -> Vec<(&'static str, String)> {
    let pid_file = |name: &str| directory.join(format!("{name}.pid")).display().to_string();
    vec![
        (
            "setsid",
            format!("setsid sh -c 'echo $$ > {}; exec sleep 1000' & exec sleep 1000", pid_file("setsid")),
        ),
        ("double-fork", format!("(sleep 1000 & echo $! > {}) & exec sleep 1000", pid_file("double-fork"))),
        (
            "nohup",
            format!("nohup sleep 1000 > /dev/null 2>&1 & echo $! > {}; exec sleep 1000", pid_file("nohup")),
        ),
        (
            "stubborn",
            format!(
                "trap '' TERM; setsid sh -c 'echo $$ > {}; while :; do sleep 1; done' & while :; do sleep 1; done",
                pid_file("stubborn")
            ),
        ),
    ]
}

/// Starts the [`escaping`] processes in group `tree` and returns their grandchildren's pids,
/// each checked alive.
async fn start_escaping(
    client: &mut proto::process_service_client::ProcessServiceClient<tonic::transport::Channel>,
    directory: &Path,
) -> Vec<(String, i32)> {
    let mut grandchildren = Vec::new();
    for (name, script) in escaping(directory) {
        let spec = serde_json::json!({"process_name": name, "restart_policy": "never", "group": "tree",
            "container": {"image_uri": "x", "command": ["sh", "-c", script]}});
        client.start(start_waiting(spec)).await.expect("start");
        let pid = read_pid(&directory.join(format!("{name}.pid"))).await;
        assert!(process_alive(pid), "{name}'s grandchild runs");
        grandchildren.push((name.to_owned(), pid));
    }
    grandchildren
}

/// Waits for a pid file (there is no event for it) and parses it.
async fn read_pid(path: &PathBuf) -> i32 {
    eventually(&format!("{} is written", path.display()), Duration::from_secs(20), async || {
        let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
        text.trim().parse::<i32>().map_err(|_| text)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn escaped_grandchildren_die_on_stop_and_stop_answers_within_the_grace_period() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = config(directory.path());
    let mut client = server.client().await;
    let grandchildren = start_escaping(&mut client, directory.path()).await;

    for (name, pid) in &grandchildren {
        let begin = Instant::now();
        let stopped = client.stop(stop_process(name)).await.expect("stop").into_inner().stopped;
        let took = begin.elapsed();
        assert_eq!(stopped, std::slice::from_ref(name));
        assert!(took <= GRACE + Duration::from_secs(1), "stopping {name} took {took:?}");
        assert!(!process_alive(*pid), "{name}'s grandchild {pid} outlived its Stop");
    }
    // The names are free again at once.
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    assert!(listed.is_empty(), "{listed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_sends_sigterm_to_every_process_of_the_tree_first() {
    let directory = tempfile::tempdir().expect("tempdir");
    // A long grace period: a graceful end is seen well before it.
    let server = Server::start_with_config(
        directory.path(),
        "runtime:\n  runtime_type: local\n  stop_grace_seconds: 20\n",
    );
    let mut client = server.client().await;
    let path = |name: &str| directory.path().join(name).display().to_string();
    let script = format!(
        "trap 'echo > {command}; exit 0' TERM; \
         setsid sh -c 'trap \"echo > {grandchild}; exit 0\" TERM; echo $$ > {pid}; while :; do sleep 0.1; done' & \
         while :; do sleep 0.1; done",
        command = path("command.term"),
        grandchild = path("grandchild.term"),
        pid = path("grandchild.pid"),
    );
    let spec = serde_json::json!({"process_name": "graceful", "restart_policy": "never",
        "container": {"image_uri": "x", "command": ["sh", "-c", script]}});
    client.start(start_waiting(spec)).await.expect("start");
    let grandchild = read_pid(&directory.path().join("grandchild.pid")).await;
    let begin = Instant::now();
    client.stop(stop_process("graceful")).await.expect("stop");
    let took = begin.elapsed();
    assert!(took < Duration::from_secs(10), "the tree needed SIGKILL: the Stop took {took:?}");
    assert!(directory.path().join("command.term").exists(), "the command got SIGTERM");
    assert!(
        directory.path().join("grandchild.term").exists(),
        "the grandchild in its own session got SIGTERM"
    );
    assert!(!process_alive(grandchild));
}

#[tokio::test(flavor = "multi_thread")]
async fn escaped_grandchildren_die_when_the_server_is_terminated() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut server = config(directory.path());
    let mut client = server.client().await;
    let grandchildren = start_escaping(&mut client, directory.path()).await;
    drop(client);
    let begin = Instant::now();
    assert_eq!(server.terminate(), Some(0), "a clean exit after SIGTERM");
    let took = begin.elapsed();
    assert!(took <= GRACE + Duration::from_secs(5), "the shutdown took {took:?}");
    for (name, pid) in grandchildren {
        assert!(!process_alive(pid), "{name}'s grandchild {pid} outlived the server");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn escaped_grandchildren_die_when_the_server_is_killed() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = config(directory.path());
    let mut client = server.client().await;
    let grandchildren = start_escaping(&mut client, directory.path()).await;
    drop(client);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid()), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL the server");
    // The supervisors notice the closed lifeline on their own; there is no event to wait on.
    for (name, pid) in grandchildren {
        eventually(&format!("{name}'s grandchild {pid} is gone"), Duration::from_secs(10), async || {
            !process_alive(pid)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_ends_is_reported_at_once_though_its_grandchild_held_the_pipes() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = config(directory.path());
    let mut client = server.client().await;
    // Each grandchild inherits stdout and stderr, the capture pipes, and sleeps on.
    let cases = [
        ("exits", "exit 7", 7, "Error"),
        ("signalled", "kill -USR1 $$", 128 + 10, "Signaled"),
        ("completes", "true", 0, "Completed"),
    ];
    for (name, end, exit_code, reason) in cases {
        let pid_file = directory.path().join(format!("{name}.pid"));
        let script = format!("setsid sleep 1000 & echo $! > {}; {end}", pid_file.display());
        let spec = serde_json::json!({"process_name": name, "restart_policy": "never",
            "container": {"image_uri": "x", "command": ["sh", "-c", script]}});
        let mut watch = Watch::process(&mut client, name).await;
        let begin = Instant::now();
        client.start(start_request(spec)).await.expect("start");
        let ended = watch
            .until_process(name, "ended", |_, process| {
                matches!(process.status(), ProcessStatus::Exited | ProcessStatus::Failed)
            })
            .await;
        let took = begin.elapsed();
        assert_eq!((ended.exit_code, ended.reason()), (Some(exit_code), reason), "{ended:?}");
        assert!(took < Duration::from_secs(10), "{name} was reported after {took:?}");
        // The supervisor killed and reaped the tree before it exited, so before the report.
        let grandchild = read_pid(&pid_file).await;
        assert!(!process_alive(grandchild), "{name}'s grandchild {grandchild} outlived it");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_is_running_only_once_its_own_tree_listens_on_its_ports() {
    let server = Server::start();
    let mut client = server.client().await;
    // The test serves this port itself: the process declaring it does not.
    let foreign = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let foreign_port = foreign.local_addr().expect("address").port();
    let squatter = serde_json::json!({"process_name": "squatter", "restart_policy": "never", "container": {
        "image_uri": "x", "command": ["sleep", "300"], "ports": [{"container_port": foreign_port}]}});
    let mut request = start_waiting(squatter);
    request.wait_timeout = Some(prost_types::Duration { seconds: 1, nanos: 0 });
    let error = client.start(request).await.unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("still STARTING"), "{}", error.message());

    // Served by a grandchild (the shell forks, as the command is not its last), it counts.
    let port = free_port();
    let script = format!("python3 -m http.server {port} --bind 127.0.0.1; true");
    let served = serde_json::json!({"process_name": "served", "restart_policy": "never", "container": {
        "image_uri": "x", "command": ["sh", "-c", script], "ports": [{"container_port": port}]}});
    let process =
        client.start(start_waiting(served)).await.expect("start").into_inner().process.expect("process");
    assert_eq!(process.status(), ProcessStatus::Running, "{process:?}");
    let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    let squatter = listed.iter().find(|process| process.process_name == "squatter").expect("listed");
    assert_eq!(squatter.status(), ProcessStatus::Starting);
    drop(foreign);
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_environment_variables_reach_the_process_while_list_answers() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut env: Vec<serde_json::Value> = (0..4_000)
        .map(|index| serde_json::json!({"name": format!("V{index}"), "value": format!("value{index}")}))
        .collect();
    // The spec's variable replaces the server's own of the same name.
    env.push(serde_json::json!({"name": "HOME", "value": "/replaced"}));
    let script = r#"test "$HOME" = /replaced && test "$V0" = value0 && test "$V3999" = value3999 && test "$(env | grep -c '^V')" = 4000"#;
    let starts: Vec<_> = (0..4)
        .map(|index| {
            let name = format!("env-{index}");
            let spec = serde_json::json!({"process_name": name, "restart_policy": "never", "group": "env",
                "container": {"image_uri": "x", "command": ["sh", "-c", script], "env": env}});
            let mut client = client.clone();
            tokio::spawn(async move {
                client.start(start_request(spec)).await.map(|response| response.into_inner())
            })
        })
        .collect();
    // List is served from the table, never behind a Start's spawning.
    client.list(proto::ListRequest::default()).await.expect("list while starting");
    for start in starts {
        start.await.expect("join").expect("start");
    }
    let mut watch =
        Watch::open(&mut client, proto::WatchRequest { group: Some("env".into()), ..Default::default() })
            .await;
    let view = watch
        .until_view("every env process ended", |view| {
            view.len() == 4
                && view.values().all(|process| {
                    process.status() != ProcessStatus::Starting && process.status() != ProcessStatus::Running
                })
        })
        .await;
    for process in view.values() {
        assert_eq!(process.status(), ProcessStatus::Exited, "{process:?}");
    }
    client.stop(stop_group("env")).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_runs_in_its_working_directory_and_a_missing_one_is_named() {
    let server = Server::start();
    let mut client = server.client().await;
    let in_tmp = serde_json::json!({"process_name": "in-tmp", "restart_policy": "never", "container": {"image_uri": "x",
        "command": ["sh", "-c", r#"test "$PWD" = /tmp"#], "working_dir": "/tmp"}});
    let mut watch = Watch::process(&mut client, "in-tmp").await;
    client.start(start_request(in_tmp)).await.expect("start");
    let ended = watch
        .until_process("in-tmp", "ended", |_, process| {
            matches!(process.status(), ProcessStatus::Exited | ProcessStatus::Failed)
        })
        .await;
    assert_eq!((ended.status(), ended.exit_code), (ProcessStatus::Exited, Some(0)), "{ended:?}");

    let missing = serde_json::json!({"process_name": "nowhere", "restart_policy": "never", "container": {"image_uri": "x",
        "command": ["sleep", "300"], "working_dir": "/no/such/directory"}});
    let process =
        client.start(start_waiting(missing)).await.expect("start").into_inner().process.expect("process");
    assert_eq!((process.status(), process.reason()), (ProcessStatus::Failed, "SpawnFailed"), "{process:?}");
    assert!(
        process.message().contains("the working directory `/no/such/directory` cannot be used"),
        "{}",
        process.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_starts_of_one_name_spawn_it_once() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start();
    let client = server.client().await;
    // Every run of the command appends a line: one line means one spawn.
    let runs = directory.path().join("runs");
    let script = format!("echo run >> {}; exec sleep 300", runs.display());
    let spec = serde_json::json!({"process_name": "once", "restart_policy": "never", "container": {"image_uri": "x", "command": ["sh", "-c", script]}});
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let mut client = client.clone();
            let request = start_waiting(spec.clone());
            tokio::spawn(async move { client.start(request).await.map(|response| response.into_inner()) })
        })
        .collect();
    let mut created = 0;
    for start in starts {
        let started = start.await.expect("join").expect("start");
        created += usize::from(started.created);
        assert_eq!(started.process.expect("process").status(), ProcessStatus::Running);
    }
    assert_eq!(created, 1, "exactly one Start created the process");
    eventually("the command ran", Duration::from_secs(20), async || runs.exists()).await;
    assert_eq!(std::fs::read_to_string(&runs).expect("read").lines().count(), 1);
}
