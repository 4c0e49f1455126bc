//! The gateway's operations: one async function per RPC, each taking a
//! [`CallContext`] (caller, transport, deadline) and a domain request. Input
//! validation, the caller policy, limits and the audit line happen here,
//! once; the gRPC service and the HTTP identity endpoint are thin adapters
//! over [`Gateway`].
//!
//! # Layout
//!
//! - [`context`]: who calls, over what, by when.
//! - [`account`]: Windows accounts (a pipe caller's SIDs, SID syntax, the
//!   resolver of account names policy rules write).
//! - [`validate`]: identity selectors and token audiences.
//! - [`policy`]: which callers may use which identities and targets.
//! - [`admission`]: per-caller rate, concurrency and watch limits (`[limits]`).
//! - `audit`: the bounded audit log (one line per call, cached grants
//!   counted) and the call metrics of every call.
//! - [`metrics`]: call, latency and policy-denial metric handles.
//! - [`ops`]: the operations (tokens, secrets, Data Lake, SAS, blobs, ARM, SQL).
//!
//! This crate knows nothing about gRPC, HTTP adapters or the assembly.
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod account;
pub mod admission;
mod audit;
pub mod context;
pub mod metrics;
pub mod ops;
pub mod policy;
pub mod validate;

use std::{sync::Arc, time::Duration};

use identity_gateway_azure::{keyvault::SecretCache, sql::SqlPools, Upstream};
use identity_gateway_core::{GatewayError, IdentitySelector};
use identity_gateway_identity::TokenCache;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use account::{AccountResolver, SidStringsOnly, WindowsAccount};
pub use admission::LimitsConfig;
pub use context::{Attribution, CallContext, Peer, PeerId, Transport};
pub use metrics::ServiceMetrics;
pub use policy::{CallerPolicy, PolicyConfig, PolicyError};
pub use validate::IdentityRef;

/// Limits the operations enforce that come from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest SAS lifetime GetServiceSas issues (`sas.max_expiry_secs`).
    pub sas_max_lifetime: Duration,
    /// Per-caller limits (`[limits]`).
    pub callers: LimitsConfig,
}

/// Everything the operations use, built once by the composition root.
#[derive(Debug)]
pub struct Gateway {
    tokens: TokenCache,
    upstream: Upstream,
    /// Swapped whole on reload ([`Gateway::replace_policy`]); each call
    /// judges with the policy it read at its start, and open WatchToken
    /// streams, subscribed here, judge again with the new one.
    policy: watch::Sender<Arc<CallerPolicy>>,
    secrets: SecretCache,
    sql: Arc<SqlPools>,
    limits: Limits,
    shutdown: CancellationToken,
    metrics: ServiceMetrics,
    admission: Arc<admission::Admission>,
    audit: Arc<audit::Audit>,
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
    /// Where calls, latencies and denials are counted.
    pub metrics: ServiceMetrics,
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
            metrics,
        } = parts;
        Self {
            tokens,
            upstream,
            policy: watch::Sender::new(Arc::new(policy)),
            secrets,
            sql,
            admission: Arc::new(admission::Admission::new(limits.callers.clone())),
            audit: audit::Audit::start(audit::AGGREGATE_INTERVAL),
            limits,
            shutdown,
            metrics,
        }
    }

    /// The machine-wide token cache (for counters and the startup line).
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// The caller policy in force now.
    pub fn policy(&self) -> Arc<CallerPolicy> {
        Arc::clone(&self.policy.borrow())
    }

    /// Replaces the caller policy (reload). Every later check uses
    /// `policy`, and every open WatchToken stream is woken to judge its
    /// caller again: one the new policy no longer grants ends with
    /// PERMISSION_DENIED. Calls already past their policy check and open
    /// connections are not touched.
    pub fn replace_policy(&self, policy: CallerPolicy) {
        self.policy.send_replace(Arc::new(policy));
    }

    /// The SQL connection pools (for counters).
    pub fn sql(&self) -> &SqlPools {
        &self.sql
    }

    /// The operations' metric handles.
    pub fn metrics(&self) -> &ServiceMetrics {
        &self.metrics
    }

    /// The caller policy's verdict on `target`, a denial counted.
    pub(crate) fn authorize(
        &self,
        caller: &policy::Caller<'_>,
        identity: &IdentitySelector,
        target: policy::Target<'_>,
    ) -> Result<(), GatewayError> {
        let verdict = self.policy().check(caller, identity, target);
        if verdict.is_err() {
            self.metrics.denial(&target);
        }
        verdict
    }

    /// Starts ending long-lived streams (shutdown).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.audit.flush();
    }
}
