//! A fake of Azure Resource Manager: Resource Groups – Get and Storage
//! Accounts – List Service SAS, over HTTPS, as section 6 of the wire contracts
//! describes them.
//!
//! It owns ARM's front door behaviour (bearer-token checks with ARM's 401
//! codes and challenge, `api-version`, case-insensitive path segments, RBAC by
//! the token's `oid` with ARM's `AuthorizationFailed` message, scripted
//! throttling) and a tiny resource model (subscriptions, resource groups,
//! storage accounts with keys). `listServiceSas` mints a real service SAS,
//! signed with the account key, that a real Storage peer (Azurite) accepts.
//! It records every request so tests can assert what reached it.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, io,
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use time::{format_description::well_known::Rfc3339, macros::format_description, OffsetDateTime};

use crate::{
    authority::{TokenAuthority, VerifyError},
    front_door::{
        bearer::{self, BearerRefusal, TokenSeen},
        faults::with_retry_after,
        lock, FaultScript, RequestLog,
    },
    http::{serve_https, RunningServer},
    sample,
    tls::TestCa,
};

/// Audiences ARM accepts (with and without the trailing slash).
pub const ARM_AUDIENCES: [&str; 4] = [
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
];

/// RBAC action of Resource Groups – Get.
pub const ACTION_READ_RESOURCE_GROUP: &str =
    "Microsoft.Resources/subscriptions/resourceGroups/read";
/// RBAC action of Storage Accounts – List Service SAS.
pub const ACTION_LIST_SERVICE_SAS: &str = "Microsoft.Storage/storageAccounts/listServiceSas/action";

/// Azurite's well-known development account (public, from its docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, from its docs).
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Subscription of the sample data `--emulator` serves ([`sample::SUBSCRIPTION_ID`]).
pub const SAMPLE_SUBSCRIPTION_ID: &str = sample::SUBSCRIPTION_ID;
/// Resource group of the sample data ([`sample::RESOURCE_GROUP`]).
pub const SAMPLE_RESOURCE_GROUP: &str = sample::RESOURCE_GROUP;
/// A second sample group, managed by another resource (shows `managedBy`).
pub const SAMPLE_MANAGED_RESOURCE_GROUP: &str = "emulator-rg-managed";

/// The `sv` of the SAS tokens the fake mints. Service SAS string-to-sign for
/// 2020-12-06 and later (16 lines).
pub const SAS_VERSION: &str = "2025-05-05";

/// A resource group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGroup {
    pub name: String,
    pub location: String,
    pub tags: BTreeMap<String, String>,
    pub managed_by: Option<String>,
}

impl ResourceGroup {
    /// A group in `location` with no tags.
    pub fn new(name: &str, location: &str) -> Self {
        Self {
            name: name.to_string(),
            location: location.to_string(),
            tags: BTreeMap::new(),
            managed_by: None,
        }
    }

    /// Adds a tag.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.insert(key.to_string(), value.to_string());
        self
    }
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path exactly as sent (casing preserved).
    pub path: String,
    pub query: Option<String>,
    pub body: String,
    /// The `oid` of the bearer token, when it verified.
    pub token_oid: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

/// A scripted answer given instead of the real one, in order.
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub code: String,
    pub message: String,
}

impl Fault {
    /// ARM's throttling answer.
    pub fn throttled(retry_after_secs: u64) -> Self {
        Self {
            status: 429,
            retry_after_secs: Some(retry_after_secs),
            code: "TooManyRequests".into(),
            message: "The request is being throttled as the limit has been reached for operation type - Read_ObservationWindow_00:05:00. For more information, see - https://aka.ms/srpthrottlinglimits".into(),
        }
    }
}

struct StorageAccount {
    name: String,
    keys: [Vec<u8>; 2],
}

#[derive(Default)]
struct Subscription {
    /// Keyed by lower-cased name (ARM names are case-insensitive).
    groups: BTreeMap<String, ResourceGroup>,
    /// Keyed by (lower-cased group, lower-cased account).
    accounts: HashMap<(String, String), StorageAccount>,
}

struct Grant {
    object_id: String,
    /// An action, or `*` for every action.
    action: String,
    /// A scope prefix such as `/subscriptions/<id>`.
    scope: String,
}

