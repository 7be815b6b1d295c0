//! End to end through `hpctl`: the real CLI against the real server on the local runtime.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::child::Follow;
use crate::common::requests::http_server_spec;
use crate::common::{Server, free_port, hpctl, hpctl_json, http_get_status};

#[track_caller]
fn json_of(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "hpctl failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("hpctl prints JSON")
}

/// Follows `hpctl watch` in the background (killed when dropped).
struct Watch(Follow);

impl Watch {
    fn start(server: &Server) -> Watch {
        let mut command = Command::new(crate::common::hpctl_binary());
        command.args(["watch", "--server", &server.url()]);
        Watch(Follow::spawn("hpctl watch", &mut command))
    }

    /// Waits for a line of this type (and process), returning it.
    fn expect(&self, kind: &str, process: Option<&str>) -> serde_json::Value {
        let parse = |line: &str| -> serde_json::Value {
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
        };
        let line = self.0.wait_for(Duration::from_secs(30), |line| {
            let line = parse(line);
            line["type"] == kind && process.is_none_or(|name| line["process"]["process_name"] == name)
        });
        parse(&line)
    }
}

#[test]
fn hpctl_starts_lists_watches_and_stops_a_process() {
    let server = Server::start();
    assert_eq!(json_of(&hpctl(&server, &["list"])), serde_json::json!([]));
    let watch = Watch::start(&server);
    watch.expect("SYNCED", None);

    let directory = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let spec_path = directory.path().join("web.json");
    let mut spec = http_server_spec("web", port);
    spec["group"] = "site".into();
    std::fs::write(&spec_path, serde_json::to_string_pretty(&spec).expect("json")).expect("write spec");
    let started = json_of(&hpctl(&server, &["start", "--wait", spec_path.to_str().expect("path")]));
    assert_eq!(started["status"], "RUNNING");

    let listed = json_of(&hpctl(&server, &["list"]));
    let process = &listed[0];
    assert_eq!(process["process_name"], "web");
    assert_eq!(process["group"], "site");
    let address = &process["socket_addresses"][0];
    assert_eq!(address["host"], "127.0.0.1");
    assert_eq!(address["port"], u64::from(port));
    assert_eq!(address["is_public"], false);
    let created = process["created"].as_str().expect("created is a string");
    assert!(created.ends_with("+00:00") && created.len() == 25, "{created}");
    assert!(http_get_status("127.0.0.1", u32::from(port)).contains("200"));

    watch.expect("ADDED", Some("web"));
    assert_eq!(json_of(&hpctl(&server, &["list", "-g", "other"])), serde_json::json!([]));
    assert_eq!(json_of(&hpctl(&server, &["stop", "-g", "site"])), serde_json::json!(["web"]));
    let deleted = watch.expect("DELETED", Some("web"));
    assert!(deleted["revision"].as_u64().is_some());
    assert_eq!(json_of(&hpctl(&server, &["list"])), serde_json::json!([]));
}

#[test]
fn the_server_flag_goes_before_or_after_the_subcommand() {
    let server = Server::start();
    for args in
        [vec!["-s", server.address.as_str(), "list"], vec!["list", "--server", server.address.as_str()]]
    {
        let output = Command::new(crate::common::hpctl_binary())
            .args(&args)
            .env_remove("HYDROPLANE_SERVER")
            .output()
            .expect("run");
        assert_eq!(json_of(&output), serde_json::json!([]), "{args:?}");
    }
}

#[test]
fn a_spec_from_stdin_works_and_malformed_json_names_the_file_and_line() {
    let server = Server::start();
    let mut child = Command::new(crate::common::hpctl_binary())
        .args(["start", "-"])
        .env("HYDROPLANE_SERVER", server.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run");
    let spec =
        r#"{"process_name": "from-stdin", "container": {"image_uri": "x", "command": ["sleep", "300"]}}"#;
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), spec.as_bytes()).expect("write");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(json_of(&output)["process_name"], "from-stdin");

    let directory = tempfile::tempdir().expect("tempdir");
    let path = directory.path().join("broken.json");
    std::fs::write(&path, "{\n  \"process_name\": \"x\",\n  \"container\": {\"image_uri\": \"i\",,}\n}\n")
        .expect("write");
    let output = hpctl(&server, &["start", path.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("{}:3:", path.display())), "{stderr}");

    std::fs::write(
        &path,
        r#"{"process_name": "x", "container": {"image_uri": "i", "command": ["true"]}, "node_selector": {}}"#,
    )
    .expect("write");
    let stderr = String::from_utf8_lossy(&hpctl(&server, &["start", path.to_str().expect("path")]).stderr)
        .into_owned();
    assert!(stderr.contains("unknown field `node_selector`"), "{stderr}");

    let output = hpctl(&server, &["stop", "ghost"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stderr).trim(), "error: process `ghost` does not exist");
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    let port = free_port();
    let output = Command::new(crate::common::hpctl_binary())
        .args(["list", "-s", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the Hydroplane server at http://127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("Connection refused"), "{stderr}");
}

#[test]
fn hpctl_describe_shows_a_crashed_process_its_spec_and_its_history() {
    let server = Server::start();
    let watch = Watch::start(&server);
    watch.expect("SYNCED", None);
    let directory = tempfile::tempdir().expect("tempdir");
    let spec = serde_json::json!({"process_name": "crasher", "restart_policy": "never", "container": {"image_uri": "busybox",
        "command": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; done; exit 3"]}});
    let spec_path = directory.path().join("crasher.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    json_of(&hpctl(&server, &["start", spec_path.to_str().expect("path")]));
    watch.0.wait_for(Duration::from_secs(30), |line| {
        let line: serde_json::Value = serde_json::from_str(line).expect("JSON");
        line["process"]["process_name"] == "crasher" && line["process"]["status"] == "FAILED"
    });

    let detail = hpctl_json(&server, &["describe", "crasher"]);
    let listed = json_of(&hpctl(&server, &["list"]));
    assert_eq!(detail["process"], listed[0], "`process` is shaped as an entry of `list`");
    assert_eq!(detail["process"]["exit_code"], 3);
    let stored: hydroplane::spec::ProcessSpec = serde_json::from_value(spec).expect("a spec");
    assert_eq!(detail["spec"], serde_json::to_value(&stored).expect("JSON"), "the spec as started");
    let history = detail["history"].as_array().expect("a history");
    let statuses: Vec<&str> =
        history.iter().map(|entry| entry["status"].as_str().expect("a status")).collect();
    assert!(statuses == ["STARTING", "RUNNING", "FAILED"] || statuses == ["RUNNING", "FAILED"], "{detail:#}");
    let times: Vec<jiff::Timestamp> = history
        .iter()
        .map(|entry| entry["time"].as_str().expect("a time").parse().expect("RFC 3339"))
        .collect();
    assert!(times.is_sorted(), "oldest first: {detail:#}");
    assert_eq!(history.last().expect("an entry")["reason"], detail["process"]["reason"]);

    let unknown = hpctl(&server, &["describe", "ghost"]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("`ghost` does not exist"), "{stderr}");
}
