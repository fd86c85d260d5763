//! Generates the `pb.gubernator` messages and services from `proto/` and a file descriptor set for
//! gRPC reflection. Needs `protoc` (Debian: `protobuf-compiler`).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = [
        "proto/gubernator.proto",
        "proto/peers.proto",
        // ringlimit's own services (package `ringlimit.v1`): `AllowV1`, the owner side of `/allow`.
        "proto/allow.proto",
        "proto/handoff.proto",
        "proto/admin.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("gubernator_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
