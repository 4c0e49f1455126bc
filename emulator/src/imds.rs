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
        self.shared.lock().requests.clone()
    }

    /// How many requests reached the token route (valid or not, throttled or not).
    pub fn token_requests(&self) -> usize {
        let flavor = &self.shared.config.flavor;
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| flavor.is_token_path(&r.path))
            .count()
    }

    /// Queues answers given, in order, to the next token-route requests
    /// (after the rate limiter and latency) instead of the normal behaviour.
    pub fn script(&self, responses: impl IntoIterator<Item = ScriptedResponse>) {
        self.shared.lock().script.extend(responses);
    }

    /// Answers token requests by `fault` (after any script) until cleared
    /// with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.lock().fault = fault;
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

/// State shared by the server task and the handles.
struct Shared {
    authority: Arc<TokenAuthority>,
    config: ImdsConfig,
    state: Mutex<FakeState>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct FakeState {
    requests: Vec<RecordedRequest>,
    script: VecDeque<ScriptedResponse>,
    latency: Duration,
    limits: Option<RateLimits>,
    /// Arrival times of admitted requests within the last second.
    window: VecDeque<Instant>,
    in_flight: usize,
    max_concurrent_seen: usize,
    throttled: usize,
    /// Like real IMDS, one token per (identity object id, resource).
    tokens: HashMap<(String, String), CachedToken>,
    caching_disabled: bool,
    fault: Option<Fault>,
}

/// A rule consulted for every token request the script does not answer:
/// `Some(answer)` is given instead of the normal behaviour (e.g. "410
/// until the test's clock passes 20 s").
pub type Fault = Arc<dyn Fn() -> Option<ScriptedResponse> + Send + Sync>;

#[derive(Clone)]
struct CachedToken {
    token: String,
    not_before: u64,
    expires_on: u64,
}

impl Shared {
    fn new(authority: Arc<TokenAuthority>, config: ImdsConfig) -> Self {
        Self {
            authority,
            config,
            state: Mutex::new(FakeState::default()),
        }
    }

    /// Critical sections never await, so a plain mutex is fine; a panic in
    /// one must not wedge the fake, hence the poison recovery.
    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the request, counts it in flight and applies the rate limits.
    /// Returns the record's index, the in-flight guard and whether the
    /// request was admitted.
    fn arrive(self: &Arc<Self>, parts: &Parts) -> (usize, InFlight, bool) {
        let record = self.record(parts);
        let now = Instant::now();
        let mut state = self.lock();
        let index = state.requests.len();
        if index < MAX_RECORDED_REQUESTS {
            state.requests.push(record);
        }
        state.in_flight += 1;
        state.max_concurrent_seen = state.max_concurrent_seen.max(state.in_flight);
        let guard = InFlight(self.clone());
        let admitted = match state.limits {
            None => true,
            Some(limits) => {
                while state
                    .window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
                {
                    state.window.pop_front();
                }
                let over_rate = state.window.len() >= limits.per_second as usize;
                let over_concurrency = state.in_flight > limits.concurrent;
                if over_rate || over_concurrency {
                    state.throttled += 1;
                    false
                } else {
                    state.window.push_back(now);
                    true
                }
            }
        };
        (index, guard, admitted)
    }

    fn record(&self, parts: &Parts) -> RecordedRequest {
        let secret = match &self.config.flavor {
            Flavor::AppService { header_secret } => Some(header_secret.as_str()),
            _ => None,
        };
        let headers = RECORDED_HEADERS
            .iter()
            .flat_map(|name| {
                parts.headers.get_all(*name).iter().map(move |value| {
                    let shown = if *name == "x-identity-header" {
                        match secret {
                            Some(s) if value.as_bytes() == s.as_bytes() => REDACTED_MATCHING,
                            Some(_) => REDACTED_WRONG,
                            None => "** redacted **",
                        }
                        .to_string()
                    } else {
                        String::from_utf8_lossy(value.as_bytes()).into_owned()
                    };
                    (name.to_string(), shown)
                })
            })
            .collect();
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parse_query(parts.uri.query()),
            headers,
            status: 0,
        }
    }

    fn set_status(&self, index: usize, status: u16) {
        if let Some(record) = self.lock().requests.get_mut(index) {
            record.status = status;
        }
    }

