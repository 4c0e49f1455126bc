//! The gateway's core vocabulary, shared by every layer above it and
//! depending on none of them.
//!
//! # Layout
//!
//! - [`error`]: [`GatewayError`], the one error every operation returns.
//! - [`clock`]: injected time ([`Clock`]); [`clock::ManualClock`] for tests
//!   behind the `test-util` feature.
//! - [`cloud`]: Azure clouds, services, their audiences and host suffixes.
//! - [`token`]: identity selectors, access tokens and the [`TokenProvider`]
//!   seam through which upstream clients get tokens.
//! - [`hosts`]: host normalisation and the exfiltration guard ([`HostGuard`]).
//! - [`http`]: the one upstream HTTP client and size-capped body reading.
//! - [`budget`]: the caller's deadline as a time budget.
//! - [`metrics`]: upstream request and retry counters (values only; the
//!   registry and the exporter live in the composition root).
#![warn(missing_debug_implementations, unreachable_pub)]

pub mod budget;
pub mod clock;
pub mod cloud;
pub mod error;
pub mod hosts;
pub mod http;
pub mod metrics;
pub mod token;

pub use budget::within_budget;
pub use clock::{Clock, SystemClock};
pub use cloud::{Cloud, Service};
pub use error::GatewayError;
pub use hosts::{normalize_host, normalize_url, HostGuard};
pub use token::{AccessToken, IdentitySelector, TokenProvider};
