//! Integration tests: a real gateway on a Unix socket in a temp dir, the
//! emulator's fakes on loopback, and `identity-gateway-client`.

mod common;

mod binary;
mod identity_endpoint;
mod token;
