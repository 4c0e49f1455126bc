//! A Key Vault fake (secrets, read side) built from section 3 of
//! `azure-wire-contracts.md`: `GET /secrets/{name}[/{version}|/]`, list
//! versions, list secrets, over HTTPS with the emulator's test CA.
//!
//! One fake serves one vault. It checks what real Key Vault checks, in the
//! same order: route, `api-version`, bearer token (signature, issuer,
//! audience, lifetime; every 401 carries the `WWW-Authenticate` challenge the
//! Azure SDKs rely on), secret name, the caller's `oid` against the vault's
//! RBAC assignments or access policy, then the secret itself. Tests script
//! throttling with [`KeyVaultFake::faults`] and read what arrived with
//! [`KeyVaultFake::requests`]. The fake never logs secret values or tokens.
//!
//! Message texts marked [U] in the contract (400, 429, disabled secret and
//! the exact AKV100xx wording for expired tokens) are plausible stand-ins.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Map, Value};

use crate::{
    authority::{Claims, TokenAuthority, VerifyError},
    front_door::{
        bearer::{self, BearerRefusal, TokenSeen},
        lock, request_id, Fault, FaultScript, Grant, RecordedRequest, RequestLog,
    },
    http::{serve_https, RunningServer},
    tls::TestCa,
};

/// The Key Vault token audience in the public cloud.
pub const KEY_VAULT_AUDIENCE: &str = "https://vault.azure.net";
/// The vault `--emulator` serves.
pub const SAMPLE_VAULT_NAME: &str = "emulator";
/// `x-ms-keyvault-service-version` the fake reports.
const SERVICE_VERSION: &str = "1.9.2735.1";

/// How the vault authorizes data-plane calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    /// Azure RBAC: a role assignment with `secrets/getSecret/action` is needed;
    /// refusals are 403 `ForbiddenByRbac`.
    Rbac,
    /// Vault access policies: `get` on secrets is needed; refusals are 403
    /// `AccessDenied`.
    AccessPolicy,
}

/// A vault's identity and authorization settings.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    pub name: String,
    pub location: String,
    pub subscription_id: String,
    pub resource_group: String,
    pub access_model: AccessModel,
    pub grant: Grant,
    /// The token audience the vault accepts and names in its challenge.
    pub audience: String,
}

impl VaultSettings {
    /// An RBAC vault in `westeurope` open to every authenticated caller.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            location: "westeurope".into(),
            subscription_id: "bc11a95a-f59f-49b7-9000-1ee2ebe3dc79".into(),
            resource_group: "emulator-rg".into(),
            access_model: AccessModel::Rbac,
            grant: Grant::Everyone,
            audience: KEY_VAULT_AUDIENCE.into(),
        }
    }
}

/// A secret version to store.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub value: String,
    pub content_type: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub enabled: bool,
    /// Unix seconds.
    pub not_before: Option<u64>,
    /// Unix seconds.
    pub expires: Option<u64>,
    /// Backs a certificate: the bundle carries `kid` and `managed: true`.
    pub certificate_backed: bool,
}

impl SecretSpec {
    /// An enabled secret with no attributes beyond its value.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            content_type: None,
            tags: BTreeMap::new(),
            enabled: true,
            not_before: None,
            expires: None,
            certificate_backed: false,
        }
    }

    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    pub fn not_before(mut self, unix_secs: u64) -> Self {
        self.not_before = Some(unix_secs);
        self
    }

    pub fn expires(mut self, unix_secs: u64) -> Self {
        self.expires = Some(unix_secs);
        self
    }

    pub fn certificate_backed(mut self) -> Self {
        self.certificate_backed = true;
        self
    }
}

struct StoredVersion {
    id: String,
    spec: SecretSpec,
    created: u64,
    updated: u64,
}

struct StoredSecret {
    /// The name as first written (ids echo this casing).
    name: String,
    /// Oldest first; the last one is the current version.
    versions: Vec<StoredVersion>,
}

