//! The front door every HTTP fake shares: what happens to a request before
//! the fake's own protocol logic sees it, and what is kept about it after.
//!
//! - [`bearer`]: reading `Authorization: Bearer` and verifying the token's
//!   signature, issuer, audience and lifetime against the fake authority.
//!   It says *why* a token was refused ([`bearer::BearerRefusal`]); each fake
//!   renders that in its own error shape (Key Vault JSON, Storage XML or
//!   JSON, ARM JSON, WebHDFS `RemoteException`), with its own challenge.
//! - [`recording`]: the log of requests a fake answered ([`RequestLog`]),
//!   and the record the bearer-checking data-plane fakes share
//!   ([`RecordedRequest`]).
//! - [`faults`]: scripted failures ([`FaultScript`]) consumed one per
//!   request, and the `Retry-After` they carry.
//! - [`grant`]: who passes a fake's RBAC or ACL check by token `oid`.
//!
//! Nothing here knows a wire protocol's error body, and nothing here depends
//! on the gateway.

pub mod bearer;
pub mod faults;
pub mod grant;
pub mod recording;

pub use faults::{Fault, FaultScript};
pub use grant::Grant;
pub use recording::{RecordedRequest, RequestLog};

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a handler panicked mid-way
    // (every critical section is a single insert or read), so keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh `x-ms-request-id`.
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
pub(crate) mod testing;
