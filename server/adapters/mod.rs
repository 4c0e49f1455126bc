//! The adapters: how callers reach the operations. Each is thin: it reads
//! the caller and deadline from its transport, converts its wire format to
//! the service's domain requests and back, and maps errors in one place.
//!
//! - [`grpc`]: the `identity_gateway.v1.IdentityGateway` tonic service.
//! - [`http_identity`]: the App Service-compatible token endpoint for
//!   unmodified Azure SDKs.

pub mod grpc;
pub mod http_identity;
