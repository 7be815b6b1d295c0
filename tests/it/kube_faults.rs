//! The `kubernetes` runtime under injected faults: dropped watches, a forced 410 Gone, 5% of
//! requests failing with 500, and the API server refusing connections for 10 s. The index must
//! converge to the API server's state, no Watch client may miss a final state, a Start that
//! failed half-way must leave no orphan, and the log must say so in rate-limited warnings.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::requests::{start_request, stop_process};
use crate::common::{KubeSim, Server, eventually};
use hydroplane::proto::{self, WatchEventType, process_service_client::ProcessServiceClient};
use tonic::Code;
use tonic::transport::Channel;

/// What a process looks like at the end: (status, reason), or `None` once deleted.
type Final = Option<(String, String)>;

/// How long a call is retried through the injected 500s.
const RETRIES: Duration = Duration::from_secs(20);

fn spec(name: &str, with_port: bool) -> proto::StartRequest {
    let mut json =
        // Bare Pods (NEVER): the statuses the test patches are the processes' own, and no
        // controller replaces a Pod that ended.
        serde_json::json!({"process_name": name, "group": "faults", "restart_policy": "never", "container": {"image_uri": "nginx"}});
    if with_port {
        json["container"]["ports"] = serde_json::json!([{"container_port": 80}]);
    }
    start_request(json)
}

fn summary(process: &proto::ProcessInfo) -> (String, String) {
    (
        process.status().as_str_name().trim_start_matches("PROCESS_STATUS_").to_owned(),
        process.reason().to_owned(),
    )
}

/// Calls until the server stops answering UNAVAILABLE or ABORTED (the injected 500s).
async fn start_with_retries(client: &mut ProcessServiceClient<Channel>, name: &str) {
    eventually(&format!("Start of {name} gets through"), Duration::from_secs(20), async || {
        match client.start(spec(name, true)).await {
            Ok(_) => Ok(()),
            Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted) => Err(status),
            Err(status) => panic!("start {name}: {status:?}"),
        }
    })
    .await
}

/// kubectl, retried through the injected 500s.
async fn patch_with_retries(sim: &KubeSim, pod: &str, status: serde_json::Value, timeout: Duration) {
    let patch = serde_json::json!({ "status": status }).to_string();
    eventually(&format!("kubectl patches {pod}"), timeout, async || {
        let output = sim
            .kubectl_command()
            .args(["patch", "pod", pod, "--subresource=status", "--type=merge", "-p", &patch])
            .output()
            .expect("run kubectl");
        output
            .status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&output.stderr).into_owned())
    })
    .await
}

