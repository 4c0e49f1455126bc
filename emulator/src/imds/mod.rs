//! The fake managed-identity endpoints: IMDS
//! (`GET /metadata/identity/oauth2/token`), the App Service / Functions
//! identity endpoint (`GET /msi/token`, api-version 2019-08-01) and the legacy
//! MSI VM extension (`GET /oauth2/token`), as section 1 and 2 of
//! `azure-wire-contracts.md` describe them.
//!
//! An [`ImdsFake`] validates requests the way the real endpoint does, mints
//! tokens with the shared [`TokenAuthority`] (`aud` = `resource` exactly),
//! records every request it sees, and injects faults on demand: scripted
//! answers, latency and IMDS's rate limits (20 requests per second, 5 in
//! flight). It serves plain HTTP on 127.0.0.1, as IMDS does. It does not
//! emulate Azure Arc's challenge/response or the 2017-09-01 App Service
//! protocol.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, request::Parts, HeaderValue, Method, StatusCode},
    response::Response,
    Router,
};
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    authority::{Principal, TokenAuthority},
    front_door::{faults::with_retry_after, FaultScript, RequestLog},
    http::{serve_http, RunningServer},
    sample,
};

/// IMDS's token path.
pub const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The App Service identity endpoint's path (matched case-insensitively; the
/// platform uses both `/msi/token` and `/MSI/token`).
pub const APP_SERVICE_TOKEN_PATH: &str = "/msi/token";
/// The legacy MSI VM extension's token path.
pub const LEGACY_MSI_TOKEN_PATH: &str = "/oauth2/token";
/// The only api-version the App Service flavor speaks.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// The oldest api-version IMDS's identity route accepts.
pub const IMDS_MIN_API_VERSION: &str = "2018-02-01";
/// The `Server` header real IMDS sends.
pub const IMDS_SERVER_HEADER: &str = "IMDS/150.870.65.1854";
/// Token lifetime real IMDS grants: 24 h plus 5 min.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(86_700);
/// What a recorded `X-IDENTITY-HEADER` shows when it carried the right secret.
pub const REDACTED_MATCHING: &str = "** redacted (matches the secret) **";
/// What a recorded `X-IDENTITY-HEADER` shows when it carried another value.
pub const REDACTED_WRONG: &str = "** redacted (wrong secret) **";

const JSON_UTF8: &str = "application/json; charset=utf-8";
const MULTIPLE_USER_ASSIGNED: &str = "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request";
const APP_SERVICE_NO_IDENTITY: &str = "Unable to load the proper Managed Identity.";
/// How long an admitted request counts against `RateLimits::per_second`: one
/// second, less an allowance for scheduling and network jitter, so a client
/// that spaces its requests evenly at exactly the limit is not refused
/// because one request was delayed on its way in.
pub const RATE_WINDOW: Duration = Duration::from_millis(900);
/// Requests recorded at most, so a long `--emulator` session cannot grow
/// without bound; later ones are served but not recorded.
pub const MAX_RECORDED_REQUESTS: usize = 100_000;
/// Request headers a [`RecordedRequest`] keeps (lower-case).
const RECORDED_HEADERS: &[&str] = &["metadata", "x-identity-header", "x-forwarded-for"];

/// The managed identities attached to the emulated host.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentitySet {
    /// The host's system-assigned identity, if enabled.
    pub system: Option<Principal>,
    /// User-assigned identities attached to the host.
    pub user_assigned: Vec<UserAssigned>,
}

/// A user-assigned identity attached to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAssigned {
    pub principal: Principal,
    /// ARM id of the identity (what `msi_res_id` / `mi_res_id` select by;
    /// compared case-insensitively, as ARM ids are).
    pub resource_id: String,
}

/// Which identity endpoint the fake plays.
#[derive(Clone, PartialEq, Eq)]
pub enum Flavor {
    /// Azure IMDS (VM, VMSS).
    Imds,
    /// App Service / Functions / Container Apps, api-version 2019-08-01;
    /// `header_secret` is the value of `IDENTITY_HEADER`.
    AppService { header_secret: String },
    /// The retired MSI VM extension (`localhost:50342/oauth2/token`).
    LegacyMsi,
}

impl fmt::Debug for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Imds => f.write_str("Imds"),
            Self::AppService { .. } => f
                .debug_struct("AppService")
                .field("header_secret", &"** redacted **")
                .finish(),
            Self::LegacyMsi => f.write_str("LegacyMsi"),
        }
    }
}

impl Flavor {
    fn token_path(&self) -> &'static str {
        match self {
            Self::Imds => IMDS_TOKEN_PATH,
            Self::AppService { .. } => APP_SERVICE_TOKEN_PATH,
            Self::LegacyMsi => LEGACY_MSI_TOKEN_PATH,
        }
    }

    fn is_token_path(&self, path: &str) -> bool {
        match self {
            Self::AppService { .. } => path.eq_ignore_ascii_case(APP_SERVICE_TOKEN_PATH),
            _ => path == self.token_path(),
        }
    }
}

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct ImdsConfig {
    pub identities: IdentitySet,
    /// Lifetime of minted tokens (`expires_on - not_before`).
    pub token_lifetime: Duration,
    pub flavor: Flavor,
    /// Resources (token audiences) the tenant knows; any other gets Entra's
    /// AADSTS500011 `invalid_resource` answer. A trailing `/` is ignored when
    /// comparing, as Entra does. `None` accepts every resource.
    pub known_resources: Option<Vec<String>>,
}

