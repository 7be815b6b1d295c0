//! Throughput of the simulator with 10,000 pods, through kube-rs over HTTP: create (64 in
//! flight, with a live watch counting the events), list (one page and pages of 500), watch
//! replay from a resourceVersion, a fresh watch's synthetic ADDED events, and deletecollection.
//! Prints numbers; asserts only that every object arrived.
//!
//! Run: `CARGO_TARGET_DIR=target-sim cargo bench -p kube-sim --bench throughput`
//! (`KUBE_SIM_BENCH_PODS` changes the count).

mod common;

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

fn report(label: &str, count: usize, elapsed: Duration) {
    let rate = count as f64 / elapsed.as_secs_f64();
    println!("{label:<44} {count:>6} in {:>8.1} ms = {rate:>9.0}/s", elapsed.as_secs_f64() * 1000.0);
}

async fn count_events(api: &Api<Pod>, version: &str, wanted: usize) -> usize {
    let mut stream = api.watch(&WatchParams::default().timeout(290), version).await.expect("watch").boxed();
    let mut seen = 0;
    while seen < wanted {
        match stream.try_next().await.expect("watch stream") {
            Some(WatchEvent::Added(_)) => seen += 1,
            Some(WatchEvent::Bookmark(_)) => {}
            Some(other) => panic!("unexpected {other:?}"),
            None => break,
        }
    }
    seen
}

#[tokio::main]
async fn main() {
    let count: usize =
        std::env::var("KUBE_SIM_BENCH_PODS").ok().and_then(|c| c.parse().ok()).unwrap_or(10_000);
    let (simulator, client) = common::start(&[
        "--pod-start-delay-ms",
        "3600000",
        "--history-size",
        "100000",
        "--watch-buffer",
        "100000",
    ])
    .await;
    println!("kube-sim {}", simulator.first_line);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let start_version =
        pods.list(&ListParams::default()).await.expect("list").metadata.resource_version.expect("a version");

    let live = {
        let pods = pods.clone();
        let version = start_version.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let seen = count_events(&pods, &version, count).await;
            (seen, began.elapsed())
        })
    };
    let began = Instant::now();
    futures::stream::iter(0..count)
        .map(|index| {
            let pods = pods.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("bench-{index:05}"), "labels": {"app": "bench", "shard": (index % 10).to_string()}},
                    "spec": {"containers": [{"name": "main", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
                }))
                .expect("pod");
                pods.create(&PostParams::default(), &pod).await.expect("create")
            }
        })
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;
    report("create (64 concurrent)", count, began.elapsed());
    let (seen, elapsed) = live.await.expect("live watch");
    assert_eq!(seen, count);
    report("live watch received all ADDED events", seen, elapsed);

    let began = Instant::now();
    let all = pods.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), count);
    report("list, one page", count, began.elapsed());

    let began = Instant::now();
    let mut listed = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().limit(500);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page = pods.list(&params).await.expect("page");
        listed += page.items.len();
        token = page.metadata.continue_;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed, count);
    report("list, pages of 500", listed, began.elapsed());

    let began = Instant::now();
    let shard = pods.list(&ListParams::default().labels("shard=3")).await.expect("list").items.len();
    report("list with label selector (1 in 10 match)", shard, began.elapsed());

    let began = Instant::now();
    let replayed = count_events(&pods, &start_version, count).await;
    assert_eq!(replayed, count);
    report("watch replay from a resourceVersion", replayed, began.elapsed());

    let began = Instant::now();
    let initial = count_events(&pods, "0", count).await;
    assert_eq!(initial, count);
    report("watch from 0 (synthetic ADDED)", initial, began.elapsed());

    let began = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=bench"))
        .await
        .expect("deletecollection");
    report("deletecollection", count, began.elapsed());
}