#[derive(Default)]
struct Data {
    subscriptions: HashMap<String, Subscription>,
    grants: Vec<Grant>,
}

struct Shared {
    authority: Arc<TokenAuthority>,
    data: Mutex<Data>,
    faults: FaultScript<Fault>,
    log: RequestLog<RecordedRequest>,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.data)
    }
}

/// The running ARM fake.
pub struct ArmFake {
    server: RunningServer,
    shared: Arc<Shared>,
}

impl fmt::Debug for ArmFake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmFake")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl ArmFake {
    /// Starts an empty fake over HTTPS on 127.0.0.1 (a free port), with a
    /// certificate from `ca`.
    pub async fn start(authority: Arc<TokenAuthority>, ca: &TestCa) -> io::Result<Self> {
        Self::start_on(authority, ca, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            authority,
            data: Mutex::new(Data::default()),
            faults: FaultScript::default(),
            log: RequestLog::default(),
        });
        let server = serve_https(
            router(Arc::clone(&shared)),
            port,
            ca.server_config(&[b"h2", b"http/1.1"]),
        )
        .await?;
        Ok(Self { server, shared })
    }

    /// Starts the fake with the sample data (see [`seed_sample`]).
    pub async fn sample(authority: Arc<TokenAuthority>, ca: &TestCa) -> io::Result<Self> {
        Self::sample_on(authority, ca, 0).await
    }

    /// Like [`sample`](Self::sample), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn sample_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> io::Result<Self> {
        let fake = Self::start_on(authority, ca, port).await?;
        seed_sample(&fake);
        Ok(fake)
    }

    /// `https://localhost:<port>`: the value for `upstream.arm_endpoint`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// `localhost:<port>`: the value for `upstream.allowed_hosts`.
    pub fn host_port(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Adds a subscription (no-op if it exists).
    pub fn add_subscription(&self, subscription_id: &str) {
        self.shared
            .data()
            .subscriptions
            .entry(subscription_id.to_ascii_lowercase())
            .or_default();
    }

    /// Adds (or replaces) a resource group, creating the subscription if needed.
    pub fn add_resource_group(&self, subscription_id: &str, group: ResourceGroup) {
        self.shared
            .data()
            .subscriptions
            .entry(subscription_id.to_ascii_lowercase())
            .or_default()
            .groups
            .insert(group.name.to_ascii_lowercase(), group);
    }

    /// Adds a storage account to an existing group, with base64 keys
    /// (`key2` defaults to `key1`). Returns false if the group does not exist
    /// or a key is not base64.
    pub fn add_storage_account(
        &self,
        subscription_id: &str,
        resource_group: &str,
        name: &str,
        key1_base64: &str,
        key2_base64: Option<&str>,
    ) -> bool {
        let (Ok(key1), Ok(key2)) = (
            BASE64.decode(key1_base64),
            BASE64.decode(key2_base64.unwrap_or(key1_base64)),
        ) else {
            return false;
        };
        let mut data = self.shared.data();
        let Some(sub) = data
            .subscriptions
            .get_mut(&subscription_id.to_ascii_lowercase())
        else {
            return false;
        };
        let rg = resource_group.to_ascii_lowercase();
        if !sub.groups.contains_key(&rg) {
            return false;
        }
        sub.accounts.insert(
            (rg, name.to_ascii_lowercase()),
            StorageAccount {
                name: name.to_string(),
                keys: [key1, key2],
            },
        );
        true
    }

    /// Lets `object_id` perform `action` (or `*`) at `scope` and below,
    /// like an RBAC role assignment.
    pub fn grant(&self, object_id: &str, action: &str, scope: &str) {
        self.shared.data().grants.push(Grant {
            object_id: object_id.to_ascii_lowercase(),
            action: action.to_string(),
            scope: scope.trim_end_matches('/').to_ascii_lowercase(),
        });
    }

    /// Queues a scripted answer; each request consumes one, in order.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.faults.push([fault]);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.log.snapshot()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }
}

