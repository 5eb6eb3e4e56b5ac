//! Compiles `proto/strife/v1/*.proto` with `protox` (pure Rust), so `cargo build` needs no
//! system `protoc`.

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
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