impl Default for ImdsConfig {
    fn default() -> Self {
        Self {
            identities: sample::identities(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            flavor: Flavor::Imds,
            known_resources: None,
        }
    }
}

/// Request limits enforced by the fake; past them it answers 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests admitted in any sliding one-second window (measured on
    /// arrival, with [`RATE_WINDOW`]'s allowance for jitter).
    pub per_second: u32,
    /// Requests in flight at once.
    pub concurrent: usize,
}

impl RateLimits {
    /// IMDS's managed-identity limits: 20 requests per second, 5 concurrent.
    pub const IMDS: RateLimits = RateLimits {
        per_second: 20,
        concurrent: 5,
    };
}

/// A rule consulted for every token request the script does not answer:
/// `Some(answer)` is given instead of the normal behaviour.
pub type FaultRule = std::sync::Arc<dyn Fn() -> Option<ScriptedResponse> + Send + Sync>;

/// An answer the fake gives instead of its normal behaviour, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedResponse {
    pub status: u16,
    /// Sent as a `Retry-After` header (seconds).
    pub retry_after: Option<u64>,
    /// Sent verbatim. `None` sends the flavor's error body for `status`
    /// (for a 2xx status, `None` means "answer normally").
    pub body: Option<String>,
}

impl ScriptedResponse {
    /// `status` with the flavor's usual error body (e.g. 410, 500, 503).
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
            body: None,
        }
    }

    /// 429 `too_many_requests` with `Retry-After: retry_after_secs`.
    pub fn throttled(retry_after_secs: u64) -> Self {
        Self {
            status: 429,
            retry_after: Some(retry_after_secs),
            body: None,
        }
    }

    /// `status` with exactly `body` (JSON or not: garbage is allowed).
    pub fn body(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            retry_after: None,
            body: Some(body.into()),
        }
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order (duplicates kept).
    pub query: Vec<(String, String)>,
    /// `metadata`, `x-identity-header` (value redacted, see
    /// [`REDACTED_MATCHING`]) and `x-forwarded-for`, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The status answered; 0 while in flight or if the client hung up
    /// before the answer.
    pub status: u16,
}

impl RecordedRequest {
    /// The first value of query parameter `name`.
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first recorded value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running fake identity endpoint on 127.0.0.1. Clones share one server,
/// which stops when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct ImdsFake {
    shared: Arc<Shared>,
    server: Arc<RunningServer>,
}

impl ImdsFake {
    /// Starts the fake on a free loopback port.
    pub async fn start(
        authority: Arc<TokenAuthority>,
        config: ImdsConfig,
    ) -> std::io::Result<ImdsFake> {
        Self::start_on(authority, config, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        config: ImdsConfig,
        port: u16,
    ) -> std::io::Result<ImdsFake> {
        let shared = Arc::new(Shared::new(authority, config));
        let server = serve_http(router(shared.clone()), port).await?;
        Ok(Self {
            shared,
            server: Arc::new(server),
        })
    }

    /// `http://127.0.0.1:PORT`: what the gateway's IMDS endpoint setting takes.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The full token URL of this flavor (for App Service, the value of
    /// `IDENTITY_ENDPOINT`).
    pub fn token_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url(),
            self.shared.config.flavor.token_path()
        )
    }

    /// The address the fake listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The identities the fake serves.
    pub fn identities(&self) -> &IdentitySet {
        &self.shared.config.identities
    }

    /// The flavor the fake plays.
    pub fn flavor(&self) -> &Flavor {
        &self.shared.config.flavor
    }

    /// Every request so far, in arrival order (the first
    /// [`MAX_RECORDED_REQUESTS`]).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.snapshot()
    }

    /// How many requests reached the token route (valid or not, throttled or not).
    pub fn token_requests(&self) -> usize {
        let flavor = &self.shared.config.flavor;
        self.shared.log.count(|r| flavor.is_token_path(&r.path))
    }

    /// Queues answers given, in order, to the next token-route requests
    /// (after the rate limiter and latency) instead of the normal behaviour.
    pub fn script(&self, responses: impl IntoIterator<Item = ScriptedResponse>) {
        self.shared.script.push(responses);
    }

    /// Answers token requests by `rule` (after any script) until cleared
    /// with `None`: e.g. "410 until the test's clock passes 20 s".
    pub fn set_fault(&self, rule: Option<FaultRule>) {
        self.shared.lock().fault = rule;
    }

    /// Delays every admitted request by `latency` (zero to stop).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Enforces `limits` (answering 429 past them), or none.
    pub fn set_rate_limits(&self, limits: Option<RateLimits>) {
        let mut state = self.shared.lock();
        state.limits = limits;
        state.window.clear();
    }

    /// The most requests ever in flight at once (throttled ones included).
    pub fn max_concurrent_seen(&self) -> usize {
        self.shared.lock().max_concurrent_seen
    }

    /// Requests answered 429 by the rate limiter (scripted 429s not included).
    pub fn throttled(&self) -> usize {
        self.shared.lock().throttled
    }

    /// Forgets cached tokens, so the next request for each (identity,
    /// resource) mints a fresh one.
    pub fn clear_token_cache(&self) {
        self.shared.lock().tokens.clear();
    }

    /// Turns IMDS's token cache on (the default) or off. Off, every request
    /// mints a fresh token: useful when the gateway runs on a manual clock
    /// that has moved past the wall-clock expiry of a cached token.
    pub fn set_token_caching(&self, enabled: bool) {
        let mut state = self.shared.lock();
        state.caching_disabled = !enabled;
        state.tokens.clear();
    }
}

mod endpoint;
mod replies;
mod request;
#[cfg(test)]
mod tests;

#[allow(unused_imports)]
use endpoint::*;
#[allow(unused_imports)]
use replies::*;
#[allow(unused_imports)]
use request::*;
