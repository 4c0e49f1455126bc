//! A fake of Azure Blob Storage over HTTPS with path-style URLs, like
//! Azurite's (`https://localhost:<port>/<account>/<container>/<blob>`), as
//! section 7 of the wire contracts describes the service.
//!
//! It owns Blob Storage's front door:
//! - bearer tokens: the `x-ms-version` gate (2017-11-09+), signature, issuer,
//!   Storage audience and lifetime checked with the shared
//!   [`TokenAuthority`], Storage's 401 `InvalidAuthenticationInfo` with its
//!   unquoted `WWW-Authenticate` challenge;
//! - RBAC by the token's `oid`: a data role per account ([`BlobRole`]), else
//!   403 `AuthorizationPermissionMismatch`;
//! - Get User Delegation Key (bearer only), whose key is derived from a
//!   per-fake random seed and the key's fields, so nothing is stored and no
//!   other fake's key verifies;
//! - SAS: service SAS signed with the account key and user delegation SAS
//!   signed with a key this fake issued, each string-to-sign layout written
//!   here from the documented field order (never borrowed from the gateway,
//!   which this crate does not link: the fake is an independent check);
//!   permissions, resource, start/expiry, the delegation key's window and
//!   tenant, IP range and protocol.
//!
//! Behind it sits a small in-memory store: accounts, containers and block
//! blobs (Get Blob with ranges, Get Blob Properties, Put Blob, Create
//! Container). Errors are Storage's XML with `x-ms-error-code`. Every request
//! is recorded (SAS signatures redacted) so tests can assert what reached it.
//! Operations it does not implement answer 501 `NotImplemented`, never a
//! made-up success.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, io,
    net::Ipv4Addr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use time::{
    format_description::well_known::Rfc3339, macros::format_description, Date, OffsetDateTime,
    PrimitiveDateTime,
};

use crate::{
    arm::{AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY},
    authority::{Claims, TokenAuthority, VerifyError},
    front_door::{
        bearer::{self, BearerRefusal, TokenSeen},
        lock, RequestLog,
    },
    http::{serve_https, RunningServer},
    sample,
    tls::TestCa,
};

/// Audiences Storage accepts for bearer tokens.
pub const STORAGE_AUDIENCES: [&str; 2] =
    ["https://storage.azure.com/", "https://storage.azure.com"];
/// The `x-ms-version` the fake reports when a request names none.
pub const SERVICE_VERSION: &str = "2025-11-05";
/// The first service version that accepts bearer tokens.
pub const BEARER_MIN_VERSION: &str = "2017-11-09";
/// The first service version with Get User Delegation Key.
pub const USER_DELEGATION_KEY_MIN_VERSION: &str = "2018-11-09";
/// A user delegation key ends at most this long from the request.
pub const MAX_DELEGATION_KEY_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);
/// Largest Put Blob body the fake stores.
pub const MAX_PUT_BLOB_BYTES: usize = 64 * 1024 * 1024;

/// The sample account (Azurite's well-known development account).
pub const SAMPLE_ACCOUNT: &str = AZURITE_ACCOUNT;
/// The sample container.
pub const SAMPLE_CONTAINER: &str = "data";
/// A small text blob in [`SAMPLE_CONTAINER`].
pub const SAMPLE_BLOB: &str = "hello.txt";
/// The content of [`SAMPLE_BLOB`] (`text/plain`).
pub const SAMPLE_BLOB_CONTENT: &str = "hello from the identity-gateway emulator\n";
/// A 1 MiB binary blob in [`SAMPLE_CONTAINER`], big enough that ReadBlob
/// streams it in many chunks; its content is [`sample_binary`].
pub const SAMPLE_BINARY_BLOB: &str = "sample-1mib.bin";
/// Size of [`SAMPLE_BINARY_BLOB`].
pub const SAMPLE_BINARY_SIZE: usize = 1024 * 1024;

/// The fake listens on 127.0.0.1 only, so every client has this address;
/// `sip` ranges are checked against it.
const CLIENT_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
const SERVER: &str = "Windows-Azure-Blob/1.0 Microsoft-HTTPAPI/2.0";
const X_MS_VERSION: &str = "x-ms-version";

/// A Storage data-plane role assignment on an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BlobRole {
    /// Storage Blob Data Reader: read blobs, get a user delegation key.
    Reader,
    /// Storage Blob Data Contributor: also write blobs and create containers.
    Contributor,
}

/// A blob as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub content: Bytes,
    pub content_type: String,
    /// Quoted, as the `ETag` header carries it.
    pub etag: String,
    /// Whole seconds.
    pub created: SystemTime,
    /// Whole seconds.
    pub last_modified: SystemTime,
}

/// How a recorded request was authorized (or tried to be).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authorization {
    Anonymous,
    Bearer,
    ServiceSas,
    UserDelegationSas,
    /// Shared Key or a malformed `Authorization` header.
    Other,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path exactly as sent (percent-encoded).
    pub path: String,
    /// The query string, with any `sig` value replaced by `REDACTED`.
    pub query: Option<String>,
    pub x_ms_version: Option<String>,
    /// `x-ms-range` or `Range`, as sent.
    pub range: Option<String>,
    pub authorization: Authorization,
    /// The bearer token's `oid`, or a user delegation SAS's `skoid`, once
    /// its signature verified.
    pub principal_oid: Option<String>,
    /// The status the fake answered.
    pub status: u16,
    /// `x-ms-error-code` of an error answer.
    pub error_code: Option<String>,
}

impl RecordedRequest {
    /// A (decoded) query parameter.
    pub fn query_value(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

struct Account {
    name: String,
    key: Vec<u8>,
    containers: BTreeMap<String, BTreeMap<String, StoredBlob>>,
    /// Keyed by lower-cased object id.
    roles: HashMap<String, BlobRole>,
}

#[derive(Default)]
struct Data {
    /// Keyed by lower-cased name.
    accounts: HashMap<String, Account>,
    etag_counter: u64,
}

impl Data {
    fn next_etag(&mut self, at: SystemTime) -> String {
        self.etag_counter += 1;
        let ticks = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            / 100;
        let value = (ticks as u64).wrapping_add(self.etag_counter) & 0xF_FFFF_FFFF_FFFF;
        format!("\"0x8D{value:013X}\"")
    }
}

struct Shared {
    authority: Arc<TokenAuthority>,
    /// Seed of the user delegation keys this fake issues.
    seed: [u8; 32],
    data: Mutex<Data>,
    log: RequestLog<RecordedRequest>,
}

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        lock(&self.data)
    }
}

/// The running Blob Storage fake.
pub struct BlobFake {
    server: RunningServer,
    shared: Arc<Shared>,
    /// The account [`base_url`](Self::base_url) points at.
    default_account: String,
}

impl fmt::Debug for BlobFake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobFake")
            .field("base_url", &self.base_url())
            .finish_non_exhaustive()
    }
}

