//! Labels and label selectors end to end, on both runtimes (the local one, and Kubernetes against
//! kube-sim, checked with kubectl): List, Watch and Stop select exactly the processes a selector
//! matches, labels are shown on each process (and stored on its Pod under `label.hydroplane`),
//! and a malformed selector is INVALID_ARGUMENT naming the position of the mistake.

use std::collections::BTreeSet;

use hydroplane::proto::process_service_client::ProcessServiceClient;
use hydroplane::proto::{self, ProcessStatus, WatchEventType, stop_request::Target};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

use crate::common::requests::{sleeper, start_request, stop_process};
use crate::common::watch::Watch;
use crate::common::{KubeSim, Server};

/// The processes every test starts: name, group, labels.
fn fleet() -> Vec<(&'static str, Option<&'static str>, Value)> {
    vec![
        ("web-1", Some("site"), json!({"tier": "web", "env": "prod", "example.com/team": "blue"})),
        ("web-2", Some("site"), json!({"tier": "web", "env": "dev"})),
        ("api-1", Some("site"), json!({"tier": "api", "env": "prod", "canary": ""})),
        ("db-1", Some("data"), json!({"tier": "db"})),
        ("plain", None, json!({})),
    ]
}

/// Starts a sleeper with this group and these labels.
async fn start(client: &mut ProcessServiceClient<Channel>, name: &str, group: Option<&str>, labels: Value) {
    let mut spec = sleeper(name);
    if let Some(group) = group {
        spec["group"] = group.into();
    }
    spec["labels"] = labels;
    client.start(start_request(spec)).await.unwrap_or_else(|status| panic!("start {name}: {status:?}"));
}

/// The names List answers with for this group and selector, in one page.
async fn listed(
    client: &mut ProcessServiceClient<Channel>,
    group: Option<&str>,
    selector: &str,
) -> Vec<String> {
    let request = proto::ListRequest {
        group: group.map(str::to_owned),
        label_selector: Some(selector.to_owned()),
        ..proto::ListRequest::default()
    };
    let response = client
        .list(request)
        .await
        .unwrap_or_else(|status| panic!("list {selector:?}: {status:?}"))
        .into_inner();
    assert_eq!(response.next_page_token, None, "one page");
    response.processes.into_iter().map(|process| process.process_name).collect()
}

/// Asserts that a call was refused as INVALID_ARGUMENT with a message naming the selector and
/// this position.
#[track_caller]
fn assert_invalid_at(result: Result<(), tonic::Status>, selector: &str, position: usize) {
    let status = result.expect_err(selector);
    assert_eq!(status.code(), Code::InvalidArgument, "{selector:?}: {status:?}");
    let expected = format!("label_selector: at position {position}: ");
    assert!(status.message().contains(&expected), "{selector:?}: `{}` lacks `{expected}`", status.message());
}

