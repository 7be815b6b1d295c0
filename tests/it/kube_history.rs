//! Describe's history on the `kubernetes` runtime: a normal Start's own steps (its Pod before its
//! Service) never show as a half-made process, and the Pod's Events come oldest first, in the
//! order the cluster made them.

use crate::common::{self, KubeSim, Server, hpctl_json};

#[test]
fn a_normal_start_shows_no_half_made_moment_and_events_in_order() {
    let sim = KubeSim::start(&[]);
    let server = Server::start_with_config(sim.directory(), &sim.hydroplane_config(""));
    let nginx = common::repo_root().join("examples/nginx.json");
    let started = hpctl_json(&server, &["start", "--wait", nginx.to_str().expect("path")]);
    assert_eq!(started["status"], "RUNNING", "{started}");

    let described = hpctl_json(&server, &["describe", "nginx"]);
    let history = described["history"].as_array().expect("a history");
    assert!(
        history.iter().all(|entry| entry["reason"] != "Incomplete"),
        "a normal Start is never half-made: {described:#}"
    );
    let times: Vec<jiff::Timestamp> = history
        .iter()
        .filter_map(|entry| entry["time"].as_str())
        .map(|time| time.parse().expect("an RFC 3339 time"))
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "oldest first");
    let reasons: Vec<&str> = history.iter().filter_map(|entry| entry["reason"].as_str()).collect();
    let position = |reason: &str| reasons.iter().position(|seen| *seen == reason);
    if let (Some(scheduled), Some(started)) = (position("Scheduled"), position("Started")) {
        assert!(scheduled < started, "{reasons:?}");
    }
}
