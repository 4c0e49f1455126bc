//! Key Vault secrets: which vault (by URL or by name and cloud), input
//! validation, Get Secret (`GET {vault}/secrets/{name}[/{version}]`) with the
//! token for the vault's cloud, the 401 challenge, throttling retries, error
//! mapping, and an optional short-lived cache of secrets.
//!
//! The secret value lives only in [`SecretString`]s here; nothing in this
//! module logs or formats it. Knows nothing about gRPC.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reqwest::{header, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use super::{
    http::read_capped,
    throttle::{send_with_retry, BodyUse},
    Cloud, HostGuard, Service,
};
use crate::{error::GatewayError, token::IdentitySelector, Upstream};

/// The Key Vault data-plane API version the gateway speaks (a current GA).
pub const API_VERSION: &str = "7.5";
const UPSTREAM: &str = "Key Vault";

/// A vault the gateway may send a Key Vault token to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vault {
    /// `https://host[:port]`, no path.
    base: Url,
    host: String,
    audience: &'static str,
}

impl Vault {
    /// A vault by URL (`https://myvault.vault.azure.net[/]`). The host must
    /// pass the exfiltration guard. The cloud (and so the audience) follows
    /// the host's suffix when it has a known one, else `cloud`.
    pub fn from_url(guard: &HostGuard, raw: &str, cloud: Cloud) -> Result<Self, GatewayError> {
        const FIELD: &str = "vault_url";
        let url = guard.check_url(Service::KeyVault, FIELD, raw.trim())?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(GatewayError::invalid(
                FIELD,
                "must be just the vault's address, e.g. https://myvault.vault.azure.net (no path or query)",
            ));
        }
        // check_url normalised the host: the policy sees the host the
        // request goes to.
        let host = identity_gateway_core::normalize_host(
            url.host_str()
                .ok_or_else(|| GatewayError::invalid(FIELD, "URL has no host"))?,
        );
        if host.ends_with(".managedhsm.azure.net") {
            return Err(GatewayError::invalid(
                FIELD,
                "is a Managed HSM, which holds keys only; secrets live in a vault (*.vault.azure.net)",
            ));
        }
        let cloud = cloud_of_host(&host).unwrap_or(cloud);
        let mut base = url.clone();
        base.set_path("");
        Ok(Self {
            base,
            host,
            audience: Service::KeyVault.audience(cloud),
        })
    }

    /// A vault by name: `<name>.vault.azure.net` (or the US Gov / China suffix).
    pub fn from_name(guard: &HostGuard, name: &str, cloud: Cloud) -> Result<Self, GatewayError> {
        validate_vault_name(name)?;
        let suffix = match cloud {
            Cloud::Public => "vault.azure.net",
            Cloud::UsGovernment => "vault.usgovcloudapi.net",
            Cloud::China => "vault.azure.cn",
        };
        Self::from_url(
            guard,
            &format!("https://{}.{suffix}", name.to_ascii_lowercase()),
            cloud,
        )
    }

    /// The host (for messages and the audit line).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `https://host[:port]`.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The token audience for this vault's cloud.
    pub fn audience(&self) -> &'static str {
        self.audience
    }

    /// `{vault}/secrets/{name}/{version}?api-version=..`; the latest version
    /// when `version` is empty.
    fn secret_url(&self, name: &str, version: &str) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear().push("secrets").push(name);
            if !version.is_empty() {
                segments.push(version);
            }
        }
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        url
    }
}

fn cloud_of_host(host: &str) -> Option<Cloud> {
    if host.ends_with(".vault.azure.net") {
        Some(Cloud::Public)
    } else if host.ends_with(".vault.usgovcloudapi.net") {
        Some(Cloud::UsGovernment)
    } else if host.ends_with(".vault.azure.cn") {
        Some(Cloud::China)
    } else {
        None
    }
}