/// The whole scenario, on whichever runtime `server` runs; `sim` when it is Kubernetes.
async fn selectors_select_exactly_the_matching_processes(server: &Server, sim: Option<&KubeSim>) {
    let mut client = server.client().await;
    let mut everything = Watch::all(&mut client).await;
    everything.until_synced().await;
    for (name, group, labels) in fleet() {
        start(&mut client, name, group, labels).await;
    }

    // Labels are shown on each process, as given.
    let all = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    let web_1 = all.iter().find(|process| process.process_name == "web-1").expect("web-1 is listed");
    let expected_labels = [("env", "prod"), ("example.com/team", "blue"), ("tier", "web")]
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .into();
    assert_eq!(web_1.labels, expected_labels);
    let plain = all.iter().find(|process| process.process_name == "plain").expect("plain is listed");
    assert!(plain.labels.is_empty(), "{plain:?}");
    let described = client.describe(proto::DescribeRequest { process_name: "web-1".into() }).await;
    assert_eq!(described.expect("describe").into_inner().spec.expect("the spec").labels, expected_labels);

    // On Kubernetes they are the Pod's labels (its StatefulSet's `web-1-0` under the default
    // policy), under our domain, and kubectl selects by them.
    if let Some(sim) = sim {
        let pod: Value =
            serde_json::from_str(&sim.kubectl(&["get", "pod", "web-1-0", "-o", "json"])).expect("json");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["label.hydroplane/tier"], "web", "{labels}");
        assert_eq!(labels["label.hydroplane/env"], "prod", "{labels}");
        assert_eq!(labels["example.com.label.hydroplane/team"], "blue", "{labels}");
        assert_eq!(labels.get("tier"), None, "no label outside our domain: {labels}");
        let selected = sim.kubectl(&["get", "pods", "-l", "label.hydroplane/tier=web", "-o", "name"]);
        assert_eq!(selected.split_whitespace().collect::<Vec<_>>(), ["pod/web-1-0", "pod/web-2-0"]);
    }

    // List: every operator, a prefixed key, and a group with a selector.
    for (group, selector, expected) in [
        (None, "tier=web", &["web-1", "web-2"][..]),
        (None, "tier==web", &["web-1", "web-2"]),
        (None, "tier!=web", &["api-1", "db-1", "plain"]),
        (None, "env in (prod,dev)", &["api-1", "web-1", "web-2"]),
        (None, "env notin (prod)", &["db-1", "plain", "web-2"]),
        (None, "canary", &["api-1"]),
        (None, "!canary", &["db-1", "plain", "web-1", "web-2"]),
        (None, "example.com/team=blue", &["web-1"]),
        (None, "example.com/team", &["web-1"]),
        (None, "!example.com/team,tier in (web)", &["web-2"]),
        (None, "tier=web,env=prod", &["web-1"]),
        (None, "tier=nothing", &[]),
        (None, "  ", &["api-1", "db-1", "plain", "web-1", "web-2"]),
        (Some("site"), "env=prod", &["api-1", "web-1"]),
        (Some("data"), "tier!=db", &[]),
    ] {
        assert_eq!(
            listed(&mut client, group, selector).await,
            expected,
            "group {group:?}, selector {selector:?}"
        );
    }

    // Watch: a selected watch shows the matching processes, and only their changes while others
    // change too.
    let request = proto::WatchRequest { label_selector: Some("tier=web".into()), ..Default::default() };
    let mut web = Watch::open(&mut client, request).await;
    let snapshot = web.until_synced().await;
    let snapshot: BTreeSet<String> =
        snapshot.iter().filter_map(|event| event.process.clone()).map(|p| p.process_name).collect();
    assert_eq!(snapshot, BTreeSet::from(["web-1".to_owned(), "web-2".to_owned()]));
    start(&mut client, "api-2", Some("site"), json!({"tier": "api"})).await;
    start(&mut client, "web-3", None, json!({"tier": "web"})).await;
    client.stop(stop_process("plain")).await.expect("stop plain");
    everything.until_view("plain is gone", |view| !view.contains_key("plain")).await;

    // Stop: exactly the matching processes, and their watch sees them go.
    let stop =
        |selector: &str| proto::StopRequest { target: Some(Target::LabelSelector(selector.to_owned())) };
    let stopped = client.stop(stop("tier=web")).await.expect("stop tier=web").into_inner().stopped;
    assert_eq!(stopped, ["web-1", "web-2", "web-3"]);
    everything
        .until_view("the web processes are gone", |view| !view.keys().any(|name| name.starts_with("web-")))
        .await;
    // One more matching process after every other change: the selected watch reaches it only
    // after every event before it, so that none about another process can still come.
    start(&mut client, "web-last", None, json!({"tier": "web"})).await;
    let mut seen = BTreeSet::new();
    web.until("web-last is added", |event| {
        let process = event.process.as_ref().map(|process| process.process_name.clone());
        if let Some(name) = &process {
            seen.insert(name.clone());
        }
        process.as_deref() == Some("web-last") && event.r#type() == WatchEventType::Added
    })
    .await;
    assert_eq!(seen, ["web-1", "web-2", "web-3", "web-last"].map(str::to_owned).into(), "only tier=web");
    assert!(web.until_view("the web watch", |_| true).await.keys().eq(["web-last"]));

    // A second Stop with `notin` and `!key`, which also match processes without the key.
    let stopped =
        client.stop(stop("env notin (dev),!canary,tier!=web")).await.expect("stop").into_inner().stopped;
    assert_eq!(stopped, ["api-2", "db-1"]);
    // A selector that matches nothing stops nothing, and succeeds.
    assert!(client.stop(stop("tier=nothing")).await.expect("stop nothing").into_inner().stopped.is_empty());
    everything
        .until_view("only api-1 and web-last are left", |view| view.keys().eq(["api-1", "web-last"]))
        .await;
    let left = client.list(proto::ListRequest::default()).await.expect("list").into_inner().processes;
    let left: Vec<(&str, ProcessStatus)> =
        left.iter().map(|process| (process.process_name.as_str(), process.status())).collect();
    assert!(left.iter().map(|(name, _)| *name).eq(["api-1", "web-last"]), "{left:?}");
    assert!(left.iter().all(|(_, status)| *status != ProcessStatus::Stopping), "{left:?}");
    if let Some(sim) = sim {
        sim.wait_deleted(&["pod/web-1-0", "pod/web-2-0", "pod/web-3-0", "pod/db-1-0", "pod/api-2-0"]);
        sim.wait_deleted(&[
            "statefulset/web-1",
            "statefulset/web-2",
            "statefulset/web-3",
            "statefulset/db-1",
        ]);
        assert_eq!(sim.names("statefulsets"), ["api-1", "web-last"]);
        assert_eq!(sim.names("pods"), ["api-1-0", "web-last-0"]);
    }

    // Malformed selectors are refused on every call, naming the position; nothing is stopped.
    let list = |selector: &str| proto::ListRequest {
        label_selector: Some(selector.to_owned()),
        ..Default::default()
    };
    let watch = |selector: &str| proto::WatchRequest {
        label_selector: Some(selector.to_owned()),
        ..Default::default()
    };
    for (selector, position) in [
        ("tier in (web", 13),
        ("tier=web,,env=dev", 10),
        ("tier=web env=dev", 10),
        ("Tier~web", 1),
        ("tier=web,", 10),
    ] {
        assert_invalid_at(client.list(list(selector)).await.map(drop), selector, position);
        assert_invalid_at(client.watch(watch(selector)).await.map(drop), selector, position);
        assert_invalid_at(client.stop(stop(selector)).await.map(drop), selector, position);
    }
    // An empty selector would stop everything: refused, and so is one of blanks.
    for selector in ["", "  "] {
        let status = client.stop(stop(selector)).await.expect_err("an empty selector");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("label_selector: is empty"), "{status:?}");
    }
    assert_eq!(listed(&mut client, None, "").await, ["api-1", "web-last"], "nothing else was stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_select_exactly_the_matching_processes_on_the_local_runtime() {
    let server = Server::start();
    selectors_select_exactly_the_matching_processes(&server, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn selectors_select_exactly_the_matching_processes_on_kubernetes() {
    let sim = KubeSim::start(&[]);
    let server = Server::start_with_config(sim.directory(), &sim.hydroplane_config(""));
    selectors_select_exactly_the_matching_processes(&server, Some(&sim)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_that_break_the_rules_are_refused_at_start() {
    let server = Server::start();
    let mut client = server.client().await;
    let mut spec = sleeper("bad");
    spec["labels"] = json!({"-tier": "web", "ok": "not ok!"});
    let status = client.start(start_request(spec)).await.expect_err("bad labels");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("labels"), "{status:?}");
    assert!(listed(&mut client, None, "").await.is_empty());
}
