//! What a token is and who asks for one: the identity selector, the access
//! token (whose `Debug` never prints it), and [`TokenProvider`], the seam
//! through which upstream clients get tokens without knowing the cache.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use crate::error::GatewayError;

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

/// Where upstream clients get tokens: the one way every Key Vault, Storage,
/// ARM, Data Lake and SQL call obtains a bearer token. The gateway's token
/// cache implements it; unit tests of a client pass a recording fake.
pub trait TokenProvider: Send + Sync + fmt::Debug + 'static {
    /// A token of `selector` for `resource`, giving up with
    /// DEADLINE_EXCEEDED once `budget` (the time left before the caller's
    /// deadline) runs out.
    fn token<'a>(
        &'a self,
        selector: &'a IdentitySelector,
        resource: &'a str,
        budget: Option<Duration>,
    ) -> BoxFuture<'a, Result<Arc<AccessToken>, GatewayError>>;

    /// Forgets `rejected` if it is still the cached token of (`selector`,
    /// `resource`), so the next [`token`](Self::token) fetches a new one (an
    /// upstream refused a token the cache still considers valid). Returns
    /// whether it was forgotten.
    fn invalidate(
        &self,
        selector: &IdentitySelector,
        resource: &str,
        rejected: &AccessToken,
    ) -> bool;
}
