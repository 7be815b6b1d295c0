//! Benchmark of the server on the local runtime, over gRPC on loopback: Start, List and Stop
//! latency (p50/p99) with 1,000 live processes, and the server's resident memory.
//!
//! Run with `cargo bench --bench local_runtime` (`-- --processes N` to change the count). It
//! starts the real `hydroplane` binary on a free port and stops it at the end.

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
        let listed = client.list(proto::ListRequest::default()).await?.into_inner().processes.len();
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
    report(&format!("List ({count} processes)"), &mut lists);
    report("Stop (SIGTERM + reap)", &mut stops);
    println!("server RSS: {idle_rss:.1} MiB idle, {loaded_rss:.1} MiB with {count} processes");

    stop_server(server);
    Ok(())
}