fn crash_loop(name: &str, restarts: u32) -> serde_json::Value {
    serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{"name": name, "image": "nginx", "imageID": "", "ready": false,
            "restartCount": restarts, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_converges_and_watchers_see_every_final_state_under_faults() {
    let sim = KubeSim::start(&["--pod-start-delay-ms", "50"]);
    let server = Server::start_with_config(sim.directory(), &sim.hydroplane_config(""));
    let mut client = server.client().await;

    // A watcher that records the last thing it heard of each process.
    let mut watch = client.watch(proto::WatchRequest::default()).await.expect("watch").into_inner();
    let (latest_sender, latest) = tokio::sync::watch::channel(BTreeMap::<String, Final>::new());
    tokio::spawn(async move {
        while let Ok(Some(event)) = watch.message().await {
            let deleted = event.r#type() == WatchEventType::Deleted;
            let Some(process) = event.process else { continue };
            let value = (!deleted).then(|| summary(&process));
            latest_sender.send_modify(|latest| {
                latest.insert(process.process_name.clone(), value);
            });
        }
    });

    for index in 0..6 {
        start_with_retries(&mut client, &format!("p{index}")).await;
    }

    // Watches dropped every few events, then history forgotten: the index must relist.
    sim.faults(serde_json::json!({"close_watches_after_events": 3}));
    patch_with_retries(&sim, "p0", crash_loop("p0", 2), RETRIES).await;
    patch_with_retries(&sim, "p1", crash_loop("p1", 5), RETRIES).await;
    sim.faults(serde_json::json!({"force_gone": true, "drop_watches_now": true}));
    client.stop(stop_process("p2")).await.expect("stop p2");

    // 5% of requests fail: Starts retried by the caller must not leave half-made processes.
    sim.faults(serde_json::json!({"close_watches_after_events": 0, "error_rate": 0.05, "error_code": 500}));
    for index in 6..14 {
        start_with_retries(&mut client, &format!("p{index}")).await;
    }
    patch_with_retries(&sim, "p6", crash_loop("p6", 1), RETRIES).await;
    sim.faults(serde_json::json!({"error_rate": 0.0}));

    // The API server is down for 10 s: List answers from the index and says it may be stale;
    // Start is UNAVAILABLE.
    sim.refuse_connections_for(Duration::from_secs(10)).await;
    let mut saw_stale = false;
    let mut saw_unavailable = false;
    eventually("List says it may be stale and Start is UNAVAILABLE", Duration::from_secs(10), async || {
        let listed = client
            .list(proto::ListRequest::default())
            .await
            .expect("List works while the cluster is down")
            .into_inner();
        assert!(listed.processes.len() >= 13, "the index keeps what it had");
        saw_stale |= listed.stale_reason.is_some();
        // The outage is on (the simulator refuses connections); List may have been stale since
        // the faults before it, so staleness alone does not say so.
        if saw_stale && !saw_unavailable {
            match client.start(spec("during-outage", true)).await {
                Err(status) if status.code() == Code::Unavailable => saw_unavailable = true,
                Err(status) => panic!("a Start during the outage: {status:?}"),
                Ok(response) => panic!("a Start during the outage succeeded: {response:?}"),
            }
        }
        if saw_stale && saw_unavailable {
            Ok(())
        } else {
            Err((("stale", saw_stale), ("unavailable", saw_unavailable)))
        }
    })
    .await;

    // After the outage: one more change that the index can only learn from a fresh watch.
    let completed = serde_json::json!({"phase": "Succeeded", "containerStatuses": [{"name": "p3", "image": "nginx",
        "imageID": "", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]});
    patch_with_retries(&sim, "p3", completed, Duration::from_secs(30)).await;

    // Converged: the server's List equals the API server's pods, and the watcher's last word on
    // every process equals List (DELETED for the ones that are gone).
    let expected_names: Vec<String> = sim.names("pods");
    assert!(!expected_names.contains(&"p2".to_owned()));
    assert!(!expected_names.contains(&"during-outage".to_owned()), "no orphan of the failed start");
    for name in ["p0", "p1", "p3", "p6", "p13"] {
        assert!(expected_names.contains(&name.to_owned()), "{name} exists: {expected_names:?}");
    }
    let expected: BTreeMap<String, Final> = [
        ("p0", ("FAILED", "CrashLoopBackOff")),
        ("p1", ("FAILED", "CrashLoopBackOff")),
        ("p3", ("EXITED", "Completed")),
        ("p6", ("FAILED", "CrashLoopBackOff")),
    ]
    .into_iter()
    .map(|(name, (status, reason))| (name.to_owned(), Some((status.to_owned(), reason.to_owned()))))
    .collect();
    // The watcher's last word on every process comes to equal the API server's state: waited
    // for on its events.
    let live = |watched: &BTreeMap<String, Final>| -> BTreeMap<String, Final> {
        watched.iter().filter(|(_, state)| state.is_some()).map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let converged = |watched: &BTreeMap<String, Final>| {
        let live = live(watched);
        live.keys().eq(expected_names.iter())
            && expected.iter().all(|(name, state)| live.get(name) == Some(state))
            && live
                .iter()
                .filter(|(name, _)| !expected.contains_key(*name))
                .all(|(_, state)| state.as_ref().is_some_and(|(status, _)| status == "RUNNING"))
            && watched.get("p2") == Some(&None)
    };
    let mut latest = latest;
    let waited = tokio::time::timeout(Duration::from_secs(60), latest.wait_for(|watched| converged(watched)))
        .await
        .map(|result| result.map(|_| ()));
    assert!(
        matches!(waited, Ok(Ok(()))),
        "the watcher did not converge:\n api server: {expected_names:?}\n watcher: {:?}",
        latest.borrow()
    );

    // List says it is fresh again once no watch of the index has failed for a while; no event
    // tells when, so its answer is asked for (bounded). Then it equals what the watcher saw.
    let listed = eventually("List says it is fresh after the outage", Duration::from_secs(60), async || {
        let listed = client.list(proto::ListRequest::default()).await.expect("list").into_inner();
        match &listed.stale_reason {
            None => Ok(listed),
            Some(reason) => Err(reason.clone()),
        }
    })
    .await;
    let listed_states: BTreeMap<String, Final> =
        listed.processes.iter().map(|p| (p.process_name.clone(), Some(summary(p)))).collect();
    assert_eq!(listed_states, live(&latest.borrow()), "List equals the watcher's last word");

    // Failures the client retried and watches re-made are warnings, a few lines per cause, not
    // an ERROR line per failed request.
    let log = server.stderr();
    let client_errors: Vec<&str> =
        log.lines().filter(|line| line.contains("ERROR") && line.contains("kube_client")).collect();
    assert!(client_errors.is_empty(), "kube-client's per-request ERROR lines are off: {client_errors:?}");
    let watch_warnings = log.lines().filter(|line| line.contains("watch failed")).count();
    assert!(watch_warnings > 0, "the outage is in the log");
    assert!(!log.lines().any(|line| line.contains("ERROR") && line.contains("watch")), "{log}");
}