impl BlobFake {
    /// Starts the fake over HTTPS on 127.0.0.1 (a free port) with a
    /// certificate from `ca`, serving `accounts` as (name, base64 key), empty.
    /// Fails if a key is not base64.
    pub async fn start(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        accounts: &[(&str, &str)],
    ) -> io::Result<Self> {
        Self::start_on(authority, ca, accounts, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        accounts: &[(&str, &str)],
        port: u16,
    ) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            authority,
            seed: rand::random(),
            data: Mutex::new(Data::default()),
            log: RequestLog::default(),
        });
        let server = serve_https(
            Router::new()
                .fallback(handle)
                .with_state(Arc::clone(&shared)),
            port,
            ca.server_config(&[b"h2", b"http/1.1"]),
        )
        .await?;
        let fake = Self {
            server,
            shared,
            default_account: accounts
                .first()
                .map_or_else(|| SAMPLE_ACCOUNT.to_string(), |(name, _)| name.to_string()),
        };
        for (name, key) in accounts {
            if !fake.add_account(name, key) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the key of storage account '{name}' is not base64"),
                ));
            }
        }
        Ok(fake)
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
        let fake = Self::start_on(
            authority,
            ca,
            &[(SAMPLE_ACCOUNT, AZURITE_ACCOUNT_KEY)],
            port,
        )
        .await?;
        seed_sample(&fake);
        Ok(fake)
    }

    /// `https://localhost:<port>/<account>` of the first account given to
    /// [`start`](Self::start) (the sample account for [`sample`](Self::sample)):
    /// the value for GetServiceSas's `blob_endpoint`.
    pub fn base_url(&self) -> String {
        self.account_url(&self.default_account)
    }

    /// `https://localhost:<port>/<account>`.
    pub fn account_url(&self, account: &str) -> String {
        format!("{}/{account}", self.server.base_url())
    }

    /// `https://localhost:<port>/<account>/<container>/<blob>`, the blob name
    /// percent-encoded segment by segment.
    pub fn blob_url(&self, account: &str, container: &str, blob: &str) -> String {
        let encoded: Vec<String> = blob
            .split('/')
            .map(|s| percent_encoding::utf8_percent_encode(s, PATH_SEGMENT).to_string())
            .collect();
        format!(
            "{}/{container}/{}",
            self.account_url(account),
            encoded.join("/")
        )
    }

    /// `localhost:<port>`: the value for `upstream.allowed_hosts`.
    pub fn host_port(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Adds an account with a base64 key (keeping its data if it exists).
    /// Returns false if the key is not base64.
    pub fn add_account(&self, name: &str, key_base64: &str) -> bool {
        let Ok(key) = BASE64.decode(key_base64) else {
            return false;
        };
        let mut data = self.shared.data();
        let account = data
            .accounts
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Account {
                name: name.to_ascii_lowercase(),
                key: Vec::new(),
                containers: BTreeMap::new(),
                roles: HashMap::new(),
            });
        account.key = key;
        true
    }

    /// Creates a container; false if the account does not exist.
    pub fn create_container(&self, account: &str, container: &str) -> bool {
        let mut data = self.shared.data();
        let Some(account) = data.accounts.get_mut(&account.to_ascii_lowercase()) else {
            return false;
        };
        account.containers.entry(container.to_string()).or_default();
        true
    }

    /// Stores (or replaces) a block blob; false if the account or container
    /// does not exist.
    pub fn put_blob(
        &self,
        account: &str,
        container: &str,
        blob: &str,
        content: impl Into<Bytes>,
        content_type: &str,
    ) -> bool {
        let mut data = self.shared.data();
        store_blob(
            &mut data,
            account,
            container,
            blob,
            content.into(),
            content_type,
        )
        .is_ok()
    }

    /// A stored blob.
    pub fn blob(&self, account: &str, container: &str, blob: &str) -> Option<StoredBlob> {
        self.shared
            .data()
            .accounts
            .get(&account.to_ascii_lowercase())?
            .containers
            .get(container)?
            .get(blob)
            .cloned()
    }

    /// Gives `object_id` a data role on `account` (replacing any other);
    /// false if the account does not exist.
    pub fn assign_role(&self, account: &str, object_id: &str, role: BlobRole) -> bool {
        let mut data = self.shared.data();
        let Some(account) = data.accounts.get_mut(&account.to_ascii_lowercase()) else {
            return false;
        };
        account.roles.insert(object_id.to_ascii_lowercase(), role);
        true
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

/// The content of [`SAMPLE_BINARY_BLOB`]: [`SAMPLE_BINARY_SIZE`] bytes from
/// a fixed xorshift sequence, so a test can recompute it.
pub fn sample_binary() -> Vec<u8> {
    let mut state: u32 = 0x9E37_79B9;
    (0..SAMPLE_BINARY_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// Seeds the sample data `--emulator` serves: account [`SAMPLE_ACCOUNT`]
/// with Azurite's well-known key (the key the ARM fake's listServiceSas signs
/// with, so those SAS tokens verify here), container [`SAMPLE_CONTAINER`]
/// holding [`SAMPLE_BLOB`] (`text/plain`) and [`SAMPLE_BINARY_BLOB`]
/// (`application/octet-stream`), and the VM's system-assigned identity as
/// Storage Blob Data Contributor. `app-identity` has no data role, so using
/// it shows Storage's 403 `AuthorizationPermissionMismatch`.
pub fn seed_sample(fake: &BlobFake) {
    fake.add_account(SAMPLE_ACCOUNT, AZURITE_ACCOUNT_KEY);
    fake.create_container(SAMPLE_ACCOUNT, SAMPLE_CONTAINER);
    fake.put_blob(
        SAMPLE_ACCOUNT,
        SAMPLE_CONTAINER,
        SAMPLE_BLOB,
        SAMPLE_BLOB_CONTENT,
        "text/plain",
    );
    fake.put_blob(
        SAMPLE_ACCOUNT,
        SAMPLE_CONTAINER,
        SAMPLE_BINARY_BLOB,
        sample_binary(),
        "application/octet-stream",
    );
    fake.assign_role(
        SAMPLE_ACCOUNT,
        sample::SYSTEM_OBJECT_ID,
        BlobRole::Contributor,
    );
}

/// Characters escaped in a blob path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn store_blob(
    data: &mut Data,
    account: &str,
    container: &str,
    blob: &str,
    content: Bytes,
    content_type: &str,
) -> Result<StoredBlob, StorageError> {
    let now = whole_seconds(SystemTime::now());
    let etag = data.next_etag(now);
    let account = data
        .accounts
        .get_mut(&account.to_ascii_lowercase())
        .ok_or_else(account_not_found)?;
    let blobs = account
        .containers
        .get_mut(container)
        .ok_or_else(container_not_found)?;
    let created = blobs.get(blob).map_or(now, |b| b.created);
    let stored = StoredBlob {
        content,
        content_type: content_type.to_string(),
        etag,
        created,
        last_modified: now,
    };
    blobs.insert(blob.to_string(), stored.clone());
    Ok(stored)
}

// ---------------------------------------------------------------- serving

/// What [`handle`] learns while answering, for the recording.
struct Trace {
    authorization: Authorization,
    principal_oid: Option<String>,
    /// The `x-ms-version` the answer reports.
    version: String,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut trace = Trace {
        authorization: Authorization::Anonymous,
        principal_oid: None,
        version: SERVICE_VERSION.to_string(),
    };
    let outcome = match read_body(&method, &headers, body).await {
        Ok(body) => answer(&shared, &method, &uri, &headers, &body, &mut trace),
        Err(e) => Err(e),
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(error) => error.render(&request_id, method == Method::HEAD),
    };
    let out = response.headers_mut();
    for (name, value) in [
        ("x-ms-request-id", request_id.as_str()),
        (X_MS_VERSION, trace.version.as_str()),
        ("server", SERVER),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name, value);
        }
    }
    let error_code = out
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    shared.log.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(redact_sig),
        x_ms_version: header_text(X_MS_VERSION),
        range: header_text("x-ms-range").or_else(|| header_text("range")),
        authorization: trace.authorization,
        principal_oid: trace.principal_oid,
        status: response.status().as_u16(),
        error_code,
    });
    response
}

async fn read_body(
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, StorageError> {
    if *method != Method::PUT && *method != Method::POST {
        return Ok(Bytes::new());
    }
    let too_large = || {
        StorageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!("The request body is too large and exceeds the maximum permissible limit of the emulator ({MAX_PUT_BLOB_BYTES} bytes)."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUT_BLOB_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_PUT_BLOB_BYTES)
        .await
        .map_err(|_| too_large())
}

/// The operations the fake implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    GetBlob { head: bool },
    PutBlob,
    CreateContainer,
    GetUserDelegationKey,
}

impl Operation {
    /// The data role a token's principal needs.
    fn role(self) -> BlobRole {
        match self {
            Self::GetBlob { .. } | Self::GetUserDelegationKey => BlobRole::Reader,
            Self::PutBlob | Self::CreateContainer => BlobRole::Contributor,
        }
    }
}

/// Who the request was authorized as.
enum Access {
    Token(Box<Claims>),
    Sas(SasGrant),
}

fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    trace: &mut Trace,
) -> Result<Response, StorageError> {
    let version = match headers.get(X_MS_VERSION) {
        None => None,
        Some(value) => match value.to_str().ok().filter(|v| is_version(v)) {
            Some(v) => Some(v.to_string()),
            None => return Err(invalid_header(X_MS_VERSION, value.to_str().unwrap_or(""))),
        },
    };
    if let Some(v) = &version {
        trace.version = v.clone();
    }
    let path = RequestPath::parse(uri.path())?;
    let query = Query::parse(uri.query());
    let operation = classify(method, &path, &query)?;
    let account = {
        let data = shared.data();
        let account = data
            .accounts
            .get(&path.account.to_ascii_lowercase())
            .ok_or_else(account_not_found)?;
        AccountKey {
            name: account.name.clone(),
            key: account.key.clone(),
        }
    };

    let access = if query.get("sig").is_some() {
        if matches!(
            operation,
            Operation::CreateContainer | Operation::GetUserDelegationKey
        ) {
            return Err(bearer_only());
        }
        if version.is_none() {
            if let Some(sv) = query.get("sv").filter(|v| is_version(v)) {
                trace.version = sv.to_string();
            }
        }
        let grant = verify_sas(shared, &account, &path, &query, trace)?;
        if let Some(oid) = &grant.delegated_oid {
            require_role(shared, &account.name, oid, operation.role())?;
        }
        Access::Sas(grant)
    } else {
        let claims = authenticate_bearer(shared, headers, version.as_deref(), trace)?;
        require_role(shared, &account.name, &claims.oid, operation.role())?;
        Access::Token(Box::new(claims))
    };

    let container = path.container.as_deref().unwrap_or_default();
    let blob = path.blob.as_deref().unwrap_or_default();
    match (operation, &access) {
        (Operation::GetBlob { head }, _) => {
            if let Access::Sas(grant) = &access {
                grant.require('r')?;
            }
            get_blob(
                shared,
                &account.name,
                container,
                blob,
                head,
                headers,
                &access,
            )
        }
        (Operation::PutBlob, _) => put_blob(
            shared,
            &account.name,
            container,
            blob,
            headers,
            body,
            &access,
        ),
        (Operation::CreateContainer, Access::Token(_)) => {
            create_container(shared, &account.name, container)
        }
        (Operation::GetUserDelegationKey, Access::Token(claims)) => {
            // Bearer authentication required a version.
            get_user_delegation_key(shared, claims, version.as_deref().unwrap_or_default(), body)
        }
        (Operation::CreateContainer | Operation::GetUserDelegationKey, Access::Sas(_)) => {
            Err(bearer_only())
        }
    }
}

struct AccountKey {
    name: String,
    key: Vec<u8>,
}

/// `/<account>[/<container>[/<blob>]]`, decoded.
struct RequestPath {
    account: String,
    container: Option<String>,
    blob: Option<String>,
}

