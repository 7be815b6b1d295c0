//! The simulator at full size: 150,000 pods and 150,000 Services in one namespace, made the way
//! Hydroplane makes them (its labels, the Service owned by its Pod), through kube-rs over HTTP
//! with 64 requests in flight. Prints the creation rate (the first and the last 10,000 too), the
//! simulator's resident memory and what it costs per pod, a label-selected list in pages of 500
//! (what kube-runtime's watcher lists first), a label-selected list of a group of 100, single
//! get/create/delete latencies at full size, the delay from a status write to a watch event, and
//! a deletecollection by label with the garbage collection of the Services it leaves.
//!
//! Run: `cargo bench -p kube-sim --bench scale` (`-- --pods N` changes the count).

mod common;

use common::rss_mib;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

/// The labels every Hydroplane object carries.
const MANAGED: &str = "app.kubernetes.io/managed-by=hydroplane";
/// How many requests are in flight while creating.
const IN_FLIGHT: usize = 64;
/// The group that gets its own 100 processes, for the small label-selected list.
const SMALL_GROUP: &str = "small";

/// The CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default().split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|index| fields.get(*index)?.parse::<u64>().ok()).sum();
    // Linux reports CPU time in clock ticks of 1/100 s (USER_HZ) on every architecture we run on.
    Duration::from_millis(ticks * 10)
}

/// The sample at `fraction` of the sorted samples.
fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * fraction).round() as usize]
}

/// A duration in milliseconds.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Prints one result line: name, value, unit.
fn line(name: &str, value: f64, unit: &str) {
    println!("{name:<52} {value:>12.3} {unit}");
}

/// Prints p50 and p99 of `samples`.
fn latencies(name: &str, samples: &mut [Duration]) {
    let (p50, p99) = (percentile(samples, 0.5), percentile(samples, 0.99));
    println!("{name:<52} p50 {:>9.3} ms  p99 {:>9.3} ms  (n={})", ms(p50), ms(p99), samples.len());
}

/// The name of the `index`th process.
fn process_name(index: usize) -> String {
    format!("p{index:06}")
}

/// The group of the `index`th process: the first 100 form their own group, the rest share 1,000.
fn group_of(index: usize) -> String {
    if index < 100 { SMALL_GROUP.to_string() } else { format!("g{:03}", index % 1000) }
}

/// The labels Hydroplane puts on every object of the `index`th process.
fn labels(index: usize) -> serde_json::Value {
    json!({
        "app.kubernetes.io/managed-by": "hydroplane",
        "hydroplane/process-id": process_name(index),
        "hydroplane/group-id": group_of(index),
    })
}

/// A Pod shaped as Hydroplane's manifests make it.
fn pod(index: usize) -> Pod {
    let name = process_name(index);
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels(index),
            "annotations": {"hydroplane/spec": format!(
                "{{\"process_name\":\"{name}\",\"group\":\"{}\",\"container\":{{\"image_uri\":\"nginx\",\"ports\":[{{\"container_port\":80,\"protocol\":\"tcp\"}}]}}}}",
                group_of(index)
            )},
        },
        "spec": {
            "containers": [{"name": name, "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}]}],
            "restartPolicy": "OnFailure",
        }
    }))
    .expect("a pod")
}

/// The Service of a process, owned by its Pod.
fn service(index: usize, pod_uid: &str) -> Service {
    let name = process_name(index);
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels(index),
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod_uid,
                "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"hydroplane/process-id": name},
            "ports": [{"name": "tcp-80", "port": 80, "targetPort": 80, "protocol": "TCP"}],
        }
    }))
    .expect("a service")
}

/// Creates the processes `range` (Pod, then its Service) with `IN_FLIGHT` requests at a time;
/// returns how long it took.
async fn create(pods: &Api<Pod>, services: &Api<Service>, range: std::ops::Range<usize>) -> Duration {
    let began = Instant::now();
    futures::stream::iter(range)
        .map(|index| {
            let (pods, services) = (pods.clone(), services.clone());
            async move {
                let created = pods.create(&PostParams::default(), &pod(index)).await.expect("create a pod");
                let uid = created.metadata.uid.expect("a uid");
                services
                    .create(&PostParams::default(), &service(index, &uid))
                    .await
                    .expect("create a service");
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|_| async {})
        .await;
    began.elapsed()
}

/// Lists every object `selector` matches in pages of `limit`; returns the count, the total
/// time and each page's time.
async fn list_pages<K>(api: &Api<K>, selector: &str, limit: u32) -> (usize, Duration, Vec<Duration>)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let began = Instant::now();
    let mut pages = Vec::new();
    let mut listed = 0;
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().labels(selector).limit(limit);
        if let Some(token) = &token {
            params = params.continue_token(token);
        }
        let page_began = Instant::now();
        let page = api.list(&params).await.expect("a page");
        pages.push(page_began.elapsed());
        listed += page.items.len();
        token = page.metadata.continue_;
        if token.is_none() {
            break;
        }
    }
    (listed, began.elapsed(), pages)
}