    async fn respond(&self, parts: &Parts) -> Response {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let flavor = &self.config.flavor;
        let path = parts.uri.path();
        if !flavor.is_token_path(path) {
            return self.error(Rejection::new(
                404,
                "not_found",
                format!("No route matches '{path}'"),
            ));
        }
        let scripted = {
            let mut state = self.lock();
            let fault = state.fault.clone();
            state.script.pop_front().or_else(|| fault.and_then(|f| f()))
        };
        if let Some(scripted) = scripted {
            let answer_normally = (200..300).contains(&scripted.status) && scripted.body.is_none();
            if !answer_normally {
                return self.scripted(scripted);
            }
        }
        if parts.method != Method::GET {
            let mut response = self.error(Rejection::new(
                405,
                "method_not_allowed",
                format!("The method {} is not allowed; use GET", parts.method),
            ));
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        let result = match flavor {
            Flavor::Imds => self.imds(parts),
            Flavor::AppService { header_secret } => self.app_service(parts, header_secret),
            Flavor::LegacyMsi => self.legacy_msi(parts),
        };
        match result {
            Ok(response) => response,
            Err(rejection) => self.error(rejection),
        }
    }

    fn imds(&self, parts: &Parts) -> Result<Response, Rejection> {
        require_metadata_header(parts, "invalid_request")?;
        if parts.headers.contains_key("x-forwarded-for") {
            return Err(Rejection::invalid(
                "Requests carrying an X-Forwarded-For header are rejected: IMDS must not be reached through a proxy",
            ));
        }
        let query = Query::parse(parts)?;
        match query.get("api-version") {
            None => {
                return Err(Rejection::invalid(
                    "Required query variable 'api-version' is missing",
                ))
            }
            Some(v) if !is_supported_imds_api_version(v) => {
                return Err(Rejection::invalid(format!(
                    "api-version '{v}' is invalid; use {IMDS_MIN_API_VERSION} or newer"
                )))
            }
            Some(_) => {}
        }
        let resource = query.resource()?;
        let bypass_cache = match query.get("bypass_cache") {
            None => false,
            Some("true") => true,
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "bypass_cache must be 'true', not '{other}'"
                )))
            }
        };
        let selector = query.selector(&[
            ("client_id", SelectBy::Client),
            ("object_id", SelectBy::Object),
            ("msi_res_id", SelectBy::Resource),
            ("mi_res_id", SelectBy::Resource),
        ])?;
        let principal = self
            .select(selector)
            .map_err(|e| e.rejection(MULTIPLE_USER_ASSIGNED))?;
        self.check_known_resource(resource)?;
        let token = self.token_for(principal, resource, bypass_cache);
        Ok(json_response(
            200,
            &ImdsToken {
                access_token: token.access_token,
                client_id: principal.client_id.clone(),
                expires_in: token.expires_in.to_string(),
                expires_on: token.expires_on.to_string(),
                ext_expires_in: token.ext_expires_in.to_string(),
                not_before: token.not_before.to_string(),
                resource: resource.to_string(),
                token_type: "Bearer".into(),
            },
            &self.config.flavor,
        ))
    }

    fn app_service(&self, parts: &Parts, secret: &str) -> Result<Response, Rejection> {
        let presented: Vec<_> = parts.headers.get_all("x-identity-header").iter().collect();
        match presented.as_slice() {
            [] => {
                return Err(Rejection::new(
                    400,
                    "bad_request",
                    "The X-IDENTITY-HEADER header is required",
                ))
            }
            [value] if value.as_bytes() == secret.as_bytes() => {}
            _ => {
                return Err(Rejection::new(
                    401,
                    "unauthorized",
                    "The X-IDENTITY-HEADER header is not valid",
                ))
            }
        }
        let query = Query::parse(parts)?;
        match query.get("api-version") {
            Some(APP_SERVICE_API_VERSION) => {}
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "api-version '{other}' is not supported; use {APP_SERVICE_API_VERSION}"
                )))
            }
            None => {
                return Err(Rejection::invalid(
                    "The api-version query parameter is required",
                ))
            }
        }
        let resource = query.resource()?;
        let selector = query.selector(&[
            ("client_id", SelectBy::Client),
            ("principal_id", SelectBy::Object),
            ("object_id", SelectBy::Object),
            ("mi_res_id", SelectBy::Resource),
        ])?;
        // App Service uses the system-assigned identity when none is named,
        // even if exactly one user-assigned identity is attached.
        let principal = match selector {
            Selector::Default => self.config.identities.system.as_ref(),
            other => self.select(other).ok(),
        }
        .ok_or_else(|| Rejection::invalid(APP_SERVICE_NO_IDENTITY))?;
        self.check_known_resource(resource)?;
        let token = self.token_for(principal, resource, false);
        Ok(json_response(
            200,
            &AppServiceToken {
                access_token: token.access_token,
                expires_on: token.expires_on.to_string(),
                resource: resource.to_string(),
                token_type: "Bearer".into(),
                client_id: principal.client_id.clone(),
            },
            &self.config.flavor,
        ))
    }

    fn legacy_msi(&self, parts: &Parts) -> Result<Response, Rejection> {
        require_metadata_header(parts, "bad_request_102")?;
        let query = Query::parse(parts)?;
        let resource = query.resource()?;
        let selector = query.selector(&[
            ("client_id", SelectBy::Client),
            ("object_id", SelectBy::Object),
        ])?;
        let principal = self
            .select(selector)
            .map_err(|e| e.rejection(MULTIPLE_USER_ASSIGNED))?;
        self.check_known_resource(resource)?;
        let token = self.token_for(principal, resource, false);
        Ok(json_response(
            200,
            &LegacyMsiToken {
                access_token: token.access_token,
                refresh_token: String::new(),
                expires_in: token.expires_in.to_string(),
                expires_on: token.expires_on.to_string(),
                not_before: token.not_before.to_string(),
                resource: resource.to_string(),
                token_type: "Bearer".into(),
            },
            &self.config.flavor,
        ))
    }

    /// IMDS's identity choice: a selector must name an attached user-assigned
    /// identity; without one, the system-assigned identity, else the only
    /// user-assigned one.
    fn select(&self, selector: Selector<'_>) -> Result<&Principal, SelectError> {
        let identities = &self.config.identities;
        let user = |matches: &dyn Fn(&UserAssigned) -> bool| {
            identities
                .user_assigned
                .iter()
                .find(|u| matches(u))
                .map(|u| &u.principal)
                .ok_or(SelectError::NotFound)
        };
        match selector {
            Selector::Default => match (&identities.system, identities.user_assigned.as_slice()) {
                (Some(system), _) => Ok(system),
                (None, [only]) => Ok(&only.principal),
                (None, []) => Err(SelectError::NotFound),
                (None, _) => Err(SelectError::Ambiguous),
            },
            Selector::By(SelectBy::Client, id) => {
                user(&|u| u.principal.client_id.eq_ignore_ascii_case(id))
            }
            Selector::By(SelectBy::Object, id) => {
                user(&|u| u.principal.object_id.eq_ignore_ascii_case(id))
            }
            Selector::By(SelectBy::Resource, id) => {
                user(&|u| u.resource_id.eq_ignore_ascii_case(id))
            }
        }
    }

    fn check_known_resource(&self, resource: &str) -> Result<(), Rejection> {
        let Some(known) = &self.config.known_resources else {
            return Ok(());
        };
        let wanted = resource.trim_end_matches('/');
        if known.iter().any(|k| k.trim_end_matches('/') == wanted) {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc();
        Err(Rejection::new(
            400,
            "invalid_resource",
            format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. \
                 This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. \
                 You might have sent your authentication request to the wrong tenant. Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}",
                tenant = self.authority.tenant_id(),
                trace = uuid::Uuid::new_v4(),
                correlation = uuid::Uuid::new_v4(),
                stamp = format_args!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                    now.year(),
                    u8::from(now.month()),
                    now.day(),
                    now.hour(),
                    now.minute(),
                    now.second()
                ),
            ),
        ))
    }

    /// The cached token for (identity, resource) while it has more than half
    /// its life left, else a freshly minted one.
    fn token_for(&self, principal: &Principal, resource: &str, bypass_cache: bool) -> IssuedToken {
        let now = SystemTime::now();
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let lifetime = self.config.token_lifetime.as_secs();
        let key = (principal.object_id.clone(), resource.to_string());
        let cached = if bypass_cache {
            None
        } else {
            let state = self.lock();
            state
                .tokens
                .get(&key)
                .filter(|t| {
                    !state.caching_disabled && t.expires_on.saturating_sub(now_secs) > lifetime / 2
                })
                .cloned()
        };
        let token = match cached {
            Some(token) => token,
            None => {
                let (jwt, claims) =
                    self.authority
                        .mint(principal, resource, now, self.config.token_lifetime);
                let token = CachedToken {
                    token: jwt,
                    not_before: claims.nbf,
                    expires_on: claims.exp,
                };
                self.lock().tokens.insert(key, token.clone());
                token
            }
        };
        IssuedToken {
            expires_in: token.expires_on.saturating_sub(now_secs),
            ext_expires_in: lifetime,
            not_before: token.not_before,
            expires_on: token.expires_on,
            access_token: token.token,
        }
    }

    fn scripted(&self, scripted: ScriptedResponse) -> Response {
        let mut response = match scripted.body {
            Some(body) => raw_response(scripted.status, body, &self.config.flavor),
            None => self.error(Rejection::new(
                scripted.status,
                error_code_for(scripted.status),
                description_for(scripted.status),
            )),
        };
        if let Some(secs) = scripted.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }

    /// The flavor's error body: IMDS and the legacy extension send
    /// `{"error","error_description"}`, App Service `{"statusCode","message","correlationId"}`.
    fn error(&self, rejection: Rejection) -> Response {
        let flavor = &self.config.flavor;
        match flavor {
            Flavor::AppService { .. } => json_response(
                rejection.status,
                &AppServiceError {
                    status_code: rejection.status,
                    message: rejection.description,
                    correlation_id: uuid::Uuid::new_v4().to_string(),
                },
                flavor,
            ),
            Flavor::Imds | Flavor::LegacyMsi => json_response(
                rejection.status,
                &OAuthError {
                    error: rejection.code.to_string(),
                    error_description: rejection.description,
                },
                flavor,
            ),
        }
    }

    fn throttled_response(&self) -> Response {
        self.error(Rejection::new(
            429,
            "too_many_requests",
            "Too many requests to the managed identity endpoint; retry with backoff",
        ))
    }
}

