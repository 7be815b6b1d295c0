//! Benchmark of Logs on the local runtime, over gRPC on loopback: throughput from a process
//! writing as fast as it can to one follower (MB/s), the server's peak resident memory and the
//! disk the process's output takes meanwhile, and follow latency (from a line's write, stamped
//! in the line by the process, to its arrival at the follower; p50/p99).
//!
//! Run with `cargo bench --bench logs` (`-- --megabytes N` for the size written, 1,000 by
//! default; `--lines N` for the latency sample, 500 by default). It starts the real `hydroplane`
//! binary on a free port with its log directory in a temporary folder, and stops it at the end.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use common::{argument, ms, percentile, rss_mib, start_server, stop_server};
use std::time::{Duration, Instant};

use hydroplane::proto::{self, process_service_client::ProcessServiceClient, stop_request::Target};
use tokio_stream::StreamExt;

/// The disk bound per process the benchmark sets (`runtime.max_log_bytes`).
const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

/// A Start of a process running `script` with `sh -c`.
fn shell(name: &str, script: &str) -> proto::StartRequest {
    proto::StartRequest {
        spec: Some(proto::ProcessSpec {
            process_name: name.to_owned(),
            container: Some(proto::ContainerSpec {
                image_uri: "busybox".to_owned(),
                command: vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The bytes of every file under `directory`.
fn disk_bytes(directory: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(directory) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(metadata) if metadata.is_dir() => disk_bytes(&entry.path()),
            Ok(metadata) => metadata.len(),
            Err(_) => 0,
        })
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let megabytes = argument(&args, "--megabytes", 1_000) as u64;
    let lines = argument(&args, "--lines", 500);

    let scratch = tempfile::tempdir()?;
    let log_dir = scratch.path().join("logs");
    let config = scratch.path().join("hydroplane.yml");
    std::fs::write(
        &config,
        format!(
            "runtime:\n  runtime_type: local\n  log_dir: {}\n  max_log_bytes: {MAX_LOG_BYTES}\n",
            log_dir.display()
        ),
    )?;
    let config = config.to_string_lossy().into_owned();
    let (server, address) = start_server(&["-c", &config])?;
    let mut client = ProcessServiceClient::connect(format!("http://{address}")).await?;
    let idle_rss = rss_mib(server.id());

    // Throughput: 64-byte numbered lines, as fast as `sh` and `head` can make them, after a
    // pause that lets the follower attach first.
    let total = megabytes * 1_000_000;
    let script = format!(
        "sleep 0.5; yes 'hydroplane log benchmark line, sixty-four bytes long with newline.' | head -c {total}; echo; echo last-line"
    );
    client.start(shell("writer", &script)).await?;
    let follow = proto::LogsRequest { process_name: "writer".to_owned(), follow: true, ..Default::default() };
    let mut stream = client.logs(follow).await?.into_inner();
    let pid = server.id();
    // The peak in KiB, sampled every 50 ms.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new((idle_rss * 1024.0) as u64));
    let sampling = {
        let peak = std::sync::Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                peak.fetch_max((rss_mib(pid) * 1024.0) as u64, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut received: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut tail = Vec::new();
    let mut disk_peak = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        first.get_or_insert_with(Instant::now);
        received += chunk.data.len() as u64;
        tail.extend_from_slice(&chunk.data);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
        if received % (64 * 1024 * 1024) < chunk.data.len() as u64 {
            disk_peak = disk_peak.max(disk_bytes(&log_dir));
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |first| first.elapsed());
    sampling.abort();
    disk_peak = disk_peak.max(disk_bytes(&log_dir));
    let peak_rss = peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
    assert!(tail.ends_with(b"last-line\n"), "the follower saw the end of the output");
    println!("local runtime, one follower over gRPC on loopback (runtime.max_log_bytes {MAX_LOG_BYTES})");
    println!(
        "{:<36} {:.0} MB in {:.2} s = {:.0} MB/s",
        "throughput (process -> follower)",
        received as f64 / 1e6,
        elapsed.as_secs_f64(),
        received as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!(
        "server RSS: {idle_rss:.1} MiB idle, {peak_rss:.1} MiB at most while following; log files at most {:.1} MiB",
        disk_peak as f64 / 1048576.0
    );
    client.stop(proto::StopRequest { target: Some(Target::ProcessName("writer".to_owned())) }).await?;

    // Latency: a line every 10 ms, each carrying the time it was written.
    let script = format!(
        "sleep 0.5; python3 -c 'import sys, time\nfor _ in range({lines}):\n    print(time.time_ns(), flush=True)\n    time.sleep(0.01)'"
    );
    client.start(shell("ticker", &script)).await?;
    let follow = proto::LogsRequest { process_name: "ticker".to_owned(), follow: true, ..Default::default() };
    let mut stream = client.logs(follow).await?.into_inner();
    let mut pending = Vec::new();
    let mut latencies = Vec::with_capacity(lines);
    while let Some(chunk) = stream.next().await {
        let now = jiff::Timestamp::now().as_nanosecond();
        pending.extend_from_slice(&chunk?.data);
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(written) =
                std::str::from_utf8(&line).ok().and_then(|line| line.trim().parse::<i128>().ok())
            {
                latencies.push(Duration::from_nanos(u64::try_from(now - written).unwrap_or(0)));
            }
        }
    }
    assert_eq!(latencies.len(), lines, "every line arrived");
    println!(
        "{:<36} n={:<6} p50={:>9.3} ms  p99={:>9.3} ms",
        "follow latency (write -> follower)",
        latencies.len(),
        ms(percentile(&mut latencies, 0.5)),
        ms(percentile(&mut latencies, 0.99))
    );
    client.stop(proto::StopRequest { target: Some(Target::ProcessName("ticker".to_owned())) }).await?;
    stop_server(server);
    Ok(())
}
