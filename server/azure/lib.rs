//! Upstream Azure services, one module per service: Key Vault, Data Lake
//! (Gen1 and Gen2), Blob, SAS (user delegation and ARM `listServiceSas`),
//! ARM and Azure SQL, plus the retry loop they share ([`throttle`]).
//!
//! Each client gets exactly what it uses: an [`Upstream`] (the shared HTTP
//! client, the clock, the exfiltration guard, the upstream settings and a
//! [`TokenProvider`]). Clients know nothing about gRPC, callers, policy or
//! the gateway's assembly; they take domain values and return
//! [`GatewayError`](identity_gateway_core::GatewayError).
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod arm;
pub mod blob;
pub mod config;
pub mod datalake;
pub mod keyvault;
pub mod sas;
pub mod sql;
pub mod throttle;

#[cfg(test)]
mod properties;
#[cfg(test)]
mod testing;

use std::sync::Arc;

use identity_gateway_core::{
    error, http, http::UpstreamConfig, metrics::UpstreamMetrics, token, Clock, TokenProvider,
};

pub use identity_gateway_core::{Cloud, HostGuard, Service};

/// What every upstream client shares: the one HTTP client, the clock, the
/// exfiltration guard, `[upstream]` settings, and where tokens come from.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub http: reqwest::Client,
    pub clock: Arc<dyn Clock>,
    pub hosts: HostGuard,
    pub config: UpstreamConfig,
    pub tokens: Arc<dyn TokenProvider>,
    /// Requests and retries by service and status.
    pub metrics: UpstreamMetrics,
}
