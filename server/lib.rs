//! identity-gateway: brokers an Azure VM's managed identity to every local
//! process over gRPC on a Unix domain socket (or a named pipe on Windows).
//!
//! # Layout
//!
//! - [`config`]: flags, `IDENTITY_GATEWAY_*` variables and the TOML file.
//! - [`transport`]: the listeners (Unix socket with stale-socket handling,
//!   loopback TCP, Windows named pipe).
//! - [`identity`]: token sources (IMDS, App Service, legacy MSI), the retry
//!   policy, the upstream governor and the machine-wide [`identity::TokenCache`].
//! - [`azure`]: upstream services (one module each), the shared HTTP client and
//!   the exfiltration guard.
//! - [`api`]: the tonic service; turns proto into domain calls and
//!   [`error::GatewayError`] into gRPC statuses.
//! - [`policy`]: which callers (socket peer credentials) may use which
//!   identities, audiences, vaults, accounts and servers.
//! - [`gateway`]: the shared state and [`gateway::serve`].
//! - [`identity_endpoint`]: opt-in App Service-compatible HTTP token endpoint
//!   on loopback, for unmodified Azure SDKs.
//! - [`emulator_mode`]: `--emulator`, the gateway wired to in-process fakes.
//! - [`clock`]: injected time, so tests move expiry without sleeping.
//! - [`lifecycle`]: how a host (console, Windows service) stops the gateway
//!   and learns it is ready; [`logging`]: stderr or rotating files.
//! - [`windows`]: the pipe's security descriptor, pipe callers, the Windows
//!   service and Event Log, `%ProgramData%\identity-gateway`.
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod api;
pub mod azure;
pub mod clock;
pub mod config;
pub mod emulator_mode;
pub mod error;
pub mod gateway;
pub mod identity;
pub mod identity_endpoint;
pub mod lifecycle;
pub mod logging;
pub mod policy;
pub mod transport;
pub mod windows;

/// Generated protobuf and gRPC types of `identity_gateway.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    tonic::include_proto!("identity_gateway.v1");

    /// The encoded descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("identity_gateway_descriptor");
}

pub use config::Config;
pub use error::GatewayError;
pub use gateway::{serve, GatewayState};
