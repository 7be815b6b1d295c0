//! Benchmark of the server on the `kubernetes` runtime against the Kubernetes API simulator,
//! with 10,000 processes: List latency over gRPC, Start latency and throughput at 64 concurrent
//! callers, the delay from a pod change to the Watch event, the server's resident memory, and
//! the server's CPU time (from `/proc`) per Start and per watched pod event.
//!
//! Run with `cargo bench --bench kube_runtime` (`-- --processes N --callers C` to change the
//! sizes). It starts the release `kube-sim` and `hydroplane` binaries on free loopback ports.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use common::{argument, report, rss_mib};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use hydroplane::proto::{self, process_service_client::ProcessServiceClient};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};

/// The CPU time (user and system) a process has used so far, in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces: the fields after it start past its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, so 11 and 12 after the name.
    let ticks: u64 = [11, 12].iter().filter_map(|&field| fields.get(field)?.parse::<u64>().ok()).sum();
    ticks as f64 / clock_ticks_per_second()
}

/// `getconf CLK_TCK`: the unit of the times in `/proc/PID/stat`.
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Kills the child when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn first_line(child: &mut Child) -> String {
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("first line");
    std::thread::spawn(move || for _ in reader.lines() {});
    line
}

fn kube_sim_binary() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_hydroplane")).with_file_name("kube-sim");
    if !binary.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "kube-sim", "--bin", "kube-sim"])
            .status()
            .expect("cargo build");
        assert!(status.success());
    }
    binary
}

fn start_request(name: String) -> proto::StartRequest {
    common::nginx(&name, "bench")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let count = argument(&args, "--processes", 10_000);
    let callers = argument(&args, "--callers", 64);
    let directory = tempfile::tempdir()?;
    let kubeconfig = directory.path().join("kubeconfig");

    let mut sim = Command::new(kube_sim_binary())
        .args(["--listen", "127.0.0.1:0", "--pod-start-delay-ms", "100", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    first_line(&mut sim);
    let _sim = Guard(sim);
    let config = directory.path().join("hydroplane.yml");
    // No client-side rate limit (`api_qps: 0`): the simulator needs no protection, and the
    // numbers are the server's, not the limit's (50 requests a second by default).
    std::fs::write(
        &config,
        format!(
            "runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n  api_qps: 0\n",
            kubeconfig.display()
        ),
    )?;
    let mut server = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0", "-c"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let line = first_line(&mut server);
    let server_pid = server.id();
    let _server = Guard(server);
    let url = format!("http://{}", line.split_whitespace().nth(3).ok_or("no address")?);
    let client = ProcessServiceClient::connect(url.clone()).await?.max_decoding_message_size(64 << 20);

    println!(
        "kubernetes runtime on kube-sim, {count} processes (Pod + ClusterIP Service each), gRPC on loopback"
    );
    let rss_before = rss_mib(server_pid);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cpu_before_starts = cpu_seconds(server_pid);
    let begin = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut client = client.clone();
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= count {
                    return latencies;
                }
                let started = Instant::now();
                client.start(start_request(format!("p{index:05}"))).await.expect("start");
                latencies.push(started.elapsed());
            }
        }));
    }
    let mut starts = Vec::new();
    for task in tasks {
        starts.extend(task.await?);
    }
    let elapsed = begin.elapsed();
    let cpu_per_start = (cpu_seconds(server_pid) - cpu_before_starts) / count as f64;
    // Before any List: what the index and the table hold, without what Lists leave in the
    // allocator's free lists.
    let rss_after_starts = rss_mib(server_pid);
    report(&format!("Start ({callers} concurrent callers)"), &mut starts);
    println!(
        "{:<36} {:.0} starts/s ({count} in {:.1} s)",
        "Start throughput",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("{:<36} {:.3} ms", "server CPU per Start", cpu_per_start * 1000.0);
    println!(
        "{:<36} {:.2} KiB ({:.1} MiB in all)",
        "server RSS per process, after Starts",
        (rss_after_starts - rss_before) * 1024.0 / count as f64,
        rss_after_starts
    );

    let mut lists = Vec::new();
    let mut list_client = client.clone();
    for _ in 0..100 {
        let begin = Instant::now();
        let listed = common::count_listed(&mut list_client).await?;
        lists.push(begin.elapsed());
        assert_eq!(listed, count);
    }
    report(&format!("List, every page ({count} processes)"), &mut lists);

    let kube_client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &Default::default(),
        )
        .await?,
    )?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(kube_client, "default");
    let mut watch_client = client.clone();
    let mut watch = watch_client
        .watch(proto::WatchRequest { process_name: Some("p00000".into()), ..Default::default() })
        .await?
        .into_inner();
    while let Some(event) = watch.message().await? {
        if event.r#type() == proto::WatchEventType::Synced {
            break;
        }
    }
    let mut delays = Vec::new();
    for round in 0..100u32 {
        let patch = serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{"name": "p00000",
            "image": "nginx", "imageID": "", "ready": false, "restartCount": round + 1,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let begin = Instant::now();
        pods.patch_status("p00000", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        loop {
            let event = watch.message().await?.ok_or("watch ended")?;
            if event.process.is_some_and(|process| process.restart_count == round + 1) {
                break;
            }
        }
        delays.push(begin.elapsed());
    }
    report("Pod change -> Watch event", &mut delays);

    // Changes to existing pods only: one status patch of every other pod, then one of `p00000`,
    // whose event comes after theirs (one watch, in order), so seeing it means all are applied.
    let changed = count - 1;
    let cpu_before_events = cpu_seconds(server_pid);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let mut patchers = Vec::new();
    for _ in 0..callers.min(32) {
        let (pods, next) = (pods.clone(), Arc::clone(&next));
        patchers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= count {
                    return Ok::<_, kube::Error>(());
                }
                let name = format!("p{index:05}");
                let patch = serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{"name": name,
                    "image": "nginx", "imageID": "", "ready": false, "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            }
        }));
    }
    for patcher in patchers {
        patcher.await??;
    }
    let last = serde_json::json!({"status": {"containerStatuses": [{"name": "p00000", "image": "nginx",
        "imageID": "", "ready": false, "restartCount": 1000, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    pods.patch_status("p00000", &PatchParams::default(), &Patch::Merge(&last)).await?;
    loop {
        let event = watch.message().await?.ok_or("watch ended")?;
        if event.process.is_some_and(|process| process.restart_count == 1000) {
            break;
        }
    }
    let cpu_per_event = (cpu_seconds(server_pid) - cpu_before_events) / (changed + 1) as f64;
    println!(
        "{:<36} {:.1} µs ({} pod events)",
        "server CPU per watch event",
        cpu_per_event * 1e6,
        changed + 1
    );

    let rss = rss_mib(server_pid);
    println!("server RSS with {count} processes: {rss:.1} MiB");
    println!(
        "{:<36} {:.2} KiB ({:.1} MiB before the Starts)",
        "server RSS per process",
        (rss - rss_before) * 1024.0 / count as f64,
        rss_before
    );
    Ok(())
}
