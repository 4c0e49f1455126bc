//! Compiles `proto/` into the gateway's server stubs and a descriptor set for
//! server reflection. Uses protox, so no system `protoc` is needed.

use std::{env, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(true)
        .open_file("identity_gateway/v1/gateway.proto")?
        .file_descriptor_set();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("identity_gateway_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        // Row batches are written straight from the SQL layer's flat rows
        // (server/adapters/grpc/sql_rows.rs); same wire format.
        .extern_path(
            ".identity_gateway.v1.SqlRowBatch",
            "crate::adapters::grpc::sql_rows::SqlRowBatch",
        )
        // Tokens are written straight from the cache's shared token
        // (server/adapters/grpc/token_reply.rs); same wire format.
        .extern_path(
            ".identity_gateway.v1.GetTokenResponse",
            "crate::adapters::grpc::token_reply::GetTokenResponse",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