impl RequestPath {
    fn parse(raw: &str) -> Result<Self, StorageError> {
        let invalid = || {
            StorageError::new(
                StatusCode::BAD_REQUEST,
                "InvalidUri",
                "The requested URI does not represent any resource on the server.",
            )
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid())
        };
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        let (account, rest) = match trimmed.split_once('/') {
            Some((account, rest)) => (account, rest),
            None => (trimmed, ""),
        };
        if account.is_empty() {
            return Err(invalid());
        }
        let (container, blob) = match rest.split_once('/') {
            Some((container, blob)) => (container, blob),
            None => (rest, ""),
        };
        Ok(Self {
            account: decode(account)?,
            container: (!container.is_empty())
                .then(|| decode(container))
                .transpose()?,
            blob: (!blob.is_empty()).then(|| decode(blob)).transpose()?,
        })
    }
}

/// Decoded query parameters; the first of a repeated name wins.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn classify(method: &Method, path: &RequestPath, query: &Query) -> Result<Operation, StorageError> {
    let restype = query.get("restype");
    let comp = query.get("comp");
    let container = path.container.is_some();
    let blob = path.blob.is_some();
    let operation = match *method {
        Method::POST
            if !container && restype == Some("service") && comp == Some("userdelegationkey") =>
        {
            Some(Operation::GetUserDelegationKey)
        }
        Method::PUT if container && !blob && restype == Some("container") && comp.is_none() => {
            Some(Operation::CreateContainer)
        }
        Method::GET | Method::HEAD if blob && restype.is_none() && comp.is_none() => {
            Some(Operation::GetBlob {
                head: *method == Method::HEAD,
            })
        }
        Method::PUT if blob && restype.is_none() && comp.is_none() => Some(Operation::PutBlob),
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE => None,
        _ => {
            return Err(StorageError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnsupportedHttpVerb",
                "The resource doesn't support specified Http Verb.",
            ))
        }
    };
    if blob && (query.get("snapshot").is_some() || query.get("versionid").is_some()) {
        return Err(not_implemented("snapshots and versions"));
    }
    operation.ok_or_else(|| {
        not_implemented(&format!(
            "{method} {}{}",
            match (container, blob) {
                (false, _) => "on the account",
                (true, false) => "on a container",
                (true, true) => "on a blob",
            },
            comp.map(|c| format!(" with comp={c}")).unwrap_or_default()
        ))
    })
}

// ---------------------------------------------------------------- bearer tokens

fn authenticate_bearer(
    shared: &Shared,
    headers: &HeaderMap,
    version: Option<&str>,
    trace: &mut Trace,
) -> Result<Claims, StorageError> {
    let token = match bearer::presented(headers) {
        Ok(token) => token,
        // Storage verifies an empty token, and refuses its signature.
        Err(BearerRefusal::EmptyToken) => "",
        Err(BearerRefusal::Missing) => {
            return Err(StorageError::new(
                StatusCode::UNAUTHORIZED,
                "NoAuthenticationInformation",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            )
            .challenge(shared.authority.tenant_id()))
        }
        Err(BearerRefusal::OtherScheme { scheme }) if scheme.eq_ignore_ascii_case("sharedkey") => {
            trace.authorization = Authorization::Other;
            return Err(auth_failed(
                "The emulator's Blob Storage accepts bearer tokens and SAS only, not Shared Key.",
            ));
        }
        Err(_) => {
            trace.authorization = Authorization::Other;
            return Err(StorageError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAuthenticationInfo",
                "Authentication information is not given in the correct format. Check the value of Authorization header.",
            ));
        }
    };
    trace.authorization = Authorization::Bearer;
    if version.is_none_or(|v| v < BEARER_MIN_VERSION) {
        return Err(auth_failed(
            "Authentication scheme Bearer is not supported in this version.",
        ));
    }
    let claims = bearer::verify(
        &shared.authority,
        token,
        &STORAGE_AUDIENCES,
        &mut TokenSeen::default(),
    )
    .map_err(|e| {
            let detail = match e {
                VerifyError::Expired => "Lifetime validation failed. The token is expired.",
                VerifyError::NotYetValid => "Lifetime validation failed. The token is not yet valid.",
                VerifyError::WrongAudience { .. } => {
                    "Audience validation failed. Audience did not match."
                }
                VerifyError::BadToken(_) => {
                    "Signature validation failed. The token is not signed by the emulator's authority."
                }
            };
            StorageError::new(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationInfo",
                "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
            )
            .detail(detail)
            .challenge(shared.authority.tenant_id())
        })?;
    trace.principal_oid = Some(claims.oid.clone());
    Ok(claims)
}

fn require_role(
    shared: &Shared,
    account: &str,
    object_id: &str,
    needed: BlobRole,
) -> Result<(), StorageError> {
    let data = shared.data();
    let role = data
        .accounts
        .get(account)
        .and_then(|a| a.roles.get(&object_id.to_ascii_lowercase()))
        .copied();
    if role.is_some_and(|r| r >= needed) {
        Ok(())
    } else {
        Err(permission_mismatch())
    }
}

// ---------------------------------------------------------------- user delegation keys

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyInfoXml {
    start: Option<String>,
    expiry: Option<String>,
    delegated_user_tid: Option<String>,
}

fn get_user_delegation_key(
    shared: &Shared,
    claims: &Claims,
    version: &str,
    body: &[u8],
) -> Result<Response, StorageError> {
    if version < USER_DELEGATION_KEY_MIN_VERSION {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            "Value for one of the query parameters specified in the request URI is invalid.",
        )
        .element("QueryParameterName", "comp")
        .element("QueryParameterValue", "userdelegationkey")
        .element(
            "Reason",
            format!("Get User Delegation Key needs x-ms-version {USER_DELEGATION_KEY_MIN_VERSION} or later."),
        ));
    }
    let invalid_xml = || {
        StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidXmlDocument",
            "XML specified is not syntactically valid.",
        )
    };
    let text = std::str::from_utf8(body).map_err(|_| invalid_xml())?;
    let info: KeyInfoXml =
        quick_xml::de::from_str(text.trim_start_matches('\u{feff}')).map_err(|_| invalid_xml())?;
    let node_value = |node: &str, value: &str, reason: &str| {
        StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidXmlNodeValue",
            "The value for one of the XML nodes is not in the correct format.",
        )
        .element("XmlNodeName", node)
        .element("XmlNodeValue", value)
        .element("Reason", reason)
    };
    let now = OffsetDateTime::now_utc();
    let latest = now + MAX_DELEGATION_KEY_LIFETIME;
    let Some(expiry_text) = info.expiry.as_deref() else {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "MissingRequiredXmlNode",
            "An XML node that is required for this request was not specified.",
        )
        .element("XmlNodeName", "Expiry"));
    };
    let expiry = parse_time(expiry_text)
        .ok_or_else(|| node_value("Expiry", expiry_text, "not an ISO 8601 UTC time"))?;
    let start = match info.start.as_deref() {
        Some(text) => {
            parse_time(text).ok_or_else(|| node_value("Start", text, "not an ISO 8601 UTC time"))?
        }
        None => now,
    };
    if expiry <= now {
        return Err(node_value("Expiry", expiry_text, "must be in the future"));
    }
    if expiry > latest {
        return Err(node_value(
            "Expiry",
            expiry_text,
            "must be within 7 days of the current time",
        ));
    }
    if start >= expiry || start > latest {
        return Err(node_value(
            "Start",
            info.start.as_deref().unwrap_or_default(),
            "must be before Expiry and within 7 days of the current time",
        ));
    }
    let signed_start = sas_time(start);
    let signed_expiry = sas_time(expiry);
    let key = delegation_key(
        &shared.seed,
        &claims.oid,
        &claims.tid,
        &signed_start,
        &signed_expiry,
        "b",
        version,
    );
    let delegated = info
        .delegated_user_tid
        .as_deref()
        .map(|tid| {
            format!(
                "<SignedDelegatedUserTid>{}</SignedDelegatedUserTid>",
                xml_escape(tid)
            )
        })
        .unwrap_or_default();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey><SignedOid>{}</SignedOid><SignedTid>{}</SignedTid><SignedStart>{signed_start}</SignedStart><SignedExpiry>{signed_expiry}</SignedExpiry><SignedService>b</SignedService><SignedVersion>{}</SignedVersion>{delegated}<Value>{}</Value></UserDelegationKey>",
        xml_escape(&claims.oid),
        xml_escape(&claims.tid),
        xml_escape(version),
        BASE64.encode(key),
    );
    let mut response = (StatusCode::OK, xml).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    Ok(response)
}

/// A user delegation key: HMAC-SHA256 under the fake's seed over the key's
/// fields, so the fake can recompute any key it issued from a SAS's
/// `skoid`..`skv` and no one without the seed can.
fn delegation_key(
    seed: &[u8],
    oid: &str,
    tid: &str,
    start: &str,
    expiry: &str,
    service: &str,
    version: &str,
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed).expect("HMAC takes any key length");
    mac.update(
        [oid, tid, start, expiry, service, version]
            .join("\n")
            .as_bytes(),
    );
    mac.finalize().into_bytes().into()
}

// ---------------------------------------------------------------- SAS