/// A vault name: 3-24 of `0-9a-zA-Z-`, starting with a letter, ending with a
/// letter or digit, no `--`.
pub fn validate_vault_name(name: &str) -> Result<(), GatewayError> {
    const FIELD: &str = "vault_name";
    if !(3..=24).contains(&name.len()) {
        return Err(GatewayError::invalid(FIELD, "must be 3-24 characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(GatewayError::invalid(
            FIELD,
            "may contain only letters, digits and '-'",
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) || name.ends_with('-') {
        return Err(GatewayError::invalid(
            FIELD,
            "must start with a letter and end with a letter or digit",
        ));
    }
    if name.contains("--") {
        return Err(GatewayError::invalid(
            FIELD,
            "must not contain consecutive hyphens",
        ));
    }
    Ok(())
}

/// A secret name: 1-127 of `0-9a-zA-Z-`.
pub fn validate_secret_name(name: &str) -> Result<(), GatewayError> {
    if name.is_empty() {
        return Err(GatewayError::invalid("name", "is required"));
    }
    if name.len() > 127 {
        return Err(GatewayError::invalid(
            "name",
            "must be at most 127 characters",
        ));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(GatewayError::invalid(
            "name",
            "may contain only letters, digits and '-'",
        ));
    }
    Ok(())
}

/// A version: empty (latest) or a 32-character hex id.
pub fn validate_version(version: &str) -> Result<(), GatewayError> {
    if version.is_empty() || (version.len() == 32 && version.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Ok(())
    } else {
        Err(GatewayError::invalid(
            "version",
            "must be empty (latest) or a 32-character hex version id",
        ))
    }
}

/// A secret as Key Vault returned it. `Debug` never shows the value.
#[derive(Clone)]
pub struct Secret {
    pub value: SecretString,
    /// `https://<vault>/secrets/<name>/<version>`.
    pub id: String,
    pub name: String,
    pub version: String,
    pub content_type: Option<String>,
    pub enabled: bool,
    pub created: Option<SystemTime>,
    pub updated: Option<SystemTime>,
    pub not_before: Option<SystemTime>,
    pub expires: Option<SystemTime>,
    pub tags: BTreeMap<String, String>,
    /// Backs a Key Vault certificate.
    pub managed: bool,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("value", &"** redacted **")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .field("enabled", &self.enabled)
            .field("expires", &self.expires)
            .field("tags", &self.tags)
            .field("managed", &self.managed)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Bundle {
    value: Option<String>,
    id: Option<String>,
    #[serde(rename = "contentType")]
    content_type: Option<String>,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    #[serde(default)]
    managed: Option<bool>,
}

#[derive(Deserialize, Default)]
struct Attributes {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: Option<i64>,
    updated: Option<i64>,
}

/// Parses a SecretBundle (IntDate attributes; optional contentType, tags,
/// kid, managed). Name and version come from the id.
pub fn parse_bundle(body: &[u8]) -> Result<Secret, GatewayError> {
    let garbage = |why: String| {
        GatewayError::Upstream(format!(
            "{UPSTREAM} answered a secret the gateway cannot read: {why}"
        ))
    };
    let bundle: Bundle =
        serde_json::from_slice(body).map_err(|e| garbage(format!("not a SecretBundle ({e})")))?;
    let value = bundle.value.ok_or_else(|| garbage("no value".into()))?;
    let id = bundle.id.ok_or_else(|| garbage("no id".into()))?;
    let (name, version) = parse_secret_id(&id)
        .ok_or_else(|| garbage("the id is not https://<vault>/secrets/<name>/<version>".into()))?;
    let attributes = bundle.attributes;
    Ok(Secret {
        value: SecretString::from(value),
        id,
        name,
        version,
        content_type: bundle.content_type.filter(|c| !c.is_empty()),
        enabled: attributes.enabled.unwrap_or(true),
        created: attributes.created.map(int_date),
        updated: attributes.updated.map(int_date),
        not_before: attributes.nbf.map(int_date),
        expires: attributes.exp.map(int_date),
        tags: bundle.tags.unwrap_or_default(),
        managed: bundle.managed.unwrap_or(false),
    })
}

/// `(name, version)` from `https://<vault>/secrets/<name>/<version>`.
pub fn parse_secret_id(id: &str) -> Option<(String, String)> {
    let url = Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["secrets", name, version] => Some((name.to_string(), version.to_string())),
        ["secrets", name] => Some((name.to_string(), String::new())),
        _ => None,
    }
}

/// Key Vault IntDate (Unix seconds) as a wall-clock time.
fn int_date(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    innererror: Option<Box<ErrorDetail>>,
}

/// The `resource` (or `scope` without `/.default`) of a Key Vault
/// `WWW-Authenticate: Bearer authorization="..", resource=".."` challenge.
pub fn challenge_resource(value: &str) -> Option<String> {
    let rest = value.trim().strip_prefix("Bearer")?.trim_start();
    let mut resource = None;
    let mut scope = None;
    for part in rest.split(',') {
        let Some((key, val)) = part.trim().split_once('=') else {
            continue;
        };
        let val = val.trim().trim_matches('"').to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "resource" | "resource_id" => resource = Some(val),
            "scope" => scope = Some(val.trim_end_matches("/.default").to_string()),
            _ => {}
        }
    }
    resource.or(scope).filter(|r| !r.is_empty())
}

/// Whether the gateway may fetch a token for a challenge's `resource` and
/// send it to `vault_host`: an https origin whose host is a parent domain of
/// the vault's host (what the Azure SDKs' `verify_challenge_resource`
/// checks), and not a bare top-level name.
pub fn challenge_allowed(resource: &str, vault_host: &str) -> bool {
    let Ok(url) = Url::parse(resource) else {
        return false;
    };
    let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    url.scheme() == "https"
        && matches!(url.path(), "" | "/")
        && url.query().is_none()
        && url.port().is_none()
        && host.contains('.')
        && vault_host
            .to_ascii_lowercase()
            .ends_with(&format!(".{host}"))
}

/// A Key Vault answer that was not a success, with what led to it.
#[derive(Debug)]
pub struct Refusal<'a> {
    pub status: StatusCode,
    pub body: &'a [u8],
    /// The audience of the token that was sent.
    pub audience: &'a str,
    /// The challenge's resource, on a 401.
    pub challenge: Option<&'a str>,
}

