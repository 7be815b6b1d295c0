//! Benchmark of what observability costs per call: List of 100 processes over gRPC on loopback,
//! on a server per configuration of [`CONFIGURATIONS`] (metrics off; metrics on and scraped
//! every 100 ms during the run; metrics and OTLP tracing on), in one run on the same machine. Add a configuration to the
//! list to measure another (tracing on, say) against the same baseline.
//!
//! Run with `cargo bench --bench observability` (`-- --calls N` to change the count). It starts
//! real `hydroplane` servers on free ports and stops them at the end.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{argument, report};
use hydroplane::proto::process_service_client::ProcessServiceClient;

const PROCESSES: usize = 100;

/// How often a configuration with metrics is scraped during its run.
const SCRAPE_INTERVAL: Duration = Duration::from_millis(100);

/// One server set-up to measure.
struct Configuration {
    /// Its name in the report.
    name: &'static str,
    /// The settings file.
    yaml: &'static str,
    /// Whether `/metrics` is scraped during the run.
    scrape: bool,
}

/// What is measured, the baseline first. A "tracing on" configuration goes here.
const CONFIGURATIONS: &[Configuration] = &[
    Configuration { name: "metrics off", yaml: "", scrape: false },
    Configuration {
        name: "metrics on, scraped every 100 ms",
        yaml: "metrics:\n  listen: 127.0.0.1:0\n",
        scrape: true,
    },
    Configuration {
        // Spans are made, batched and exported; port 9 (discard) refuses them, so the export
        // fails in the background, as with a collector that is down, and costs no collector CPU.
        name: "metrics + OTLP tracing, scraped",
        yaml: "metrics:\n  listen: 127.0.0.1:0\ntracing:\n  otlp_endpoint: http://127.0.0.1:9\n",
        scrape: true,
    },
];

/// A running server, stopped with SIGTERM when dropped; its stdout is drained by a thread.
struct Server {
    child: Child,
    address: String,
    metrics_address: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn start(
    configuration: &Configuration,
    directory: &std::path::Path,
) -> Result<Server, Box<dyn std::error::Error>> {
    let path = directory.join(format!("{}.yml", configuration.name.replace([' ', ','], "-")));
    std::fs::write(&path, configuration.yaml)?;
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0", "-c"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut server = Server { child, address: String::new(), metrics_address: None };
    let mut lines = BufReader::new(stdout);
    let mut line = String::new();
    lines.read_line(&mut line)?;
    server.address = line.split_whitespace().nth(3).ok_or("no address line")?.to_owned();
    if !configuration.yaml.is_empty() {
        line.clear();
        lines.read_line(&mut line)?;
        server.metrics_address =
            line.strip_prefix("hydroplane metrics on ").map(|rest| rest.trim().to_owned());
    }
    // The server must never find its stdout closed.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    Ok(server)
}

/// Scrapes `/metrics` every [`SCRAPE_INTERVAL`] until `stop`; counts the scrapes.
fn scraper(address: String, stop: Arc<AtomicBool>, scrapes: Arc<AtomicUsize>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
                let _ = write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut response = Vec::new();
                if stream.read_to_end(&mut response).is_ok() && response.starts_with(b"HTTP/1.1 200") {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(SCRAPE_INTERVAL);
        }
    })
}

/// Connects, starts the processes, then times `calls` Lists.
async fn measure(address: &str, calls: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut client = ProcessServiceClient::connect(format!("http://{address}")).await?;
    common::time_lists(&mut client, PROCESSES, calls).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let calls = argument(&args, "--calls", 2_000);
    let directory = tempfile::tempdir()?;
    let mut results = Vec::new();
    for configuration in CONFIGURATIONS {
        let server = start(configuration, directory.path())?;
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicUsize::new(0));
        let scraping = match (&server.metrics_address, configuration.scrape) {
            (Some(address), true) => Some(scraper(address.clone(), Arc::clone(&stop), Arc::clone(&scrapes))),
            _ => None,
        };
        let samples = measure(&server.address, calls).await;
        stop.store(true, Ordering::Relaxed);
        if let Some(scraping) = scraping {
            let _ = scraping.join();
        }
        drop(server);
        results.push((configuration, samples?, scrapes.load(Ordering::Relaxed)));
    }
    println!("List of {PROCESSES} processes, gRPC on loopback, one caller, one connection");
    for (configuration, mut samples, scrapes) in results {
        let name = if configuration.scrape {
            format!("{} ({scrapes} scrapes)", configuration.name)
        } else {
            configuration.name.to_owned()
        };
        report(&name, &mut samples);
    }
    Ok(())
}