/// Waits until no pod is Pending (the simulated kubelet started them all), polling a one-item
/// field-selected list: the simulator offers no event for "all started". Gives up after two
/// minutes, returning `None`.
async fn wait_until_running(pods: &Api<Pod>) -> Option<Duration> {
    let began = Instant::now();
    loop {
        let params = ListParams::default().fields("status.phase=Pending").limit(1);
        if pods.list_metadata(&params).await.expect("list pending").items.is_empty() {
            return Some(began.elapsed());
        }
        if began.elapsed() > Duration::from_secs(120) {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args
        .iter()
        .position(|arg| arg == "--pods")
        .and_then(|index| args.get(index + 1)?.parse().ok())
        .unwrap_or(150_000);
    let (simulator, client) = common::start(&["--pod-start-delay-ms", "100"]).await;
    let pid = simulator.pid();
    println!(
        "kube-sim {}, {count} pods + {count} services, {IN_FLIGHT} requests in flight",
        simulator.first_line
    );

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let services: Api<Service> = Api::default_namespaced(client);
    let rss_empty = rss_mib(pid);
    line("simulator RSS, empty", rss_empty, "MiB");

    let tenth = count.min(10_000);
    let cpu_before = cpu_time(pid);
    let first = create(&pods, &services, 0..tenth).await;
    line("create rate, first 10,000 (pod + service)", tenth as f64 / first.as_secs_f64(), "processes/s");
    let cpu_first = cpu_time(pid) - cpu_before;
    let last_start = count.saturating_sub(tenth).max(tenth);
    let middle = create(&pods, &services, tenth..last_start).await;
    let last_count = count - last_start;
    let cpu_before_last = cpu_time(pid);
    let last = create(&pods, &services, last_start..count).await;
    let cpu_last = cpu_time(pid) - cpu_before_last;
    let total = first + middle + last;
    line("create rate, all (pod + service)", count as f64 / total.as_secs_f64(), "processes/s");
    line(
        "  simulator CPU per process (2 creates)",
        ms(cpu_time(pid) - cpu_before) * 1000.0 / count as f64,
        "us",
    );
    if last_count > 0 {
        line(
            "create rate, last 10,000 (pod + service)",
            last_count as f64 / last.as_secs_f64(),
            "processes/s",
        );
        line("  simulator CPU per process, first 10,000", ms(cpu_first) * 1000.0 / tenth as f64, "us");
        line("  simulator CPU per process, last 10,000", ms(cpu_last) * 1000.0 / last_count as f64, "us");
    }
    match wait_until_running(&pods).await {
        Some(settled) => {
            line("kubelet: every pod Running, after the last create", settled.as_secs_f64(), "s")
        }
        None => println!("kubelet: pods still Pending two minutes after the last create"),
    }
    let rss_full = rss_mib(pid);
    line("simulator RSS, full", rss_full, "MiB");
    line(
        "simulator RSS per process (pod + service + events)",
        (rss_full - rss_empty) * 1024.0 / count as f64,
        "KiB",
    );

    let cpu_before = cpu_time(pid);
    let (listed, elapsed, mut pages) = list_pages(&pods, MANAGED, 500).await;
    let cpu = cpu_time(pid) - cpu_before;
    assert_eq!(listed, count);
    line("label-selected list of every pod, pages of 500", ms(elapsed), "ms");
    line("  simulator CPU for it", ms(cpu), "ms");
    latencies("  one page of 500", &mut pages);
    let (listed, elapsed, _) = list_pages(&services, MANAGED, 500).await;
    assert_eq!(listed, count);
    line("label-selected list of every service, pages of 500", ms(elapsed), "ms");

    let mut small = Vec::new();
    for _ in 0..20 {
        let (listed, elapsed, _) =
            list_pages(&pods, &format!("hydroplane/group-id={SMALL_GROUP}"), 500).await;
        assert_eq!(listed, count.min(100));
        small.push(elapsed);
    }
    latencies("label-selected list of a group of 100", &mut small);

    let (mut gets, mut creates, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..200 {
        let began = Instant::now();
        pods.get(&process_name(round * (count / 200))).await.expect("get");
        gets.push(began.elapsed());
        let index = count + 1_000_000 + round;
        let began = Instant::now();
        pods.create(&PostParams::default(), &pod(index)).await.expect("create");
        creates.push(began.elapsed());
        let began = Instant::now();
        pods.delete(&process_name(index), &DeleteParams::default()).await.expect("delete");
        deletes.push(began.elapsed());
    }
    latencies("get one pod, at full size", &mut gets);
    latencies("create one pod, at full size", &mut creates);
    latencies("delete one pod, at full size", &mut deletes);

    // A watch of every Hydroplane pod, as the server's watcher keeps; each round writes a
    // pod's status with a marker and times until the watch delivers it.
    let version =
        pods.list_metadata(&ListParams::default().limit(1)).await.expect("list").metadata.resource_version;
    let mut stream = pods
        .watch(&WatchParams::default().labels(MANAGED).timeout(290), &version.expect("a version"))
        .await
        .expect("watch")
        .boxed();
    let mut delays = Vec::new();
    for round in 0..200usize {
        let name = process_name(round * (count / 200));
        let marker = format!("round-{round}");
        let began = Instant::now();
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"message": marker}})),
        )
        .await
        .expect("patch status");
        loop {
            match stream.try_next().await.expect("watch stream").expect("watch open") {
                WatchEvent::Modified(pod)
                    if pod.status.as_ref().and_then(|s| s.message.as_deref()) == Some(marker.as_str()) =>
                {
                    break;
                }
                _ => {}
            }
        }
        delays.push(began.elapsed());
    }
    latencies("status write -> watch event (selector watch)", &mut delays);

    let cpu_before = cpu_time(pid);
    let began = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels(MANAGED))
        .await
        .expect("deletecollection");
    line("deletecollection of every pod by label", ms(began.elapsed()), "ms");
    loop {
        let left =
            services.list_metadata(&ListParams::default().labels(MANAGED).limit(1)).await.expect("list");
        if left.items.is_empty() {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(600), "services left after 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    line("  until the garbage collector removed every service", ms(began.elapsed()), "ms");
    line("  simulator CPU for both", ms(cpu_time(pid) - cpu_before), "ms");
    line("simulator RSS, after deleting everything", rss_mib(pid), "MiB");
}