/// Keeps the in-flight count honest even when the client hangs up and the
/// handler future is dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let (index, _in_flight, admitted) = shared.arrive(&parts);
    let response = if admitted {
        shared.respond(&parts).await
    } else {
        shared.throttled_response()
    };
    shared.set_status(index, response.status().as_u16());
    response
}

/// A refusal, before the flavor gives it its body shape.
#[derive(Debug)]
struct Rejection {
    status: u16,
    code: &'static str,
    description: String,
}

impl Rejection {
    fn new(status: u16, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
        }
    }

    fn invalid(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }
}

#[derive(Debug, Clone, Copy)]
enum SelectBy {
    Client,
    Object,
    Resource,
}

#[derive(Debug, Clone, Copy)]
enum Selector<'a> {
    Default,
    By(SelectBy, &'a str),
}

#[derive(Debug)]
enum SelectError {
    NotFound,
    Ambiguous,
}

impl SelectError {
    fn rejection(self, ambiguous: &str) -> Rejection {
        match self {
            Self::NotFound => Rejection::invalid("Identity not found"),
            Self::Ambiguous => Rejection::invalid(ambiguous),
        }
    }
}

/// Decoded query parameters with the checks every flavor shares.
struct Query(Vec<(String, String)>);

impl Query {
    /// Rejects a parameter name given twice, as IMDS does.
    fn parse(parts: &Parts) -> Result<Self, Rejection> {
        let pairs = parse_query(parts.uri.query());
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(Rejection::invalid(format!(
                    "Query parameter '{name}' is specified more than once"
                )));
            }
        }
        Ok(Self(pairs))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn resource(&self) -> Result<&str, Rejection> {
        match self.get("resource") {
            Some(r) if !r.is_empty() => Ok(r),
            _ => Err(Rejection::invalid(
                "Required query variable 'resource' is missing",
            )),
        }
    }

    /// At most one of the flavor's selector parameters.
    fn selector(&self, names: &[(&str, SelectBy)]) -> Result<Selector<'_>, Rejection> {
        let given: Vec<_> = names
            .iter()
            .filter_map(|(name, by)| self.get(name).map(|v| (*name, *by, v)))
            .collect();
        match given.as_slice() {
            [] => Ok(Selector::Default),
            [(_, by, value)] => Ok(Selector::By(*by, value)),
            _ => Err(Rejection::invalid(format!(
                "Only one of {} may be specified",
                names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Exactly one `Metadata` header, exactly `true`.
fn require_metadata_header(parts: &Parts, code: &'static str) -> Result<(), Rejection> {
    let values: Vec<_> = parts.headers.get_all("metadata").iter().collect();
    match values.as_slice() {
        [value] if value.as_bytes() == b"true" => Ok(()),
        _ => Err(Rejection::new(
            400,
            code,
            "Required metadata header not specified",
        )),
    }
}

/// A `YYYY-MM-DD` date on or after 2018-02-01.
fn is_supported_imds_api_version(version: &str) -> bool {
    let b = version.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (
        version[..4].parse::<i32>(),
        version[5..7].parse::<u8>(),
        version[8..].parse::<u8>(),
    ) else {
        return false;
    };
    let Ok(month) = time::Month::try_from(month) else {
        return false;
    };
    time::Date::from_calendar_date(year, month, day).is_ok() && version >= IMDS_MIN_API_VERSION
}

fn error_code_for(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized_client",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        429 => "too_many_requests",
        410 | 503 => "service_unavailable",
        _ => "server_error",
    }
}

fn description_for(status: u16) -> &'static str {
    match status {
        404 => "The identity endpoint is being updated; retry with backoff",
        410 => "The identity endpoint is being upgraded; it will be back within 70 seconds",
        429 => "Too many requests to the managed identity endpoint; retry with backoff",
        503 => "The identity endpoint is temporarily unavailable",
        s if s >= 500 => "An internal error occurred in the identity endpoint",
        _ => "The request was refused",
    }
}

fn json_response(status: u16, body: &impl Serialize, flavor: &Flavor) -> Response {
    let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    raw_response(status, body, flavor)
}

fn raw_response(status: u16, body: String, flavor: &Flavor) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    if matches!(flavor, Flavor::Imds) {
        headers.insert(header::SERVER, HeaderValue::from_static(IMDS_SERVER_HEADER));
    }
    response
}

struct IssuedToken {
    access_token: String,
    expires_in: u64,
    ext_expires_in: u64,
    not_before: u64,
    expires_on: u64,
}

/// IMDS's answer: every field a string, in the order real IMDS emits them.
#[derive(Serialize)]
struct ImdsToken {
    access_token: String,
    client_id: String,
    expires_in: String,
    expires_on: String,
    ext_expires_in: String,
    not_before: String,
    resource: String,
    token_type: String,
}

#[derive(Serialize)]
struct AppServiceToken {
    access_token: String,
    expires_on: String,
    resource: String,
    token_type: String,
    client_id: String,
}

#[derive(Serialize)]
struct LegacyMsiToken {
    access_token: String,
    refresh_token: String,
    expires_in: String,
    expires_on: String,
    not_before: String,
    resource: String,
    token_type: String,
}

#[derive(Serialize)]
struct OAuthError {
    error: String,
    error_description: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AppServiceError {
    status_code: u16,
    message: String,
    correlation_id: String,
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::{authority::VerifyError, sample as s};

    const VAULT: &str = "https://vault.azure.net";

    fn authority() -> Arc<TokenAuthority> {
        static AUTHORITY: OnceLock<Arc<TokenAuthority>> = OnceLock::new();
        AUTHORITY
            .get_or_init(|| Arc::new(TokenAuthority::generate(s::TENANT_ID)))
            .clone()
    }

    async fn fake(config: ImdsConfig) -> ImdsFake {
        ImdsFake::start(authority(), config).await.unwrap()
    }

    fn query(pairs: &[(&str, &str)]) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        q.finish()
    }

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: String,
    }

    impl Answer {
        fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap()
        }

        fn field(&self, name: &str) -> String {
            match &self.json()[name] {
                Value::String(s) => s.clone(),
                other => panic!("{name} is not a string: {other}"),
            }
        }
    }

    /// A real HTTP GET (or `method`) to `url?query` with `headers`.
    async fn call(method: &str, url: &str, query: &str, headers: &[(&str, &str)]) -> Answer {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = client.request(method, format!("{url}?{query}"));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn imds_get(fake: &ImdsFake, pairs: &[(&str, &str)]) -> Answer {
        call(
            "GET",
            &fake.token_url(),
            &query(pairs),
            &[("Metadata", "true")],
        )
        .await
    }

    fn vault_query<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut pairs = vec![("api-version", "2018-02-01"), ("resource", VAULT)];
        pairs.extend_from_slice(extra);
        pairs
    }

    fn claims_of(answer: &Answer, audience: &str) -> crate::Claims {
        authority()
            .verify(&answer.field("access_token"), audience, SystemTime::now())
            .unwrap()
    }

    #[tokio::test]
    async fn imds_answers_string_fields_in_real_order_with_exact_audience() {
        let fake = fake(ImdsConfig::default()).await;
        assert_eq!(
            fake.token_url(),
            format!("{}/metadata/identity/oauth2/token", fake.base_url())
        );
        let answer = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.headers["content-type"],
            "application/json; charset=utf-8"
        );
        assert_eq!(answer.headers["server"], IMDS_SERVER_HEADER);
        let fields = [
            "access_token",
            "client_id",
            "expires_in",
            "expires_on",
            "ext_expires_in",
            "not_before",
            "resource",
            "token_type",
        ];
        let mut last = 0;
        for field in fields {
            let at = answer
                .body
                .find(&format!("\"{field}\":\""))
                .unwrap_or_else(|| panic!("{field} missing or not a string: {}", answer.body));
            assert!(at >= last, "{field} out of order: {}", answer.body);
            last = at;
        }
        assert_eq!(answer.json().as_object().unwrap().len(), fields.len());
        assert_eq!(answer.field("resource"), VAULT);
        assert_eq!(answer.field("token_type"), "Bearer");
        assert_eq!(answer.field("client_id"), s::SYSTEM_CLIENT_ID);
        let expires_on: u64 = answer.field("expires_on").parse().unwrap();
        let not_before: u64 = answer.field("not_before").parse().unwrap();
        assert_eq!(expires_on - not_before, 86_700);
        let expires_in: u64 = answer.field("expires_in").parse().unwrap();
        assert!((86_690..=86_700).contains(&expires_in), "{expires_in}");

        let claims = claims_of(&answer, VAULT);
        assert_eq!(claims.appid, s::SYSTEM_CLIENT_ID);
        assert_eq!(claims.oid, s::SYSTEM_OBJECT_ID);
        assert_eq!(claims.xms_mirid, s::VM_RESOURCE_ID);
        assert!(claims.xms_mirid.contains("/resourcegroups/"));
        assert!(matches!(
            authority().verify(
                &answer.field("access_token"),
                "https://vault.azure.net/",
                SystemTime::now()
            ),
            Err(VerifyError::WrongAudience { .. })
        ));

        // A trailing slash is a different audience.
        let slash = imds_get(
            &fake,
            &[
                ("api-version", "2019-08-01"),
                ("resource", "https://vault.azure.net/"),
            ],
        )
        .await;
        assert_eq!(slash.status, 200);
        assert_eq!(
            claims_of(&slash, "https://vault.azure.net/").aud,
            "https://vault.azure.net/"
        );
        assert_eq!(slash.field("resource"), "https://vault.azure.net/");
    }

    #[tokio::test]
    async fn imds_rejects_malformed_requests_like_imds() {
        let fake = fake(ImdsConfig::default()).await;
        let url = fake.token_url();
        let good = query(&vault_query(&[]));
        type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "no Metadata header",
                good.clone(),
                vec![],
                400,
                "Required metadata header not specified",
            ),
            (
                "Metadata: True",
                good.clone(),
                vec![("Metadata", "True")],
                400,
                "Required metadata header not specified",
            ),
            (
                "Metadata: false",
                good.clone(),
                vec![("Metadata", "false")],
                400,
                "Required metadata header not specified",
            ),
            (
                "X-Forwarded-For",
                good.clone(),
                vec![("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
                400,
                "X-Forwarded-For",
            ),
            (
                "no api-version",
                query(&[("resource", VAULT)]),
                vec![("Metadata", "true")],
                400,
                "api-version",
            ),
            (
                "old api-version",
                query(&[("api-version", "2017-12-01"), ("resource", VAULT)]),
                vec![("Metadata", "true")],
                400,
                "api-version",
            ),
            (
                "malformed api-version",
                query(&[("api-version", "2018-2-1"), ("resource", VAULT)]),
                vec![("Metadata", "true")],
                400,
                "api-version",
            ),
            (
                "impossible date",
                query(&[("api-version", "2019-02-30"), ("resource", VAULT)]),
                vec![("Metadata", "true")],
                400,
                "api-version",
            ),
            (
                "no resource",
                query(&[("api-version", "2018-02-01")]),
                vec![("Metadata", "true")],
                400,
                "resource",
            ),
            (
                "empty resource",
                query(&[("api-version", "2018-02-01"), ("resource", "")]),
                vec![("Metadata", "true")],
                400,
                "resource",
            ),
            (
                "duplicate parameter",
                format!("{good}&resource=https%3A%2F%2Fstorage.azure.com%2F"),
                vec![("Metadata", "true")],
                400,
                "more than once",
            ),
            (
                "two selectors",
                query(&vault_query(&[
                    ("client_id", s::USER_CLIENT_ID),
                    ("object_id", s::USER_OBJECT_ID),
                ])),
                vec![("Metadata", "true")],
                400,
                "Only one of",
            ),
            (
                "bypass_cache=false",
                query(&vault_query(&[("bypass_cache", "false")])),
                vec![("Metadata", "true")],
                400,
                "bypass_cache",
            ),
        ];
        for (name, q, headers, status, description) in cases {
            let answer = call("GET", &url, &q, &headers).await;
            assert_eq!(answer.status, status, "{name}: {}", answer.body);
            assert_eq!(answer.field("error"), "invalid_request", "{name}");
            assert!(
                answer.field("error_description").contains(description),
                "{name}: {}",
                answer.body
            );
        }
        let post = call("POST", &url, &good, &[("Metadata", "true")]).await;
        assert_eq!(post.status, 405);
        assert_eq!(post.headers["allow"], "GET");
        assert_eq!(post.field("error"), "method_not_allowed");
        let elsewhere = call(
            "GET",
            &format!("{}/metadata/instance", fake.base_url()),
            "api-version=2021-02-01",
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(elsewhere.status, 404);
        // Every one was recorded with the status sent, in order.
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses.len(), 15);
        assert!(statuses[..13].iter().all(|s| *s == 400));
        assert_eq!(&statuses[13..], &[405, 404]);
        assert_eq!(fake.token_requests(), 14);
    }

    #[tokio::test]
    async fn imds_selects_identities_like_imds() {
        let fake = fake(ImdsConfig::default()).await;
        let lower_res_id = s::USER_RESOURCE_ID.to_lowercase();
        for selector in [
            ("client_id", s::USER_CLIENT_ID),
            ("client_id", &s::USER_CLIENT_ID.to_uppercase()),
            ("object_id", s::USER_OBJECT_ID),
            ("msi_res_id", s::USER_RESOURCE_ID),
            ("mi_res_id", &lower_res_id),
        ] {
            let answer = imds_get(&fake, &vault_query(&[selector])).await;
            assert_eq!(answer.status, 200, "{selector:?}: {}", answer.body);
            assert_eq!(answer.field("client_id"), s::USER_CLIENT_ID);
            let claims = claims_of(&answer, VAULT);
            assert_eq!(claims.appid, s::USER_CLIENT_ID);
            assert_eq!(claims.oid, s::USER_OBJECT_ID);
            assert_eq!(claims.xms_mirid, s::USER_RESOURCE_ID);
        }
        for selector in [
            ("client_id", s::SYSTEM_CLIENT_ID),
            ("object_id", "00000000-0000-0000-0000-000000000000"),
            ("client_id", ""),
            ("msi_res_id", "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other"),
        ] {
            let answer = imds_get(&fake, &vault_query(&[selector])).await;
            assert_eq!(answer.status, 400, "{selector:?}");
            assert_eq!(
                answer.json(),
                serde_json::json!({"error":"invalid_request","error_description":"Identity not found"})
            );
        }

        let second = UserAssigned {
            principal: Principal {
                client_id: "0d7a3c9e-5b41-4f6e-9c2d-8e1f0a3b4c5d".into(),
                object_id: "1e8b4daf-6c52-4a7f-8d3e-9f2a1b4c5d6e".into(),
                mirid: "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/two".into(),
            },
            resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/two".into(),
        };
        let several = fake_with(IdentitySet {
            system: None,
            user_assigned: vec![s::user_assigned(), second.clone()],
        })
        .await;
        let answer = imds_get(&several, &vault_query(&[])).await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.field("error_description"), MULTIPLE_USER_ASSIGNED);
        let answer = imds_get(
            &several,
            &vault_query(&[("client_id", &second.principal.client_id)]),
        )
        .await;
        assert_eq!(claims_of(&answer, VAULT).oid, second.principal.object_id);

        let only_user = fake_with(IdentitySet {
            system: None,
            user_assigned: vec![second.clone()],
        })
        .await;
        let answer = imds_get(&only_user, &vault_query(&[])).await;
        assert_eq!(answer.field("client_id"), second.principal.client_id);

        let none = fake_with(IdentitySet::default()).await;
        let answer = imds_get(&none, &vault_query(&[])).await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.field("error_description"), "Identity not found");
    }

    async fn fake_with(identities: IdentitySet) -> ImdsFake {
        fake(ImdsConfig {
            identities,
            ..ImdsConfig::default()
        })
        .await
    }

    #[tokio::test]
    async fn unknown_resources_get_entra_invalid_resource() {
        let fake = fake(ImdsConfig {
            known_resources: Some(vec![VAULT.into(), "https://storage.azure.com/".into()]),
            ..ImdsConfig::default()
        })
        .await;
        for resource in [
            VAULT,
            "https://vault.azure.net/",
            "https://storage.azure.com/",
        ] {
            let answer = imds_get(
                &fake,
                &[("api-version", "2018-02-01"), ("resource", resource)],
            )
            .await;
            assert_eq!(answer.status, 200, "{resource}");
            assert_eq!(claims_of(&answer, resource).aud, resource);
        }
        let answer = imds_get(
            &fake,
            &[
                ("api-version", "2018-02-01"),
                ("resource", "https://evil.example"),
            ],
        )
        .await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.field("error"), "invalid_resource");
        let description = answer.field("error_description");
        assert!(description.starts_with("AADSTS500011: The resource principal named https://evil.example was not found in the tenant named dc822496-97fa-4380-991a-c8b4ba5d4f73."), "{description}");
    }

    #[tokio::test]
    async fn tokens_are_cached_per_identity_and_resource() {
        let fake = fake(ImdsConfig::default()).await;
        let first = imds_get(&fake, &vault_query(&[])).await;
        let again = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(first.field("access_token"), again.field("access_token"));
        assert_eq!(first.field("expires_on"), again.field("expires_on"));
        let user = imds_get(&fake, &vault_query(&[("client_id", s::USER_CLIENT_ID)])).await;
        assert_ne!(first.field("access_token"), user.field("access_token"));
        let bypass = imds_get(&fake, &vault_query(&[("bypass_cache", "true")])).await;
        assert_ne!(first.field("access_token"), bypass.field("access_token"));
        fake.clear_token_cache();
        let fresh = imds_get(&fake, &vault_query(&[])).await;
        assert_ne!(bypass.field("access_token"), fresh.field("access_token"));
        fake.set_token_caching(false);
        let uncached = imds_get(&fake, &vault_query(&[])).await;
        let uncached_again = imds_get(&fake, &vault_query(&[])).await;
        assert_ne!(fresh.field("access_token"), uncached.field("access_token"));
        assert_ne!(
            uncached.field("access_token"),
            uncached_again.field("access_token")
        );
        fake.set_token_caching(true);
        let cached = imds_get(&fake, &vault_query(&[])).await;
        let cached_again = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(
            cached.field("access_token"),
            cached_again.field("access_token")
        );
    }

    #[tokio::test]
    async fn scripted_answers_come_first_in_order() {
        let fake = fake(ImdsConfig::default()).await;
        fake.script([
            ScriptedResponse::status(410),
            ScriptedResponse::throttled(3),
            ScriptedResponse::status(503),
            ScriptedResponse::body(200, "this is not json"),
            ScriptedResponse::status(200),
        ]);
        let gone = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(gone.status, 410);
        assert_eq!(gone.headers["server"], IMDS_SERVER_HEADER);
        assert_eq!(gone.field("error"), "service_unavailable");
        let throttled = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(throttled.status, 429);
        assert_eq!(throttled.headers["retry-after"], "3");
        assert_eq!(throttled.field("error"), "too_many_requests");
        // Scripted answers do not depend on the request being valid.
        let unavailable = call("GET", &fake.token_url(), "", &[]).await;
        assert_eq!(unavailable.status, 503);
        assert!(unavailable.headers.get("retry-after").is_none());
        let garbage = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(
            (garbage.status, garbage.body.as_str()),
            (200, "this is not json")
        );
        // A bodiless 2xx means "answer normally", and so does an empty script.
        for _ in 0..2 {
            let normal = imds_get(&fake, &vault_query(&[])).await;
            assert_eq!(normal.status, 200);
            claims_of(&normal, VAULT);
        }
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [410, 429, 503, 200, 200, 200]);
        assert_eq!(fake.token_requests(), 6);
        assert_eq!(fake.throttled(), 0, "scripted 429s are not the limiter's");
    }

    #[tokio::test]
    async fn requests_are_recorded_with_secrets_redacted() {
        let secret = "4ec1a0b6-70d3-4c68-a1c9-3f3d0c5b8e21";
        let fake = fake(ImdsConfig {
            flavor: Flavor::AppService {
                header_secret: secret.into(),
            },
            ..ImdsConfig::default()
        })
        .await;
        let q = query(&[("api-version", "2019-08-01"), ("resource", VAULT)]);
        call(
            "GET",
            &fake.token_url(),
            &q,
            &[
                ("X-IDENTITY-HEADER", secret),
                ("X-Forwarded-For", "10.1.1.1"),
            ],
        )
        .await;
        call(
            "GET",
            &fake.token_url(),
            &q,
            &[("x-identity-header", "guess")],
        )
        .await;
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, "GET");
        assert_eq!(requests[0].path, "/msi/token");
        assert_eq!(requests[0].query_value("resource"), Some(VAULT));
        assert_eq!(
            requests[0].header("X-IDENTITY-HEADER"),
            Some(REDACTED_MATCHING)
        );
        assert_eq!(requests[0].header("x-forwarded-for"), Some("10.1.1.1"));
        assert_eq!(requests[0].status, 200);
        assert_eq!(
            requests[1].header("x-identity-header"),
            Some(REDACTED_WRONG)
        );
        assert_eq!(requests[1].status, 401);
        let debug = format!("{requests:?} {:?}", fake.flavor());
        assert!(!debug.contains(secret), "{debug}");
    }

    #[tokio::test]
    async fn app_service_flavor_speaks_2019_08_01() {
        let secret = "8a1f2c3d-4e5f-4a6b-9c7d-0e1f2a3b4c5d";
        let fake = fake(ImdsConfig {
            flavor: Flavor::AppService {
                header_secret: secret.into(),
            },
            ..ImdsConfig::default()
        })
        .await;
        assert_eq!(fake.token_url(), format!("{}/msi/token", fake.base_url()));
        let auth = [("X-IDENTITY-HEADER", secret)];
        let q = |extra: &[(&str, &str)]| {
            let mut pairs = vec![("api-version", "2019-08-01"), ("resource", VAULT)];
            pairs.extend_from_slice(extra);
            query(&pairs)
        };
        let answer = call("GET", &fake.token_url(), &q(&[]), &auth).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.json().as_object().unwrap().len(),
            5,
            "{}",
            answer.body
        );
        let order = [
            "access_token",
            "expires_on",
            "resource",
            "token_type",
            "client_id",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|f| answer.body.find(&format!("\"{f}\":\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", answer.body);
        assert_eq!(answer.field("client_id"), s::SYSTEM_CLIENT_ID);
        assert_eq!(claims_of(&answer, VAULT).oid, s::SYSTEM_OBJECT_ID);
        assert!(answer.headers.get("server").is_none());
        // The uppercase path the platform also uses.
        let upper = call(
            "GET",
            &format!("{}/MSI/token", fake.base_url()),
            &q(&[]),
            &auth,
        )
        .await;
        assert_eq!(upper.status, 200);

        for selector in [
            ("client_id", s::USER_CLIENT_ID),
            ("principal_id", s::USER_OBJECT_ID),
            ("object_id", s::USER_OBJECT_ID),
            ("mi_res_id", s::USER_RESOURCE_ID),
        ] {
            let answer = call("GET", &fake.token_url(), &q(&[selector]), &auth).await;
            assert_eq!(answer.status, 200, "{selector:?}: {}", answer.body);
            assert_eq!(
                claims_of(&answer, VAULT).oid,
                s::USER_OBJECT_ID,
                "{selector:?}"
            );
        }
        let unknown = call(
            "GET",
            &fake.token_url(),
            &q(&[("client_id", "0d7a3c9e-5b41-4f6e-9c2d-8e1f0a3b4c5d")]),
            &auth,
        )
        .await;
        assert_eq!(unknown.status, 400);
        let body = unknown.json();
        assert_eq!(body["statusCode"], 400);
        assert_eq!(
            body["message"],
            "Unable to load the proper Managed Identity."
        );
        assert!(uuid::Uuid::parse_str(body["correlationId"].as_str().unwrap()).is_ok());

        let missing = call("GET", &fake.token_url(), &q(&[]), &[("Metadata", "true")]).await;
        assert_eq!(missing.status, 400);
        let wrong = call(
            "GET",
            &fake.token_url(),
            &q(&[]),
            &[("X-IDENTITY-HEADER", "nope")],
        )
        .await;
        assert_eq!(wrong.status, 401);
        assert_eq!(wrong.json()["statusCode"], 401);
        let old = call(
            "GET",
            &fake.token_url(),
            &query(&[("api-version", "2017-09-01"), ("resource", VAULT)]),
            &auth,
        )
        .await;
        assert_eq!(old.status, 400);
        let two = call(
            "GET",
            &fake.token_url(),
            &q(&[
                ("client_id", s::USER_CLIENT_ID),
                ("principal_id", s::USER_OBJECT_ID),
            ]),
            &auth,
        )
        .await;
        assert_eq!(two.status, 400);

        let no_system = fake_app_service_without_system(secret).await;
        let answer = call("GET", &no_system.token_url(), &q(&[]), &auth).await;
        assert_eq!(answer.status, 400);
        assert_eq!(
            answer.json()["message"],
            "Unable to load the proper Managed Identity."
        );
    }

    async fn fake_app_service_without_system(secret: &str) -> ImdsFake {
        fake(ImdsConfig {
            identities: IdentitySet {
                system: None,
                user_assigned: vec![s::user_assigned()],
            },
            flavor: Flavor::AppService {
                header_secret: secret.into(),
            },
            ..ImdsConfig::default()
        })
        .await
    }

    #[tokio::test]
    async fn legacy_msi_flavor_answers_imds_json_with_refresh_token() {
        let fake = fake(ImdsConfig {
            flavor: Flavor::LegacyMsi,
            ..ImdsConfig::default()
        })
        .await;
        assert_eq!(
            fake.token_url(),
            format!("{}/oauth2/token", fake.base_url())
        );
        let answer = call(
            "GET",
            &fake.token_url(),
            &query(&[("resource", VAULT)]),
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.field("refresh_token"), "");
        for field in [
            "expires_in",
            "expires_on",
            "not_before",
            "resource",
            "token_type",
        ] {
            answer.field(field);
        }
        assert_eq!(claims_of(&answer, VAULT).oid, s::SYSTEM_OBJECT_ID);
        let user = call(
            "GET",
            &fake.token_url(),
            &query(&[("resource", VAULT), ("object_id", s::USER_OBJECT_ID)]),
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(claims_of(&user, VAULT).oid, s::USER_OBJECT_ID);
        let no_header = call(
            "GET",
            &fake.token_url(),
            &query(&[("resource", VAULT)]),
            &[],
        )
        .await;
        assert_eq!(no_header.status, 400);
        assert_eq!(no_header.field("error"), "bad_request_102");
        assert_eq!(
            no_header.field("error_description"),
            "Required metadata header not specified"
        );
        let imds_path = call(
            "GET",
            &format!("{}{IMDS_TOKEN_PATH}", fake.base_url()),
            &query(&[("resource", VAULT)]),
            &[("Metadata", "true")],
        )
        .await;
        assert_eq!(imds_path.status, 404);
    }

    /// Drives the router in-process, so tokio's paused clock governs the
    /// rate limiter's window and the latency.
    async fn oneshot(shared: &Arc<Shared>) -> u16 {
        let request = Request::builder()
            .uri(format!(
                "{IMDS_TOKEN_PATH}?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
            ))
            .header("Metadata", "true")
            .body(Body::empty())
            .unwrap();
        router(shared.clone())
            .oneshot(request)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn limited_shared() -> (Arc<Shared>, ImdsFakeProbe) {
        let shared = Arc::new(Shared::new(authority(), ImdsConfig::default()));
        shared.lock().limits = Some(RateLimits::IMDS);
        (shared.clone(), ImdsFakeProbe(shared))
    }

    /// The handle's accessors, for a router driven without a server.
    struct ImdsFakeProbe(Arc<Shared>);

    impl ImdsFakeProbe {
        fn throttled(&self) -> usize {
            self.0.lock().throttled
        }
        fn statuses(&self) -> Vec<u16> {
            self.0.lock().requests.iter().map(|r| r.status).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_20_per_second_are_throttled() {
        let (shared, probe) = limited_shared();
        for _ in 0..20 {
            assert_eq!(oneshot(&shared).await, 200);
        }
        assert_eq!(oneshot(&shared).await, 429);
        assert_eq!(probe.throttled(), 1);
        tokio::time::advance(RATE_WINDOW - Duration::from_millis(1)).await;
        assert_eq!(oneshot(&shared).await, 429, "still within the window");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            oneshot(&shared).await,
            200,
            "the first requests left the window"
        );
        assert_eq!(probe.throttled(), 2);
        let statuses = probe.statuses();
        assert_eq!(statuses.len(), 23);
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn more_than_5_in_flight_are_throttled() {
        let (shared, probe) = limited_shared();
        shared.lock().latency = Duration::from_millis(200);
        let statuses = futures::future::join_all((0..7).map(|_| oneshot(&shared))).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            5,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 429).count(),
            2,
            "{statuses:?}"
        );
        assert_eq!(probe.throttled(), 2);
        // A throttled request answers at once, so the 6th is gone before
        // the 7th arrives: 5 held plus 1 being refused.
        assert_eq!(shared.lock().max_concurrent_seen, 6);
        assert_eq!(shared.lock().in_flight, 0);
        // Once they finished, there is room again.
        assert_eq!(oneshot(&shared).await, 200);
    }

    #[tokio::test]
    async fn limits_and_latency_over_real_http() {
        let fake = fake(ImdsConfig::default()).await;
        // No room at all: every request is the limiter's.
        fake.set_rate_limits(Some(RateLimits {
            per_second: 1000,
            concurrent: 0,
        }));
        for _ in 0..2 {
            let answer = imds_get(&fake, &vault_query(&[])).await;
            assert_eq!(answer.status, 429);
            assert_eq!(answer.field("error"), "too_many_requests");
        }
        assert_eq!(fake.throttled(), 2);
        assert_eq!(fake.max_concurrent_seen(), 1);
        fake.set_rate_limits(None);
        fake.set_latency(Duration::from_millis(100));
        let started = std::time::Instant::now();
        assert_eq!(imds_get(&fake, &vault_query(&[])).await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(fake.throttled(), 2);
    }

    #[test]
    fn api_versions() {
        for ok in [
            "2018-02-01",
            "2019-08-01",
            "2021-12-13",
            "2023-07-01",
            "2030-01-31",
        ] {
            assert!(is_supported_imds_api_version(ok), "{ok}");
        }
        for bad in [
            "2017-12-01",
            "2018-01-31",
            "2018-02-1",
            "20180201",
            "2019-13-01",
            "2019-02-29",
            "abcd-ef-gh",
            "",
            "2018-02-01 ",
        ] {
            assert!(!is_supported_imds_api_version(bad), "{bad}");
        }
    }
}
