//! Service SAS for a blob or a container, two ways:
//!
//! - **user delegation** (the default, least privilege): Get User Delegation
//!   Key with the identity's Storage token, then sign locally with that key.
//!   No account key is ever involved.
//! - **ARM listServiceSas**: Azure signs with the account key; needs
//!   `Microsoft.Storage/storageAccounts/listServiceSas/action`.
//!
//! Owns: validation of account, container and blob names, permissions
//! (reordered canonically, checked against the resource kind), lifetime
//! (configurable maximum, 7 days for user delegation), IP range and protocol;
//! the user delegation string-to-sign for `sv` [`SAS_VERSION`]; the blob
//! endpoint of an account. A SAS or delegation key never appears in a log
//! line, an error or a `Debug` output.

use std::{
    fmt,
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use url::Url;

use super::{
    arm::{self, ArmCall, ServiceSasParameters},
    blob::{display_url, ms_date, storage_error, storage_token, STORAGE_API_VERSION},
    http::read_capped,
    throttle::{send_with_retry, BodyUse},
    Cloud, Service,
};
use crate::{error::GatewayError, token::IdentitySelector, Upstream};

/// The `sv` of user delegation SAS tokens the gateway signs. Its
/// string-to-sign is the 24-line layout of 2020-12-06 .. 2025-05-05.
pub const SAS_VERSION: &str = "2025-05-05";
/// Longest user delegation SAS (the delegation key lives at most 7 days).
pub const MAX_USER_DELEGATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lifetime when the request names none.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Canonical order of blob permissions; each letter's resource kinds.
/// (`l` list and `f` find-by-tags apply to containers only.)
const BLOB_PERMISSIONS: &str = "racwdxytmeopi";
const CONTAINER_PERMISSIONS: &str = "racwdxyltfmeopi";
/// What ARM's listServiceSas documents for blob resources.
const ARM_BLOB_PERMISSIONS: &str = "racwd";
const ARM_CONTAINER_PERMISSIONS: &str = "racwdl";

const UPSTREAM: &str = "Storage";

/// How the SAS is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SasMethod {
    UserDelegation,
    ArmListServiceSas,
}

/// What a SAS grants access to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedResource {
    Blob,
    Container,
}

impl SignedResource {
    pub fn code(self) -> &'static str {
        match self {
            Self::Blob => "b",
            Self::Container => "c",
        }
    }
}

/// A SAS request as the caller gave it (unvalidated strings).
#[derive(Debug, Clone, Default)]
pub struct SasInput {
    pub account: String,
    pub container: String,
    /// Empty for a container SAS.
    pub blob: String,
    pub permissions: String,
    /// None: [`DEFAULT_LIFETIME`].
    pub expires_in: Option<Duration>,
    pub start: Option<SystemTime>,
    pub ip_range: String,
    pub allow_http: bool,
    pub subscription_id: String,
    pub resource_group: String,
    /// Empty: the account's endpoint in `cloud`.
    pub blob_endpoint: String,
}

/// A validated SAS request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasPlan {
    pub method: SasMethod,
    pub account: String,
    pub container: String,
    pub blob: Option<String>,
    pub resource: SignedResource,
    /// Canonical order.
    pub permissions: String,
    /// Whole seconds.
    pub start: Option<SystemTime>,
    /// Whole seconds.
    pub expiry: SystemTime,
    pub ip_range: Option<String>,
    /// `https` or `https,http`.
    pub protocol: &'static str,
    /// The blob service endpoint (host-style, or path-style ending in the account).
    pub endpoint: Url,
    /// ARM method only.
    pub subscription_id: String,
    pub resource_group: String,
}

impl SasPlan {
    /// `/blob/<account>/<container>[/<blob>]`.
    pub fn canonicalized_resource(&self) -> String {
        match &self.blob {
            Some(blob) => format!("/blob/{}/{}/{blob}", self.account, self.container),
            None => format!("/blob/{}/{}", self.account, self.container),
        }
    }

    /// The blob or container URL (no SAS).
    pub fn resource_url(&self) -> Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().push(&self.container);
            if let Some(blob) = &self.blob {
                segments.extend(blob.split('/'));
            }
        }
        url
    }
}

/// An issued SAS. `Debug` never shows the token.
#[derive(Clone)]
pub struct IssuedSas {
    /// The query string, no leading `?`.
    pub token: SecretString,
    /// The resource URL with the SAS appended.
    pub url: SecretString,
    pub expires_on: SystemTime,
    pub signed_resource: SignedResource,
    pub signed_permissions: String,
}

