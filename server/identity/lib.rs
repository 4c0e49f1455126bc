//! Managed-identity tokens: the sources that mint them (IMDS, App Service,
//! legacy MSI extension), the shared cache in front of them, the retry policy
//! and the upstream governor that keeps the VM under IMDS's limits.
//!
//! This crate knows HTTP and the identity endpoints; it knows nothing about
//! gRPC, the upstream services or the gateway's assembly. [`TokenCache`]
//! implements [`identity_gateway_core::TokenProvider`], the one way the
//! layers above get tokens.
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod app_service;
pub mod cache;
pub mod config;
pub mod governor;
pub mod imds;
pub mod legacy_msi;
pub mod metrics;
pub mod reachability;
pub mod response;
pub mod retry;
pub mod source;

pub use cache::{CacheEvent, CacheSettings, TokenCache};
pub use config::IdentityConfig;
pub use identity_gateway_core::{AccessToken, IdentitySelector};
pub use metrics::IdentityMetrics;
pub use reachability::SourceHealth;
pub use source::{SourceError, SourceKind, TokenSource};
