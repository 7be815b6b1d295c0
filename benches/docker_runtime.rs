//! Benchmark of the docker runtime against a real engine (`scripts/dockerd start`: the engine at
//! `DOCKER_HOST`, or the private dockerd under `target/`): Start-to-RUNNING p50/p99 over 50
//! processes (`Start` with `wait`, one at a time) next to `docker run -d` of the same image and
//! command on the same engine in the same run, then List p50 with 500 containers in the index.
//!
//! Run with `cargo bench --bench docker_runtime` (`-- --processes N`, `--listed N` to change the
//! counts). The 500 listed containers run `true` and exit (EXITED): the index holds them as it
//! would running ones, without 500 engine shims in memory.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{argument, report, start_server_with_config};
use hydroplane::proto::{self, process_service_client::ProcessServiceClient, stop_request::Target};

const IMAGE: &str = "hydroplane-test/busybox:latest";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let processes = argument(&args, "--processes", 50);
    let listed = argument(&args, "--listed", 500);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let engine = Command::new(root.join("scripts/dockerd")).arg("start").output()?;
    if !engine.status.success() {
        return Err(format!("scripts/dockerd start: {}", String::from_utf8_lossy(&engine.stderr)).into());
    }
    let host = String::from_utf8(engine.stdout)?.trim().to_owned();
    let network = format!("hpbench-{}", std::process::id());
    let _cleanup = Cleanup { host: host.clone(), network: network.clone() };
    let directory = tempfile::tempdir()?;
    let config = directory.path().join("hydroplane.yml");
    std::fs::write(
        &config,
        format!(
            "runtime:\n  runtime_type: docker\n  docker_host: {host}\n  network: {network}\n  stop_grace_seconds: 1\n"
        ),
    )?;
    let (_server, url) = start_server_with_config(&config)?;
    let mut client = ProcessServiceClient::connect(url).await?;
    let docker = |args: &[&str]| Command::new("docker").arg("-H").arg(&host).args(args).output();

    println!("docker runtime ({host}), {IMAGE} `sleep 3600`, one caller, debug or release as built");
    // The bare engine first: `docker run -d` on the same network, with a label of ours so the
    // cleanup finds them (not Hydroplane's: the server never sees them).
    let mut bare = Vec::with_capacity(processes);
    for index in 0..processes {
        let name = format!("bare-{}-{index}", std::process::id());
        let begin = Instant::now();
        let output = docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &network,
            "--label",
            &format!("hpbench={network}"),
            IMAGE,
            "sleep",
            "3600",
        ])?;
        bare.push(begin.elapsed());
        if !output.status.success() {
            return Err(format!("docker run: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
    }
    let mut ours = Vec::with_capacity(processes);
    for index in 0..processes {
        let begin = Instant::now();
        let started =
            client.start(start(&format!("run-{index}"), &["sleep", "3600"], true)).await?.into_inner();
        ours.push(begin.elapsed());
        let status = started.process.map(|process| process.status());
        if status != Some(proto::ProcessStatus::Running) {
            return Err(format!("run-{index} is {status:?}, not RUNNING").into());
        }
    }
    report("docker run -d (CLI, to running)", &mut bare);
    report("Hydroplane Start to RUNNING (wait)", &mut ours);
    let (bare_p50, ours_p50) = (common::percentile(&mut bare, 0.5), common::percentile(&mut ours, 0.5));
    println!(
        "Start-to-RUNNING p50 ratio, Hydroplane / docker run -d: {:.2}",
        ours_p50.as_secs_f64() / bare_p50.as_secs_f64()
    );
    client.stop(proto::StopRequest { target: Some(Target::Group("bench".to_owned())) }).await?;

    // 500 containers in the index: made four Starts at a time, each exits at once.
    let names: Vec<String> = (0..listed).map(|index| format!("listed-{index:04}")).collect();
    for chunk in names.chunks(4) {
        let starts = chunk.iter().map(|name| {
            let mut client = client.clone();
            let request = start(name, &["true"], false);
            async move { client.start(request).await }
        });
        for outcome in futures::future::join_all(starts).await {
            outcome?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&mut client).await? < listed {
        if Instant::now() > deadline {
            return Err("the index did not reach every container in 2 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut lists = Vec::with_capacity(200);
    for _ in 0..200 {
        let begin = Instant::now();
        let seen = count(&mut client).await?;
        lists.push(begin.elapsed());
        assert_eq!(seen, listed);
    }
    report(&format!("List ({listed} containers, from the index)"), &mut lists);
    client.stop(proto::StopRequest { target: Some(Target::Group("bench".to_owned())) }).await?;
    Ok(())
}

/// How many processes one List (every page) returns.
async fn count(
    client: &mut ProcessServiceClient<tonic::transport::Channel>,
) -> Result<usize, Box<dyn std::error::Error>> {
    Ok(common::count_listed(client).await?)
}

fn start(name: &str, command: &[&str], wait: bool) -> proto::StartRequest {
    proto::StartRequest {
        spec: Some(proto::ProcessSpec {
            process_name: name.to_owned(),
            group: Some("bench".to_owned()),
            container: Some(proto::ContainerSpec {
                image_uri: IMAGE.to_owned(),
                command: command.iter().map(|part| (*part).to_owned()).collect(),
                ..Default::default()
            }),
            restart_policy: proto::RestartPolicy::Never.into(),
            ..Default::default()
        }),
        wait,
        wait_timeout: None,
    }
}

/// Removes every container of the benchmark's network, and the network, however it ends.
struct Cleanup {
    host: String,
    network: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for label in [format!("hydroplane/network={}", self.network), format!("hpbench={}", self.network)] {
            let filter = format!("label={label}");
            if let Ok(output) =
                Command::new("docker").args(["-H", &self.host, "ps", "-aq", "--filter", &filter]).output()
            {
                let ids: Vec<String> =
                    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker").args(["-H", &self.host, "rm", "-f"]).args(&ids).output();
                }
            }
        }
        let _ = Command::new("docker").args(["-H", &self.host, "network", "rm", &self.network]).output();
    }
}
