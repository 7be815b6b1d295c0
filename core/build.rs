//! Compiles the contract in `proto/`, once for the whole workspace: protox parses the files (no
//! system `protoc`), tonic-prost-build generates the messages, the client and the server trait,
//! and the descriptor set is kept for the server's gRPC reflection.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["../proto/hydroplane/v1/process.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["../proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hydroplane_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    // The generated `connect` needs tonic's channel: only with the `transport` feature, so that
    // a user of the types alone (the simulator) builds no HTTP client.
    let transport = env::var_os("CARGO_FEATURE_TRANSPORT").is_some();
    // Log output is passed on without copying, to every follower of a process.
    // Labels are ordered maps so that they print (and compare) the same every time.
    tonic_prost_build::configure()
        .build_transport(transport)
        .bytes(".hydroplane.v1.LogChunk.data")
        .btree_map(".hydroplane.v1.ProcessSpec.labels")
        .btree_map(".hydroplane.v1.ProcessInfo.labels")
        .compile_fds(file_descriptors)?;
    Ok(())
}
