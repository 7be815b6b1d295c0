//! The Kubernetes client's protection of the API server, end to end: a server with a small
//! `runtime.api_qps` and `runtime.api_burst` against the simulator answering 30% of all requests
//! with `429 Too Many Requests` (`Retry-After: 1`, as API Priority and Fairness does). A burst of
//! concurrent Starts must all succeed, and the simulator must see no more requests than the rate
//! allows in the time the burst took. With the default (automatic) limit, against a simulator
//! that reports APF and answers a third of all requests 429, 1,000 Starts from 64 callers all
//! succeed, and the waits the API server asked for show in the metrics.
//!
//! No duration is asserted: the rate bounds the number of requests by the elapsed time, which a
//! slow machine only makes more generous. And `hydroplane check` takes the two keys where they
//! apply, and refuses them where they do not.

use std::time::Instant;

use crate::common::requests::start_request;
use crate::common::{self, KubeSim, Server};

const API_QPS: f64 = 20.0;
const API_BURST: u64 = 5;
const STARTS: usize = 40;

/// A process with a port, so that a Start makes a Pod and a Service.
fn spec(index: usize) -> hydroplane::proto::StartRequest {
    start_request(serde_json::json!({
        "process_name": format!("burst-{index}"),
        "group": "throttle",
        "container": {"image_uri": "nginx", "ports": [{"container_port": 80}]}
    }))
}

/// The simulator's count of API requests it received and of errors it injected.
fn simulator_counts(sim: &KubeSim) -> (u64, u64) {
    let stats = sim.admin("GET", "stats", "");
    let count = |name: &str| stats[name].as_u64().unwrap_or_else(|| panic!("{name} in {stats}"));
    (count("apiRequestsTotal"), count("injectedErrorsTotal"))
}

