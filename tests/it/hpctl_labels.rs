//! Labels through `hpctl` against the real server (local runtime): `start` reads a spec's labels,
//! `list -l` follows every page into one array with each process's labels, `watch -l` prints only
//! the selected processes' changes, `stop -l` stops exactly those, and a malformed selector is the
//! server's one line and exit code 1.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::child::Follow;
use crate::common::requests::sleeper;
use crate::common::{Server, hpctl, hpctl_json};

/// Starts a sleeper through `hpctl start`, from a spec file with these labels.
fn start(server: &Server, directory: &std::path::Path, name: &str, labels: Value) {
    let mut spec = sleeper(name);
    spec["labels"] = labels;
    let path = directory.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&spec).expect("json")).expect("write the spec");
    let started = hpctl_json(server, &["start", path.to_str().expect("utf-8 path")]);
    assert_eq!(started["process_name"], name);
}

/// The names in an array hpctl printed.
fn names(listed: &Value) -> Vec<&str> {
    listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|process| process["process_name"].as_str().expect("a name"))
        .collect()
}

/// The one line hpctl wrote on stderr for a failure, after checking it failed with exit code 1.
#[track_caller]
fn error_line(output: &std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    stderr.trim_end().to_owned()
}

#[test]
fn hpctl_lists_watches_and_stops_by_label_selector() {
    let server = Server::start();
    let directory = tempfile::tempdir().expect("tempdir");
    for (name, labels) in [
        ("web-1", json!({"tier": "web", "example.com/team": "blue"})),
        ("web-2", json!({"tier": "web"})),
        ("web-3", json!({"tier": "web", "canary": ""})),
        ("api-1", json!({"tier": "api"})),
        ("plain", json!({})),
    ] {
        start(&server, directory.path(), name, labels);
    }

    // Pages of two: the array is every page, once each; labels shown when there are any.
    let web = hpctl_json(&server, &["list", "-l", "tier=web", "--page-size", "2"]);
    assert_eq!(names(&web), ["web-1", "web-2", "web-3"]);
    assert_eq!(web[0]["labels"], json!({"tier": "web", "example.com/team": "blue"}));
    assert_eq!(web[2]["labels"], json!({"tier": "web", "canary": ""}));
    let all = hpctl_json(&server, &["list", "--page-size", "2"]);
    assert_eq!(names(&all), ["api-1", "plain", "web-1", "web-2", "web-3"]);
    assert_eq!(all[1].get("labels"), None, "no labels, no key: {}", all[1]);
    assert_eq!(names(&hpctl_json(&server, &["list", "--selector", "tier!=web,!canary"])), ["api-1", "plain"]);
    assert_eq!(names(&hpctl_json(&server, &["list", "-l", "example.com/team"])), ["web-1"]);
    assert_eq!(
        names(&hpctl_json(
            &server,
            &["list", "-l", "tier in (api, web),!example.com/team", "--page-size", "1"]
        )),
        ["api-1", "web-2", "web-3"]
    );

    // A watch of the selected processes prints only their changes.
    let mut command = Command::new(crate::common::hpctl_binary());
    command.args(["watch", "-l", "tier=web", "--server", &server.url()]);
    let watch = Follow::spawn("hpctl watch -l tier=web", &mut command);
    let mut printed = Vec::new();
    let mut record = |line: &str| -> Value {
        let event: Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        printed.push(event.clone());
        event
    };
    watch.wait_for(Duration::from_secs(30), |line| record(line)["type"] == "SYNCED");

    // Stop by selector: exactly the matching ones, as an array of names.
    assert_eq!(hpctl_json(&server, &["stop", "-l", "tier=web,!canary"]), json!(["web-1", "web-2"]));
    assert_eq!(hpctl_json(&server, &["stop", "api-1"]), json!(["api-1"]));
    assert_eq!(hpctl_json(&server, &["stop", "-l", "tier=nothing"]), json!([]));
    start(&server, directory.path(), "web-last", json!({"tier": "web"}));
    watch.wait_for(Duration::from_secs(30), |line| {
        let event = record(line);
        event["type"] == "ADDED" && event["process"]["process_name"] == "web-last"
    });
    let touched: std::collections::BTreeSet<&str> =
        printed.iter().filter_map(|event| event["process"]["process_name"].as_str()).collect();
    assert_eq!(touched, ["web-1", "web-2", "web-3", "web-last"].into(), "only tier=web: {printed:?}");
    assert!(
        printed.iter().any(|event| event["type"] == "DELETED" && event["process"]["process_name"] == "web-2")
    );
    assert_eq!(names(&hpctl_json(&server, &["list"])), ["plain", "web-3", "web-last"]);

    // Malformed selectors: the server's message, on one line, naming the position; exit code 1.
    for args in [
        &["list", "-l", "tier in (web"][..],
        &["watch", "-l", "tier in (web"],
        &["stop", "-l", "tier in (web"],
    ] {
        assert_eq!(
            error_line(&hpctl(&server, args)),
            "error: invalid request: label_selector: at position 13: expected `)` or `,` after a value, found end of input",
            "{args:?}"
        );
    }
    let line = error_line(&hpctl(&server, &["list", "-l", "-tier=web"]));
    assert!(line.contains("label_selector: at position 1: label key `-tier`"), "{line}");
    let line = error_line(&hpctl(&server, &["stop", "--selector="]));
    assert!(line.contains("label_selector: is empty, which would stop every process"), "{line}");
    assert_eq!(
        names(&hpctl_json(&server, &["list"])),
        ["plain", "web-3", "web-last"],
        "nothing more stopped"
    );
}