struct Inner {
    authority: Arc<TokenAuthority>,
    settings: Mutex<VaultSettings>,
    /// Keyed by the lower-cased name: Key Vault names are case-insensitive.
    secrets: Mutex<HashMap<String, StoredSecret>>,
    log: RequestLog,
    faults: FaultScript,
}

/// A running Key Vault fake for one vault. Dropping it stops the server.
pub struct KeyVaultFake {
    server: RunningServer,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyVaultFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultFake")
            .field("base_url", &self.server.base_url())
            .field("vault", &lock(&self.inner.settings).name)
            .finish_non_exhaustive()
    }
}

impl KeyVaultFake {
    /// Serves `vault` over HTTPS on 127.0.0.1 (a free port), with a server
    /// certificate from `ca`.
    pub async fn start(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        vault: VaultSettings,
    ) -> io::Result<Self> {
        Self::start_on(authority, ca, vault, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        vault: VaultSettings,
        port: u16,
    ) -> io::Result<Self> {
        let inner = Arc::new(Inner {
            authority,
            settings: Mutex::new(vault),
            secrets: Mutex::default(),
            log: RequestLog::default(),
            faults: FaultScript::default(),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let server = serve_https(router, port, ca.server_config(&[b"h2", b"http/1.1"])).await?;
        Ok(Self { server, inner })
    }

    /// The sample vault `--emulator` serves: [`SAMPLE_VAULT_NAME`] with
    /// [`seed_sample`] applied.
    pub async fn sample(authority: Arc<TokenAuthority>, ca: &TestCa) -> io::Result<Self> {
        Self::sample_on(authority, ca, 0).await
    }

    /// Like [`sample`](Self::sample), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn sample_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> io::Result<Self> {
        let fake =
            Self::start_on(authority, ca, VaultSettings::new(SAMPLE_VAULT_NAME), port).await?;
        seed_sample(&fake);
        Ok(fake)
    }

    /// `https://localhost:<port>`: the vault URL to call.
    pub fn vault_url(&self) -> String {
        self.server.base_url()
    }

    /// `localhost:<port>`, for `upstream.allowed_hosts`.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Stores a new current version of `name` and returns its version id.
    pub fn set_secret(&self, name: &str, spec: SecretSpec) -> String {
        let now = unix_now();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut secrets = lock(&self.inner.secrets);
        let entry = secrets
            .entry(name.to_lowercase())
            .or_insert_with(|| StoredSecret {
                name: name.to_string(),
                versions: Vec::new(),
            });
        entry.versions.push(StoredVersion {
            id: id.clone(),
            spec,
            created: now,
            updated: now,
        });
        id
    }

    /// Enables or disables every version of `name`. Returns false when the
    /// secret does not exist.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> bool {
        let mut secrets = lock(&self.inner.secrets);
        let Some(secret) = secrets.get_mut(&name.to_lowercase()) else {
            return false;
        };
        let now = unix_now();
        for version in &mut secret.versions {
            version.spec.enabled = enabled;
            version.updated = now;
        }
        true
    }

    /// Switches between RBAC and access policies.
    pub fn set_access_model(&self, model: AccessModel) {
        lock(&self.inner.settings).access_model = model;
    }

    /// Who may read secrets.
    pub fn set_grant(&self, grant: Grant) {
        lock(&self.inner.settings).grant = grant;
    }

    /// The audience the vault expects (and names in its challenge), e.g. a
    /// sovereign cloud's `https://vault.usgovcloudapi.net`.
    pub fn set_audience(&self, audience: &str) {
        lock(&self.inner.settings).audience = audience.to_string();
    }

    /// Scripted failures for the next authenticated requests.
    pub fn faults(&self) -> &FaultScript {
        &self.inner.faults
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.snapshot()
    }

    /// The settings in force.
    pub fn settings(&self) -> VaultSettings {
        lock(&self.inner.settings).clone()
    }
}

/// Seeds the sample secrets `--emulator` serves:
/// - `app-password`: plain value `correct-horse-battery-staple`, two versions
///   (the older one is `old-password`);
/// - `db-connection`: content type `text/plain`, tags `env=emulator`,
///   `owner=identity-gateway`;
/// - `retired-api-key`: disabled (reading it gives 403 `SecretDisabled`).
pub fn seed_sample(fake: &KeyVaultFake) {
    fake.set_secret("app-password", SecretSpec::new("old-password"));
    fake.set_secret(
        "app-password",
        SecretSpec::new("correct-horse-battery-staple"),
    );
    fake.set_secret(
        "db-connection",
        SecretSpec::new("Server=tcp:emulator.database.windows.net,1433;Database=appdb;")
            .content_type("text/plain")
            .tag("env", "emulator")
            .tag("owner", "identity-gateway"),
    );
    fake.set_secret(
        "retired-api-key",
        SecretSpec::new("no-longer-used").disabled(),
    );
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What the log keeps about the presented token.
async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut seen = TokenSeen::default();
    let mut response = inner.serve(&method, &uri, &headers, &mut seen);
    let response_headers = response.headers_mut();
    if let Some(client_id) = headers.get("x-ms-client-request-id") {
        response_headers.insert("x-ms-client-request-id", client_id.clone());
    }
    let status = response.status().as_u16();
    inner
        .log
        .push(RecordedRequest::new(&method, &uri, seen, status));
    response
}

/// What a request asks for, from its path.
enum Route<'a> {
    ListSecrets,
    Latest(&'a str),
    Version(&'a str, &'a str),
    ListVersions(&'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/secrets")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::ListSecrets);
    }
    let rest = rest.strip_prefix('/')?;
    let mut parts = rest.splitn(2, '/');
    let name = parts.next()?;
    match parts.next() {
        None | Some("") => Some(Route::Latest(name)),
        Some("versions") | Some("versions/") => Some(Route::ListVersions(name)),
        Some(version) if !version.contains('/') => Some(Route::Version(name, version)),
        Some(version) => version
            .strip_suffix('/')
            .filter(|v| !v.contains('/'))
            .map(|v| Route::Version(name, v)),
    }
}

/// `api-version`s Key Vault serves: the GA list plus previews
/// (`7.6-preview.2`, `2025-06-01-preview`, ...).
pub fn supported_api_version(version: &str) -> bool {
    const GA: &[&str] = &[
        "2016-10-01",
        "7.0",
        "7.1",
        "7.2",
        "7.3",
        "7.4",
        "7.5",
        "7.6",
        "2025-07-01",
        // What azure-keyvault-secrets 4.12 (Python) sends by default.
        "2026-04-01",
    ];
    if GA.contains(&version) {
        return true;
    }
    if let Some(base) = version.strip_suffix("-preview") {
        return is_date(base) || is_numbered(base);
    }
    if let Some((base, n)) = version.split_once("-preview.") {
        return is_numbered(base) && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit());
    }
    false
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

fn is_numbered(s: &str) -> bool {
    matches!(s.split_once('.'), Some((major, minor)) if major == "7"
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit()))
}

