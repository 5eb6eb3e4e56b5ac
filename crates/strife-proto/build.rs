//! Compiles `proto/strife/v1/*.proto` with `protox` (pure Rust). (The etcd client crate still
//! runs `protoc` in its own build script; `scripts/test` and `scripts/demo` install it.)

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let files = [
        "strife/v1/money.proto",
        "strife/v1/bank.proto",
        "strife/v1/coordinator.proto",
        "strife/v1/gateway.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={proto_root}/{file}");
    }
    let descriptors = protox::compile(files, [proto_root])?;
    // The same descriptors, serialized, for gRPC server reflection (grpcurl, grpcui, …).
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("strife_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