impl fmt::Debug for IssuedSas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedSas")
            .field("token", &"** redacted **")
            .field("url", &"** redacted **")
            .field("expires_on", &self.expires_on)
            .field("signed_resource", &self.signed_resource)
            .field("signed_permissions", &self.signed_permissions)
            .finish()
    }
}

/// A storage account name: 3-24 lowercase letters and digits.
pub fn account_name(value: &str) -> Result<&str, GatewayError> {
    let ok = (3..=24).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(value)
    } else {
        Err(GatewayError::invalid(
            "account",
            "must be 3-24 lowercase letters and digits",
        ))
    }
}

/// A container name: 3-63 lowercase letters, digits and single hyphens,
/// starting and ending with a letter or digit (or `$root` / `$web`).
pub fn container_name(value: &str) -> Result<&str, GatewayError> {
    if value == "$root" || value == "$web" {
        return Ok(value);
    }
    let bytes = value.as_bytes();
    let ok = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !value.contains("--");
    if ok {
        Ok(value)
    } else {
        Err(GatewayError::invalid(
            "container",
            "must be 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
        ))
    }
}

/// A blob name: 1-1024 characters, `/`-separated segments that are not
/// empty, `.` or `..`, no control characters or backslashes, not ending in
/// `.` (names a URL would rewrite can never be signed consistently).
pub fn blob_name(value: &str) -> Result<&str, GatewayError> {
    const FIELD: &str = "blob";
    let count = value.chars().count();
    if count == 0 || count > 1024 {
        return Err(GatewayError::invalid(FIELD, "must be 1-1024 characters"));
    }
    if value.chars().any(|c| c.is_control() || c == '\\') {
        return Err(GatewayError::invalid(
            FIELD,
            "must not contain control characters or backslashes",
        ));
    }
    if value
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(GatewayError::invalid(
            FIELD,
            "path segments must not be empty, '.' or '..' (no leading, trailing or double '/')",
        ));
    }
    if value.ends_with('.') {
        return Err(GatewayError::invalid(FIELD, "must not end with '.'"));
    }
    Ok(value)
}

/// Puts `raw` permissions in canonical order, refusing letters unknown or
/// not valid for `resource` (and, for ARM, not documented by listServiceSas).
pub fn canonical_permissions(
    raw: &str,
    resource: SignedResource,
    method: SasMethod,
) -> Result<String, GatewayError> {
    const FIELD: &str = "permissions";
    let allowed = match (method, resource) {
        (SasMethod::UserDelegation, SignedResource::Blob) => BLOB_PERMISSIONS,
        (SasMethod::UserDelegation, SignedResource::Container) => CONTAINER_PERMISSIONS,
        (SasMethod::ArmListServiceSas, SignedResource::Blob) => ARM_BLOB_PERMISSIONS,
        (SasMethod::ArmListServiceSas, SignedResource::Container) => ARM_CONTAINER_PERMISSIONS,
    };
    if raw.is_empty() {
        return Err(GatewayError::invalid(
            FIELD,
            format!("at least one of '{allowed}' is required"),
        ));
    }
    if let Some(bad) = raw.chars().find(|c| !allowed.contains(*c)) {
        let kind = match resource {
            SignedResource::Blob => "a blob",
            SignedResource::Container => "a container",
        };
        let reason = if CONTAINER_PERMISSIONS.contains(bad) {
            match method {
                SasMethod::ArmListServiceSas if !ARM_CONTAINER_PERMISSIONS.contains(bad) => {
                    format!("'{bad}' is not offered by ARM listServiceSas; use the user delegation method (allowed here: '{allowed}')")
                }
                _ => format!("'{bad}' is not valid for {kind} SAS (allowed: '{allowed}')"),
            }
        } else {
            format!(
                "unknown permission '{}' (allowed for {kind}: '{allowed}')",
                bad.escape_default()
            )
        };
        return Err(GatewayError::invalid(FIELD, reason));
    }
    Ok(allowed.chars().filter(|c| raw.contains(*c)).collect())
}