/// Turns a Key Vault error answer into the gateway's error.
pub fn map_error(refusal: &Refusal<'_>, vault: &Vault, name: &str, version: &str) -> GatewayError {
    let Refusal {
        status,
        body,
        audience,
        challenge,
    } = *refusal;
    let parsed: Option<ErrorDetail> = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.error);
    let code = parsed.as_ref().map(|e| e.code.as_str()).unwrap_or("");
    let inner = parsed
        .as_ref()
        .and_then(|e| e.innererror.as_ref())
        .map(|e| e.code.as_str())
        .unwrap_or("");
    let said = parsed
        .as_ref()
        .map(|e| azure_message(&e.message))
        .filter(|m| !m.is_empty())
        .map(|m| format!(" Azure said: {m}"))
        .unwrap_or_default();
    let host = vault.host();
    let secret = if version.is_empty() {
        format!("secret '{name}'")
    } else {
        format!("secret '{name}' version {version}")
    };
    match status.as_u16() {
        404 => GatewayError::NotFound(format!(
            "{secret} was not found in Key Vault {host} ({}).{said}",
            if code.is_empty() { "404" } else { code }
        )),
        403 => {
            let reason = match inner {
                "ForbiddenByRbac" => "Azure RBAC denied the identity (ForbiddenByRbac): it needs a role with Microsoft.KeyVault/vaults/secrets/getSecret/action on the vault or secret, e.g. Key Vault Secrets User".to_string(),
                "AccessDenied" => "the vault's access policy does not allow the identity (AccessDenied): grant it Get on secrets".to_string(),
                "SecretDisabled" => format!("{secret} is disabled (SecretDisabled): enable it or ask for another version"),
                "ForbiddenByFirewall" => "the vault's firewall refused this VM (ForbiddenByFirewall)".to_string(),
                other if !other.is_empty() => format!("Key Vault refused ({other})"),
                _ => "Key Vault refused (403)".to_string(),
            };
            GatewayError::PermissionDenied(format!("Key Vault {host}: {reason}.{said}"))
        }
        401 => {
            let expects = match challenge {
                Some(resource) if resource != audience => {
                    format!(" The vault asks for a token for '{resource}', which the gateway will not fetch for this host.")
                }
                _ => String::new(),
            };
            GatewayError::PermissionDenied(format!(
                "Key Vault {host} rejected the identity's token for '{audience}' (401).{expects}{said}"
            ))
        }
        429 => GatewayError::Throttled(format!(
            "Key Vault {host} kept throttling (429) after the gateway's retries; retry later"
        )),
        500..=599 => GatewayError::Unavailable(format!(
            "Key Vault {host} answered {status} after the gateway's retries.{said}"
        )),
        _ => GatewayError::Upstream(format!(
            "Key Vault {host} answered {status}{}.{said}",
            if code.is_empty() {
                String::new()
            } else {
                format!(" ({code})")
            }
        )),
    }
}

