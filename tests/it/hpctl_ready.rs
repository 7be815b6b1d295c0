//! `hpctl wait-ready` and `hpctl start --wait` as scripts use them: waiting for a server that is
//! still starting, and a non-zero exit code for a process that did not start.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::child::Follow;
use crate::common::{Server, free_port, hpctl};

/// `start --wait` of a command that does not exist: the process is printed (FAILED), the reason
/// is one line on stderr, and the exit code is 3.
#[test]
fn start_wait_of_a_process_that_fails_exits_3() {
    let server = Server::start();
    let directory = tempfile::tempdir().expect("tempdir");
    let spec = directory.path().join("missing.json");
    let json = serde_json::json!({"process_name": "missing", "container": {"image_uri": "none",
        "command": ["/no/such/command-hydroplane-test"]}});
    std::fs::write(&spec, json.to_string()).expect("write spec");
    let output = hpctl(&server, &["start", "--wait", spec.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the process as JSON");
    assert_eq!(printed["status"], "FAILED");
    assert_eq!(printed["reason"], "SpawnFailed");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: process `missing` is FAILED: SpawnFailed: "), "{stderr}");

    // Without --wait the Start itself succeeded: exit code 0, whatever the process does next.
    let json = serde_json::json!({"process_name": "missing-2", "container": {"image_uri": "none",
        "command": ["/no/such/command-hydroplane-test"]}});
    std::fs::write(&spec, json.to_string()).expect("write spec");
    let output = hpctl(&server, &["start", spec.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A server started in the background and `hpctl wait-ready` at once: it waits through the
/// refused connections and returns once the server serves, so the next command never races it.
#[test]
fn wait_ready_waits_for_a_server_that_is_still_starting() {
    let port = free_port();
    let state = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hydroplane"));
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("XDG_STATE_HOME", state.path())
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    let server_url = format!("http://127.0.0.1:{port}");
    let _server = Follow::spawn("the hydroplane server", &mut command);
    let output = Command::new(crate::common::hpctl_binary())
        .args(["wait-ready", "--timeout", "60", "-s", &server_url])
        .output()
        .expect("run hpctl wait-ready");
    assert!(output.status.success(), "wait-ready: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stdout.is_empty());
    let output = Command::new(crate::common::hpctl_binary())
        .args(["list", "-s", &server_url])
        .output()
        .expect("run hpctl list");
    assert!(output.status.success(), "list: {}", String::from_utf8_lossy(&output.stderr));
}

/// Nothing listening: wait-ready gives up after --timeout with one line naming the server and
/// the last reason; another command's refused connection says the server may still be starting.
#[test]
fn wait_ready_gives_up_after_its_timeout_and_refused_says_why() {
    let server_url = format!("http://127.0.0.1:{}", free_port());
    let started = std::time::Instant::now();
    let output = Command::new(crate::common::hpctl_binary())
        .args(["wait-ready", "--timeout", "0.5", "-s", &server_url])
        .output()
        .expect("run hpctl wait-ready");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: the Hydroplane server at {server_url} was not ready within 0.5 s (--timeout 0.5): "
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");

    let output = Command::new(crate::common::hpctl_binary())
        .args(["list", "-s", &server_url])
        .output()
        .expect("run hpctl list");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("it may still be starting: `hpctl wait-ready` waits for it"), "{stderr}");
}