/// An IPv4 address or range `a.b.c.d-e.f.g.h` (low to high).
pub fn ip_range(value: &str) -> Result<Option<String>, GatewayError> {
    const FIELD: &str = "ip_range";
    if value.is_empty() {
        return Ok(None);
    }
    let parse = |s: &str| {
        s.parse::<Ipv4Addr>()
            .map_err(|_| GatewayError::invalid(FIELD, format!("'{s}' is not an IPv4 address")))
    };
    match value.split_once('-') {
        None => parse(value).map(|_| Some(value.to_string())),
        Some((low, high)) => {
            if parse(low)? > parse(high)? {
                return Err(GatewayError::invalid(
                    FIELD,
                    "the range must go from the lower to the higher address",
                ));
            }
            Ok(Some(value.to_string()))
        }
    }
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A time as SAS fields carry it: `YYYY-MM-DDThh:mm:ssZ`.
pub fn sas_time(t: SystemTime) -> String {
    let at = time::OffsetDateTime::from(t);
    at.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

/// The blob endpoint of `account`: `blob_endpoint` if given (checked by the
/// guard; a path-style endpoint must end in the account), else
/// `https://<account>.blob.<cloud suffix>`.
pub fn endpoint(
    up: &Upstream,
    account: &str,
    blob_endpoint: &str,
    cloud: Cloud,
) -> Result<Url, GatewayError> {
    const FIELD: &str = "blob_endpoint";
    if blob_endpoint.is_empty() {
        let suffix = match cloud {
            Cloud::Public => "core.windows.net",
            Cloud::UsGovernment => "core.usgovcloudapi.net",
            Cloud::China => "core.chinacloudapi.cn",
        };
        return up.hosts.check_url(
            Service::Storage,
            FIELD,
            &format!("https://{account}.blob.{suffix}/"),
        );
    }
    let mut url = up.hosts.check_url(Service::Storage, FIELD, blob_endpoint)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(GatewayError::invalid(
            FIELD,
            "must not have a query or fragment",
        ));
    }
    let segments: Vec<String> = url
        .path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    match segments.as_slice() {
        [] => {
            let host = identity_gateway_core::normalize_host(url.host_str().unwrap_or_default());
            let azure_host = Service::Storage
                .host_suffixes()
                .iter()
                .any(|s| host.ends_with(s));
            if azure_host && host.split('.').next() != Some(account) {
                return Err(GatewayError::invalid(
                    FIELD,
                    format!("host '{host}' is not account '{account}''s endpoint"),
                ));
            }
        }
        [path_account] if path_account == account => {}
        _ => {
            return Err(GatewayError::invalid(
                FIELD,
                format!(
                    "a path-style endpoint must be <scheme>://<host>/{account} (the account only)"
                ),
            ))
        }
    }
    // Normalize: no trailing slash, so resource URLs are endpoint/container/blob.
    if let Ok(mut s) = url.path_segments_mut() {
        s.pop_if_empty();
    }
    Ok(url)
}

/// Validates everything before any call to Azure.
pub fn plan(
    up: &Upstream,
    method: SasMethod,
    input: &SasInput,
    cloud: Cloud,
    max_lifetime: Duration,
) -> Result<SasPlan, GatewayError> {
    let account = account_name(&input.account)?.to_string();
    let container = container_name(&input.container)?.to_string();
    let blob = if input.blob.is_empty() {
        None
    } else {
        Some(blob_name(&input.blob)?.to_string())
    };
    let resource = if blob.is_some() {
        SignedResource::Blob
    } else {
        SignedResource::Container
    };
    let permissions = canonical_permissions(&input.permissions, resource, method)?;

    let max = max_lifetime;
    let lifetime = input.expires_in.unwrap_or(DEFAULT_LIFETIME);
    if lifetime < Duration::from_secs(1) {
        return Err(GatewayError::invalid(
            "expires_in",
            "must be at least one second",
        ));
    }
    if lifetime > max {
        return Err(GatewayError::invalid(
            "expires_in",
            format!(
                "{}s is longer than the configured maximum of {}s (sas.max_expiry_secs)",
                lifetime.as_secs(),
                max.as_secs()
            ),
        ));
    }
    if method == SasMethod::UserDelegation && lifetime > MAX_USER_DELEGATION {
        return Err(GatewayError::invalid(
            "expires_in",
            "a user delegation SAS lives at most 7 days (its delegation key does)",
        ));
    }
    let now = up.clock.wall();
    let expiry = whole_seconds(now + lifetime);
    let start = input.start.map(whole_seconds);
    if start.is_some_and(|s| s >= expiry) {
        return Err(GatewayError::invalid(
            "start",
            "must be before the expiry (now + expires_in)",
        ));
    }
    let ip_range = ip_range(&input.ip_range)?;
    let protocol = if input.allow_http {
        "https,http"
    } else {
        "https"
    };
    let (subscription_id, resource_group) = match method {
        SasMethod::UserDelegation => (String::new(), String::new()),
        SasMethod::ArmListServiceSas => {
            if input.subscription_id.is_empty() {
                return Err(GatewayError::invalid(
                    "subscription_id",
                    "is required for the ARM listServiceSas method",
                ));
            }
            if input.resource_group.is_empty() {
                return Err(GatewayError::invalid(
                    "resource_group",
                    "is required for the ARM listServiceSas method",
                ));
            }
            (
                arm::subscription_id("subscription_id", &input.subscription_id)?.to_string(),
                arm::resource_group_name("resource_group", &input.resource_group)?.to_string(),
            )
        }
    };
    let endpoint = endpoint(up, &account, &input.blob_endpoint, cloud)?;
    Ok(SasPlan {
        method,
        account,
        container,
        blob,
        resource,
        permissions,
        start,
        expiry,
        ip_range,
        protocol,
        endpoint,
        subscription_id,
        resource_group,
    })
}

/// A user delegation key. `Debug` never shows the key.
#[derive(Clone)]
pub struct UserDelegationKey {
    pub signed_oid: String,
    pub signed_tid: String,
    pub signed_start: String,
    pub signed_expiry: String,
    pub signed_service: String,
    pub signed_version: String,
    /// Base64 key material.
    pub value: SecretString,
}

/// The `<UserDelegationKey>` document.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UserDelegationKeyXml {
    signed_oid: String,
    signed_tid: String,
    signed_start: String,
    signed_expiry: String,
    signed_service: String,
    signed_version: String,
    value: String,
}