fn valid_object_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Inner {
    fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Response {
        let settings = lock(&self.settings).clone();
        let Some(route) = route(uri.path()) else {
            return kv_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                None,
                &format!("The requested URI {} does not exist.", uri.path()),
            );
        };
        if method != Method::GET {
            return kv_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                None,
                &format!("The requested resource does not support http method '{method}'."),
            );
        }
        match query_param(uri, "api-version") {
            None => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    None,
                    "The api-version query parameter is missing.",
                )
            }
            Some(v) if !supported_api_version(&v) => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    None,
                    &format!(
                        "The specified version ({v}) is not recognized. Consider using the latest supported version (2026-04-01)."
                    ),
                )
            }
            Some(_) => {}
        }
        let claims = match self.authenticate(&settings, headers, seen) {
            Ok(claims) => claims,
            Err(response) => return *response,
        };
        if let Some(fault) = self.faults.next() {
            return fault_response(fault);
        }
        let base = vault_base(uri, headers);
        match route {
            Route::ListSecrets => {
                if let Err(r) = authorize(&settings, &claims, "list", None) {
                    return *r;
                }
                self.list_secrets(&base, uri)
            }
            Route::ListVersions(name) => {
                if !valid_object_name(name) {
                    return invalid_name(name);
                }
                if let Err(r) = authorize(&settings, &claims, "list", Some(name)) {
                    return *r;
                }
                self.list_versions(&base, uri, name)
            }
            Route::Latest(name) => self.get(&settings, &claims, &base, name, None),
            Route::Version(name, version) => {
                self.get(&settings, &claims, &base, name, Some(version))
            }
        }
    }

    /// Verifies the bearer token; every refusal is a 401 with the challenge.
    fn authenticate(
        &self,
        settings: &VaultSettings,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Result<Claims, Box<Response>> {
        bearer::authenticate(&self.authority, headers, &[&settings.audience], seen).map_err(
            |refusal| {
                let message = match refusal {
                    refusal if refusal.no_token() => {
                        "AKV10000: Request is missing a Bearer or PoP token.".to_string()
                    }
                    BearerRefusal::Rejected(VerifyError::WrongAudience { expected, actual }) => {
                        format!("AKV10022: Invalid audience. Expected {expected}, found: {actual}.")
                    }
                    BearerRefusal::Rejected(VerifyError::Expired) => {
                        "AKV10032: Token has expired.".into()
                    }
                    BearerRefusal::Rejected(VerifyError::NotYetValid) => {
                        "AKV10031: Token not yet valid.".into()
                    }
                    _ => {
                        "AKV10046: Unable to resolve the key used for signature validation.".into()
                    }
                };
                let challenge = format!(
                    "Bearer authorization=\"https://login.windows.net/{}\", resource=\"{}\"",
                    self.authority.tenant_id(),
                    settings.audience
                );
                Box::new(bearer::with_challenge(
                    kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", None, &message),
                    &challenge,
                ))
            },
        )
    }

    fn get(
        &self,
        settings: &VaultSettings,
        claims: &Claims,
        base: &str,
        name: &str,
        version: Option<&str>,
    ) -> Response {
        if !valid_object_name(name) {
            return invalid_name(name);
        }
        if let Err(response) = authorize(settings, claims, "get", Some(name)) {
            return *response;
        }
        let secrets = lock(&self.secrets);
        let found = secrets.get(&name.to_lowercase()).and_then(|secret| {
            let stored = match version {
                None => secret.versions.last(),
                Some(v) => secret
                    .versions
                    .iter()
                    .find(|s| s.id.eq_ignore_ascii_case(v)),
            };
            stored.map(|s| (secret, s))
        });
        let Some((secret, stored)) = found else {
            let what = match version {
                Some(v) => format!("{name}/{v}"),
                None => name.to_string(),
            };
            return kv_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                None,
                &format!(
                    "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
            );
        };
        if !stored.spec.enabled {
            return kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("SecretDisabled"),
                "Operation get is not allowed on a disabled secret.",
            );
        }
        let mut bundle = item_json(base, &secret.name, stored);
        bundle.insert("value".into(), Value::String(stored.spec.value.clone()));
        kv_json(StatusCode::OK, Value::Object(bundle))
    }

    fn list_versions(&self, base: &str, uri: &Uri, name: &str) -> Response {
        let secrets = lock(&self.secrets);
        let Some(secret) = secrets.get(&name.to_lowercase()) else {
            return kv_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                None,
                &format!(
                    "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
            );
        };
        let items: Vec<Value> = secret
            .versions
            .iter()
            .map(|v| Value::Object(item_json(base, &secret.name, v)))
            .collect();
        paged(
            base,
            &format!("/secrets/{}/versions", secret.name),
            uri,
            items,
        )
    }

    fn list_secrets(&self, base: &str, uri: &Uri) -> Response {
        let secrets = lock(&self.secrets);
        let mut names: Vec<&StoredSecret> = secrets.values().collect();
        names.sort_by_key(|s| s.name.to_lowercase());
        let items: Vec<Value> = names
            .into_iter()
            .filter_map(|secret| {
                let latest = secret.versions.last()?;
                let mut item = item_json(base, &secret.name, latest);
                item.insert(
                    "id".into(),
                    Value::String(format!("{base}/secrets/{}", secret.name)),
                );
                item.remove("kid");
                Some(Value::Object(item))
            })
            .collect();
        paged(base, "/secrets", uri, items)
    }
}