/// Seeds the sample data `--emulator` serves: subscription
/// [`SAMPLE_SUBSCRIPTION_ID`] with resource groups [`SAMPLE_RESOURCE_GROUP`]
/// (eastus, tags env=emulator, owner=identity-gateway) and
/// [`SAMPLE_MANAGED_RESOURCE_GROUP`] (westeurope, managedBy set), the storage
/// account [`AZURITE_ACCOUNT`] in `emulator-rg` keyed with Azurite's
/// well-known key (so its SAS tokens work against a local Azurite), and role
/// assignments: the VM's system-assigned identity is Owner-like (`*`) on the
/// subscription; `app-identity` may only read resource groups (so
/// listServiceSas with it shows ARM's 403 AuthorizationFailed).
pub fn seed_sample(fake: &ArmFake) {
    fake.add_resource_group(
        SAMPLE_SUBSCRIPTION_ID,
        ResourceGroup::new(SAMPLE_RESOURCE_GROUP, "eastus")
            .tag("env", "emulator")
            .tag("owner", "identity-gateway"),
    );
    let mut managed = ResourceGroup::new(SAMPLE_MANAGED_RESOURCE_GROUP, "westeurope");
    managed.managed_by = Some(format!(
        "/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/{SAMPLE_RESOURCE_GROUP}/providers/Microsoft.Databricks/workspaces/emulator-ws"
    ));
    fake.add_resource_group(SAMPLE_SUBSCRIPTION_ID, managed);
    fake.add_storage_account(
        SAMPLE_SUBSCRIPTION_ID,
        SAMPLE_RESOURCE_GROUP,
        AZURITE_ACCOUNT,
        AZURITE_ACCOUNT_KEY,
        None,
    );
    let subscription = format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}");
    fake.grant(sample::SYSTEM_OBJECT_ID, "*", &subscription);
    fake.grant(
        sample::USER_OBJECT_ID,
        ACTION_READ_RESOURCE_GROUP,
        &subscription,
    );
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let (response, token_oid) = answer(&shared, &method, &uri, &headers, &body);
    shared.log.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        body: body_text,
        token_oid,
        status: response.status().as_u16(),
    });
    response
}

fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<String>) {
    if let Some(fault) = shared.faults.next() {
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        let response = arm_error(status, &fault.code, &fault.message);
        return (with_retry_after(response, fault.retry_after_secs), None);
    }

    let claims = match authenticate(&shared.authority, headers) {
        Ok(claims) => claims,
        Err(refusal) => return (refusal.into_response(), None),
    };
    let oid = Some(claims.oid.clone());

    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let api_version = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.as_str());
    match api_version {
        None => {
            return (
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                ),
                oid,
            )
        }
        Some(v) if !valid_api_version(v) => {
            return (
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidApiVersionParameter",
                    &format!("The api-version '{v}' is invalid. The supported versions are '2025-04-01,2024-11-01,2024-07-01,2024-03-01,2023-07-01,2022-09-01,2021-04-01,2019-10-01'."),
                ),
                oid,
            )
        }
        Some(_) => {}
    }

    let raw: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let lower: Vec<String> = raw.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let response = match (method, lower.as_slice()) {
        (&Method::GET, ["subscriptions", _, "resourcegroups", _]) => {
            get_resource_group(shared, &claims, &raw[1], &raw[3])
        }
        (
            &Method::POST,
            ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.storage", "storageaccounts", _, "listservicesas"],
        ) => list_service_sas(shared, &claims, &raw[1], &raw[3], &raw[7], body),
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!(
                "The resource type could not be found for '{} {}' in the emulator.",
                method,
                uri.path()
            ),
        ),
    };
    (response, oid)
}

/// ARM api-versions are dates, optionally with a `-preview` suffix.
fn valid_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// A refusal from ARM's front door: a 401 with a challenge or a 403.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `error_description` of the 401 challenge.
    challenge: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let response = arm_error(self.status, self.code, &self.message);
        match self.challenge {
            Some(description) => bearer::with_challenge(
                response,
                &format!(
                    "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"{description}\""
                ),
            ),
            None => response,
        }
    }
}