/// The sum of a metric's samples over all its labels, from one scrape of the server's metrics.
async fn metric_sum(server: &Server, name: &str) -> f64 {
    let (_, response) = common::http_get(&server.metrics_address().await, "/metrics");
    response
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_starts_under_429s_all_succeed_within_the_configured_rate() {
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50"]);
    let server = Server::start_with_config(
        sim.directory(),
        &sim.hydroplane_config(&format!(
            "  api_qps: {API_QPS}\n  api_burst: {API_BURST}\nmetrics:\n  listen: 127.0.0.1:0\n"
        )),
    );
    let client = server.client().await;

    sim.faults(serde_json::json!({"error_rate": 0.3, "error_code": 429}));
    let begin = Instant::now();
    let (requests_before, injected_before) = simulator_counts(&sim);
    let starts = (0..STARTS).map(|index| {
        let mut client = client.clone();
        async move { (index, client.start(spec(index)).await) }
    });
    let answers = futures::future::join_all(starts).await;
    let (requests_after, injected_after) = simulator_counts(&sim);
    let elapsed = begin.elapsed().as_secs_f64();
    sim.faults(serde_json::json!({"error_rate": 0.0}));

    // Every Start succeeded: the 429s were waited out, none reached a caller.
    for (index, answer) in &answers {
        let answer =
            answer.as_ref().unwrap_or_else(|status| panic!("Start burst-{index} failed: {status:?}"));
        assert!(answer.get_ref().created, "burst-{index} was created");
    }
    let sets = sim.names("statefulsets");
    for index in 0..STARTS {
        assert!(sets.contains(&format!("burst-{index}")), "burst-{index} is in the cluster: {sets:?}");
    }

    // The simulator saw the faults it was asked for, and no more requests than the bucket lets
    // through in the time the burst took (its burst, then the rate; a few in flight as the window
    // opened).
    let requests = requests_after - requests_before;
    let injected = injected_after - injected_before;
    assert!(requests >= 2 * STARTS as u64, "a Start costs at least two requests: {requests}");
    assert!(injected > 0, "some of the {requests} requests were answered 429");
    let allowed = API_BURST as f64 + API_QPS * elapsed + 5.0;
    assert!(
        requests as f64 <= allowed,
        "{requests} requests in {elapsed:.1} s, more than api_burst {API_BURST} + api_qps {API_QPS} per second allow ({allowed:.0})"
    );

    // The server counted its retries (each after an injected 429, and none before the faults
    // began) and its waits for the bucket.
    let retries = metric_sum(&server, "rest_client_request_retries_total").await;
    let (_, injected_ever) = simulator_counts(&sim);
    assert!(retries >= 1.0 && retries <= injected_ever as f64, "{retries} retries for {injected_ever} 429s");
    let waits = metric_sum(&server, "rest_client_rate_limiter_duration_seconds_count").await;
    assert!(waits >= requests as f64, "every one of the {requests} requests waited for its token: {waits}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_default_limit_a_thousand_starts_under_429s_for_a_third_all_succeed() {
    const MANY: usize = 1000;
    const CALLERS: usize = 64;
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50"]);
    let server = Server::start_with_config(
        sim.directory(),
        &sim.hydroplane_config("metrics:\n  listen: 127.0.0.1:0\n"),
    );
    let client = server.client().await;
    sim.faults(serde_json::json!({"error_rate": 0.33, "error_code": 429, "retry_after_seconds": 1}));
    let (_, injected_before) = simulator_counts(&sim);

    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let callers = (0..CALLERS).map(|_| {
        let (mut client, next) = (client.clone(), std::sync::Arc::clone(&next));
        tokio::spawn(async move {
            let mut failed = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= MANY {
                    return failed;
                }
                if let Err(status) = client.start(spec(index)).await {
                    failed.push((index, status));
                }
            }
        })
    });
    let failed: Vec<_> = futures::future::join_all(callers)
        .await
        .into_iter()
        .flat_map(|caller| caller.expect("caller task"))
        .collect();
    let (_, injected_after) = simulator_counts(&sim);
    sim.faults(serde_json::json!({"error_rate": 0.0}));

    assert!(failed.is_empty(), "{} of {MANY} Starts failed, e.g. {:?}", failed.len(), failed.first());
    let pods = sim.names("pods");
    assert_eq!(pods.len(), MANY, "every process is in the cluster");
    let injected = injected_after - injected_before;
    assert!(
        injected >= MANY as u64 / 3,
        "a third of the (at least {}) requests were 429s: {injected}",
        2 * MANY
    );
    // Each retry waited its Retry-After (1 s), and the metrics say so.
    let retries = metric_sum(&server, "rest_client_request_retries_total").await;
    let waited = metric_sum(&server, "hydroplane_kube_retry_wait_seconds_total").await;
    assert!(retries >= 1.0 && retries <= injected_after as f64, "{retries} retries for {injected} 429s");
    assert!(
        (waited - retries).abs() < 0.5,
        "{waited} seconds waited for {retries} retries after Retry-After: 1"
    );
}

#[test]
fn hydroplane_check_accepts_the_rate_for_both_kubernetes_runtimes_and_refuses_it_elsewhere() {
    let directory = tempfile::tempdir().expect("tempdir");
    let check = |yaml: &str| {
        let path = directory.path().join("hydroplane.yml");
        std::fs::write(&path, yaml).expect("write the settings");
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_hydroplane"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .expect("run hydroplane check");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    for runtime in ["runtime_type: kubernetes", "runtime_type: eks\n  cluster_name: c\n  region: us-west-2"] {
        for rate in ["api_qps: 0", "api_qps: -1", "api_qps: 2.5\n  api_burst: 1", "api_burst: 500"] {
            let yaml = format!("runtime:\n  {runtime}\n  {rate}\n");
            let (code, stderr) = check(&yaml);
            assert_eq!(code, Some(0), "{yaml}: {stderr}");
        }
    }
    let (code, stderr) = check("runtime:\n  runtime_type: local\n  api_qps: 10\n");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("runtime.api_qps does not apply to runtime_type: local (only to kubernetes and eks)"),
        "{stderr}"
    );
    let (code, stderr) = check("runtime:\n  runtime_type: kubernetes\n  api_burst: 2.5\n");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("runtime.api_burst must be a whole number between 1 and 100000"), "{stderr}");
}