/// One page of a list, with `maxresults` (1-25, default 25) and an index
/// `$skiptoken`; `nextLink` is null on the last page.
fn paged(base: &str, path: &str, uri: &Uri, items: Vec<Value>) -> Response {
    let max = match query_param(uri, "maxresults").map(|m| m.parse::<usize>()) {
        None => 25,
        Some(Ok(m)) if (1..=25).contains(&m) => m,
        Some(_) => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                None,
                "Invalid maxresults: must be between 1 and 25.",
            )
        }
    };
    let skip = match query_param(uri, "$skiptoken") {
        None => 0,
        Some(token) => match decode_skiptoken(&token) {
            Some(skip) => skip,
            None => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    None,
                    "The $skiptoken is not valid.",
                )
            }
        },
    };
    let api_version = query_param(uri, "api-version").unwrap_or_default();
    let end = (skip + max).min(items.len());
    let page: Vec<Value> = items
        .get(skip.min(items.len())..end)
        .unwrap_or_default()
        .to_vec();
    let next = (end < items.len()).then(|| {
        let mut next = url::Url::parse(&format!("{base}{path}")).ok()?;
        next.query_pairs_mut()
            .append_pair("api-version", &api_version)
            .append_pair("$skiptoken", &encode_skiptoken(end))
            .append_pair("maxresults", &max.to_string());
        Some(next.to_string())
    });
    kv_json(
        StatusCode::OK,
        json!({"value": page, "nextLink": next.flatten()}),
    )
}

