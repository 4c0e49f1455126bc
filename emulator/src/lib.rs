//! Protocol-faithful local fakes of the Azure endpoints identity-gateway
//! talks to, built from `shared/reference/azure-wire-contracts.md`.
//!
//! # Layout
//! - [`authority`]: the RS256 token authority every fake shares: IMDS mints
//!   with it, the other fakes verify signature, audience and expiry with it.
#![warn(missing_debug_implementations)]

pub mod arm;
pub mod authority;
pub mod http;
pub mod tls;

pub use authority::{Claims, Principal, TokenAuthority, VerifyError};
