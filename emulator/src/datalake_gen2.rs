//! An ADLS Gen2 fake (the `dfs` endpoint's List Paths) built from section 5
//! of `azure-wire-contracts.md`:
//! `GET /{filesystem}?resource=filesystem&recursive=..&directory=..&maxResults=..&continuation=..`
//! with string-encoded numbers and booleans as the service sends them,
//! `x-ms-continuation` paging, a required `x-ms-version`, error JSON plus
//! `x-ms-error-code`, and 401 `InvalidAuthenticationInfo` carrying the
//! unquoted `WWW-Authenticate` challenge.
//!
//! Tokens must be for `https://storage.azure.com/`. Filesystems are seeded
//! through methods (there is no write API); [`DataLakeGen2Fake::add_generated_dir`]
//! makes folders of any size that cost no memory per entry. One fake serves
//! one account.

use std::{
    collections::BTreeMap,
    io,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use base64::Engine;
use serde_json::{json, Value};

use crate::{
    authority::{Claims, TokenAuthority},
    datalake_tree::{self, Entry, Key, Tree, TreeError},
    front_door::{
        bearer::{self, TokenSeen},
        lock, request_id, Fault, FaultScript, Grant, RecordedRequest, RequestLog,
    },
    http::{serve_https, RunningServer},
    tls::TestCa,
};

/// The Storage token audience the gateway uses.
pub const STORAGE_AUDIENCE: &str = "https://storage.azure.com/";
/// The filesystem `--emulator` serves.
pub const SAMPLE_FILESYSTEM: &str = "data";
/// The oldest `x-ms-version` the dfs endpoint serves List Paths with.
const MIN_VERSION: &str = "2018-11-09";
/// Results per page when `maxResults` is absent, and the cap.
const MAX_RESULTS: usize = 5000;
/// 100 ns ticks between 1601-01-01 and 1970-01-01 (Windows FILETIME epoch).
const FILETIME_UNIX_EPOCH: u64 = 116_444_736_000_000_000;

struct Inner {
    authority: Arc<TokenAuthority>,
    filesystems: Mutex<BTreeMap<String, Tree>>,
    grant: Mutex<Grant>,
    audiences: Mutex<Vec<String>>,
    log: RequestLog,
    faults: FaultScript,
}

/// A running Gen2 account. Dropping it stops the server.
pub struct DataLakeGen2Fake {
    server: RunningServer,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DataLakeGen2Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLakeGen2Fake")
            .field("base_url", &self.server.base_url())
            .finish_non_exhaustive()
    }
}