fn encode_skiptoken(index: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("kvfake:{index}"))
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("kvfake:")?
        .parse()
        .ok()
}

/// The bundle without `value`: id, attributes, contentType, tags, kid, managed.
fn item_json(base: &str, name: &str, stored: &StoredVersion) -> Map<String, Value> {
    let spec = &stored.spec;
    let mut attributes = Map::new();
    attributes.insert("enabled".into(), Value::Bool(spec.enabled));
    if let Some(nbf) = spec.not_before {
        attributes.insert("nbf".into(), nbf.into());
    }
    if let Some(exp) = spec.expires {
        attributes.insert("exp".into(), exp.into());
    }
    attributes.insert("created".into(), stored.created.into());
    attributes.insert("updated".into(), stored.updated.into());
    attributes.insert("recoverableDays".into(), 90.into());
    attributes.insert(
        "recoveryLevel".into(),
        Value::String("Recoverable+Purgeable".into()),
    );
    let mut item = Map::new();
    item.insert(
        "id".into(),
        Value::String(format!("{base}/secrets/{name}/{}", stored.id)),
    );
    if let Some(content_type) = &spec.content_type {
        item.insert("contentType".into(), Value::String(content_type.clone()));
    }
    item.insert("attributes".into(), Value::Object(attributes));
    if !spec.tags.is_empty() {
        item.insert("tags".into(), json!(spec.tags));
    }
    if spec.certificate_backed {
        item.insert(
            "kid".into(),
            Value::String(format!("{base}/keys/{name}/{}", stored.id)),
        );
        item.insert("managed".into(), Value::Bool(true));
    }
    item
}