fn authenticate(
    authority: &TokenAuthority,
    headers: &HeaderMap,
) -> Result<crate::authority::Claims, Refusal> {
    let token = match bearer::presented(headers) {
        Ok(token) => token,
        // ARM verifies an empty token, and refuses it as invalid.
        Err(BearerRefusal::EmptyToken) => "",
        Err(BearerRefusal::Missing | BearerRefusal::Unreadable) => {
            return Err(unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                "The authentication failed because of missing 'Authorization' header.",
            ))
        }
        Err(_) => return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            "The authentication failed because of an invalid 'Authorization' header format.",
        )),
    };
    bearer::verify(authority, token, &ARM_AUDIENCES, &mut TokenSeen::default())
        .map_err(|e| match e {
            VerifyError::WrongAudience { actual, .. } => unauthorized(
                "InvalidAuthenticationTokenAudience",
                &format!(
                    "The access token has been obtained for wrong audience or resource '{actual}'. It should exactly match with one of the allowed audiences '{}'.",
                    ARM_AUDIENCES.join("','")
                ),
                "The access token has been obtained for wrong audience or resource.",
            ),
            VerifyError::Expired => {
                let now = OffsetDateTime::now_utc();
                unauthorized(
                    "ExpiredAuthenticationToken",
                    &format!(
                        "The access token expiry UTC time is earlier than current UTC time '{}'.",
                        now.format(&Rfc3339).unwrap_or_default()
                    ),
                    "The access token has expired.",
                )
            }
            VerifyError::NotYetValid => unauthorized(
                "InvalidAuthenticationToken",
                "The access token is not valid yet.",
                "The access token is not valid yet.",
            ),
            VerifyError::BadToken(_) => unauthorized(
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                "The access token is invalid.",
            ),
        })
}

fn unauthorized(code: &'static str, message: &str, description: &'static str) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        code,
        message: message.to_string(),
        challenge: Some(description),
    }
}

fn authorize(
    shared: &Shared,
    claims: &crate::authority::Claims,
    action: &str,
    scope: &str,
) -> Result<(), Refusal> {
    let oid = claims.oid.to_ascii_lowercase();
    let scope_lower = scope.to_ascii_lowercase();
    let allowed = shared.data().grants.iter().any(|g| {
        g.object_id == oid
            && (g.action == "*" || g.action.eq_ignore_ascii_case(action))
            && (scope_lower == g.scope || scope_lower.starts_with(&format!("{}/", g.scope)))
    });
    if allowed {
        Ok(())
    } else {
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "AuthorizationFailed",
            message: format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                claims.appid, claims.oid
            ),
            challenge: None,
        })
    }
}

fn get_resource_group(
    shared: &Shared,
    claims: &crate::authority::Claims,
    subscription: &str,
    name: &str,
) -> Response {
    let scope = format!("/subscriptions/{subscription}/resourceGroups/{name}");
    if let Err(denied) = authorize(shared, claims, ACTION_READ_RESOURCE_GROUP, &scope) {
        return denied.into_response();
    }
    let data = shared.data();
    let Some(sub) = data.subscriptions.get(&subscription.to_ascii_lowercase()) else {
        return subscription_not_found(subscription);
    };
    let Some(group) = sub.groups.get(&name.to_ascii_lowercase()) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{name}' could not be found."),
        );
    };
    let mut body = json!({
        "id": format!("/subscriptions/{subscription}/resourceGroups/{}", group.name),
        "name": group.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": group.location,
        "properties": {"provisioningState": "Succeeded"},
    });
    if let Some(managed_by) = &group.managed_by {
        body["managedBy"] = json!(managed_by);
    }
    if !group.tags.is_empty() {
        body["tags"] = json!(group.tags);
    }
    arm_json(StatusCode::OK, &body)
}

/// `ServiceSasParameters` of the Storage RP.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceSasParameters {
    canonicalized_resource: Option<String>,
    signed_resource: Option<String>,
    signed_permission: Option<String>,
    signed_ip: Option<String>,
    signed_protocol: Option<String>,
    signed_start: Option<String>,
    signed_expiry: Option<String>,
    signed_identifier: Option<String>,
    key_to_sign: Option<String>,
    rscc: Option<String>,
    rscd: Option<String>,
    rsce: Option<String>,
    rscl: Option<String>,
    rsct: Option<String>,
}

