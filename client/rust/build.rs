//! Compiles the contract in `proto/` as the server's build does: protox parses the files (no system
//! `protoc`) and tonic-prost-build generates the messages, the client and the server trait (the
//! trait costs only tonic, and lets tests and the doc example serve the same types in-process).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["../../proto/hydroplane/v1/process.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["../../proto"])?;
    // Log output is passed on without copying, to every follower of a process.
    // Labels are ordered maps so that they print (and compare) the same every time.
    tonic_prost_build::configure()
        .bytes(".hydroplane.v1.LogChunk.data")
        .btree_map(".hydroplane.v1.ProcessSpec.labels")
        .btree_map(".hydroplane.v1.ProcessInfo.labels")
        .compile_fds(file_descriptors)?;
    Ok(())
}
