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

mod authentication;
mod blobs;
mod delegation_key;
mod errors;
mod formats;
mod sas;
mod serving;
#[cfg(test)]
mod tests;

#[allow(unused_imports)]
use authentication::*;
#[allow(unused_imports)]
use blobs::*;
#[allow(unused_imports)]
use delegation_key::*;
#[allow(unused_imports)]
use errors::*;
#[allow(unused_imports)]
use formats::*;
#[allow(unused_imports)]
use sas::*;
#[allow(unused_imports)]
use serving::*;