/// The vault's base URL as the caller addressed it (ids echo the caller's host).
fn vault_base(uri: &Uri, headers: &HeaderMap) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    format!("https://{host}")
}

/// The caller's RBAC assignment or access policy check.
fn authorize(
    settings: &VaultSettings,
    claims: &Claims,
    operation: &str,
    secret: Option<&str>,
) -> Result<(), Box<Response>> {
    if settings.grant.allows(&claims.oid) {
        return Ok(());
    }
    let caller = format!(
        "appid={};oid={};iss={}",
        claims.appid, claims.oid, claims.iss
    );
    let vault = format!("{};location={}", settings.name, settings.location);
    let response = match settings.access_model {
        AccessModel::Rbac => {
            let action = match operation {
                "get" => "Microsoft.KeyVault/vaults/secrets/getSecret/action",
                _ => "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
            };
            let mut resource = format!(
                "/subscriptions/{}/resourcegroups/{}/providers/microsoft.keyvault/vaults/{}",
                settings.subscription_id,
                settings.resource_group.to_lowercase(),
                settings.name.to_lowercase()
            );
            if let Some(secret) = secret {
                resource.push_str(&format!("/secrets/{}", secret.to_lowercase()));
            }
            kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("ForbiddenByRbac"),
                &format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: {caller}\r\nAction: '{action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\nDenyAssignmentId: null\r\nDecisionReason: null \r\nVault: {vault}\r\n"
                ),
            )
        }
        AccessModel::AccessPolicy => kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            Some("AccessDenied"),
            &format!(
                "The user, group or application '{caller}' does not have secrets {operation} permission on key vault '{vault}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            ),
        ),
    };
    Err(Box::new(response))
}

fn invalid_name(name: &str) -> Response {
    kv_error(
        StatusCode::BAD_REQUEST,
        "BadParameter",
        None,
        &format!("The request URI contains an invalid name: {name}"),
    )
}

/// A scripted failure in Key Vault's error shape.
fn fault_response(fault: Fault) -> Response {
    let status = fault.status_code(StatusCode::INTERNAL_SERVER_ERROR);
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS => (
            "Throttled",
            "Operations per second is over the limit for this vault. Please retry after the time in the Retry-After header.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        _ => ("InternalServerError", "Internal server error."),
    };
    fault.finish(kv_error(status, code, None, message))
}

fn kv_error(status: StatusCode, code: &str, inner: Option<&str>, message: &str) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    kv_json(status, json!({"error": error}))
}

