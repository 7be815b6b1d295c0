//! Benchmark of the server on the local runtime, over gRPC on loopback: Start, List and Stop
//! latency (p50/p99) with 1,000 live processes, the server's resident memory, and List latency
//! while Starts with 4,000 environment variables each are under way (they build the environment
//! and spawn outside the runtime's lock, so List should not notice them).
//!
//! Run with `cargo bench --bench local_runtime` (`-- --processes N` to change the count,
//! `--env-starts N` for the Starts with a large environment). It starts the real `hydroplane`
//! binary on a free port and stops it at the end.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use common::{argument, report, rss_mib, sleeper, start_server, stop_server};
use std::time::{Duration, Instant};

use hydroplane::proto::{self, process_service_client::ProcessServiceClient, stop_request::Target};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let count = argument(&args, "--processes", 1_000);
    let env_starts = argument(&args, "--env-starts", 40);

    let (server, address) = start_server(&[])?;
    let mut client = ProcessServiceClient::connect(format!("http://{address}")).await?;
    let idle_rss = rss_mib(server.id());

    println!("local runtime, {count} live processes (`sleep 3600`), gRPC on loopback, one caller");
    let mut starts = Vec::with_capacity(count);
    for index in 0..count {
        let begin = Instant::now();
        client.start(sleeper(&format!("p{index:05}"))).await?;
        starts.push(begin.elapsed());
    }
    // Let every process reach RUNNING before measuring List at the full count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lists = Vec::with_capacity(200);
    for _ in 0..200 {
        let begin = Instant::now();
        let listed = common::count_listed(&mut client).await?;
        lists.push(begin.elapsed());
        assert_eq!(listed, count, "List sees every process");
    }
    let loaded_rss = rss_mib(server.id());
    let mut stops = Vec::with_capacity(count);
    for index in 0..count {
        let begin = Instant::now();
        client.stop(proto::StopRequest { target: Some(Target::ProcessName(format!("p{index:05}"))) }).await?;
        stops.push(begin.elapsed());
    }
    report("Start (spawn, no wait)", &mut starts);
    report(&format!("List, every page ({count} processes)"), &mut lists);
    report("Stop (SIGTERM + reap)", &mut stops);
    println!("server RSS: {idle_rss:.1} MiB idle, {loaded_rss:.1} MiB with {count} processes");

    let (mut env_start_samples, mut lists_during) = large_environment_starts(&client, env_starts).await?;
    report("Start (4,000 env entries, 4 callers)", &mut env_start_samples);
    report("List during those Starts", &mut lists_during);
    client.stop(proto::StopRequest { target: Some(Target::Group("env".to_owned())) }).await?;

    stop_server(server);
    Ok(())
}

/// Starts `count` processes with 4,000 environment variables each, from four callers at once,
/// while a fifth lists in a loop; returns the Start and the List latencies.
async fn large_environment_starts(
    client: &ProcessServiceClient<tonic::transport::Channel>,
    count: usize,
) -> Result<(Vec<Duration>, Vec<Duration>), Box<dyn std::error::Error>> {
    let env: Vec<proto::EnvironmentVariable> = (0..4_000)
        .map(|index| proto::EnvironmentVariable {
            // Short names and values: 4,000 of them stay within the spec's 192 KiB as JSON.
            name: format!("V{index}"),
            source: Some(proto::environment_variable::Source::Value(format!("{index}"))),
        })
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lister = {
        let mut client = client.clone();
        let done = std::sync::Arc::clone(&done);
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let begin = Instant::now();
                if client.list(proto::ListRequest::default()).await.is_err() {
                    break;
                }
                samples.push(begin.elapsed());
            }
            samples
        })
    };
    let callers: Vec<_> = (0..4)
        .map(|caller| {
            let mut client = client.clone();
            let env = env.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                for index in (caller..count).step_by(4) {
                    let mut request = sleeper(&format!("env{index:04}"));
                    if let Some(spec) = request.spec.as_mut() {
                        spec.group = Some("env".to_owned());
                        if let Some(container) = spec.container.as_mut() {
                            container.env = env.clone();
                        }
                    }
                    let begin = Instant::now();
                    client.start(request).await?;
                    samples.push(begin.elapsed());
                }
                Ok::<_, tonic::Status>(samples)
            })
        })
        .collect();
    let mut starts = Vec::new();
    for caller in callers {
        starts.extend(caller.await??);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let lists = lister.await?;
    Ok((starts, lists))
}
