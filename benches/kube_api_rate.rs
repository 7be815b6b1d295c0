//! Issue 28's benchmark: what the automatic client-side rate limit costs. 1,000 Starts (a Pod
//! and a Service each) from 64 callers on the Kubernetes API simulator, three ways:
//! - default settings (no `api_qps`/`api_burst`), the simulator sending API Priority and
//!   Fairness's response headers, as every API server since Kubernetes 1.20 does: no
//!   client-side limit once the first answer shows them;
//! - `api_qps: 50` (the old default, with `api_burst: 100`), the same simulator;
//! - default settings against a simulator with `--apf-headers=false`: the conservative limit
//!   (50 per second, 100 at once) stays.
//!
//! Run with `cargo bench --bench kube_api_rate` (`-- --starts N --callers C`; `--profile dev`
//! before `--` for debug builds). Each way gets a
//! fresh simulator and server; the last lines print the rates and the first way's rate over
//! the second's (target at least 5).

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::{argument, start_kube_sim, start_server_with_config};
use hydroplane::proto::process_service_client::ProcessServiceClient;

/// Starts `starts` processes from `callers` concurrent callers on a fresh simulator (with
/// `sim_args`) and server (with `settings` under `runtime:`); returns Starts per second.
async fn run(
    starts: usize,
    callers: usize,
    sim_args: &[&str],
    settings: &str,
) -> Result<f64, Box<dyn std::error::Error>> {
    let directory = tempfile::tempdir()?;
    let kubeconfig = directory.path().join("kubeconfig");
    let mut args = vec!["--pod-start-delay-ms", "100"];
    args.extend_from_slice(sim_args);
    let _sim = start_kube_sim(&kubeconfig, &args)?;
    let config = directory.path().join("hydroplane.yml");
    std::fs::write(
        &config,
        format!("runtime:\n  runtime_type: kubernetes\n  kubeconfig: {}\n{settings}", kubeconfig.display()),
    )?;
    let (_server, url) = start_server_with_config(&config)?;
    let client = ProcessServiceClient::connect(url).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let begin = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (mut client, next) = (client.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= starts {
                        return Ok::<_, tonic::Status>(());
                    }
                    client.start(common::nginx(&format!("p{index:05}"), "bench")).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(starts as f64 / begin.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let starts = argument(&args, "--starts", 1000);
    let callers = argument(&args, "--callers", 64);
    // Always build the simulator, so that an older binary without `--apf-headers` is not used;
    // with the profile of the server beside it (`--profile dev` measures debug builds).
    let release = env!("CARGO_BIN_EXE_hydroplane").contains("/release/");
    let mut build = vec!["build", "-p", "kube-sim", "--bin", "kube-sim"];
    if release {
        build.push("--release");
    }
    let status =
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args(&build).status()?;
    assert!(status.success(), "building kube-sim failed");

    println!("{starts} Starts (Pod + ClusterIP Service each) from {callers} callers on kube-sim");
    let automatic = run(starts, callers, &[], "").await?;
    println!("{:<52} {automatic:>8.0} starts/s", "default settings, APF headers on");
    let fixed = run(starts, callers, &[], "  api_qps: 50\n").await?;
    println!("{:<52} {fixed:>8.0} starts/s", "api_qps: 50 (api_burst 100), APF headers on");
    let without_apf = run(starts, callers, &["--apf-headers=false"], "").await?;
    println!("{:<52} {without_apf:>8.0} starts/s", "default settings, APF headers off");
    println!("{:<52} {:>8.1}x (target at least 5x)", "default (APF on) over api_qps: 50", automatic / fixed);
    println!(
        "{:<52} {:>8.2}x (about 1: the conservative limit applies)",
        "default (APF off) over api_qps: 50",
        without_apf / fixed
    );
    Ok(())
}