fn list_service_sas(
    shared: &Shared,
    claims: &crate::authority::Claims,
    subscription: &str,
    group: &str,
    account: &str,
    body: &[u8],
) -> Response {
    let scope = format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{account}"
    );
    if let Err(denied) = authorize(shared, claims, ACTION_LIST_SERVICE_SAS, &scope) {
        return denied.into_response();
    }
    let params: ServiceSasParameters = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &format!("The request content was invalid and could not be deserialized: '{e}'."),
            )
        }
    };
    let key = {
        let data = shared.data();
        let Some(sub) = data.subscriptions.get(&subscription.to_ascii_lowercase()) else {
            return subscription_not_found(subscription);
        };
        let rg = group.to_ascii_lowercase();
        if !sub.groups.contains_key(&rg) {
            return arm_error(
                StatusCode::NOT_FOUND,
                "ResourceGroupNotFound",
                &format!("Resource group '{group}' could not be found."),
            );
        }
        let Some(acct) = sub.accounts.get(&(rg, account.to_ascii_lowercase())) else {
            return arm_error(
                StatusCode::NOT_FOUND,
                "ResourceNotFound",
                &format!("The Resource 'Microsoft.Storage/storageAccounts/{account}' under resource group '{group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"),
            );
        };
        let index = match params.key_to_sign.as_deref() {
            None | Some("key1") => 0,
            Some("key2") => 1,
            Some(_) => return invalid_values("keyToSign"),
        };
        (acct.name.clone(), acct.keys[index].clone())
    };
    match mint_service_sas(&key.0, &key.1, &params) {
        Ok(token) => arm_json(StatusCode::OK, &json!({ "serviceSasToken": token })),
        Err(field) => invalid_values(field),
    }
}

/// Builds and signs a blob service SAS the way the Storage RP does: the
/// 2020-12-06+ service SAS string-to-sign, HMAC-SHA256 with the account key.
/// Returns the query string (no `?`), or the offending parameter's name.
fn mint_service_sas(
    account: &str,
    key: &[u8],
    p: &ServiceSasParameters,
) -> Result<String, &'static str> {
    let resource = p
        .canonicalized_resource
        .as_deref()
        .ok_or("canonicalizedResource")?;
    let prefix = format!("/blob/{account}/");
    let Some(path) = resource.strip_prefix(&prefix) else {
        return Err("canonicalizedResource");
    };
    let (container, blob) = match path.split_once('/') {
        Some((c, b)) => (c, Some(b)),
        None => (path, None),
    };
    if container.is_empty() || blob.is_some_and(str::is_empty) {
        return Err("canonicalizedResource");
    }
    let signed_resource = match (p.signed_resource.as_deref(), blob) {
        (Some("b"), Some(_)) => "b",
        (Some("c"), None) => "c",
        _ => return Err("signedResource"),
    };
    let permissions = p.signed_permission.clone().unwrap_or_default();
    if permissions.is_empty() && p.signed_identifier.is_none()
        || !permissions.chars().all(|c| "racwdxyltfmeopi".contains(c))
    {
        return Err("signedPermission");
    }
    let start = p
        .signed_start
        .as_deref()
        .map(sas_time)
        .transpose()
        .map_err(|_| "signedStart")?;
    let expiry = match p.signed_expiry.as_deref() {
        Some(e) => Some(sas_time(e).map_err(|_| "signedExpiry")?),
        None if p.signed_identifier.is_some() => None,
        None => return Err("signedExpiry"),
    };
    let protocol = match p.signed_protocol.as_deref() {
        None => None,
        Some(v @ ("https" | "https,http")) => Some(v),
        Some(_) => return Err("signedProtocol"),
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let string_to_sign = [
        permissions.clone(),
        start.clone().unwrap_or_default(),
        expiry.clone().unwrap_or_default(),
        resource.to_string(),
        opt(&p.signed_identifier),
        opt(&p.signed_ip),
        protocol.unwrap_or_default().to_string(),
        SAS_VERSION.to_string(),
        signed_resource.to_string(),
        String::new(), // snapshot time
        String::new(), // encryption scope
        opt(&p.rscc),
        opt(&p.rscd),
        opt(&p.rsce),
        opt(&p.rscl),
        opt(&p.rsct),
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "keyToSign")?;
    mac.update(string_to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());

    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("sv", SAS_VERSION);
    query.append_pair("sr", signed_resource);
    if let Some(st) = &start {
        query.append_pair("st", st);
    }
    if let Some(se) = &expiry {
        query.append_pair("se", se);
    }
    if !permissions.is_empty() {
        query.append_pair("sp", &permissions);
    }
    for (name, value) in [
        ("sip", &p.signed_ip),
        ("si", &p.signed_identifier),
        ("rscc", &p.rscc),
        ("rscd", &p.rscd),
        ("rsce", &p.rsce),
        ("rscl", &p.rscl),
        ("rsct", &p.rsct),
    ] {
        if let Some(v) = value {
            query.append_pair(name, v);
        }
    }
    if let Some(spr) = protocol {
        query.append_pair("spr", spr);
    }
    query.append_pair("sig", &signature);
    Ok(query.finish())
}

