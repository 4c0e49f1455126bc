//! Test doubles for the upstream clients' unit tests: an [`Upstream`] built
//! from just a config and a clock, and a token provider that mints real
//! tokens from the emulator's authority and records what it was asked.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::future::BoxFuture;
use identity_gateway_core::{
    clock::ManualClock, http::UpstreamConfig, AccessToken, GatewayError, HostGuard,
    IdentitySelector, TokenProvider,
};
use identity_gateway_emulator::{Principal, TokenAuthority};
use secrecy::SecretString;

use crate::Upstream;

/// Mints a token for whatever audience a client asks for (or for
/// `audience_override` when set, to test refusals) and records the asks.
#[derive(Debug)]
pub(crate) struct MintingTokens {
    authority: Arc<TokenAuthority>,
    asked: Mutex<Vec<String>>,
    audience_override: Mutex<Option<String>>,
}

impl MintingTokens {
    pub(crate) fn new(authority: Arc<TokenAuthority>) -> Arc<Self> {
        Arc::new(Self {
            authority,
            asked: Mutex::default(),
            audience_override: Mutex::default(),
        })
    }

    /// The audiences asked for so far.
    pub(crate) fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }

    /// From now on, mint tokens for `audience` whatever is asked.
    pub(crate) fn mint_for(&self, audience: Option<&str>) {
        *self.audience_override.lock().unwrap() = audience.map(str::to_string);
    }

    pub(crate) fn mint(&self, audience: &str) -> AccessToken {
        let principal = Principal {
            client_id: "652865a1-f931-4521-a1a5-055a83bce067".into(),
            object_id: "72f5fd3e-9ee8-4f05-a3a0-60539e85b40e".into(),
            mirid:
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
                    .into(),
        };
        let (jwt, _) = self.authority.mint(
            &principal,
            audience,
            SystemTime::now(),
            Duration::from_secs(3600),
        );
        AccessToken {
            token: SecretString::from(jwt),
            token_type: "Bearer".into(),
            expires_on: SystemTime::now() + Duration::from_secs(3600),
            resource: audience.into(),
        }
    }
}

impl TokenProvider for MintingTokens {
    fn token<'a>(
        &'a self,
        _selector: &'a IdentitySelector,
        resource: &'a str,
        _budget: Option<Duration>,
    ) -> BoxFuture<'a, Result<Arc<AccessToken>, GatewayError>> {
        self.asked.lock().unwrap().push(resource.to_string());
        let audience = self
            .audience_override
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| resource.to_string());
        let token = Arc::new(self.mint(&audience));
        Box::pin(async move { Ok(token) })
    }

    fn invalidate(&self, _: &IdentitySelector, _: &str, _: &AccessToken) -> bool {
        false
    }
}

/// A provider that must not be asked (pure validation paths).
#[derive(Debug)]
pub(crate) struct NoTokens;

impl TokenProvider for NoTokens {
    fn token<'a>(
        &'a self,
        _: &'a IdentitySelector,
        resource: &'a str,
        _: Option<Duration>,
    ) -> BoxFuture<'a, Result<Arc<AccessToken>, GatewayError>> {
        let resource = resource.to_string();
        Box::pin(async move {
            Err(GatewayError::Unavailable(format!(
                "no token provider in this test (asked for {resource})"
            )))
        })
    }

    fn invalidate(&self, _: &IdentitySelector, _: &str, _: &AccessToken) -> bool {
        false
    }
}

/// An [`Upstream`] from `config` on a manual clock, with the real shared
/// HTTP client built from `config` and `tokens`.
pub(crate) fn upstream(
    config: UpstreamConfig,
    clock: &ManualClock,
    tokens: Arc<dyn TokenProvider>,
) -> Upstream {
    Upstream {
        http: identity_gateway_core::http::build_client(&config).unwrap(),
        clock: Arc::new(clock.clone()),
        hosts: HostGuard::new(&config.allowed_hosts, config.allow_http),
        config,
        tokens,
        metrics: Default::default(),
    }
}
