//! Generates the Greeter's messages and service from `proto/helloworld.proto`.
//! protox parses the file in Rust (no `protoc` needed), tonic-prost-build
//! writes the code into OUT_DIR, where `src/lib.rs` includes it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/helloworld.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