impl DataLakeGen2Fake {
    /// An account with no filesystems over HTTPS on 127.0.0.1 (a free
    /// port), open to every caller with a Storage token.
    pub async fn start(authority: Arc<TokenAuthority>, ca: &TestCa) -> io::Result<Self> {
        Self::start_on(authority, ca, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1 (0 for a free port).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> io::Result<Self> {
        let inner = Arc::new(Inner {
            authority,
            filesystems: Mutex::default(),
            grant: Mutex::new(Grant::Everyone),
            audiences: Mutex::new(vec![
                STORAGE_AUDIENCE.into(),
                STORAGE_AUDIENCE.trim_end_matches('/').into(),
            ]),
            log: RequestLog::default(),
            faults: FaultScript::default(),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let server = serve_https(router, port, ca.server_config(&[b"h2", b"http/1.1"])).await?;
        Ok(Self { server, inner })
    }

    /// The account `--emulator` serves (see [`seed_sample`]).
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
        seed_sample(&fake).map_err(io::Error::other)?;
        Ok(fake)
    }

    /// `https://localhost:<port>`: the account's dfs URL.
    pub fn account_url(&self) -> String {
        self.server.base_url()
    }

    /// `localhost:<port>`, for `upstream.allowed_hosts`.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Creates an empty filesystem (no-op if it exists).
    pub fn create_filesystem(&self, name: &str) {
        lock(&self.inner.filesystems)
            .entry(name.to_string())
            .or_insert_with(|| Tree::new("$superuser", "$superuser"));
    }

    /// Creates a directory and its parents in `filesystem` (created too).
    pub fn create_directory(&self, filesystem: &str, path: &str) -> Result<(), TreeError> {
        let key = datalake_tree::split(path)?;
        self.with_fs(filesystem, |tree| tree.mkdirs(&key))
    }

    /// Writes a file of `length` zero bytes (parents created).
    pub fn create_file(
        &self,
        filesystem: &str,
        path: &str,
        length: usize,
    ) -> Result<(), TreeError> {
        let key = datalake_tree::split(path)?;
        self.with_fs(filesystem, |tree| {
            tree.create_file(&key, vec![0; length], true, Some(0o640))
        })
    }

    /// Adds a directory of `count` generated files `file-00000000` .. that
    /// cost no memory per entry.
    pub fn add_generated_dir(
        &self,
        filesystem: &str,
        path: &str,
        count: u64,
    ) -> Result<(), TreeError> {
        let key = datalake_tree::split(path)?;
        self.with_fs(filesystem, |tree| tree.add_generated(&key, count))
    }

    fn with_fs<T>(&self, filesystem: &str, f: impl FnOnce(&mut Tree) -> T) -> T {
        let mut filesystems = lock(&self.inner.filesystems);
        let tree = filesystems
            .entry(filesystem.to_string())
            .or_insert_with(|| Tree::new("$superuser", "$superuser"));
        f(tree)
    }

    /// Who holds a data role (Storage Blob Data Reader or better).
    pub fn set_grant(&self, grant: Grant) {
        *lock(&self.inner.grant) = grant;
    }

    /// The audiences the account accepts.
    pub fn set_audiences(&self, audiences: &[&str]) {
        *lock(&self.inner.audiences) = audiences.iter().map(|a| a.to_string()).collect();
    }

    /// Scripted failures for the next authenticated requests.
    pub fn faults(&self) -> &FaultScript {
        &self.inner.faults
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.snapshot()
    }
}

/// Seeds the sample account `--emulator` serves, filesystem
/// [`SAMPLE_FILESYSTEM`] (`data`):
/// - `raw/2024/01/events.json`, `raw/2024/02/events.json`;
/// - `curated/sales.parquet`;
/// - `generated/` with 2,500 generated files, to show continuation paging.
pub fn seed_sample(fake: &DataLakeGen2Fake) -> Result<(), TreeError> {
    fake.create_filesystem(SAMPLE_FILESYSTEM);
    fake.create_file(SAMPLE_FILESYSTEM, "raw/2024/01/events.json", 2048)?;
    fake.create_file(SAMPLE_FILESYSTEM, "raw/2024/02/events.json", 3072)?;
    fake.create_file(SAMPLE_FILESYSTEM, "curated/sales.parquet", 4096)?;
    fake.add_generated_dir(SAMPLE_FILESYSTEM, "generated", 2_500)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut seen = TokenSeen::default();
    let mut response = inner.serve(&method, &uri, &headers, &mut seen);
    let out = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        out.insert("x-ms-request-id", id);
    }
    if let Some(version) = headers.get("x-ms-version") {
        out.insert("x-ms-version", version.clone());
    }
    if let Some(client_id) = headers.get("x-ms-client-request-id") {
        out.insert("x-ms-client-request-id", client_id.clone());
    }
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        out.insert(header::DATE, date);
    }
    out.insert(
        header::SERVER,
        HeaderValue::from_static("Windows-Azure-HDFS/1.0 Microsoft-HTTPAPI/2.0"),
    );
    let status = response.status().as_u16();
    inner
        .log
        .push(RecordedRequest::new(&method, &uri, seen, status));
    response
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The filesystem-name rule: 3-63 of `a-z0-9-`, starting with a letter,
/// digit or `$`, ending with a letter or digit, no `--`.
pub fn valid_filesystem_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit() || bytes[0] == b'$')
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--")
}

fn encode_continuation(filesystem: &str, key: &Key) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(format!("dfsfake\n{filesystem}\n{}", key.join("/")))
}

fn decode_continuation(filesystem: &str, token: &str) -> Option<Key> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let mut parts = text.splitn(3, '\n');
    (parts.next()? == "dfsfake" && parts.next()? == filesystem)
        .then(|| datalake_tree::split(parts.next()?).ok())
        .flatten()
}

