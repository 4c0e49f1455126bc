//! The gateway's operations: one async function per RPC, each taking a
//! [`CallContext`] (caller, transport, deadline) and a domain request. Input
//! validation, the caller policy, limits and the audit line happen here,
//! once; the gRPC service and the HTTP identity endpoint are thin adapters
//! over [`Gateway`].
//!
//! # Layout
//!
//! - [`context`]: who calls, over what, by when.
//! - [`validate`]: identity selectors and token audiences.
//! - [`policy`]: which callers may use which identities and targets.
//! - `audit`: the one audit line per call.
//! - [`ops`]: the operations (tokens, secrets, Data Lake, SAS, blobs, ARM, SQL).
//!
//! This crate knows nothing about gRPC, HTTP adapters or the assembly.
#![warn(missing_debug_implementations, unreachable_pub)]

mod audit;
pub mod context;
pub mod ops;
pub mod policy;
pub mod validate;

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use identity_gateway_azure::{keyvault::SecretCache, sql::SqlPools, Upstream};
use identity_gateway_identity::TokenCache;
use tokio_util::sync::CancellationToken;

pub use context::{Attribution, CallContext, Peer, Transport};
pub use policy::{CallerPolicy, PolicyConfig, PolicyError};
pub use validate::IdentityRef;

/// Limits the operations enforce that come from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest SAS lifetime GetServiceSas issues (`sas.max_expiry_secs`).
    pub sas_max_lifetime: Duration,
}

/// Everything the operations use, built once by the composition root.
#[derive(Debug)]
pub struct Gateway {
    tokens: TokenCache,
    upstream: Upstream,
    /// Swapped whole on reload ([`Gateway::replace_policy`]); each call
    /// judges with the policy it read at its start.
    policy: RwLock<Arc<CallerPolicy>>,
    secrets: SecretCache,
    sql: Arc<SqlPools>,
    limits: Limits,
    shutdown: CancellationToken,
}

/// The parts a [`Gateway`] is made of.
#[derive(Debug)]
pub struct GatewayParts {
    pub tokens: TokenCache,
    pub upstream: Upstream,
    pub policy: CallerPolicy,
    pub secrets: SecretCache,
    pub sql: Arc<SqlPools>,
    pub limits: Limits,
    /// Cancelled when the gateway starts shutting down: long-lived streams
    /// (WatchToken) end so the drain can finish.
    pub shutdown: CancellationToken,
}

impl Gateway {
    pub fn new(parts: GatewayParts) -> Self {
        let GatewayParts {
            tokens,
            upstream,
            policy,
            secrets,
            sql,
            limits,
            shutdown,
        } = parts;
        Self {
            tokens,
            upstream,
            policy: RwLock::new(Arc::new(policy)),
            secrets,
            sql,
            limits,
            shutdown,
        }
    }

    /// The machine-wide token cache (for counters and the startup line).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The caller policy in force now.
    pub fn policy(&self) -> Arc<CallerPolicy> {
        let guard = self
            .policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(&guard)
    }

    /// Replaces the caller policy (reload). Calls already past their policy
    /// check, open streams and connections are not touched; every later
    /// check uses `policy`.
    pub fn replace_policy(&self, policy: CallerPolicy) {
        let mut guard = self
            .policy
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Arc::new(policy);
    }

    /// The SQL connection pools (for counters).
    pub fn sql(&self) -> &SqlPools {
        &self.sql
    }

    /// Starts ending long-lived streams (shutdown).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }
}
