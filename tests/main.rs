//! Integration tests: a real gateway on a Unix socket in a temp dir, the
//! emulator's fakes on loopback, and `identity-gateway-client`.

mod common;

mod binary;
mod config_reference;
mod datalake;
mod emulator;
mod emulator_blob;
mod identity_endpoint;
mod keyvault;
mod local_authority;
mod operations;
mod policy;
mod resilience;
mod sources;
mod sql;
mod storage;
mod token;