impl Inner {
    fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Response {
        let version = headers
            .get("x-ms-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(version) = version else {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "MissingRequiredHeader",
                "An HTTP header that's mandatory for this request is not specified.",
            );
        };
        if version.len() != 10 || version.as_str() < MIN_VERSION {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "InvalidHeaderValue",
                "The value for one of the HTTP headers is not in the correct format.",
            );
        }
        let claims = match self.authenticate(headers, seen) {
            Ok(claims) => claims,
            Err(response) => return *response,
        };
        if let Some(fault) = self.faults.next() {
            return fault_response(fault);
        }
        let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
        let (&[filesystem], &Method::GET) = (segments.as_slice(), method) else {
            return storage_error(
                StatusCode::BAD_REQUEST,
                "UnsupportedHttpVerb",
                "The resource doesn't support the specified HTTP verb.",
            );
        };
        if !lock(&self.grant).allows(&claims.oid) {
            return storage_error(
                StatusCode::FORBIDDEN,
                "AuthorizationPermissionMismatch",
                "This request is not authorized to perform this operation using this permission.",
            );
        }
        self.list_paths(uri, filesystem)
    }

    fn authenticate(
        &self,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Result<Claims, Box<Response>> {
        let audiences = lock(&self.audiences).clone();
        let accepted: Vec<&str> = audiences.iter().map(String::as_str).collect();
        bearer::authenticate(&self.authority, headers, &accepted, seen).map_err(|refusal| {
            let code = if refusal.no_token() {
                "NoAuthenticationInformation"
            } else {
                "InvalidAuthenticationInfo"
            };
            let challenge = format!(
                "Bearer authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize resource_id=https://storage.azure.com",
                self.authority.tenant_id()
            );
            Box::new(bearer::with_challenge(
                storage_error(
                    StatusCode::UNAUTHORIZED,
                    code,
                    "Server failed to authenticate the request. Please refer to the information in the www-authenticate header.",
                ),
                &challenge,
            ))
        })
    }

    fn list_paths(&self, uri: &Uri, filesystem: &str) -> Response {
        let filesystem = match percent_encoding::percent_decode_str(filesystem).decode_utf8() {
            Ok(name) if valid_filesystem_name(&name) => name.into_owned(),
            _ => {
                return storage_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidResourceName",
                    "The specifed resource name contains invalid characters.",
                )
            }
        };
        if query_param(uri, "resource").as_deref() != Some("filesystem") {
            return invalid_query("resource");
        }
        let recursive = match query_param(uri, "recursive").as_deref() {
            None => {
                return storage_error(
                    StatusCode::BAD_REQUEST,
                    "MissingRequiredQueryParameter",
                    "A query parameter that's mandatory for this request is not specified.",
                )
            }
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(_) => return invalid_query("recursive"),
        };
        let max = match query_param(uri, "maxResults").map(|m| m.parse::<usize>()) {
            None => MAX_RESULTS,
            Some(Ok(m)) if m >= 1 => m.min(MAX_RESULTS),
            Some(_) => return invalid_query("maxResults"),
        };
        let directory =
            match datalake_tree::split(&query_param(uri, "directory").unwrap_or_default()) {
                Ok(key) => key,
                Err(_) => return invalid_query("directory"),
            };
        let after = match query_param(uri, "continuation").filter(|c| !c.is_empty()) {
            None => None,
            Some(token) => match decode_continuation(&filesystem, &token) {
                Some(key) => Some(key),
                None => return invalid_query("continuation"),
            },
        };
        let filesystems = lock(&self.filesystems);
        let Some(tree) = filesystems.get(&filesystem) else {
            return storage_error(
                StatusCode::NOT_FOUND,
                "FilesystemNotFound",
                "The specified filesystem does not exist.",
            );
        };
        let Some(target) = tree.get(&directory) else {
            return storage_error(
                StatusCode::NOT_FOUND,
                "PathNotFound",
                "The specified path does not exist.",
            );
        };
        let (entries, more) = if target.is_directory {
            tree.list(&directory, recursive, after.as_deref(), max)
        } else {
            (vec![target], false)
        };
        let paths: Vec<Value> = entries.iter().map(path_json).collect();
        let mut response = (StatusCode::OK, json!({ "paths": paths }).to_string()).into_response();
        let out = response.headers_mut();
        out.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=utf-8"),
        );
        if let (true, Some(last)) = (more, entries.last()) {
            if let Ok(value) = HeaderValue::from_str(&encode_continuation(&filesystem, &last.key)) {
                out.insert("x-ms-continuation", value);
            }
        }
        response
    }
}