/// One line of a SAS string-to-sign.
#[derive(Debug, Clone, Copy)]
enum Line {
    /// A query parameter's value, empty when absent.
    Param(&'static str),
    /// `/blob/<account>/<container>[/<blob>]`.
    Resource,
    /// The snapshot time or version id: always empty here (the fake serves
    /// base blobs only).
    Snapshot,
}

use Line::{Param as P, Resource as R, Snapshot as S};

/// Service SAS, 2018-11-09 .. 2020-10-02 (15 lines).
const SERVICE_2018: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("si"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];
/// Service SAS, 2020-12-06 .. 2025-05-05 (16 lines: `ses` added).
const SERVICE_2020: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("si"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("ses"),
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];
/// User delegation SAS, 2020-12-06 .. 2025-05-05 (24 lines).
const DELEGATION_2020: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("skoid"),
    P("sktid"),
    P("skt"),
    P("ske"),
    P("sks"),
    P("skv"),
    P("saoid"),
    P("suoid"),
    P("scid"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("ses"),
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];
/// User delegation SAS, 2025-07-05 .. before 2026-04-06 (26 lines:
/// `skdutid` and `sduoid` after `scid`).
const DELEGATION_2025: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("skoid"),
    P("sktid"),
    P("skt"),
    P("ske"),
    P("sks"),
    P("skv"),
    P("saoid"),
    P("suoid"),
    P("scid"),
    P("skdutid"),
    P("sduoid"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("ses"),
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];

/// The string-to-sign layout of a SAS version, if the fake verifies it.
fn layout(user_delegation: bool, sv: &str) -> Option<&'static [Line]> {
    match (user_delegation, sv) {
        (false, v) if ("2018-11-09".."2020-12-06").contains(&v) => Some(SERVICE_2018),
        (false, v) if ("2020-12-06"..="2025-05-05").contains(&v) => Some(SERVICE_2020),
        (true, v) if ("2020-12-06"..="2025-05-05").contains(&v) => Some(DELEGATION_2020),
        (true, v) if ("2025-07-05".."2026-04-06").contains(&v) => Some(DELEGATION_2025),
        _ => None,
    }
}

fn string_to_sign(lines: &[Line], query: &Query, resource: &str) -> String {
    lines
        .iter()
        .map(|line| match line {
            Line::Param(name) => query.get(name).unwrap_or_default(),
            Line::Resource => resource,
            Line::Snapshot => "",
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a verified SAS allows.
struct SasGrant {
    permissions: String,
    /// Response header overrides (`rscc`..`rsct`).
    overrides: Vec<(HeaderName, String)>,
    /// `skoid` of a user delegation SAS: its access is also bounded by the
    /// RBAC of that principal.
    delegated_oid: Option<String>,
}

impl SasGrant {
    fn require(&self, permission: char) -> Result<(), StorageError> {
        if self.permissions.contains(permission) {
            Ok(())
        } else {
            Err(permission_mismatch())
        }
    }
}

fn verify_sas(
    shared: &Shared,
    account: &AccountKey,
    path: &RequestPath,
    query: &Query,
    trace: &mut Trace,
) -> Result<SasGrant, StorageError> {
    let user_delegation = query.get("skoid").is_some();
    trace.authorization = if user_delegation {
        Authorization::UserDelegationSas
    } else {
        Authorization::ServiceSas
    };
    let required = |name: &str| {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| auth_failed(&format!("{name} is mandatory. Cannot be empty")))
    };
    let sv = required("sv")?;
    let Some(lines) = layout(user_delegation, sv) else {
        return Err(auth_failed(&format!(
            "The emulator verifies service SAS versions 2018-11-09 through 2025-05-05 and user delegation SAS versions 2020-12-06 through 2026-02-06; sv={sv} is not one of them."
        )));
    };
    let container = path.container.as_deref().unwrap_or_default();
    let resource = match (required("sr")?, path.blob.as_deref()) {
        ("b", Some(blob)) => format!("/blob/{}/{container}/{blob}", account.name),
        ("c", _) => format!("/blob/{}/{container}", account.name),
        ("b", None) => return Err(StorageError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationResourceTypeMismatch",
            "This request is not authorized to perform this operation using this resource type.",
        )),
        (other, _) => {
            return Err(auth_failed(&format!(
                "Signed resource '{other}' is not supported by the emulator (only b and c)."
            )))
        }
    };
    if query.get("si").is_some() {
        return Err(auth_failed(if user_delegation {
            "A user delegation SAS cannot refer to a stored access policy (si)."
        } else {
            "Stored access policies (si) are not supported by the emulator."
        }));
    }
    let permissions = required("sp")?.to_string();
    let expiry_text = required("se")?;
    let signature = required("sig")?;

    let key = if user_delegation {
        let oid = required("skoid")?;
        let tid = required("sktid")?;
        let key_start = required("skt")?;
        let key_expiry = required("ske")?;
        let service = required("sks")?;
        let key_version = required("skv")?;
        delegation_key(
            &shared.seed,
            oid,
            tid,
            key_start,
            key_expiry,
            service,
            key_version,
        )
        .to_vec()
    } else {
        account.key.clone()
    };
    let sts = string_to_sign(lines, query, &resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(sts.as_bytes());
    let given = BASE64.decode(signature).unwrap_or_default();
    if mac.verify_slice(&given).is_err() {
        return Err(auth_failed(&format!(
            "Signature did not match. String to sign used was {sts}"
        )));
    }

    let now = OffsetDateTime::now_utc();
    let time = |name: &str, text: &str| {
        parse_time(text)
            .ok_or_else(|| auth_failed(&format!("{name} '{text}' is not a valid ISO 8601 time.")))
    };
    let expiry = time("se", expiry_text)?;
    let start = query.get("st").map(|st| time("st", st)).transpose()?;
    if start.is_some_and(|s| now < s) || now >= expiry {
        return Err(auth_failed(&format!(
            "Signature not valid in the specified time frame: Start [{}] - Expiry [{}] - Current [{}]",
            start.map(http_date).unwrap_or_default(),
            http_date(expiry),
            http_date(now)
        )));
    }
    let delegated_oid = if user_delegation {
        let tid = required("sktid")?;
        if !tid.eq_ignore_ascii_case(shared.authority.tenant_id()) {
            return Err(auth_failed(
                "The signed tenant (sktid) is not the tenant of this storage account.",
            ));
        }
        if required("sks")? != "b" {
            return Err(auth_failed(
                "The user delegation key was not issued for the Blob service (sks).",
            ));
        }
        let key_start = time("skt", required("skt")?)?;
        let key_expiry = time("ske", required("ske")?)?;
        if now < key_start || now >= key_expiry {
            return Err(auth_failed(&format!(
                "The user delegation key is not valid at this time: Start [{}] - Expiry [{}] - Current [{}]",
                http_date(key_start),
                http_date(key_expiry),
                http_date(now)
            )));
        }
        let oid = required("skoid")?.to_string();
        trace.principal_oid = Some(oid.clone());
        Some(oid)
    } else {
        None
    };
    match query.get("spr") {
        None | Some("https") | Some("https,http") => {}
        Some("http") => {
            return Err(StorageError::new(
                StatusCode::FORBIDDEN,
                "AuthorizationProtocolMismatch",
                "This request is not authorized to perform this operation using this protocol.",
            ))
        }
        Some(other) => {
            return Err(auth_failed(&format!(
                "Signed protocol '{other}' is not valid (https or https,http)."
            )))
        }
    }
    if let Some(range) = query.get("sip") {
        match ip_range_contains(range, CLIENT_IP) {
            Some(true) => {}
            Some(false) => {
                return Err(StorageError::new(
                    StatusCode::FORBIDDEN,
                    "AuthorizationSourceIPMismatch",
                    format!("This request is not authorized to perform this operation using this source IP {CLIENT_IP}."),
                ))
            }
            None => {
                return Err(auth_failed(&format!(
                    "Signed IP '{range}' is not an IPv4 address or range."
                )))
            }
        }
    }
    let overrides = [
        ("rscc", header::CACHE_CONTROL),
        ("rscd", header::CONTENT_DISPOSITION),
        ("rsce", header::CONTENT_ENCODING),
        ("rscl", header::CONTENT_LANGUAGE),
        ("rsct", header::CONTENT_TYPE),
    ]
    .into_iter()
    .filter_map(|(param, name)| query.get(param).map(|v| (name, v.to_string())))
    .collect();
    Ok(SasGrant {
        permissions,
        overrides,
        delegated_oid,
    })
}

/// Whether `ip` is `range` (`a.b.c.d` or `a.b.c.d-e.f.g.h`); None if
/// `range` is malformed.
fn ip_range_contains(range: &str, ip: Ipv4Addr) -> Option<bool> {
    let (low, high) = match range.split_once('-') {
        Some((low, high)) => (low.parse::<Ipv4Addr>().ok()?, high.parse().ok()?),
        None => {
            let single = range.parse::<Ipv4Addr>().ok()?;
            (single, single)
        }
    };
    Some(low <= ip && ip <= high)
}

// ---------------------------------------------------------------- blobs

fn get_blob(
    shared: &Shared,
    account: &str,
    container: &str,
    blob: &str,
    head: bool,
    headers: &HeaderMap,
    access: &Access,
) -> Result<Response, StorageError> {
    let stored = {
        let data = shared.data();
        let blobs = data
            .accounts
            .get(account)
            .ok_or_else(account_not_found)?
            .containers
            .get(container)
            .ok_or_else(container_not_found)?;
        blobs.get(blob).cloned().ok_or_else(blob_not_found)?
    };
    let size = stored.content.len() as u64;
    let range = requested_range(headers)?;
    let (status, content, content_range) = match range {
        None => (StatusCode::OK, stored.content.clone(), None),
        Some((first, last)) => {
            if first >= size {
                return Err(StorageError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "InvalidRange",
                    "The range specified is invalid for the current size of the resource.",
                )
                .header(header::CONTENT_RANGE, format!("bytes */{size}")));
            }
            let last = last.map_or(size - 1, |l| l.min(size - 1));
            (
                StatusCode::PARTIAL_CONTENT,
                stored.content.slice(first as usize..=last as usize),
                Some(format!("bytes {first}-{last}/{size}")),
            )
        }
    };
    let length = content.len();
    let mut response = if head {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(content))
    };
    *response.status_mut() = status;
    let out = response.headers_mut();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name, value);
        }
    };
    set(header::CONTENT_LENGTH, &length.to_string());
    set(header::CONTENT_TYPE, &stored.content_type);
    set(header::ETAG, &stored.etag);
    set(
        header::LAST_MODIFIED,
        &http_date(stored.last_modified.into()),
    );
    set(header::ACCEPT_RANGES, "bytes");
    if let Some(content_range) = &content_range {
        set(header::CONTENT_RANGE, content_range);
    }
    for (name, value) in [
        ("x-ms-blob-type", "BlockBlob".to_string()),
        ("x-ms-creation-time", http_date(stored.created.into())),
        ("x-ms-server-encrypted", "true".to_string()),
        ("x-ms-lease-state", "available".to_string()),
        ("x-ms-lease-status", "unlocked".to_string()),
    ] {
        set(HeaderName::from_static(name), &value);
    }
    if let Access::Sas(grant) = access {
        for (name, value) in &grant.overrides {
            set(name.clone(), value);
        }
    }
    Ok(response)
}

