//! Generates the control protocol's gRPC code from `proto/cluster.proto`
//! with Debian's `protoc` (package protobuf-compiler; `PROTOC` overrides).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/cluster.proto"], &["proto"])
        .map_err(|e| {
            format!(
                "cannot compile proto/cluster.proto: {e}. The gRPC code is generated with protoc: install \
                 Debian's protobuf-compiler (apt-get install protobuf-compiler) or point PROTOC at a protoc binary"
            )
        })?;
    Ok(())
}
