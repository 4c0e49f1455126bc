//! Managed-identity tokens: the sources that mint them (IMDS, App Service,
//! legacy MSI extension), the shared cache in front of them, the retry policy
//! and the upstream governor that keeps the VM under IMDS's limits.
//!
//! This module knows HTTP and the identity endpoints; it knows nothing about gRPC.

pub mod app_service;
pub mod cache;
pub mod governor;
pub mod imds;
pub mod legacy_msi;
pub mod response;
pub mod retry;
pub mod source;

use std::{fmt, time::SystemTime};

use secrecy::{ExposeSecret, SecretString};

pub use cache::{CacheEvent, CacheSettings, TokenCache};
pub use source::{SourceKind, TokenSource};

/// Which managed identity a token is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentitySelector {
    /// The VM's system-assigned identity (or IMDS's default).
    SystemAssigned,
    /// A user-assigned identity by client (application) id.
    ClientId(String),
    /// A user-assigned identity by object (principal) id.
    ObjectId(String),
    /// A user-assigned identity by ARM resource id.
    ResourceId(String),
}

impl fmt::Display for IdentitySelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SystemAssigned => f.write_str("system-assigned identity"),
            Self::ClientId(id) => write!(f, "user-assigned identity client_id={id}"),
            Self::ObjectId(id) => write!(f, "user-assigned identity object_id={id}"),
            Self::ResourceId(id) => write!(f, "user-assigned identity resource_id={id}"),
        }
    }
}

/// A bearer token with its expiry. `Debug` never prints the token.
#[derive(Clone)]
pub struct AccessToken {
    /// The JWT.
    pub token: SecretString,
    /// Always "Bearer" for managed identities.
    pub token_type: String,
    /// Wall-clock expiry as the source reported it.
    pub expires_on: SystemTime,
    /// The audience, exactly as requested.
    pub resource: String,
}

impl AccessToken {
    /// The raw token, for an `Authorization` header or the RPC payload.
    pub fn secret(&self) -> &str {
        self.token.expose_secret()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"** redacted **")
            .field("token_type", &self.token_type)
            .field("expires_on", &self.expires_on)
            .field("resource", &self.resource)
            .finish()
    }
}

impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        self.secret() == other.secret()
            && self.expires_on == other.expires_on
            && self.resource == other.resource
    }
}