impl fmt::Debug for UserDelegationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserDelegationKey")
            .field("signed_oid", &self.signed_oid)
            .field("signed_tid", &self.signed_tid)
            .field("signed_start", &self.signed_start)
            .field("signed_expiry", &self.signed_expiry)
            .field("signed_service", &self.signed_service)
            .field("signed_version", &self.signed_version)
            .field("value", &"** redacted **")
            .finish()
    }
}

/// Parses a Get User Delegation Key answer.
pub fn parse_user_delegation_key(xml: &str) -> Result<UserDelegationKey, GatewayError> {
    let parsed: UserDelegationKeyXml = quick_xml::de::from_str(xml.trim_start_matches('\u{feff}'))
        .map_err(|e| {
            GatewayError::Upstream(format!(
                "{UPSTREAM} answered Get User Delegation Key with unusable XML: {}",
                redact_xml_error(&e.to_string())
            ))
        })?;
    let key = UserDelegationKey {
        signed_oid: parsed.signed_oid,
        signed_tid: parsed.signed_tid,
        signed_start: parsed.signed_start,
        signed_expiry: parsed.signed_expiry,
        signed_service: parsed.signed_service,
        signed_version: parsed.signed_version,
        value: SecretString::from(parsed.value),
    };
    let fields = [
        &key.signed_oid,
        &key.signed_tid,
        &key.signed_start,
        &key.signed_expiry,
        &key.signed_service,
        &key.signed_version,
    ];
    if fields.iter().any(|f| f.is_empty() || f.contains('\n')) {
        return Err(GatewayError::Upstream(format!(
            "{UPSTREAM} answered a user delegation key with empty or malformed fields"
        )));
    }
    if BASE64.decode(key.value.expose_secret()).is_err() {
        return Err(GatewayError::Upstream(format!(
            "{UPSTREAM} answered a user delegation key whose value is not base64"
        )));
    }
    Ok(key)
}

/// quick-xml errors may quote the document; keep only their first clause.
fn redact_xml_error(message: &str) -> String {
    message
        .split([':', '`', '"', '\''])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The user delegation string-to-sign for `sv` 2020-12-06 .. 2025-05-05:
/// 24 lines joined by `\n`, absent fields empty.
pub fn user_delegation_string_to_sign(plan: &SasPlan, key: &UserDelegationKey) -> String {
    let start = plan.start.map(sas_time).unwrap_or_default();
    [
        plan.permissions.as_str(),
        &start,
        &sas_time(plan.expiry),
        &plan.canonicalized_resource(),
        &key.signed_oid,
        &key.signed_tid,
        &key.signed_start,
        &key.signed_expiry,
        &key.signed_service,
        &key.signed_version,
        "", // saoid: authorized user object id
        "", // suoid: unauthorized user object id
        "", // scid: correlation id
        plan.ip_range.as_deref().unwrap_or_default(),
        plan.protocol,
        SAS_VERSION,
        plan.resource.code(),
        "", // snapshot time / version id
        "", // ses: encryption scope
        "", // rscc
        "", // rscd
        "", // rsce
        "", // rscl
        "", // rsct
    ]
    .join("\n")
}

/// Base64(HMAC-SHA256(Base64Decode(key), string_to_sign)).
pub fn sign(key_base64: &SecretString, string_to_sign: &str) -> Result<String, GatewayError> {
    let key = BASE64
        .decode(key_base64.expose_secret())
        .map_err(|_| GatewayError::Upstream(format!("{UPSTREAM} delegation key is not base64")))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| GatewayError::Upstream("HMAC rejected the delegation key".into()))?;
    mac.update(string_to_sign.as_bytes());
    Ok(BASE64.encode(mac.finalize().into_bytes()))
}

