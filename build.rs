//! Keeps the descriptor set of `proto/` for gRPC server reflection (protox parses the files; no
//! system `protoc`). The generated code itself is the client crate's (`client/rust`), so the
//! server, hpctl and the tests share one set of types.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/hydroplane/v1/process.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("hydroplane_descriptor.bin"),
        prost::Message::encode_to_vec(&file_descriptors),
    )?;
    Ok(())
}
