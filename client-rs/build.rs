//! Compiles the gateway's proto into client stubs with protox (no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto");
    let descriptors = protox::Compiler::new(["../proto"])?
        .include_imports(true)
        .open_file("identity_gateway/v1/gateway.proto")?
        .file_descriptor_set();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