/// The user delegation SAS query string (no `?`).
pub fn user_delegation_token(
    plan: &SasPlan,
    key: &UserDelegationKey,
) -> Result<SecretString, GatewayError> {
    let signature = sign(&key.value, &user_delegation_string_to_sign(plan, key))?;
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("sv", SAS_VERSION);
    q.append_pair("sr", plan.resource.code());
    if let Some(start) = plan.start {
        q.append_pair("st", &sas_time(start));
    }
    q.append_pair("se", &sas_time(plan.expiry));
    q.append_pair("sp", &plan.permissions);
    if let Some(ip) = &plan.ip_range {
        q.append_pair("sip", ip);
    }
    q.append_pair("spr", plan.protocol);
    q.append_pair("skoid", &key.signed_oid);
    q.append_pair("sktid", &key.signed_tid);
    q.append_pair("skt", &key.signed_start);
    q.append_pair("ske", &key.signed_expiry);
    q.append_pair("sks", &key.signed_service);
    q.append_pair("skv", &key.signed_version);
    q.append_pair("sig", &signature);
    Ok(SecretString::from(q.finish()))
}

/// Get User Delegation Key for the SAS window: valid from now (or the SAS
/// start, if later) until the SAS expiry.
pub async fn get_user_delegation_key(
    up: &Upstream,
    budget: Option<Duration>,
    selector: &IdentitySelector,
    plan: &SasPlan,
) -> Result<UserDelegationKey, GatewayError> {
    let mut url = plan.endpoint.clone();
    if let Ok(mut s) = url.path_segments_mut() {
        s.pop_if_empty().push("");
    }
    url.set_query(Some("restype=service&comp=userdelegationkey"));
    let now = whole_seconds(up.clock.wall());
    let key_start = plan.start.map_or(now, |s| s.max(now));
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
        sas_time(key_start),
        sas_time(plan.expiry)
    );
    let token = storage_token(up, budget, selector).await?;
    let response = send_with_retry(up, budget, UPSTREAM, BodyUse::Buffered, || {
        up.http
            .post(url.clone())
            .bearer_auth(token.secret())
            .header("x-ms-version", STORAGE_API_VERSION)
            .header("x-ms-date", ms_date(up))
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(body.clone())
    })
    .await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = read_capped(response, up.config.max_body_bytes, UPSTREAM).await?;
    let what = format!("the user delegation key of {}", display_url(&plan.endpoint));
    if status != 200 {
        return Err(storage_error(status, &headers, &text, &what));
    }
    let xml = std::str::from_utf8(&text).map_err(|_| {
        GatewayError::Upstream(format!("{UPSTREAM} answered {what} with a non-UTF-8 body"))
    })?;
    parse_user_delegation_key(xml)
}

