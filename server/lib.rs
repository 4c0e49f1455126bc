//! identity-gateway: brokers an Azure VM's managed identity to every local
//! process over gRPC on a Unix domain socket (or a named pipe on Windows).
//!
//! # Layers
//!
//! Dependencies point one way, down; the lower layers are crates of their
//! own, so an upward import is a build error:
//!
//! - binary (`main.rs`): parse flags, [`App::start`], wait for a signal, drain.
//! - [`app`]: the composition root, the only reader of the whole [`Config`].
//! - [`adapters`]: gRPC and the HTTP identity endpoint, thin, over the service.
//! - `identity_gateway_service`: one function per operation (validation,
//!   policy, limits, audit).
//! - `identity_gateway_azure`: one client per upstream service.
//! - `identity_gateway_identity`: token sources, retry, governor, cache.
//! - `identity_gateway_core`: errors, clock, clouds, tokens, host guard.
//!
//! Beside them in this crate: [`config`] (flags, `IDENTITY_GATEWAY_*`
//! variables and the TOML file), [`transport`] (the listeners), [`logging`]
//! (the log subscriber, text or JSON, and the startup line),
//! [`healthcheck`] (`identity-gateway healthcheck`, a grpc.health.v1 client
//! for container probes), [`metrics`] (the registry and its opt-in
//! Prometheus listener), [`diagnose`] (the `diagnose` subcommand's checks),
//! [`memory`] (freed heap given back to the OS after bursts) and, with the
//! `emulator` cargo feature only, `emulator_mode` (`--emulator`: the gateway
//! wired to in-process fakes).
//! Production builds (`--no-default-features`) contain no emulator code.
//! Hosting: [`lifecycle`] (how a console or the Windows service stops the
//! gateway, asks it to reload its caller policy and learns it is ready) and [`windows`] (the pipe's security
//! descriptor, pipe callers, the Windows service and Event Log,
//! `%ProgramData%\identity-gateway`).
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod adapters;
pub mod app;
pub mod config;
pub mod diagnose;
#[cfg(feature = "emulator")]
pub mod emulator_mode;
pub mod healthcheck;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod transport;
pub mod windows;

/// Generated protobuf and gRPC types of `identity_gateway.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("identity_gateway.v1");

    /// Messages `build.rs` maps to hand-written types (same wire format).
    pub use crate::adapters::grpc::{sql_rows::SqlRowBatch, token_reply::GetTokenResponse};

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("identity_gateway_descriptor");
}

pub use app::{App, Options, ReloadError, Reloader, StartupError};
pub use config::Config;

/// An error and its causes, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}
