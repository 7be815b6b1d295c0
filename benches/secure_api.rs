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

use std::process::Command;

use common::{argument, report, start_server, stop_server};
use hydroplane::proto::process_service_client::ProcessServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const PROCESSES: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let calls = argument(&args, "--calls", 2_000);
    let directory = tempfile::tempdir()?;

    let (plain_server, plain_address) = start_server(&[])?;
    let mut plain = ProcessServiceClient::connect(format!("http://{plain_address}")).await?;
    let mut plain_samples = common::time_lists(&mut plain, PROCESSES, calls).await?;
    stop_server(plain_server);

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
    let (secure_server, secure_address) = start_server(&[
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
    let mut secure_samples = common::time_lists(&mut secure, PROCESSES, calls).await?;
    stop_server(secure_server);

    println!("List of {PROCESSES} processes, gRPC on loopback, one caller, one connection");
    report("plain (no TLS, no token)", &mut plain_samples);
    report("TLS 1.3 + bearer token (5 in file)", &mut secure_samples);
    Ok(())
}
