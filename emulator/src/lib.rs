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
//! - [`blob`]: Blob Storage, path-style like Azurite (Get/Put Blob, Get User
//!   Delegation Key), checking bearer tokens, data roles by `oid`, and
//!   service and user delegation SAS signatures.
//! - [`sample`]: the sample tenant, VM and identities `--emulator` serves.
//! - [`http`], [`tls`]: loopback HTTP/HTTPS serving and the test CA.
//! - [`keyvault`]: Key Vault secrets (401 challenge, versions, RBAC and
//!   access-policy checks by token `oid`).
//! - [`datalake_gen1`]: ADLS Gen1 WebHDFS (LISTSTATUS, GETFILESTATUS, the
//!   two-step CREATE, MKDIRS).
//! - [`datalake_gen2`]: ADLS Gen2 `dfs` List Paths with continuation.
//! - [`faults`]: request logs, scripted failures and grants the fakes share.
#![warn(missing_debug_implementations)]

pub mod arm;
pub mod authority;
pub mod blob;
pub mod datalake_gen1;
pub mod datalake_gen2;
mod datalake_tree;
pub mod faults;
pub mod http;
pub mod imds;
pub mod keyvault;
pub mod sample;
pub mod tls;

pub use authority::{Claims, Principal, TokenAuthority, VerifyError};
pub use datalake_tree::TreeError;
pub use imds::{
    Flavor, IdentitySet, ImdsConfig, ImdsFake, RateLimits, RecordedRequest, ScriptedResponse,
    UserAssigned,
};