/// An ISO-8601 time as the SAS carries it: UTC, whole seconds, `Z`.
fn sas_time(value: &str) -> Result<String, ()> {
    let parsed = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| ())?;
    parsed
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|_| ())
}

fn invalid_values(field: &str) -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidValuesForRequestParameters",
        &format!("Values for request parameters are invalid: {field}."),
    )
}

fn subscription_not_found(subscription: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        &format!("The subscription '{subscription}' could not be found."),
    )
}

/// ARM's error envelope.
fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    arm_json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn arm_json(status: StatusCode, body: &serde_json::Value) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let routing = format!(
        "EASTUS:{}:{request_id}",
        OffsetDateTime::now_utc()
            .format(format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_default()
    );
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    for (name, value) in [
        ("x-ms-request-id", request_id.clone()),
        ("x-ms-correlation-request-id", request_id),
        ("x-ms-routing-request-id", routing),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Principal;
    use axum::body::Body;
    use std::time::Duration;
    use tower::ServiceExt;

    const OID: &str = "6a8f3c2e-1111-4222-8333-944455556666";
    const OTHER_OID: &str = "0b0b0b0b-2222-4333-8444-955566667777";

    fn principal(oid: &str) -> Principal {
        Principal {
            client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
            object_id: oid.into(),
            mirid:
                "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
                    .into(),
        }
    }

    struct Harness {
        shared: Arc<Shared>,
        authority: Arc<TokenAuthority>,
    }

    impl Harness {
        fn new() -> Self {
            let authority = Arc::new(TokenAuthority::generate(
                "72f988bf-86f1-41af-91ab-2d7cd011db47",
            ));
            let shared = Arc::new(Shared {
                authority: Arc::clone(&authority),
                data: Mutex::new(Data::default()),
                faults: FaultScript::default(),
                log: RequestLog::default(),
            });
            let h = Self { shared, authority };
            {
                let mut data = h.shared.data();
                let sub = data
                    .subscriptions
                    .entry(SAMPLE_SUBSCRIPTION_ID.into())
                    .or_default();
                sub.groups.insert(
                    SAMPLE_RESOURCE_GROUP.into(),
                    ResourceGroup::new(SAMPLE_RESOURCE_GROUP, "eastus").tag("env", "test"),
                );
                sub.accounts.insert(
                    (SAMPLE_RESOURCE_GROUP.into(), AZURITE_ACCOUNT.into()),
                    StorageAccount {
                        name: AZURITE_ACCOUNT.into(),
                        keys: [
                            BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap(),
                            BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap(),
                        ],
                    },
                );
                data.grants.push(Grant {
                    object_id: OID.into(),
                    action: "*".into(),
                    scope: format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}"),
                });
            }
            h
        }

        fn token(&self, oid: &str, audience: &str) -> String {
            self.authority
                .mint(
                    &principal(oid),
                    audience,
                    SystemTime::now(),
                    Duration::from_secs(3600),
                )
                .0
        }

        async fn call(
            &self,
            method: Method,
            path: &str,
            token: Option<&str>,
            body: &str,
        ) -> (StatusCode, HeaderMap, serde_json::Value) {
            let mut request = axum::http::Request::builder().method(method).uri(path);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = router(Arc::clone(&self.shared))
                .oneshot(request.body(Body::from(body.to_string())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (
                status,
                headers,
                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            )
        }
    }

    fn rg_path(name: &str) -> String {
        format!(
            "/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourcegroups/{name}?api-version=2021-04-01"
        )
    }

    #[tokio::test]
    async fn resource_group_is_served_case_insensitively() {
        let h = Harness::new();
        let token = h.token(OID, "https://management.azure.com/");
        let path = format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/EMULATOR-RG?api-version=2021-04-01");
        let (status, headers, body) = h.call(Method::GET, &path, Some(&token), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["name"], "emulator-rg");
        assert_eq!(body["location"], "eastus");
        assert_eq!(body["tags"]["env"], "test");
        assert_eq!(body["properties"]["provisioningState"], "Succeeded");
        assert_eq!(
            body["id"],
            format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/emulator-rg")
        );
        assert!(headers.contains_key("x-ms-request-id"));
        let recorded = h.shared.log.snapshot();
        assert_eq!(recorded.len(), 1);
        assert_eq!(
            recorded[0].path,
            format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/EMULATOR-RG")
        );
        assert_eq!(recorded[0].query.as_deref(), Some("api-version=2021-04-01"));
        assert_eq!(recorded[0].token_oid.as_deref(), Some(OID));
        assert_eq!(recorded[0].status, 200);
    }

    #[tokio::test]
    async fn missing_group_subscription_and_api_version() {
        let h = Harness::new();
        let token = h.token(OID, "https://management.azure.com/");
        let (status, _, body) = h
            .call(Method::GET, &rg_path("nope"), Some(&token), "")
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "ResourceGroupNotFound");
        assert_eq!(
            body["error"]["message"],
            "Resource group 'nope' could not be found."
        );

        let path = format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourcegroups/emulator-rg");
        let (status, _, body) = h.call(Method::GET, &path, Some(&token), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "MissingApiVersionParameter");

        let (status, _, body) = h
            .call(
                Method::GET,
                &format!("{path}?api-version=latest"),
                Some(&token),
                "",
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
    }

    #[tokio::test]
    async fn tokens_are_checked_like_arm() {
        let h = Harness::new();
        let (status, headers, body) = h.call(Method::GET, &rg_path("emulator-rg"), None, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "AuthenticationFailed");
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        assert!(
            challenge.starts_with(
                "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\""
            ),
            "{challenge}"
        );

        let storage = h.token(OID, "https://storage.azure.com/");
        let (status, _, body) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&storage), "")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'https://storage.azure.com/'"));

        let (expired, _) = h.authority.mint(
            &principal(OID),
            "https://management.azure.com/",
            SystemTime::now() - Duration::from_secs(7200),
            Duration::from_secs(3600),
        );
        let (status, _, body) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&expired), "")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "ExpiredAuthenticationToken");

        let foreign = TokenAuthority::generate("72f988bf-86f1-41af-91ab-2d7cd011db47")
            .mint(
                &principal(OID),
                "https://management.azure.com/",
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .0;
        let (status, _, body) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&foreign), "")
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

        // Both documented audiences work.
        let legacy = h.token(OID, "https://management.core.windows.net/");
        let (status, _, _) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&legacy), "")
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn rbac_is_by_object_id_with_arms_message() {
        let h = Harness::new();
        let token = h.token(OTHER_OID, "https://management.azure.com/");
        let (status, _, body) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&token), "")
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"]["code"], "AuthorizationFailed");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("with object id '{OTHER_OID}'")),
            "{message}"
        );
        assert!(message.contains(ACTION_READ_RESOURCE_GROUP), "{message}");
        assert!(
            message.contains(&format!(
                "over scope '/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/emulator-rg'"
            )),
            "{message}"
        );
    }

    #[tokio::test]
    async fn scripted_throttling_comes_first() {
        let h = Harness::new();
        h.shared.faults.push([Fault::throttled(7)]);
        let token = h.token(OID, "https://management.azure.com/");
        let (status, headers, body) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&token), "")
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers[header::RETRY_AFTER], "7");
        assert_eq!(body["error"]["code"], "TooManyRequests");
        let (status, _, _) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&token), "")
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    fn sas_path(account: &str, casing: &str) -> String {
        format!(
            "/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/emulator-rg/providers/Microsoft.Storage/storageAccounts/{account}/{casing}?api-version=2023-05-01"
        )
    }

    #[tokio::test]
    async fn list_service_sas_signs_with_the_account_key() {
        let h = Harness::new();
        let token = h.token(OID, "https://management.azure.com/");
        let body = json!({
            "canonicalizedResource": "/blob/devstoreaccount1/music/song.mp3",
            "signedResource": "b",
            "signedPermission": "rw",
            "signedProtocol": "https",
            "signedExpiry": "2030-05-24T11:32:48.8457197Z",
            "signedStart": "2030-05-24T10:00:00Z",
            "signedIp": "10.0.0.1-10.0.0.9"
        })
        .to_string();
        for casing in ["listServiceSas", "ListServiceSas"] {
            let (status, _, answer) = h
                .call(
                    Method::POST,
                    &sas_path("devstoreaccount1", casing),
                    Some(&token),
                    &body,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
            let sas = answer["serviceSasToken"].as_str().unwrap();
            assert!(!sas.starts_with('?'));
            let pairs: HashMap<String, String> = url::form_urlencoded::parse(sas.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(pairs["sv"], SAS_VERSION);
            assert_eq!(pairs["sr"], "b");
            assert_eq!(pairs["sp"], "rw");
            assert_eq!(pairs["se"], "2030-05-24T11:32:48Z");
            assert_eq!(pairs["st"], "2030-05-24T10:00:00Z");
            assert_eq!(pairs["sip"], "10.0.0.1-10.0.0.9");
            assert_eq!(pairs["spr"], "https");
            // Recompute the signature from the documented 16-line layout.
            let sts = format!(
                "rw\n2030-05-24T10:00:00Z\n2030-05-24T11:32:48Z\n/blob/devstoreaccount1/music/song.mp3\n\n10.0.0.1-10.0.0.9\nhttps\n{SAS_VERSION}\nb\n\n\n\n\n\n\n"
            );
            let mut mac =
                Hmac::<Sha256>::new_from_slice(&BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap())
                    .unwrap();
            mac.update(sts.as_bytes());
            assert_eq!(pairs["sig"], BASE64.encode(mac.finalize().into_bytes()));
            assert!(sas.contains("se=2030-05-24T11%3A32%3A48Z"), "{sas}");
        }
    }

    #[tokio::test]
    async fn list_service_sas_checks_rbac_body_and_account() {
        let h = Harness::new();
        let token = h.token(OID, "https://management.azure.com/");
        let good = json!({"canonicalizedResource": "/blob/devstoreaccount1/c", "signedResource": "c",
                          "signedPermission": "rl", "signedExpiry": "2030-01-01T00:00:00Z"});
        let (status, _, body) = h
            .call(
                Method::POST,
                &sas_path("missing", "listServiceSas"),
                Some(&token),
                &good.to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "ResourceNotFound");

        let (status, _, body) = h
            .call(
                Method::POST,
                &sas_path("devstoreaccount1", "listServiceSas"),
                Some(&token),
                "{",
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "InvalidRequestContent");

        let wrong_account = json!({"canonicalizedResource": "/blob/other/c", "signedResource": "c",
                                   "signedPermission": "r", "signedExpiry": "2030-01-01T00:00:00Z"});
        let (status, _, body) = h
            .call(
                Method::POST,
                &sas_path("devstoreaccount1", "listServiceSas"),
                Some(&token),
                &wrong_account.to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "InvalidValuesForRequestParameters");

        let reader_only = h.token(OTHER_OID, "https://management.azure.com/");
        h.shared.data().grants.push(Grant {
            object_id: OTHER_OID.into(),
            action: ACTION_READ_RESOURCE_GROUP.into(),
            scope: format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}").to_ascii_lowercase(),
        });
        let (status, _, body) = h
            .call(
                Method::POST,
                &sas_path("devstoreaccount1", "listServiceSas"),
                Some(&reader_only),
                &good.to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(ACTION_LIST_SERVICE_SAS));
        let (status, _, _) = h
            .call(Method::GET, &rg_path("emulator-rg"), Some(&reader_only), "")
            .await;
        assert_eq!(status, StatusCode::OK);
    }
}