/// `x-ms-range` (preferred) or `Range`: `bytes=<first>-[<last>]`. A malformed
/// `Range` is ignored (as HTTP says); a malformed `x-ms-range` is an error.
fn requested_range(headers: &HeaderMap) -> Result<Option<(u64, Option<u64>)>, StorageError> {
    fn parse(value: &str) -> Option<(u64, Option<u64>)> {
        let (first, last) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
        let first = first.trim().parse::<u64>().ok()?;
        let last = match last.trim() {
            "" => None,
            l => Some(l.parse::<u64>().ok()?),
        };
        (last.is_none_or(|l| l >= first)).then_some((first, last))
    }
    if let Some(value) = headers.get("x-ms-range") {
        let text = value.to_str().unwrap_or_default();
        return parse(text)
            .map(Some)
            .ok_or_else(|| invalid_header("x-ms-range", text));
    }
    Ok(headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse))
}

fn put_blob(
    shared: &Shared,
    account: &str,
    container: &str,
    blob: &str,
    headers: &HeaderMap,
    body: &[u8],
    access: &Access,
) -> Result<Response, StorageError> {
    match headers
        .get("x-ms-blob-type")
        .map(|v| v.to_str().unwrap_or_default())
    {
        Some("BlockBlob") => {}
        Some("PageBlob" | "AppendBlob") => {
            return Err(not_implemented("page and append blobs"));
        }
        Some(other) => return Err(invalid_header("x-ms-blob-type", other)),
        None => {
            return Err(StorageError::new(
                StatusCode::BAD_REQUEST,
                "MissingRequiredHeader",
                "An HTTP header that's mandatory for this request is not specified.",
            )
            .element("HeaderName", "x-ms-blob-type"))
        }
    }
    let content_type = ["x-ms-blob-content-type", "content-type"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut data = shared.data();
    if let Access::Sas(grant) = access {
        // `c` creates new blobs only; `w` also overwrites.
        let exists = data
            .accounts
            .get(account)
            .and_then(|a| a.containers.get(container))
            .is_some_and(|blobs| blobs.contains_key(blob));
        if !(grant.permissions.contains('w') || !exists && grant.permissions.contains('c')) {
            return Err(permission_mismatch());
        }
    }
    let stored = store_blob(
        &mut data,
        account,
        container,
        blob,
        Bytes::copy_from_slice(body),
        &content_type,
    )?;
    drop(data);
    let mut response = StatusCode::CREATED.into_response();
    let out = response.headers_mut();
    for (name, value) in [
        (header::ETAG, stored.etag),
        (
            header::LAST_MODIFIED,
            http_date(stored.last_modified.into()),
        ),
        (
            HeaderName::from_static("x-ms-request-server-encrypted"),
            "true".to_string(),
        ),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    }
    Ok(response)
}

fn create_container(
    shared: &Shared,
    account: &str,
    container: &str,
) -> Result<Response, StorageError> {
    let bytes = container.as_bytes();
    let valid = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
        && !container.contains("--");
    if !valid {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidResourceName",
            "The specified resource name contains invalid characters.",
        ));
    }
    let mut data = shared.data();
    let now = whole_seconds(SystemTime::now());
    let etag = data.next_etag(now);
    let account = data
        .accounts
        .get_mut(account)
        .ok_or_else(account_not_found)?;
    if account.containers.contains_key(container) {
        return Err(StorageError::new(
            StatusCode::CONFLICT,
            "ContainerAlreadyExists",
            "The specified container already exists.",
        ));
    }
    account
        .containers
        .insert(container.to_string(), BTreeMap::new());
    drop(data);
    let mut response = StatusCode::CREATED.into_response();
    for (name, value) in [
        (header::ETAG, etag),
        (header::LAST_MODIFIED, http_date(now.into())),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    Ok(response)
}

// ---------------------------------------------------------------- errors

/// A Storage error answer: XML body plus `x-ms-error-code`.
#[derive(Debug)]
struct StorageError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `<AuthenticationErrorDetail>`.
    detail: Option<String>,
    /// More elements after the message, such as `<HeaderName>`.
    elements: Vec<(&'static str, String)>,
    headers: Vec<(HeaderName, String)>,
}

impl StorageError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            detail: None,
            elements: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn detail(mut self, detail: &str) -> Self {
        self.detail = Some(detail.to_string());
        self
    }

    fn element(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.elements.push((name, value.into()));
        self
    }

    fn header(mut self, name: HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Storage's bearer challenge (unquoted values).
    fn challenge(self, tenant_id: &str) -> Self {
        self.header(
            header::WWW_AUTHENTICATE,
            format!("Bearer authorization_uri=https://login.microsoftonline.com/{tenant_id}/oauth2/authorize resource_id=https://storage.azure.com"),
        )
    }

    fn render(self, request_id: &str, head: bool) -> Response {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{}</Code><Message>{}\nRequestId:{request_id}\nTime:{}</Message>",
            self.code,
            xml_escape(&self.message),
            OffsetDateTime::now_utc()
                .format(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
                ))
                .unwrap_or_default()
        );
        if let Some(detail) = &self.detail {
            xml.push_str(&format!(
                "<AuthenticationErrorDetail>{}</AuthenticationErrorDetail>",
                xml_escape(detail)
            ));
        }
        for (name, value) in &self.elements {
            xml.push_str(&format!("<{name}>{}</{name}>", xml_escape(value)));
        }
        xml.push_str("</Error>");
        let mut response = if head {
            Response::new(Body::empty())
        } else {
            Response::new(Body::from(xml))
        };
        *response.status_mut() = self.status;
        let out = response.headers_mut();
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml"),
        );
        out.insert("x-ms-error-code", HeaderValue::from_static(self.code));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(name, value);
            }
        }
        response
    }
}

fn auth_failed(detail: &str) -> StorageError {
    StorageError::new(
        StatusCode::FORBIDDEN,
        "AuthenticationFailed",
        "Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.",
    )
    .detail(detail)
}

fn bearer_only() -> StorageError {
    auth_failed("A SAS authorizes Get Blob and Put Blob here; this operation needs a bearer token.")
}

fn permission_mismatch() -> StorageError {
    StorageError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationPermissionMismatch",
        "This request is not authorized to perform this operation using this permission.",
    )
}

fn account_not_found() -> StorageError {
    StorageError::new(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The specified resource does not exist.",
    )
}

fn container_not_found() -> StorageError {
    StorageError::new(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        "The specified container does not exist.",
    )
}

fn blob_not_found() -> StorageError {
    StorageError::new(
        StatusCode::NOT_FOUND,
        "BlobNotFound",
        "The specified blob does not exist.",
    )
}

fn invalid_header(name: &str, value: &str) -> StorageError {
    StorageError::new(
        StatusCode::BAD_REQUEST,
        "InvalidHeaderValue",
        "The value for one of the HTTP headers is not in the correct format.",
    )
    .element("HeaderName", name)
    .element("HeaderValue", value)
}

fn not_implemented(what: &str) -> StorageError {
    StorageError::new(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        format!("The emulator's Blob Storage does not implement {what}."),
    )
}

// ---------------------------------------------------------------- formats

/// Service versions are dates, `YYYY-MM-DD`.
fn is_version(v: &str) -> bool {
    let bytes = v.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// The ISO 8601 UTC forms SAS and KeyInfo times come in: full RFC 3339,
/// `YYYY-MM-DDThh:mmZ`, or a date.
fn parse_time(value: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value, &Rfc3339)
        .ok()
        .or_else(|| {
            PrimitiveDateTime::parse(
                value,
                format_description!("[year]-[month]-[day]T[hour]:[minute]Z"),
            )
            .ok()
            .map(PrimitiveDateTime::assume_utc)
        })
        .or_else(|| {
            Date::parse(value, format_description!("[year]-[month]-[day]"))
                .ok()
                .map(|d| d.midnight().assume_utc())
        })
}

/// `YYYY-MM-DDThh:mm:ssZ`.
fn sas_time(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .unwrap_or_default()
}

/// RFC 1123, as `Last-Modified` carries it.
fn http_date(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap_or_default()
}

fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The query string with any `sig` value replaced.
fn redact_sig(query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            if pair.starts_with("sig=") {
                "sig=REDACTED"
            } else {
                pair
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::Principal;

    const STORAGE: &str = "https://storage.azure.com/";
    const VERSION: &str = "2025-11-05";

    struct Harness {
        fake: BlobFake,
        authority: Arc<TokenAuthority>,
        http: reqwest::Client,
    }

    impl Harness {
        async fn new() -> Self {
            let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
            let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
            let fake = BlobFake::sample(Arc::clone(&authority), &ca).await.unwrap();
            let http = reqwest::Client::builder()
                .add_root_certificate(
                    reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap(),
                )
                .no_proxy()
                .build()
                .unwrap();
            Self {
                fake,
                authority,
                http,
            }
        }

        fn token_for(&self, principal: &Principal, audience: &str) -> String {
            self.authority
                .mint(
                    principal,
                    audience,
                    SystemTime::now(),
                    Duration::from_secs(3600),
                )
                .0
        }

        fn token(&self) -> String {
            self.token_for(&sample::system_principal(), STORAGE)
        }

        fn url(&self, blob: &str) -> String {
            self.fake.blob_url(SAMPLE_ACCOUNT, SAMPLE_CONTAINER, blob)
        }

        /// GET with the system identity's Storage token.
        async fn get(&self, url: &str) -> reqwest::Response {
            self.http
                .get(url)
                .bearer_auth(self.token())
                .header(X_MS_VERSION, VERSION)
                .send()
                .await
                .unwrap()
        }

        /// Get User Delegation Key for `principal`, valid for the next hour.
        async fn delegation_key(&self, principal: &Principal) -> HashMap<String, String> {
            let now = OffsetDateTime::now_utc();
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
                sas_time(now),
                sas_time(now + Duration::from_secs(3600))
            );
            let answer = self
                .http
                .post(format!(
                    "{}/?restype=service&comp=userdelegationkey",
                    self.fake.base_url()
                ))
                .bearer_auth(self.token_for(principal, STORAGE))
                .header(X_MS_VERSION, VERSION)
                .header("content-type", "application/xml")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            assert_eq!(answer.headers()["content-type"], "application/xml");
            xml_fields(&answer.text().await.unwrap())
        }
    }

    /// The text of every leaf element of a flat XML document.
    fn xml_fields(xml: &str) -> HashMap<String, String> {
        let mut fields = HashMap::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find('>') else { break };
            let name = &rest[..close];
            rest = &rest[close + 1..];
            if name.starts_with(['/', '?']) {
                continue;
            }
            if let Some(end) = rest.find(&format!("</{name}>")) {
                if !rest[..end].contains('<') {
                    fields.insert(name.to_string(), rest[..end].to_string());
                }
            }
        }
        fields
    }

    async fn error_of(response: reqwest::Response) -> (u16, String, HashMap<String, String>) {
        let status = response.status().as_u16();
        let header = response.headers()["x-ms-error-code"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(response.headers()["content-type"], "application/xml");
        let fields = xml_fields(&response.text().await.unwrap());
        assert_eq!(fields["Code"], header, "header and body agree");
        (status, header, fields)
    }

    fn hmac_base64(key: &[u8], message: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(message.as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }

    fn query(pairs: &[(&str, &str)]) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        q.finish()
    }

    /// A user delegation SAS for `resource` (sv 2025-05-05), signed here
    /// from the 24-line layout written out by hand.
    fn delegation_sas(
        key: &HashMap<String, String>,
        resource: &str,
        sr: &str,
        sp: &str,
        se: &str,
        sip: &str,
    ) -> String {
        let sts = format!(
            "{sp}\n\n{se}\n{resource}\n{}\n{}\n{}\n{}\n{}\n{}\n\n\n\n{sip}\nhttps\n2025-05-05\n{sr}\n\n\n\n\n\n\n",
            key["SignedOid"],
            key["SignedTid"],
            key["SignedStart"],
            key["SignedExpiry"],
            key["SignedService"],
            key["SignedVersion"],
        );
        let sig = hmac_base64(&BASE64.decode(&key["Value"]).unwrap(), &sts);
        let mut pairs = vec![
            ("sv", "2025-05-05"),
            ("sr", sr),
            ("se", se),
            ("sp", sp),
            ("spr", "https"),
            ("skoid", key["SignedOid"].as_str()),
            ("sktid", key["SignedTid"].as_str()),
            ("skt", key["SignedStart"].as_str()),
            ("ske", key["SignedExpiry"].as_str()),
            ("sks", key["SignedService"].as_str()),
            ("skv", key["SignedVersion"].as_str()),
            ("sig", sig.as_str()),
        ];
        if !sip.is_empty() {
            pairs.push(("sip", sip));
        }
        query(&pairs)
    }

    fn in_an_hour() -> String {
        sas_time(OffsetDateTime::now_utc() + Duration::from_secs(3600))
    }

    #[tokio::test]
    async fn get_blob_with_a_bearer_token_serves_content_and_headers() {
        let h = Harness::new().await;
        let response = h.get(&h.url(SAMPLE_BLOB)).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(
            headers["content-length"],
            SAMPLE_BLOB_CONTENT.len().to_string().as_str()
        );
        assert_eq!(headers["content-type"], "text/plain");
        let etag = headers["etag"].to_str().unwrap();
        assert!(etag.starts_with("\"0x") && etag.ends_with('"'), "{etag}");
        let last_modified = headers["last-modified"].to_str().unwrap();
        assert!(last_modified.ends_with(" GMT"), "{last_modified}");
        let parsed = OffsetDateTime::parse(
            last_modified,
            &time::format_description::well_known::Rfc2822,
        );
        assert!(parsed.is_ok(), "RFC 1123 date: {last_modified}");
        assert_eq!(headers["x-ms-blob-type"], "BlockBlob");
        assert_eq!(headers["x-ms-version"], VERSION);
        assert_eq!(headers["accept-ranges"], "bytes");
        assert!(uuid::Uuid::parse_str(headers["x-ms-request-id"].to_str().unwrap()).is_ok());
        assert_eq!(response.text().await.unwrap(), SAMPLE_BLOB_CONTENT);

        let head = h
            .http
            .head(h.url(SAMPLE_BLOB))
            .bearer_auth(h.token())
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(
            head.headers()["content-length"],
            SAMPLE_BLOB_CONTENT.len().to_string().as_str()
        );
        assert_eq!(head.headers()["etag"].to_str().unwrap(), etag);
        assert!(head.bytes().await.unwrap().is_empty());

        let binary = h.get(&h.url(SAMPLE_BINARY_BLOB)).await;
        assert_eq!(binary.status(), 200);
        assert_eq!(binary.headers()["content-type"], "application/octet-stream");
        let bytes = binary.bytes().await.unwrap();
        assert_eq!(bytes.len(), SAMPLE_BINARY_SIZE);
        assert_eq!(bytes.as_ref(), sample_binary().as_slice());

        let recorded = h.fake.requests();
        assert_eq!(recorded.len(), 3);
        assert_eq!(recorded[0].method, "GET");
        assert_eq!(recorded[0].path, "/devstoreaccount1/data/hello.txt");
        assert_eq!(recorded[0].authorization, Authorization::Bearer);
        assert_eq!(
            recorded[0].principal_oid.as_deref(),
            Some(sample::SYSTEM_OBJECT_ID)
        );
        assert_eq!(recorded[0].x_ms_version.as_deref(), Some(VERSION));
        assert_eq!(recorded[1].method, "HEAD");
        assert!(recorded
            .iter()
            .all(|r| r.status == 200 && r.error_code.is_none()));
    }

    #[tokio::test]
    async fn ranges_answer_206_and_past_the_end_416() {
        let h = Harness::new().await;
        let ranged = |range_header: &'static str, value: &'static str| {
            h.http
                .get(h.url(SAMPLE_BINARY_BLOB))
                .bearer_auth(h.token())
                .header(X_MS_VERSION, VERSION)
                .header(range_header, value)
                .send()
        };
        let content = sample_binary();
        let answer = ranged("range", "bytes=1000-70999").await.unwrap();
        assert_eq!(answer.status(), 206);
        assert_eq!(
            answer.headers()["content-range"],
            format!("bytes 1000-70999/{SAMPLE_BINARY_SIZE}").as_str()
        );
        assert_eq!(answer.headers()["content-length"], "70000");
        assert_eq!(
            answer.bytes().await.unwrap().as_ref(),
            &content[1000..71_000]
        );

        let open_ended = ranged("x-ms-range", "bytes=1048000-").await.unwrap();
        assert_eq!(open_ended.status(), 206);
        assert_eq!(
            open_ended.bytes().await.unwrap().as_ref(),
            &content[1_048_000..]
        );

        let past_end = ranged("range", "bytes=2000000-").await.unwrap();
        assert_eq!(
            past_end.headers()["content-range"],
            format!("bytes */{SAMPLE_BINARY_SIZE}").as_str()
        );
        let (status, code, _) = error_of(past_end).await;
        assert_eq!((status, code.as_str()), (416, "InvalidRange"));

        let (status, code, _) = error_of(ranged("x-ms-range", "bytes=5-1").await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidHeaderValue"));
    }

    #[tokio::test]
    async fn bearer_tokens_are_checked_like_storage() {
        let h = Harness::new().await;
        let url = h.url(SAMPLE_BLOB);
        let challenge = format!(
            "Bearer authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize resource_id=https://storage.azure.com",
            sample::TENANT_ID
        );

        let anonymous = h.http.get(&url).send().await.unwrap();
        assert_eq!(anonymous.headers()["www-authenticate"], challenge.as_str());
        let (status, code, _) = error_of(anonymous).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "NoAuthenticationInformation")
        );

        for version in [None, Some("2017-04-17")] {
            let mut request = h.http.get(&url).bearer_auth(h.token());
            if let Some(v) = version {
                request = request.header(X_MS_VERSION, v);
            }
            let (status, code, fields) = error_of(request.send().await.unwrap()).await;
            assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
            assert_eq!(
                fields["AuthenticationErrorDetail"],
                "Authentication scheme Bearer is not supported in this version."
            );
        }

        let vault = h.token_for(&sample::system_principal(), "https://vault.azure.net");
        let (expired, _) = h.authority.mint(
            &sample::system_principal(),
            STORAGE,
            SystemTime::now() - Duration::from_secs(7200),
            Duration::from_secs(3600),
        );
        let foreign = TokenAuthority::generate(sample::TENANT_ID)
            .mint(
                &sample::system_principal(),
                STORAGE,
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .0;
        for (token, detail) in [
            (vault, "Audience validation failed"),
            (expired, "The token is expired"),
            (foreign, "Signature validation failed"),
        ] {
            let answer = h
                .http
                .get(&url)
                .bearer_auth(token)
                .header(X_MS_VERSION, VERSION)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.headers()["www-authenticate"], challenge.as_str());
            let (status, code, fields) = error_of(answer).await;
            assert_eq!((status, code.as_str()), (401, "InvalidAuthenticationInfo"));
            assert!(
                fields["AuthenticationErrorDetail"].contains(detail),
                "{fields:?}"
            );
        }

        // Without the trailing slash is Storage's audience too.
        let bare = h.token_for(&sample::system_principal(), "https://storage.azure.com");
        let answer = h
            .http
            .get(&url)
            .bearer_auth(bare)
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);

        let shared_key = h
            .http
            .get(&url)
            .header("authorization", "SharedKey devstoreaccount1:c2ln")
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(shared_key).await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));

        let recorded = h.fake.requests();
        assert_eq!(recorded[0].authorization, Authorization::Anonymous);
        assert_eq!(
            recorded[0].error_code.as_deref(),
            Some("NoAuthenticationInformation")
        );
        assert_eq!(
            recorded[3].principal_oid, None,
            "refused tokens name no one"
        );
        assert_eq!(recorded.last().unwrap().authorization, Authorization::Other);
    }

    #[tokio::test]
    async fn rbac_is_by_object_id_and_missing_things_are_404() {
        let h = Harness::new().await;
        // app-identity has no data role in the sample.
        let user = sample::user_assigned().principal;
        let answer = h
            .http
            .get(h.url(SAMPLE_BLOB))
            .bearer_auth(h.token_for(&user, STORAGE))
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(answer).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationPermissionMismatch")
        );

        // A reader reads but cannot write.
        assert!(h
            .fake
            .assign_role(SAMPLE_ACCOUNT, sample::USER_OBJECT_ID, BlobRole::Reader));
        let read = h
            .http
            .get(h.url(SAMPLE_BLOB))
            .bearer_auth(h.token_for(&user, STORAGE))
            .header(X_MS_VERSION, VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200);
        let write = h
            .http
            .put(h.url("new.txt"))
            .bearer_auth(h.token_for(&user, STORAGE))
            .header(X_MS_VERSION, VERSION)
            .header("x-ms-blob-type", "BlockBlob")
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(write).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationPermissionMismatch")
        );
        assert!(h
            .fake
            .blob(SAMPLE_ACCOUNT, SAMPLE_CONTAINER, "new.txt")
            .is_none());

        let (status, code, fields) = error_of(h.get(&h.url("absent.txt")).await).await;
        assert_eq!((status, code.as_str()), (404, "BlobNotFound"));
        assert!(fields["Message"].starts_with("The specified blob does not exist.\nRequestId:"));
        let missing_container = h
            .get(&h.fake.blob_url(SAMPLE_ACCOUNT, "absent", "x.txt"))
            .await;
        let (status, code, _) = error_of(missing_container).await;
        assert_eq!((status, code.as_str()), (404, "ContainerNotFound"));
        let missing_account = h.get(&h.fake.blob_url("nosuchaccount", "data", "x")).await;
        let (status, code, _) = error_of(missing_account).await;
        assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
        let listing = h
            .get(&format!(
                "{}/data?restype=container&comp=list",
                h.fake.base_url()
            ))
            .await;
        let (status, code, _) = error_of(listing).await;
        assert_eq!((status, code.as_str()), (501, "NotImplemented"));
    }

    #[tokio::test]
    async fn put_blob_and_create_container_with_a_bearer_token() {
        let h = Harness::new().await;
        let create = |name: &'static str| {
            h.http
                .put(format!("{}/{name}?restype=container", h.fake.base_url()))
                .bearer_auth(h.token())
                .header(X_MS_VERSION, VERSION)
                .send()
        };
        assert_eq!(create("fresh").await.unwrap().status(), 201);
        let (status, code, _) = error_of(create("fresh").await.unwrap()).await;
        assert_eq!((status, code.as_str()), (409, "ContainerAlreadyExists"));
        let (status, code, _) = error_of(create("Bad_Name").await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidResourceName"));

        let url = h.fake.blob_url(SAMPLE_ACCOUNT, "fresh", "dir/a file.csv");
        assert!(url.ends_with("/fresh/dir/a%20file.csv"), "{url}");
        let put = h
            .http
            .put(&url)
            .bearer_auth(h.token())
            .header(X_MS_VERSION, VERSION)
            .header("x-ms-blob-type", "BlockBlob")
            .header("content-type", "text/csv")
            .body("a,b\n1,2\n")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
        let etag = put.headers()["etag"].to_str().unwrap().to_string();
        let stored = h
            .fake
            .blob(SAMPLE_ACCOUNT, "fresh", "dir/a file.csv")
            .unwrap();
        assert_eq!(stored.content.as_ref(), b"a,b\n1,2\n");
        assert_eq!(stored.content_type, "text/csv");
        assert_eq!(stored.etag, etag);
        let got = h.get(&url).await;
        assert_eq!(got.headers()["etag"].to_str().unwrap(), etag);
        assert_eq!(got.text().await.unwrap(), "a,b\n1,2\n");

        let untyped = h
            .http
            .put(&url)
            .bearer_auth(h.token())
            .header(X_MS_VERSION, VERSION)
            .body("x")
            .send()
            .await
            .unwrap();
        let (status, code, fields) = error_of(untyped).await;
        assert_eq!((status, code.as_str()), (400, "MissingRequiredHeader"));
        assert_eq!(fields["HeaderName"], "x-ms-blob-type");
    }

    #[tokio::test]
    async fn user_delegation_key_carries_the_tokens_identity() {
        let h = Harness::new().await;
        let key = h.delegation_key(&sample::system_principal()).await;
        assert_eq!(key["SignedOid"], sample::SYSTEM_OBJECT_ID);
        assert_eq!(key["SignedTid"], sample::TENANT_ID);
        assert_eq!(key["SignedService"], "b");
        assert_eq!(key["SignedVersion"], VERSION);
        assert_eq!(BASE64.decode(&key["Value"]).unwrap().len(), 32);
        // Derived from the fake's seed and the key's fields, nothing stored.
        let derived = delegation_key(
            &h.fake.shared.seed,
            &key["SignedOid"],
            &key["SignedTid"],
            &key["SignedStart"],
            &key["SignedExpiry"],
            "b",
            &key["SignedVersion"],
        );
        assert_eq!(BASE64.encode(derived), key["Value"]);

        let post = |body: String, version: &'static str| {
            h.http
                .post(format!(
                    "{}/?restype=service&comp=userdelegationkey",
                    h.fake.base_url()
                ))
                .bearer_auth(h.token())
                .header(X_MS_VERSION, version)
                .body(body)
                .send()
        };
        let now = OffsetDateTime::now_utc();
        let too_long = format!(
            "<KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
            sas_time(now),
            sas_time(now + Duration::from_secs(8 * 24 * 3600))
        );
        let (status, code, fields) = error_of(post(too_long, VERSION).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidXmlNodeValue"));
        assert_eq!(fields["XmlNodeName"], "Expiry");
        let (status, code, _) =
            error_of(post("<KeyInfo><Start>".into(), VERSION).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidXmlDocument"));
        let no_expiry = format!("<KeyInfo><Start>{}</Start></KeyInfo>", sas_time(now));
        let (status, code, _) = error_of(post(no_expiry, VERSION).await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "MissingRequiredXmlNode"));
        let ok_body = format!(
            "<KeyInfo><Expiry>{}</Expiry></KeyInfo>",
            sas_time(now + Duration::from_secs(60))
        );
        let (status, code, _) = error_of(post(ok_body.clone(), "2018-03-28").await.unwrap()).await;
        assert_eq!((status, code.as_str()), (400, "InvalidQueryParameterValue"));
        assert_eq!(post(ok_body, VERSION).await.unwrap().status(), 200);

        // No data role, no key.
        let user = sample::user_assigned().principal;
        let refused = h
            .http
            .post(format!(
                "{}/?restype=service&comp=userdelegationkey",
                h.fake.base_url()
            ))
            .bearer_auth(h.token_for(&user, STORAGE))
            .header(X_MS_VERSION, VERSION)
            .body(format!(
                "<KeyInfo><Expiry>{}</Expiry></KeyInfo>",
                sas_time(now + Duration::from_secs(60))
            ))
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(refused).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationPermissionMismatch")
        );
    }

    #[tokio::test]
    async fn user_delegation_sas_is_verified() {
        let h = Harness::new().await;
        let key = h.delegation_key(&sample::system_principal()).await;
        let resource = "/blob/devstoreaccount1/data/hello.txt";
        let se = in_an_hour();
        let read = delegation_sas(&key, resource, "b", "r", &se, "");
        let url = format!("{}?{read}", h.url(SAMPLE_BLOB));
        let answer = h.http.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.headers()["x-ms-version"],
            "2025-05-05",
            "sv when no header"
        );
        assert_eq!(answer.text().await.unwrap(), SAMPLE_BLOB_CONTENT);
        let recorded = h.fake.requests().pop().unwrap();
        assert_eq!(recorded.authorization, Authorization::UserDelegationSas);
        assert_eq!(
            recorded.principal_oid.as_deref(),
            Some(sample::SYSTEM_OBJECT_ID)
        );
        assert_eq!(recorded.query_value("sig").as_deref(), Some("REDACTED"));
        assert_eq!(recorded.query_value("sp").as_deref(), Some("r"));

        // Read-only cannot write.
        let put = h
            .http
            .put(&url)
            .header("x-ms-blob-type", "BlockBlob")
            .body("overwritten")
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_of(put).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationPermissionMismatch")
        );
        assert_eq!(
            h.fake
                .blob(SAMPLE_ACCOUNT, SAMPLE_CONTAINER, SAMPLE_BLOB)
                .unwrap()
                .content,
            SAMPLE_BLOB_CONTENT
        );

        // Tampering with any signed field breaks the signature.
        for tampered in [
            url.replace("sp=r", "sp=rw"),
            url.replace("hello.txt?", "other.txt?"),
            url.replace("sig=", "sig=AAAA"),
        ] {
            let (status, code, fields) =
                error_of(h.http.get(&tampered).send().await.unwrap()).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "AuthenticationFailed"),
                "{tampered}"
            );
            assert!(
                fields["AuthenticationErrorDetail"].starts_with("Signature did not match"),
                "{fields:?}"
            );
        }

        // Create-only writes new blobs but does not overwrite.
        let new_resource = "/blob/devstoreaccount1/data/new.txt";
        let create = delegation_sas(&key, new_resource, "b", "c", &se, "");
        let new_url = format!("{}?{create}", h.url("new.txt"));
        let put = |url: String| {
            h.http
                .put(url)
                .header("x-ms-blob-type", "BlockBlob")
                .body("created with a SAS")
                .send()
        };
        assert_eq!(put(new_url.clone()).await.unwrap().status(), 201);
        let (status, code, _) = error_of(put(new_url).await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationPermissionMismatch")
        );

        // A container SAS covers every blob in it.
        let container = delegation_sas(&key, "/blob/devstoreaccount1/data", "c", "rw", &se, "");
        let answer = h
            .http
            .get(format!("{}?{container}", h.url(SAMPLE_BINARY_BLOB)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.bytes().await.unwrap().len(), SAMPLE_BINARY_SIZE);

        // Expired, and from the wrong address.
        let past = sas_time(OffsetDateTime::now_utc() - Duration::from_secs(60));
        let expired = delegation_sas(&key, resource, "b", "r", &past, "");
        let (status, code, fields) = error_of(
            h.http
                .get(format!("{}?{expired}", h.url(SAMPLE_BLOB)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
        assert!(fields["AuthenticationErrorDetail"].contains("time frame"));
        let elsewhere = delegation_sas(&key, resource, "b", "r", &se, "10.0.0.1-10.0.0.9");
        let (status, code, _) = error_of(
            h.http
                .get(format!("{}?{elsewhere}", h.url(SAMPLE_BLOB)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationSourceIPMismatch")
        );
        let loopback = delegation_sas(&key, resource, "b", "r", &se, "127.0.0.1");
        let answer = h
            .http
            .get(format!("{}?{loopback}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);

        // The SAS is bounded by the signer's RBAC: revoke it, and the SAS stops working.
        h.fake
            .shared
            .data()
            .accounts
            .get_mut(SAMPLE_ACCOUNT)
            .unwrap()
            .roles
            .clear();
        let (status, code, _) = error_of(h.http.get(&url).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "AuthorizationPermissionMismatch")
        );
    }

    #[tokio::test]
    async fn delegation_keys_of_another_fake_do_not_verify() {
        let h = Harness::new().await;
        let other = Harness::new().await;
        let key = other.delegation_key(&sample::system_principal()).await;
        let sas = delegation_sas(
            &key,
            "/blob/devstoreaccount1/data/hello.txt",
            "b",
            "r",
            &in_an_hour(),
            "",
        );
        let (status, code, _) = error_of(
            h.http
                .get(format!("{}?{sas}", h.url(SAMPLE_BLOB)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
        // A SAS cannot ask for a delegation key.
        let sas_udk = format!(
            "{}/?restype=service&comp=userdelegationkey&{sas}",
            h.fake.base_url()
        );
        let (status, code, _) = error_of(h.http.post(sas_udk).body("").send().await.unwrap()).await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
    }

    #[tokio::test]
    async fn service_sas_is_verified_with_the_account_key() {
        let h = Harness::new().await;
        let account_key = BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap();
        let se = in_an_hour();
        let resource = "/blob/devstoreaccount1/data/hello.txt";
        // 2020-12-06+ layout (16 lines), as the ARM fake signs.
        let sts16 = format!("r\n\n{se}\n{resource}\n\n\nhttps\n2025-05-05\nb\n\n\n\n\n\n\n");
        let sig16 = hmac_base64(&account_key, &sts16);
        let sas16 = query(&[
            ("sv", "2025-05-05"),
            ("sr", "b"),
            ("se", &se),
            ("sp", "r"),
            ("spr", "https"),
            ("sig", &sig16),
        ]);
        let answer = h
            .http
            .get(format!("{}?{sas16}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.unwrap(), SAMPLE_BLOB_CONTENT);
        let recorded = h.fake.requests().pop().unwrap();
        assert_eq!(recorded.authorization, Authorization::ServiceSas);
        assert_eq!(recorded.principal_oid, None);

        // 2018-11-09 .. 2020-10-02 layout (15 lines, no ses), with a
        // response-header override.
        let sts15 =
            format!("r\n\n{se}\n{resource}\n\n\n\n2019-12-12\nb\n\n\n\n\n\ntext/x-override");
        let sig15 = hmac_base64(&account_key, &sts15);
        let sas15 = query(&[
            ("sv", "2019-12-12"),
            ("sr", "b"),
            ("se", &se),
            ("sp", "r"),
            ("rsct", "text/x-override"),
            ("sig", &sig15),
        ]);
        let answer = h
            .http
            .get(format!("{}?{sas15}", h.url(SAMPLE_BLOB)))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "text/x-override");

        // Signed with another key.
        let forged = query(&[
            ("sv", "2025-05-05"),
            ("sr", "b"),
            ("se", &se),
            ("sp", "r"),
            ("spr", "https"),
            ("sig", &hmac_base64(b"not the account key", &sts16)),
        ]);
        let (status, code, _) = error_of(
            h.http
                .get(format!("{}?{forged}", h.url(SAMPLE_BLOB)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));

        // A version whose layout the fake does not know is refused, not guessed.
        let old = query(&[
            ("sv", "2015-04-05"),
            ("sr", "b"),
            ("se", &se),
            ("sp", "r"),
            ("sig", &sig16),
        ]);
        let (status, code, fields) = error_of(
            h.http
                .get(format!("{}?{old}", h.url(SAMPLE_BLOB)))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, code.as_str()), (403, "AuthenticationFailed"));
        assert!(fields["AuthenticationErrorDetail"].contains("sv=2015-04-05"));
    }

    #[test]
    fn formats() {
        assert!(is_version("2025-11-05"));
        assert!(!is_version("2025-11-5"));
        assert!(!is_version("latest"));
        let t = parse_time("2026-11-22T02:00:00Z").unwrap();
        assert_eq!(sas_time(t), "2026-11-22T02:00:00Z");
        assert_eq!(http_date(t), "Sun, 22 Nov 2026 02:00:00 GMT");
        assert_eq!(parse_time("2026-11-22T02:00Z"), Some(t));
        assert_eq!(
            parse_time("2026-11-22").map(sas_time).as_deref(),
            Some("2026-11-22T00:00:00Z")
        );
        assert_eq!(
            parse_time("2026-11-22T02:00:00.1234567Z")
                .map(sas_time)
                .as_deref(),
            Some("2026-11-22T02:00:00Z")
        );
        assert!(parse_time("tomorrow").is_none());
        assert_eq!(ip_range_contains("127.0.0.1", CLIENT_IP), Some(true));
        assert_eq!(
            ip_range_contains("127.0.0.0-127.0.0.9", CLIENT_IP),
            Some(true)
        );
        assert_eq!(
            ip_range_contains("10.0.0.1-10.0.0.9", CLIENT_IP),
            Some(false)
        );
        assert_eq!(ip_range_contains("nope", CLIENT_IP), None);
        assert_eq!(redact_sig("sv=1&sig=abc%3D&sp=r"), "sv=1&sig=REDACTED&sp=r");
        assert_eq!(xml_escape("a<b&'c'"), "a&lt;b&amp;&apos;c&apos;");
        assert_eq!(sample_binary().len(), SAMPLE_BINARY_SIZE);
        assert_ne!(sample_binary()[..16], [0u8; 16]);
    }
}
