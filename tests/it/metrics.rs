//! The metrics listener end to end: the real server with `metrics: {listen: 127.0.0.1:0}`, its
//! `/metrics` parsed by the Python `prometheus_client` OpenMetrics parser (a real Prometheus
//! text parser, not ours), on the local runtime and on the Kubernetes simulator.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::requests::{sleeper, start_request, start_waiting};
use crate::common::{self, KubeSim, Server};
use hydroplane::proto;
use tonic::Code;

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the exposition with `prometheus_client`'s OpenMetrics parser in the test venv.
fn parse(text: &str) -> Vec<Sample> {
    let script = "import json, sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
        out = []\n\
        for family in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       out.append([s.name, s.labels, s.value])\n\
        print(json.dumps(out))\n";
    let mut child = Command::new(common::test_python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the test venv's python");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the exposition");
    let output = child.wait_with_output().expect("python ends");
    assert!(
        output.status.success(),
        "prometheus_client cannot parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    parsed.into_iter().map(|(name, labels, value)| Sample { name, labels, value }).collect()
}

/// The parsed samples of a scrape.
fn scrape(address: &str) -> Vec<Sample> {
    let (head, body) = common::http_get(address, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    parse(&body)
}

/// The value of the one sample with this name and these labels (among others); 0 when absent.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|sample| {
            sample.name == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .collect();
    assert!(matching.len() <= 1, "several samples of {name} {labels:?}: {matching:?}");
    matching.first().map_or(0.0, |sample| sample.value)
}

/// Checks a histogram series: buckets never decrease, and `+Inf` equals `_count`.
#[track_caller]
fn check_histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)], count: f64) {
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|sample| {
            sample.name == format!("{name}_bucket")
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|sample| {
            let bound = sample.labels["le"].parse::<f64>().expect("a bucket bound");
            (bound, sample.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 2, "{name} {labels:?} has buckets: {buckets:?}");
    assert!(buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1), "buckets are cumulative: {buckets:?}");
    let infinite = buckets.last().expect("a bucket");
    assert!(infinite.0.is_infinite(), "the last bucket is +Inf: {buckets:?}");
    assert_eq!(infinite.1, value(samples, &format!("{name}_count"), labels), "+Inf equals _count");
    assert_eq!(infinite.1, count, "{name} {labels:?} counts every call");
}

fn process_service(method: &'static str) -> [(&'static str, &'static str); 3] {
    [("grpc_service", "hydroplane.v1.ProcessService"), ("grpc_method", method), ("grpc_type", "unary")]
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_equal_the_calls_made_by_method_and_code() {
    let directory = tempfile::tempdir().expect("tempdir");
    let server = Server::start_with_config(directory.path(), "metrics:\n  listen: 127.0.0.1:0\n");
    let address = server.metrics_address().await;
    let mut client = server.client().await;
    for index in 0..100 {
        client.start(start_request(sleeper(&format!("m{index:03}")))).await.expect("start");
    }
    for index in 0..20 {
        // Upper case is not a DNS label: refused before anything starts.
        let refused = client.start(start_request(sleeper(&format!("Bad-{index}")))).await;
        assert_eq!(refused.expect_err("an invalid name is refused").code(), Code::InvalidArgument);
    }
    for _ in 0..50 {
        let listed = client.list(proto::ListRequest::default()).await.expect("list");
        assert_eq!(listed.into_inner().processes.len(), 100);
    }

    let samples = scrape(&address);
    let start = process_service("Start");
    let list = process_service("List");
    assert_eq!(value(&samples, "grpc_server_started_total", &start), 120.0);
    assert_eq!(value(&samples, "grpc_server_started_total", &list), 50.0);
    let with_code = |labels: [(&'static str, &'static str); 3], code: &'static str| {
        let mut all = labels.to_vec();
        all.push(("grpc_code", code));
        all
    };
    assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(start, "OK")), 100.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(start, "InvalidArgument")), 20.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &with_code(list, "OK")), 50.0);
    let handled_lists: f64 = samples
        .iter()
        .filter(|sample| {
            sample.name == "grpc_server_handled_total"
                && sample.labels.get("grpc_method").map(String::as_str) == Some("List")
        })
        .map(|sample| sample.value)
        .sum();
    assert_eq!(handled_lists, 50.0, "no List ended with another code");
    // One response message per successful unary call; a refusal has none.
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &start), 100.0);
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &list), 50.0);
    check_histogram(&samples, "grpc_server_handling_seconds", &start, 120.0);
    check_histogram(&samples, "grpc_server_handling_seconds", &list, 50.0);

    assert_eq!(value(&samples, "hydroplane_process_starts_total", &[("outcome", "created")]), 100.0);
    let processes: f64 = ["STARTING", "RUNNING", "FAILED", "EXITED", "STOPPING"]
        .iter()
        .map(|status| value(&samples, "hydroplane_processes", &[("runtime", "local"), ("status", status)]))
        .sum();
    assert_eq!(processes, 100.0, "every process is in one status");
    assert_eq!(value(&samples, "hydroplane_watch_streams", &[]), 0.0);
    assert!(value(&samples, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(value(&samples, "process_open_fds", &[]) > 0.0);
    assert!(value(&samples, "process_start_time_seconds", &[]) > 1.0e9);
    // The local runtime has no index: no index gauges.
    assert!(samples.iter().all(|sample| !sample.name.starts_with("hydroplane_index")));

    // A group listed five times while it does not change (its processes are RUNNING, where a
    // sleeper stays): one answer made, four sent as kept.
    for index in 0..3 {
        let mut sleeper = sleeper(&format!("d{index}"));
        sleeper["group"] = "dash".into();
        let running = client.start(start_waiting(sleeper)).await.expect("start").into_inner();
        assert_eq!(running.process.map(|process| process.status), Some(proto::ProcessStatus::Running as i32));
    }
    for _ in 0..5 {
        let request = proto::ListRequest { group: Some("dash".into()), ..Default::default() };
        assert_eq!(client.list(request).await.expect("list").into_inner().processes.len(), 3);
    }
    let samples = scrape(&address);
    let answers = |outcome| value(&samples, "hydroplane_list_group_answers_total", &[("outcome", outcome)]);
    assert_eq!((answers("made"), answers("kept")), (1.0, 4.0));
    assert!(value(&samples, "hydroplane_list_group_answer_bytes", &[]) > 0.0);

    let (head, _) = common::http_get(&address, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_process_shows_and_the_index_turns_stale_when_the_cluster_goes() {
    let sim = KubeSim::start(&[]);
    let server = Server::start_with_config(
        sim.directory(),
        &sim.hydroplane_config("metrics:\n  listen: 127.0.0.1:0\n"),
    );
    let address = server.metrics_address().await;
    let mut client = server.client().await;
    let started = client.start(start_waiting(sleeper("web"))).await.expect("start").into_inner();
    assert_eq!(started.process.expect("a process").status(), proto::ProcessStatus::Running);

    let running = [("runtime", "kubernetes"), ("status", "RUNNING")];
    let mut samples = Vec::new();
    common::eventually(
        "the RUNNING process is in hydroplane_processes",
        Duration::from_secs(30),
        async || {
            samples = scrape(&address);
            value(&samples, "hydroplane_processes", &running) == 1.0
        },
    )
    .await;
    assert_eq!(value(&samples, "hydroplane_index_synced", &[]), 1.0);
    assert_eq!(value(&samples, "hydroplane_index_staleness_seconds", &[]), 0.0);
    assert!(
        value(
            &samples,
            "rest_client_requests_total",
            &[("verb", "create"), ("resource", "statefulsets"), ("code", "201")]
        ) >= 1.0,
        "the StatefulSet's creation (the default policy's object) is counted: {:?}",
        samples.iter().filter(|sample| sample.name.starts_with("rest_client_requests")).collect::<Vec<_>>()
    );
    assert!(
        value(
            &samples,
            "rest_client_request_duration_seconds_count",
            &[("verb", "create"), ("resource", "statefulsets")]
        ) >= 1.0
    );

    drop(sim);
    let mut staleness = 0.0;
    common::eventually("the index is no longer synced", Duration::from_secs(30), async || {
        samples = scrape(&address);
        staleness = value(&samples, "hydroplane_index_staleness_seconds", &[]);
        value(&samples, "hydroplane_index_synced", &[]) == 0.0 && staleness > 0.0
    })
    .await;
    let first = staleness;
    common::eventually("the staleness grows", Duration::from_secs(30), async || {
        samples = scrape(&address);
        value(&samples, "hydroplane_index_staleness_seconds", &[]) >= first + 1.0
    })
    .await;
    assert_eq!(value(&samples, "hydroplane_index_synced", &[]), 0.0);
    assert!(value(&samples, "hydroplane_index_watch_errors_total", &[("resource", "pods")]) >= 1.0);
    // The process is still known, from the index as it was.
    assert_eq!(value(&samples, "hydroplane_processes", &running), 1.0);
}
