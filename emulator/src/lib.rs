//! Protocol-faithful local fakes of the Azure endpoints identity-gateway
//! talks to, built from `shared/reference/azure-wire-contracts.md`.
//!
//! # Layout
//! - [`authority`]: the RS256 token authority every fake shares: IMDS mints
//!   with it, the other fakes verify signature, audience and expiry with it.
//! - [`imds`]: the identity endpoints (IMDS, App Service, legacy MSI) that
//!   mint those tokens, with request recording and fault injection.
//! - [`arm`]: Azure Resource Manager (resource groups; listServiceSas minting
//!   real account-key SAS tokens), with ARM's auth errors and RBAC by `oid`.
//! - [`sample`]: the sample tenant, VM and identities `--emulator` serves.
//! - [`http`], [`tls`]: loopback HTTP/HTTPS serving and the test CA.
#![warn(missing_debug_implementations)]

pub mod arm;
pub mod authority;
pub mod http;
pub mod imds;
pub mod sample;
pub mod tls;

pub use authority::{Claims, Principal, TokenAuthority, VerifyError};
pub use imds::{
    Flavor, IdentitySet, ImdsConfig, ImdsFake, RateLimits, RecordedRequest, ScriptedResponse,
    UserAssigned,
};
