//! Benchmark of the local runtime's health checks: the server's CPU, as a share of one core,
//! while processes whose readiness check never passes stay STARTING (the checks' target: at
//! most 5% of a core for 200 such processes). Each process sleeps and its HTTP readiness check
//! asks a loopback port nothing listens on, so every check is a refused connection; the same
//! is measured with TCP checks, with a one-second period, and with no checks at all (what the
//! server costs anyway).
//!
//! Run with `cargo bench --bench health_checks` (`-- --processes N --seconds S`). It starts the
//! real `hydroplane` binary on a free port and stops it at the end.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::time::{Duration, Instant};

use common::{argument, cpu_time, start_server, stop_server};
use hydroplane::proto::{self, process_service_client::ProcessServiceClient, stop_request::Target};

/// A sleeper whose readiness check (when given) can never pass.
fn never_ready(
    name: &str,
    readiness: Option<proto::health_check::Action>,
    period_seconds: u32,
) -> proto::StartRequest {
    let mut request = common::sleeper(name);
    let spec = request.spec.as_mut().expect("a spec");
    spec.group = Some("checked".to_owned());
    spec.readiness = readiness.map(|action| proto::HealthCheck {
        action: Some(action),
        period_seconds: Some(period_seconds),
        ..Default::default()
    });
    request
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let count = argument(&args, "--processes", 200);
    let seconds = argument(&args, "--seconds", 30) as u64;
    // A port taken and released at once: nothing listens there while the benchmark runs.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let http = || {
        proto::health_check::Action::HttpGet(proto::HttpGetAction {
            port: u32::from(closed_port),
            path: "/ready".into(),
        })
    };
    let tcp =
        || proto::health_check::Action::TcpSocket(proto::TcpSocketAction { port: u32::from(closed_port) });
    let (server, address) = start_server(&[])?;
    let mut client = ProcessServiceClient::connect(format!("http://{address}")).await?;
    println!(
        "local runtime: server CPU while {count} processes stay STARTING (readiness never passes), \
         over {seconds} s each, as a share of one core"
    );
    let cases: [(&str, Option<proto::health_check::Action>, u32); 4] = [
        ("no checks (the server's own cost)", None, 10),
        ("HTTP GET readiness, default period (10 s)", Some(http()), 10),
        ("TCP readiness, default period (10 s)", Some(tcp()), 10),
        ("HTTP GET readiness, period 1 s", Some(http()), 1),
    ];
    for (round, (what, action, period)) in cases.into_iter().enumerate() {
        for index in 0..count {
            client.start(never_ready(&format!("r{round}-{index:04}"), action.clone(), period)).await?;
        }
        // Past the first checks of every process, so that the window sees the steady state.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu_before, wall_before) = (cpu_time(server.id()), Instant::now());
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let share = (cpu_time(server.id()) - cpu_before).as_secs_f64() / wall_before.elapsed().as_secs_f64();
        let listed = client
            .list(proto::ListRequest { group: Some("checked".into()), ..Default::default() })
            .await?
            .into_inner()
            .processes;
        let starting =
            listed.iter().filter(|process| process.status() == proto::ProcessStatus::Starting).count();
        println!("  {what:<45} {:>6.2}% of a core   ({starting} of {count} STARTING)", share * 100.0);
        client.stop(proto::StopRequest { target: Some(Target::Group("checked".into())) }).await?;
    }
    stop_server(server);
    Ok(())
}