/// Azure's message on one line, capped (it names the caller and resource,
/// never a secret or token).
fn azure_message(message: &str) -> String {
    let one_line = message
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if one_line.chars().count() > 600 {
        let cut: String = one_line.chars().take(600).collect();
        format!("{cut}…")
    } else {
        one_line
    }
}

/// Gets `name` (latest when `version` is empty) from `vault` over the
/// shared HTTP client, with `selector`'s tokens, within
/// `budget` (the caller's deadline). Throttling and passing server errors
/// are retried ([`send_with_retry`]). On a 401 whose challenge names another
/// audience that is a parent domain of the vault host, asks once more with
/// a token for that audience (sovereign or private vaults).
pub async fn get_secret(
    up: &Upstream,
    selector: &IdentitySelector,
    vault: &Vault,
    name: &str,
    version: &str,
    budget: Option<Duration>,
) -> Result<Secret, GatewayError> {
    let deadline = budget.map(|b| up.clock.now() + b);
    let left = || deadline.map(|d| d.saturating_duration_since(up.clock.now()));
    let url = vault.secret_url(name, version);
    let mut audience = vault.audience().to_string();
    let mut followed_challenge = false;
    loop {
        let token = up.tokens.token(selector, &audience, left()).await?;
        let response = send_with_retry(up, left(), UPSTREAM, BodyUse::Buffered, || {
            up.http
                .get(url.clone())
                .bearer_auth(token.secret())
                .header(header::ACCEPT, "application/json")
        })
        .await?;
        let status = response.status();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(challenge_resource);
        if status == StatusCode::UNAUTHORIZED && !followed_challenge {
            if let Some(resource) = &challenge {
                if *resource != audience && challenge_allowed(resource, vault.host()) {
                    tracing::info!(
                        vault = vault.host(),
                        from = %audience,
                        to = %resource,
                        "Key Vault challenge names another audience; retrying once with it"
                    );
                    followed_challenge = true;
                    audience = resource.clone();
                    continue;
                }
            }
        }
        let body = read_capped(response, up.config.max_body_bytes, UPSTREAM).await?;
        if status.is_success() {
            return parse_bundle(&body);
        }
        let refusal = Refusal {
            status,
            body: &body,
            audience: &audience,
            challenge: challenge.as_deref(),
        };
        return Err(map_error(&refusal, vault, name, version));
    }
}

/// Who asked for which secret: cached values are only served back to the
/// same identity for the same vault, name and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    identity: IdentitySelector,
    vault: String,
    name: String,
    version: String,
}

impl CacheKey {
    pub fn new(identity: &IdentitySelector, vault: &Vault, name: &str, version: &str) -> Self {
        Self {
            identity: identity.clone(),
            vault: vault.base_url().to_ascii_lowercase(),
            // Key Vault names and version ids are case-insensitive.
            name: name.to_ascii_lowercase(),
            version: version.to_ascii_lowercase(),
        }
    }
}

/// A short-lived cache of secrets (off when the TTL is zero), so bursts of
/// callers do not run into Key Vault's throttling.
pub struct SecretCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, (Instant, Arc<Secret>)>>,
}

/// Entries kept at most; beyond it new secrets are simply not cached.
const CACHE_CAPACITY: usize = 4096;

impl fmt::Debug for SecretCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCache")
            .field("ttl", &self.ttl)
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl SecretCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, (Instant, Arc<Secret>)>> {
        // Each critical section is one map operation; a poisoned map is still whole.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached secret, if fresh at `now`.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<Secret>> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self.lock();
        match entries.get(key) {
            Some((expires, secret)) if now < *expires => Some(Arc::clone(secret)),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keeps `secret` until `now + ttl`.
    pub fn put(&self, key: CacheKey, secret: Arc<Secret>, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (expires, _)| now < *expires);
            if entries.len() >= CACHE_CAPACITY {
                return;
            }
        }
        entries.insert(key, (now + self.ttl, secret));
    }
}

#[cfg(test)]
mod tests;
