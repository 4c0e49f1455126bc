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

mod access;
mod bundles;
mod errors;
mod serving;
#[cfg(test)]
mod tests;

#[allow(unused_imports)]
use access::*;
#[allow(unused_imports)]
use bundles::*;
#[allow(unused_imports)]
use errors::*;
#[allow(unused_imports)]
use serving::*;