/// One `paths[]` item with the service's string-encoded numbers and booleans.
fn path_json(entry: &Entry) -> Value {
    let modified = UNIX_EPOCH + Duration::from_millis(entry.modified_ms);
    let ticks = FILETIME_UNIX_EPOCH + entry.created_ms * 10_000;
    let mut item = json!({
        "contentLength": entry.length.to_string(),
        "creationTime": ticks.to_string(),
        "etag": format!("0x8D{:013X}", entry.modified_ms.wrapping_mul(10_000) & 0xF_FFFF_FFFF_FFFF),
        "expiryTime": "0",
        "group": entry.group,
        "lastModified": httpdate::fmt_http_date(modified),
        "name": entry.path(),
        "owner": entry.owner,
        "permissions": datalake_tree::rwx(entry.mode),
    });
    if entry.is_directory {
        item["isDirectory"] = json!("true");
    }
    item
}

fn invalid_query(name: &str) -> Response {
    storage_error(
        StatusCode::BAD_REQUEST,
        "InvalidQueryParameterValue",
        &format!(
            "Value for one of the query parameters specified in the request URI is invalid. (parameter: {name})"
        ),
    )
}

/// A scripted failure in Storage's error shape.
fn fault_response(fault: Fault) -> Response {
    let status = fault.status_code(StatusCode::INTERNAL_SERVER_ERROR);
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => (
            "ServerBusy",
            "Operations per second is over the account limit.",
        ),
        _ => (
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        ),
    };
    fault.finish(storage_error(status, code, message))
}