/// Issues a SAS as planned.
pub async fn issue(
    up: &Upstream,
    budget: Option<Duration>,
    selector: &IdentitySelector,
    cloud: Cloud,
    plan: &SasPlan,
) -> Result<IssuedSas, GatewayError> {
    let token = match plan.method {
        SasMethod::UserDelegation => {
            let key = get_user_delegation_key(up, budget, selector, plan).await?;
            user_delegation_token(plan, &key)?
        }
        SasMethod::ArmListServiceSas => {
            let parameters = ServiceSasParameters {
                canonicalized_resource: plan.canonicalized_resource(),
                signed_resource: plan.resource.code().into(),
                signed_permission: plan.permissions.clone(),
                signed_protocol: plan.protocol.into(),
                signed_expiry: sas_time(plan.expiry),
                signed_start: plan.start.map(sas_time),
                signed_ip: plan.ip_range.clone(),
            };
            let call = ArmCall {
                up,
                budget,
                selector,
                cloud,
            };
            arm::list_service_sas(
                call,
                &plan.subscription_id,
                &plan.resource_group,
                &plan.account,
                &parameters,
            )
            .await?
        }
    };
    let url = format!("{}?{}", plan.resource_url(), token.expose_secret());
    Ok(IssuedSas {
        token,
        url: SecretString::from(url),
        expires_on: plan.expiry,
        signed_resource: plan.resource,
        signed_permissions: plan.permissions.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use identity_gateway_core::{clock::ManualClock, http::UpstreamConfig};
    use std::sync::Arc;

    fn state_with(config: UpstreamConfig) -> Upstream {
        testing::upstream(config, &ManualClock::new(), Arc::new(testing::NoTokens))
    }

    /// The default `sas.max_expiry_secs`.
    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn up() -> Upstream {
        let config = UpstreamConfig {
            allowed_hosts: vec!["127.0.0.1:10000".into()],
            ..UpstreamConfig::default()
        };
        state_with(config)
    }

    fn at(rfc3339: &str) -> SystemTime {
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .into()
    }

    fn key() -> UserDelegationKey {
        parse_user_delegation_key(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey>\
             <SignedOid>6a8f3c2e-1111-4222-8333-944455556666</SignedOid>\
             <SignedTid>72f988bf-86f1-41af-91ab-2d7cd011db47</SignedTid>\
             <SignedStart>2026-11-22T02:00:00Z</SignedStart>\
             <SignedExpiry>2026-11-22T03:00:00Z</SignedExpiry>\
             <SignedService>b</SignedService><SignedVersion>2025-11-05</SignedVersion>\
             <Value>c2VjcmV0LWtleS0zMi1ieXRlcy1sb25nLi4uLi4uLi4=</Value></UserDelegationKey>",
        )
        .unwrap()
    }

    fn blob_plan() -> SasPlan {
        SasPlan {
            method: SasMethod::UserDelegation,
            account: "myaccount".into(),
            container: "music".into(),
            blob: Some("dir/song one.mp3".into()),
            resource: SignedResource::Blob,
            permissions: "rw".into(),
            start: None,
            expiry: at("2026-11-22T03:00:00Z"),
            ip_range: Some("10.0.0.1-10.0.0.9".into()),
            protocol: "https",
            endpoint: Url::parse("https://myaccount.blob.core.windows.net").unwrap(),
            subscription_id: String::new(),
            resource_group: String::new(),
        }
    }

    #[test]
    fn user_delegation_string_to_sign_follows_the_24_line_layout() {
        let sts = user_delegation_string_to_sign(&blob_plan(), &key());
        // Written out by hand from the documented field order.
        let expected = "rw\n\
                        \n\
                        2026-11-22T03:00:00Z\n\
                        /blob/myaccount/music/dir/song one.mp3\n\
                        6a8f3c2e-1111-4222-8333-944455556666\n\
                        72f988bf-86f1-41af-91ab-2d7cd011db47\n\
                        2026-11-22T02:00:00Z\n\
                        2026-11-22T03:00:00Z\n\
                        b\n\
                        2025-11-05\n\
                        \n\
                        \n\
                        \n\
                        10.0.0.1-10.0.0.9\n\
                        https\n\
                        2025-05-05\n\
                        b\n\
                        \n\
                        \n\
                        \n\
                        \n\
                        \n\
                        \n";
        assert_eq!(sts, expected);
        assert_eq!(sts.split('\n').count(), 24);
    }

    #[test]
    fn signature_is_hmac_sha256_of_the_string_to_sign() {
        // Known vector: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog")
        // = f7bc83f4...d8, base64 below.
        let fox_key = SecretString::from(BASE64.encode(b"key"));
        assert_eq!(
            sign(&fox_key, "The quick brown fox jumps over the lazy dog").unwrap(),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
        let token = user_delegation_token(&blob_plan(), &key()).unwrap();
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(token.expose_secret().as_bytes())
                .into_owned()
                .collect();
        assert_eq!(pairs["sv"], SAS_VERSION);
        assert_eq!(pairs["sr"], "b");
        assert_eq!(pairs["sp"], "rw");
        assert_eq!(pairs["se"], "2026-11-22T03:00:00Z");
        assert_eq!(pairs["skoid"], "6a8f3c2e-1111-4222-8333-944455556666");
        assert_eq!(pairs["skv"], "2025-11-05");
        assert_eq!(pairs["spr"], "https");
        assert!(!pairs.contains_key("st"));
        let sts = user_delegation_string_to_sign(&blob_plan(), &key());
        assert_eq!(pairs["sig"], sign(&key().value, &sts).unwrap());
        assert!(token
            .expose_secret()
            .contains("se=2026-11-22T03%3A00%3A00Z"));
    }

    #[test]
    fn permissions_are_reordered_and_checked_per_resource() {
        use SasMethod::*;
        use SignedResource::*;
        assert_eq!(
            canonical_permissions("wr", Blob, UserDelegation).unwrap(),
            "rw"
        );
        assert_eq!(
            canonical_permissions("ldrwr", Container, UserDelegation).unwrap(),
            "rwdl"
        );
        assert_eq!(
            canonical_permissions("ipoemtfdlyxwcar", Container, UserDelegation).unwrap(),
            "racwdxyltfmeopi"
        );
        assert_eq!(
            canonical_permissions("lwr", Container, ArmListServiceSas).unwrap(),
            "rwl"
        );
        for (raw, resource, method) in [
            ("", Blob, UserDelegation),
            ("rl", Blob, UserDelegation),
            ("rf", Blob, UserDelegation),
            ("rz", Container, UserDelegation),
            ("R", Blob, UserDelegation),
            ("rt", Blob, ArmListServiceSas),
            ("rl", Blob, ArmListServiceSas),
        ] {
            let err = canonical_permissions(raw, resource, method).unwrap_err();
            assert!(
                matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "permissions"),
                "{raw}: {err}"
            );
        }
    }

    #[test]
    fn names_are_validated() {
        assert!(account_name("devstoreaccount1").is_ok());
        for bad in ["ab", "UPPER1", "has-dash", &"a".repeat(25)] {
            assert!(account_name(bad).is_err(), "{bad}");
        }
        assert!(container_name("my-container-1").is_ok());
        assert!(container_name("$root").is_ok());
        for bad in ["ab", "-ab", "ab-", "a--b", "Caps", &"a".repeat(64)] {
            assert!(container_name(bad).is_err(), "{bad}");
        }
        assert!(blob_name("dir/sub/file name (1).csv").is_ok());
        for bad in [
            "",
            "/lead",
            "trail/",
            "a//b",
            "a/../b",
            "./a",
            "end.",
            "a\\b",
            "a\nb",
            &"x".repeat(1025),
        ] {
            assert!(blob_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(ip_range("").unwrap(), None);
        assert!(ip_range("10.0.0.1").is_ok());
        assert!(ip_range("10.0.0.1-10.0.0.9").is_ok());
        assert!(ip_range("10.0.0.9-10.0.0.1").is_err());
        assert!(ip_range("::1").is_err());
        assert!(ip_range("10.0.0.1-").is_err());
    }

    #[test]
    fn delegation_key_xml_is_parsed_and_checked() {
        let k = key();
        assert_eq!(k.signed_start, "2026-11-22T02:00:00Z");
        assert_eq!(k.signed_service, "b");
        let debug = format!("{k:?}");
        assert!(
            debug.contains("redacted") && !debug.contains("c2VjcmV0"),
            "{debug}"
        );
        assert!(parse_user_delegation_key(
            "<UserDelegationKey><SignedOid>x</SignedOid></UserDelegationKey>"
        )
        .is_err());
        assert!(parse_user_delegation_key("not xml at all").is_err());
        let bad_value = "<UserDelegationKey><SignedOid>o</SignedOid><SignedTid>t</SignedTid><SignedStart>s</SignedStart>\
            <SignedExpiry>e</SignedExpiry><SignedService>b</SignedService><SignedVersion>v</SignedVersion><Value>***</Value></UserDelegationKey>";
        let err = parse_user_delegation_key(bad_value).unwrap_err();
        assert!(!err.to_string().contains("***"), "{err}");
    }

    fn input() -> SasInput {
        SasInput {
            account: "devstoreaccount1".into(),
            container: "data".into(),
            blob: "a/b.txt".into(),
            permissions: "wr".into(),
            ..SasInput::default()
        }
    }

    #[test]
    fn plans_validate_lifetime_endpoint_and_arm_fields() {
        let s = up();
        let p = plan(&s, SasMethod::UserDelegation, &input(), Cloud::Public, WEEK).unwrap();
        assert_eq!(p.permissions, "rw");
        assert_eq!(p.resource, SignedResource::Blob);
        assert_eq!(
            p.endpoint.as_str(),
            "https://devstoreaccount1.blob.core.windows.net/"
        );
        assert_eq!(
            p.resource_url().as_str(),
            "https://devstoreaccount1.blob.core.windows.net/data/a/b.txt"
        );
        assert_eq!(
            p.canonicalized_resource(),
            "/blob/devstoreaccount1/data/a/b.txt"
        );
        assert_eq!(p.expiry, whole_seconds(s.clock.wall() + DEFAULT_LIFETIME));

        let path_style = SasInput {
            blob_endpoint: "https://127.0.0.1:10000/devstoreaccount1".into(),
            blob: String::new(),
            permissions: "rl".into(),
            ..input()
        };
        let p = plan(
            &s,
            SasMethod::UserDelegation,
            &path_style,
            Cloud::Public,
            WEEK,
        )
        .unwrap();
        assert_eq!(
            p.resource_url().as_str(),
            "https://127.0.0.1:10000/devstoreaccount1/data"
        );
        assert_eq!(p.canonicalized_resource(), "/blob/devstoreaccount1/data");

        // Another account's endpoint with a trailing dot is still another
        // account's: the delegation key would come from there.
        let dotted = SasInput {
            blob_endpoint: "https://victim.blob.core.windows.net./".into(),
            ..input()
        };
        let err = plan(&s, SasMethod::UserDelegation, &dotted, Cloud::Public, WEEK).unwrap_err();
        assert!(err.to_string().contains("is not account"), "{err}");

        let gov = plan(
            &s,
            SasMethod::UserDelegation,
            &input(),
            Cloud::UsGovernment,
            WEEK,
        )
        .unwrap();
        assert_eq!(
            gov.endpoint.host_str(),
            Some("devstoreaccount1.blob.core.usgovcloudapi.net")
        );

        let field_of = |input: SasInput, method| match plan(&s, method, &input, Cloud::Public, WEEK)
        {
            Err(GatewayError::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(
            field_of(
                SasInput {
                    expires_in: Some(week + Duration::from_secs(1)),
                    ..input()
                },
                SasMethod::UserDelegation
            ),
            "expires_in"
        );
        assert_eq!(
            field_of(
                SasInput {
                    expires_in: Some(Duration::ZERO),
                    ..input()
                },
                SasMethod::UserDelegation
            ),
            "expires_in"
        );
        assert_eq!(
            field_of(
                SasInput {
                    blob_endpoint: "https://evil.example/devstoreaccount1".into(),
                    ..input()
                },
                SasMethod::UserDelegation
            ),
            "blob_endpoint"
        );
        assert_eq!(
            field_of(
                SasInput {
                    blob_endpoint: "https://127.0.0.1:10000/otheraccount".into(),
                    ..input()
                },
                SasMethod::UserDelegation
            ),
            "blob_endpoint"
        );
        assert_eq!(
            field_of(
                SasInput {
                    blob_endpoint: "https://other.blob.core.windows.net".into(),
                    ..input()
                },
                SasMethod::UserDelegation
            ),
            "blob_endpoint"
        );
        assert_eq!(
            field_of(input(), SasMethod::ArmListServiceSas),
            "subscription_id"
        );
        assert_eq!(
            field_of(
                SasInput {
                    subscription_id: "6f1d2b8e-3c4a-4e5f-9a0b-1c2d3e4f5a6b".into(),
                    ..input()
                },
                SasMethod::ArmListServiceSas
            ),
            "resource_group"
        );
        assert_eq!(
            field_of(
                SasInput {
                    start: Some(s.clock.wall() + Duration::from_secs(7200)),
                    ..input()
                },
                SasMethod::UserDelegation
            ),
            "start"
        );

        let strict = up();
        assert!(matches!(
            plan(&strict, SasMethod::ArmListServiceSas, &input(), Cloud::Public, Duration::from_secs(600)),
            Err(GatewayError::InvalidArgument { field, .. }) if field == "expires_in"
        ));
    }

    #[test]
    fn issued_sas_debug_is_redacted() {
        let issued = IssuedSas {
            token: SecretString::from("sv=x&sig=SECRET".to_string()),
            url: SecretString::from("https://a/b?sig=SECRET".to_string()),
            expires_on: UNIX_EPOCH,
            signed_resource: SignedResource::Blob,
            signed_permissions: "r".into(),
        };
        assert!(!format!("{issued:?}").contains("SECRET"));
    }
}
