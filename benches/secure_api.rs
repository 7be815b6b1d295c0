//! Benchmark of what security costs per call: List of 100 processes over gRPC on loopback, on a
//! plain server and on one with TLS and a bearer token (checked against a tokens file, in
//! constant time), in one run on the same machine.
//!
//! Run with `cargo bench --bench secure_api` (`-- --calls N` to change the count). It starts two
//! real `hydroplane` servers on free ports and stops them at the end.

// A benchmark measures real time, so it reads the std clock.
#![allow(clippy::disallowed_types)]

mod common;

#[path = "../tests/it/common/certs.rs"]
#[allow(dead_code)]
mod certs;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::report;
use hydroplane::proto::{self, process_service_client::ProcessServiceClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const PROCESSES: usize = 100;

fn sleeper(name: &str) -> proto::StartRequest {
    proto::StartRequest {
        spec: Some(proto::ProcessSpec {
            process_name: name.to_owned(),
            container: Some(proto::ContainerSpec {
                image_uri: "busybox".to_owned(),
                command: vec!["sleep".to_owned(), "3600".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Starts a server with these arguments; returns it and its address.
fn server(args: &[&str]) -> Result<(Child, String), Box<dyn std::error::Error>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
        .args(["-H", "127.0.0.1", "-p", "0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut first_line)?;
    let address = first_line.split_whitespace().nth(3).ok_or("no address line")?.to_owned();
    Ok((child, address))
}

fn stop(mut child: Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
}

/// Starts the processes, then times `calls` Lists.
async fn measure<S>(
    client: &mut ProcessServiceClient<S>,
    calls: usize,
) -> Result<Vec<Duration>, Box<dyn std::error::Error>>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResponseBody: tonic::transport::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as tonic::transport::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    for index in 0..PROCESSES {
        client.start(sleeper(&format!("p{index:03}"))).await?;
    }
    // Warm up the connection and the caches before timing.
    for _ in 0..100 {
        client.list(proto::ListRequest::default()).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let begin = Instant::now();
        let listed = client.list(proto::ListRequest::default()).await?.into_inner().processes.len();
        samples.push(begin.elapsed());
        assert_eq!(listed, PROCESSES, "List sees every process");
    }
    Ok(samples)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args
        .iter()
        .position(|arg| arg == "--calls")
        .and_then(|index| args.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(2000);
    let directory = tempfile::tempdir()?;

    let (plain_server, plain_address) = server(&[])?;
    let mut plain = ProcessServiceClient::connect(format!("http://{plain_address}")).await?;
    let mut plain_samples = measure(&mut plain, calls).await?;
    stop(plain_server);

    let ca = certs::TestCa::new("bench CA");
    let (cert_file, key_file) = ca.write_server_files(directory.path(), "server");
    let tokens_file = directory.path().join("tokens.yml");
    // Several tokens, so the constant-time comparison against each is part of the cost.
    let mut token = String::new();
    for name in ["bench", "other-1", "other-2", "other-3", "other-4"] {
        let output = Command::new(env!("CARGO_BIN_EXE_hydroplane"))
            .args(["token", "create", "--tokens-file"])
            .arg(&tokens_file)
            .args(["--name", name, "--scope", "read,write"])
            .output()?;
        if name == "bench" {
            token = String::from_utf8(output.stdout)?.lines().last().ok_or("no token")?.trim().to_owned();
        }
    }
    let path = |path: &std::path::Path| path.to_string_lossy().into_owned();
    let (secure_server, secure_address) = server(&[
        "--tls-cert",
        &path(&cert_file),
        "--tls-key",
        &path(&key_file),
        "--tokens-file",
        &path(&tokens_file),
    ])?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("127.0.0.1");
    let channel =
        Channel::from_shared(format!("https://{secure_address}"))?.tls_config(tls)?.connect().await?;
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut secure =
        ProcessServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request.metadata_mut().insert("authorization", bearer.clone());
            Ok(request)
        });
    let mut secure_samples = measure(&mut secure, calls).await?;
    stop(secure_server);

    println!("List of {PROCESSES} processes, gRPC on loopback, one caller, one connection");
    report("plain (no TLS, no token)", &mut plain_samples);
    report("TLS 1.3 + bearer token (5 in file)", &mut secure_samples);
    Ok(())
}
