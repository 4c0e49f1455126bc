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
//! - [`tds`]: the fake Azure SQL server (TDS 7.4 over TLS, token login,
//!   SQLite-backed execution) and its sample data.
//! - [`sample`]: the sample tenant, VM and identities `--emulator` serves.
//! - [`http`], [`tls`]: loopback HTTP/HTTPS serving and the test CA.
//! - [`keyvault`]: Key Vault secrets (401 challenge, versions, RBAC and
//!   access-policy checks by token `oid`).
//! - [`datalake_gen1`]: ADLS Gen1 WebHDFS (LISTSTATUS, GETFILESTATUS, the
//!   two-step CREATE, MKDIRS).
//! - [`datalake_gen2`]: ADLS Gen2 `dfs` List Paths with continuation.
//! - [`front_door`]: what every HTTP fake shares before and after its own
//!   protocol logic: bearer-token verification, request recording, fault
//!   scripts and `oid` grants. Each fake renders refusals in its own shape.
//! - [`faults`]: the names tests import from [`front_door`] (request logs,
//!   scripted failures, grants), at their original path.
#![warn(missing_debug_implementations)]

pub mod arm;
pub mod authority;
pub mod blob;
pub mod datalake_gen1;
pub mod datalake_gen2;
mod datalake_tree;
/// The test-facing names of [`front_door`], at the path tests import them
/// from.
pub mod faults {
    pub use crate::front_door::{Fault, FaultScript, Grant, RecordedRequest, RequestLog};
}
pub mod front_door;
pub mod http;
pub mod imds;
pub mod keyvault;
pub mod sample;
pub mod tds;
pub mod tls;

pub use authority::{Claims, Principal, TokenAuthority, VerifyError};
pub use datalake_tree::TreeError;
pub use imds::{
    Flavor, IdentitySet, ImdsConfig, ImdsFake, RateLimits, RecordedRequest, ScriptedResponse,
    UserAssigned,
};
pub use tds::{DatabaseUsers, LoginRecord, SqlFake, SqlFakeConfig};