fn kv_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000;includeSubDomains"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert(
        "x-ms-keyvault-region",
        HeaderValue::from_static("westeurope"),
    );
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static(SERVICE_VERSION),
    );
    headers.insert(
        "x-ms-keyvault-network-info",
        HeaderValue::from_static("conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front_door::{
        testing::{Kit, OID, OTHER_OID},
        Fault,
    };

    async fn vault(kit: &Kit) -> KeyVaultFake {
        KeyVaultFake::start(
            Arc::clone(&kit.authority),
            &kit.ca,
            VaultSettings::new("myvault"),
        )
        .await
        .unwrap()
    }

    async fn get(
        kit: &Kit,
        url: String,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = kit.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, headers, body)
    }

    #[tokio::test]
    async fn token_less_and_wrong_audience_requests_get_the_challenge() {
        let kit = Kit::new();
        let fake = vault(&kit).await;
        let url = format!("{}/secrets/s?api-version=7.5", fake.vault_url());
        let (status, headers, body) = get(&kit, url.clone(), None).await;
        assert_eq!(status, 401);
        assert_eq!(
            headers["www-authenticate"],
            "Bearer authorization=\"https://login.windows.net/dc822496-97fa-4380-991a-c8b4ba5d4f73\", resource=\"https://vault.azure.net\""
        );
        assert_eq!(body["error"]["code"], "Unauthorized");
        assert_eq!(
            body["error"]["message"],
            "AKV10000: Request is missing a Bearer or PoP token."
        );
        let storage = kit.token_for(OID, "https://storage.azure.com/");
        let (status, headers, body) = get(&kit, url.clone(), Some(&storage)).await;
        assert_eq!(status, 401);
        assert!(headers.contains_key("www-authenticate"));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("AKV10022: Invalid audience"),
            "{message}"
        );
        let expired = kit.expired_token(KEY_VAULT_AUDIENCE);
        assert_eq!(get(&kit, url, Some(&expired)).await.0, 401);
        let log = fake.requests();
        assert_eq!(log.len(), 3);
        assert!(!log[0].bearer);
        assert_eq!(
            log[1].audience.as_deref(),
            Some("https://storage.azure.com/")
        );
    }

    #[tokio::test]
    async fn api_version_is_required_and_checked() {
        let kit = Kit::new();
        let fake = vault(&kit).await;
        let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
        for query in ["", "?api-version=6.0", "?api-version=latest"] {
            let (status, _, body) = get(
                &kit,
                format!("{}/secrets/s{query}", fake.vault_url()),
                Some(&token),
            )
            .await;
            assert_eq!(status, 400, "{query}");
            assert_eq!(body["error"]["code"], "BadParameter");
        }
    }

    #[tokio::test]
    async fn secrets_are_served_by_name_and_version_case_insensitively() {
        let kit = Kit::new();
        let fake = vault(&kit).await;
        let v1 = fake.set_secret("Db-Password", SecretSpec::new("one"));
        let v2 = fake.set_secret(
            "db-password",
            SecretSpec::new("two")
                .content_type("text/plain")
                .tag("env", "test")
                .not_before(1_493_938_400)
                .expires(1_893_456_000),
        );
        assert_eq!(v1.len(), 32);
        let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
        let base = fake.vault_url();
        for path in ["/secrets/DB-PASSWORD", "/secrets/db-password/"] {
            let (status, _, body) =
                get(&kit, format!("{base}{path}?api-version=7.6"), Some(&token)).await;
            assert_eq!(status, 200, "{path}");
            assert_eq!(body["value"], "two");
            assert_eq!(body["id"], format!("{base}/secrets/Db-Password/{v2}"));
            assert_eq!(body["contentType"], "text/plain");
            assert_eq!(body["tags"]["env"], "test");
            assert_eq!(body["attributes"]["nbf"], 1_493_938_400);
            assert_eq!(body["attributes"]["exp"], 1_893_456_000);
            assert_eq!(body["attributes"]["enabled"], true);
            assert_eq!(body["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
            assert!(body["attributes"]["created"].as_u64().unwrap() > 1_600_000_000);
            assert!(body.get("kid").is_none() && body.get("managed").is_none());
        }
        let (status, _, body) = get(
            &kit,
            format!("{base}/secrets/db-password/{v1}?api-version=7.4"),
            Some(&token),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["value"], "one");
        assert!(body.get("contentType").is_none() && body.get("tags").is_none());

        let (status, _, body) = get(
            &kit,
            format!("{base}/secrets/db-password/versions?api-version=7.5&maxresults=1"),
            Some(&token),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["value"].as_array().unwrap().len(), 1);
        assert!(body["value"][0].get("value").is_none());
        let next = body["nextLink"].as_str().unwrap().to_string();
        let (_, _, body) = get(&kit, next, Some(&token)).await;
        assert_eq!(
            body["value"][0]["id"],
            format!("{base}/secrets/Db-Password/{v2}")
        );
        assert!(body["nextLink"].is_null());
    }

    #[tokio::test]
    async fn refusals_use_the_services_codes_and_messages() {
        let kit = Kit::new();
        let fake = vault(&kit).await;
        fake.set_secret("old", SecretSpec::new("x").disabled());
        let cert = fake.set_secret("cert", SecretSpec::new("pfx").certificate_backed());
        let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
        let base = fake.vault_url();
        let url = |path: &str| format!("{base}{path}?api-version=7.5");

        let (status, _, body) = get(&kit, url("/secrets/missing"), Some(&token)).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "SecretNotFound");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("A secret with (name/id) missing was not found in this key vault."));

        let (status, _, body) = get(&kit, url("/secrets/old"), Some(&token)).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["innererror"]["code"], "SecretDisabled");

        let (_, _, body) = get(&kit, url("/secrets/cert"), Some(&token)).await;
        assert_eq!(body["managed"], true);
        assert_eq!(body["kid"], format!("{base}/keys/cert/{cert}"));

        let (status, _, body) = get(&kit, url("/secrets/bad_name"), Some(&token)).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "BadParameter");

        fake.set_grant(Grant::only([OTHER_OID]));
        let (status, _, body) = get(&kit, url("/secrets/cert"), Some(&token)).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], "Forbidden");
        assert_eq!(body["error"]["innererror"]["code"], "ForbiddenByRbac");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!(";oid={OID};")), "{message}");
        assert!(message.contains("Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"));
        fake.set_access_model(AccessModel::AccessPolicy);
        let (status, _, body) = get(&kit, url("/secrets/cert"), Some(&token)).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"]["innererror"]["code"], "AccessDenied");
        assert!(body["error"]["message"].as_str().unwrap().contains(
            "does not have secrets get permission on key vault 'myvault;location=westeurope'"
        ));
        let other = kit.token_for(OTHER_OID, KEY_VAULT_AUDIENCE);
        assert_eq!(get(&kit, url("/secrets/cert"), Some(&other)).await.0, 200);
    }

    #[tokio::test]
    async fn scripted_throttling_answers_429_with_retry_after_then_serves() {
        let kit = Kit::new();
        let fake = vault(&kit).await;
        fake.set_secret("s", SecretSpec::new("v"));
        fake.faults().push([Fault::throttle(3)]);
        let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
        let url = format!("{}/secrets/s?api-version=7.5", fake.vault_url());
        let (status, headers, body) = get(&kit, url.clone(), Some(&token)).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "3");
        assert_eq!(body["error"]["code"], "Throttled");
        assert_eq!(get(&kit, url, Some(&token)).await.0, 200);
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 200]);
    }

    #[test]
    fn routes_accept_the_trailing_slash_form() {
        assert!(matches!(route("/secrets/a"), Some(Route::Latest("a"))));
        assert!(matches!(route("/secrets/a/"), Some(Route::Latest("a"))));
        assert!(matches!(
            route("/secrets/a/0123"),
            Some(Route::Version("a", "0123"))
        ));
        assert!(matches!(
            route("/secrets/a/versions"),
            Some(Route::ListVersions("a"))
        ));
        assert!(matches!(route("/secrets"), Some(Route::ListSecrets)));
        assert!(route("/keys/a").is_none());
        assert!(route("/secrets/a/b/c").is_none());
    }

    #[test]
    fn api_versions_follow_the_service_list() {
        for ok in [
            "7.4",
            "7.5",
            "7.6",
            "2025-07-01",
            "2026-04-01",
            "7.6-preview.2",
            "2025-06-01-preview",
            "2026-03-01-preview",
        ] {
            assert!(supported_api_version(ok), "{ok}");
        }
        for bad in [
            "",
            "7",
            "8.0",
            "7.x",
            "2025-07-01x",
            "latest",
            "7.6-preview.",
        ] {
            assert!(!supported_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn skiptokens_round_trip_and_reject_garbage() {
        assert_eq!(decode_skiptoken(&encode_skiptoken(50)), Some(50));
        assert_eq!(decode_skiptoken("!!"), None);
    }
}