/// `{"error":{"code":..,"message":"<text>\nRequestId:..\nTime:.."}}` plus
/// `x-ms-error-code`.
fn storage_error(status: StatusCode, code: &str, message: &str) -> Response {
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let body = json!({"error": {
        "code": code,
        "message": format!("{message}\nRequestId:{}\nTime:{time}", request_id()),
    }});
    let mut response = (status, body.to_string()).into_response();
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(code) {
        out.insert("x-ms-error-code", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front_door::{
        testing::{Kit, OID, OTHER_OID},
        Fault,
    };

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Value,
    }

    async fn list(kit: &Kit, url: &str, token: Option<&str>, version: Option<&str>) -> Answer {
        let mut request = kit.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(version) = version {
            request = request.header("x-ms-version", version);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.json().await.unwrap_or(Value::Null),
        }
    }

    async fn account(kit: &Kit) -> DataLakeGen2Fake {
        let fake = DataLakeGen2Fake::start(Arc::clone(&kit.authority), &kit.ca)
            .await
            .unwrap();
        fake.create_file("data", "dir1/file.bin", 456).unwrap();
        fake.create_directory("data", "dir1/sub").unwrap();
        fake.add_generated_dir("data", "many", 7).unwrap();
        fake
    }

    #[tokio::test]
    async fn list_paths_pages_with_x_ms_continuation() {
        let kit = Kit::new();
        let fake = account(&kit).await;
        let token = kit.token_for(OID, STORAGE_AUDIENCE);
        let base = format!(
            "{}/data?resource=filesystem&recursive=true&maxResults=3",
            fake.account_url()
        );
        let mut names = Vec::new();
        let mut continuation: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = url::Url::parse(&base).unwrap();
            if let Some(token) = &continuation {
                url.query_pairs_mut().append_pair("continuation", token);
            }
            let answer = list(&kit, url.as_str(), Some(&token), Some("2025-05-05")).await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.headers["x-ms-version"], "2025-05-05");
            for path in answer.body["paths"].as_array().unwrap() {
                names.push(path["name"].as_str().unwrap().to_string());
            }
            pages += 1;
            match answer.headers.get("x-ms-continuation") {
                Some(next) => continuation = Some(next.to_str().unwrap().to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 4);
        assert_eq!(names.len(), 11);
        assert_eq!(&names[..3], ["dir1", "dir1/file.bin", "dir1/sub"]);
        assert_eq!(names[4], "many/file-00000000");

        let answer = list(
            &kit,
            &format!(
                "{}/data?resource=filesystem&recursive=false&directory=dir1",
                fake.account_url()
            ),
            Some(&token),
            Some("2023-11-03"),
        )
        .await;
        let paths = answer.body["paths"].as_array().unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0]["contentLength"], "456");
        assert!(paths[0].get("isDirectory").is_none());
        assert_eq!(paths[1]["isDirectory"], "true");
        assert!(answer.headers.get("x-ms-continuation").is_none());
    }

    #[tokio::test]
    async fn refusals_carry_the_error_json_and_code_header() {
        let kit = Kit::new();
        let fake = account(&kit).await;
        let token = kit.token_for(OID, STORAGE_AUDIENCE);
        let base = fake.account_url();
        let url = |fs: &str, extra: &str| {
            format!("{base}/{fs}?resource=filesystem&recursive=false{extra}")
        };
        let v = Some("2025-05-05");

        let answer = list(&kit, &url("data", ""), Some(&token), None).await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.headers["x-ms-error-code"], "MissingRequiredHeader");

        let answer = list(&kit, &url("data", ""), None, v).await;
        assert_eq!(answer.status, 401);
        let challenge = answer.headers["www-authenticate"].to_str().unwrap();
        assert_eq!(
            challenge,
            "Bearer authorization_uri=https://login.microsoftonline.com/dc822496-97fa-4380-991a-c8b4ba5d4f73/oauth2/authorize resource_id=https://storage.azure.com"
        );
        let vault = kit.token_for(OID, "https://vault.azure.net");
        let answer = list(&kit, &url("data", ""), Some(&vault), v).await;
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body["error"]["code"], "InvalidAuthenticationInfo");
        assert_eq!(
            answer.headers["x-ms-error-code"],
            "InvalidAuthenticationInfo"
        );
        assert!(answer.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\nRequestId:"));

        let answer = list(&kit, &url("nothere", ""), Some(&token), v).await;
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_str()),
            (404, Some("FilesystemNotFound"))
        );
        let answer = list(&kit, &url("data", "&directory=missing"), Some(&token), v).await;
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_str()),
            (404, Some("PathNotFound"))
        );
        let answer = list(&kit, &url("data", "&continuation=garbage"), Some(&token), v).await;
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_str()),
            (400, Some("InvalidQueryParameterValue"))
        );
        let answer = list(
            &kit,
            &format!("{base}/data?resource=filesystem"),
            Some(&token),
            v,
        )
        .await;
        assert_eq!(
            answer.headers["x-ms-error-code"],
            "MissingRequiredQueryParameter"
        );
        let answer = list(&kit, &url("Bad_Name", ""), Some(&token), v).await;
        assert_eq!(answer.headers["x-ms-error-code"], "InvalidResourceName");

        fake.set_grant(Grant::only([OTHER_OID]));
        let answer = list(&kit, &url("data", ""), Some(&token), v).await;
        assert_eq!(answer.status, 403);
        assert_eq!(
            answer.body["error"]["code"],
            "AuthorizationPermissionMismatch"
        );

        fake.set_grant(Grant::Everyone);
        fake.faults().push([Fault::throttle(2)]);
        let answer = list(&kit, &url("data", ""), Some(&token), v).await;
        assert_eq!(answer.status, 429);
        assert_eq!(answer.headers["retry-after"], "2");
        assert_eq!(answer.headers["x-ms-error-code"], "ServerBusy");
        let audiences: Vec<Option<String>> =
            fake.requests().into_iter().map(|r| r.audience).collect();
        assert_eq!(audiences[2].as_deref(), Some("https://vault.azure.net"));
    }

    #[test]
    fn filesystem_names_follow_the_service_pattern() {
        for ok in ["abc", "data-2024", "$logs", "a1b"] {
            assert!(valid_filesystem_name(ok), "{ok}");
        }
        for bad in ["ab", "Data", "a--b", "-abc", "abc-", "a_b", &"a".repeat(64)] {
            assert!(!valid_filesystem_name(bad), "{bad}");
        }
    }

    #[test]
    fn continuations_are_bound_to_their_filesystem() {
        let key = vec!["dir".to_string(), "file-00000001".to_string()];
        let token = encode_continuation("data", &key);
        assert_eq!(decode_continuation("data", &token), Some(key));
        assert_eq!(decode_continuation("other", &token), None);
        assert_eq!(decode_continuation("data", "%%%"), None);
    }

    #[test]
    fn paths_use_string_encoded_numbers() {
        let mut tree = Tree::new("o", "g");
        tree.create_file(&["d".into(), "f".into()], vec![0; 7], false, Some(0o640))
            .unwrap();
        let (entries, _) = tree.list(&[], true, None, 10);
        let dir = path_json(&entries[0]);
        assert_eq!(dir["isDirectory"], "true");
        assert_eq!(dir["name"], "d");
        let file = path_json(&entries[1]);
        assert_eq!(file["contentLength"], "7");
        assert!(file.get("isDirectory").is_none());
        assert_eq!(file["permissions"], "rw-r-----");
        assert!(file["lastModified"].as_str().unwrap().ends_with(" GMT"));
        let ticks: u64 = file["creationTime"].as_str().unwrap().parse().unwrap();
        assert!(ticks > FILETIME_UNIX_EPOCH);
    }
}
