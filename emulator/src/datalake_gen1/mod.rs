//! An ADLS Gen1 (WebHDFS) fake built from section 4 of
//! `azure-wire-contracts.md`: `LISTSTATUS` (PascalCase `FileStatuses`,
//! millisecond times, octal permissions, `listSize`/`listAfter` paging),
//! `GETFILESTATUS`, `OPEN`, `MKDIRS` and the two-step `CREATE` (307 with a
//! `Location`, then 201), so tests can build trees the way Gen1 clients do.
//!
//! Every request needs a bearer token for `https://datalake.azure.net/`
//! (trailing slash included); errors are `RemoteException` bodies with the
//! WebHDFS status mapping. `api-version` is accepted and optional, as the
//! real service's curl examples show. One fake serves one account.

use std::{
    io,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use serde_json::{json, Value};

use crate::{
    authority::{TokenAuthority, VerifyError},
    datalake_tree::{self, Entry, Key, Tree, TreeError},
    front_door::{
        bearer::{self, BearerRefusal, TokenSeen},
        lock, request_id, Fault, FaultScript, Grant, RecordedRequest, RequestLog,
    },
    http::{serve_https, RunningServer},
    tls::TestCa,
};

/// The ADLS Gen1 token audience (the trailing slash matters).
pub const DATALAKE_GEN1_AUDIENCE: &str = "https://datalake.azure.net/";
/// Owner and group of sample entries (an object id, as Gen1 returns by default).
pub const SAMPLE_OWNER: &str = "bd0e76d8-ad45-4fe1-8941-04a7bf27f071";
const WEBHDFS_VERSION: &str = "17.04.22.00";
const WEBHDFS_PREFIX: &str = "/webhdfs/v1";

struct Inner {
    authority: Arc<TokenAuthority>,
    tree: Mutex<Tree>,
    grant: Mutex<Grant>,
    audience: Mutex<String>,
    log: RequestLog,
    faults: FaultScript,
}

/// A running Gen1 account. Dropping it stops the server.
pub struct DataLakeGen1Fake {
    server: RunningServer,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DataLakeGen1Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLakeGen1Fake")
            .field("base_url", &self.server.base_url())
            .finish_non_exhaustive()
    }
}

impl DataLakeGen1Fake {
    /// An empty account over HTTPS on 127.0.0.1 (a free port), open to every
    /// authenticated caller.
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
            tree: Mutex::new(Tree::new(SAMPLE_OWNER, SAMPLE_OWNER)),
            grant: Mutex::new(Grant::Everyone),
            audience: Mutex::new(DATALAKE_GEN1_AUDIENCE.into()),
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

    /// `https://localhost:<port>`: the account URL to call.
    pub fn account_url(&self) -> String {
        self.server.base_url()
    }

    /// `localhost:<port>`, for `upstream.allowed_hosts`.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.server.addr().port())
    }

    /// Creates a directory and its parents.
    pub fn mkdirs(&self, path: &str) -> Result<(), TreeError> {
        let key = datalake_tree::split(path)?;
        lock(&self.inner.tree).mkdirs(&key)
    }

    /// Writes a file (parents created), replacing an existing one.
    pub fn create_file(&self, path: &str, content: &[u8]) -> Result<(), TreeError> {
        let key = datalake_tree::split(path)?;
        lock(&self.inner.tree).create_file(&key, content.to_vec(), true, None)
    }

    /// Adds a directory of `count` generated files `file-00000000` .. that
    /// cost no memory per entry.
    pub fn add_generated_dir(&self, path: &str, count: u64) -> Result<(), TreeError> {
        let key = datalake_tree::split(path)?;
        lock(&self.inner.tree).add_generated(&key, count)
    }

    /// Who passes the ACL check.
    pub fn set_grant(&self, grant: Grant) {
        *lock(&self.inner.grant) = grant;
    }

    /// The audience the account accepts.
    pub fn set_audience(&self, audience: &str) {
        *lock(&self.inner.audience) = audience.to_string();
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

/// Seeds the sample account `--emulator` serves (the tutorial's layout):
/// - `/TestFolder/` with `readme.txt`;
/// - `/vehicle1_09142014.csv` (a small CSV);
/// - `/logs/2024/01/app.log`;
/// - `/generated/` with 2,500 generated files, to show paging.
pub fn seed_sample(fake: &DataLakeGen1Fake) -> Result<(), TreeError> {
    fake.create_file(
        "/TestFolder/readme.txt",
        b"Sample folder for the ADLS Gen1 tutorial.\n",
    )?;
    fake.create_file(
        "/vehicle1_09142014.csv",
        b"vehicle,timestamp,speed\n1,2014-09-14T00:00:00Z,54\n1,2014-09-14T00:00:05Z,57\n",
    )?;
    fake.create_file("/logs/2024/01/app.log", b"started\n")?;
    fake.add_generated_dir("/generated", 2_500)
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut seen = TokenSeen::default();
    let mut response = inner.serve(&method, &uri, &headers, body, &mut seen);
    let response_headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        response_headers.insert("x-ms-request-id", id);
    }
    response_headers.insert(
        "x-ms-webhdfs-version",
        HeaderValue::from_static(WEBHDFS_VERSION),
    );
    let status = response.status().as_u16();
    inner
        .log
        .push(RecordedRequest::new(&method, &uri, seen, status));
    response
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
}

/// The decoded path after `/webhdfs/v1`, as a key and as `/a/b` for messages.
fn fs_path(uri: &Uri) -> Result<(Key, String), Box<Response>> {
    let raw = uri
        .path()
        .strip_prefix(WEBHDFS_PREFIX)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .ok_or_else(|| {
            bad_request(
                StatusCode::BAD_REQUEST,
                "IllegalArgumentException",
                "java.lang.IllegalArgumentException",
                &format!("Invalid path: {} (expected /webhdfs/v1/...)", uri.path()),
            )
        })?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| {
            bad_request(
                StatusCode::BAD_REQUEST,
                "IllegalArgumentException",
                "java.lang.IllegalArgumentException",
                "Invalid path: not UTF-8",
            )
        })?;
    let key = datalake_tree::split(&decoded).map_err(|e| {
        bad_request(
            StatusCode::BAD_REQUEST,
            "IllegalArgumentException",
            "java.lang.IllegalArgumentException",
            &e.to_string(),
        )
    })?;
    let display = format!("/{}", key.join("/"));
    Ok((key, display))
}

impl Inner {
    fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
        seen: &mut TokenSeen,
    ) -> Response {
        let (key, display) = match fs_path(uri) {
            Ok(p) => p,
            Err(response) => return *response,
        };
        let claims = match self.authenticate(headers, seen) {
            Ok(claims) => claims,
            Err(response) => return *response,
        };
        let op = query_param(uri, "op")
            .unwrap_or_default()
            .to_ascii_uppercase();
        if let Some(fault) = self.faults.next() {
            return fault_response(fault, &op);
        }
        if !lock(&self.grant).allows(&claims.oid) {
            return remote_exception(
                StatusCode::FORBIDDEN,
                "AccessControlException",
                "org.apache.hadoop.security.AccessControlException",
                &format!(
                    "{op} failed with error 0x83090aa2 (Forbidden. ACL verification failed. Either the resource does not exist or the user is not authorized to perform the requested operation.). [{}]",
                    request_id()
                ),
            );
        }
        match (method.clone(), op.as_str()) {
            (Method::GET, "LISTSTATUS") => self.list_status(uri, &key, &display),
            (Method::GET, "GETFILESTATUS") => match lock(&self.tree).get(&key) {
                Some(entry) => {
                    let mut status = file_status(&entry);
                    status["pathSuffix"] = json!("");
                    webhdfs_json(StatusCode::OK, json!({"FileStatus": status}))
                }
                None => not_found(&display),
            },
            (Method::GET, "OPEN") => match lock(&self.tree).content(&key) {
                Some(content) => {
                    let mut response = (StatusCode::OK, content.to_vec()).into_response();
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/octet-stream"),
                    );
                    response
                }
                None => not_found(&display),
            },
            (Method::PUT, "MKDIRS") => match lock(&self.tree).mkdirs(&key) {
                Ok(()) => webhdfs_json(StatusCode::OK, json!({"boolean": true})),
                Err(e) => tree_error(&op, e),
            },
            (Method::PUT, "CREATE") => self.create(uri, headers, &key, body, &op),
            (_, "") => remote_exception(
                StatusCode::BAD_REQUEST,
                "IllegalArgumentException",
                "java.lang.IllegalArgumentException",
                "Invalid operation: the op parameter is missing",
            ),
            (method, op) => remote_exception(
                StatusCode::BAD_REQUEST,
                "IllegalArgumentException",
                "java.lang.IllegalArgumentException",
                &format!(
                    "Invalid value for webhdfs parameter \"op\": {op} is not a {method} operation"
                ),
            ),
        }
    }

    fn authenticate(
        &self,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Result<crate::authority::Claims, Box<Response>> {
        let audience = lock(&self.audience).clone();
        bearer::authenticate(&self.authority, headers, &[&audience], seen).map_err(|refusal| {
            let message = match refusal {
                refusal if refusal.no_token() => {
                    "Authentication failed: the request has no Bearer token.".to_string()
                }
                BearerRefusal::Rejected(VerifyError::WrongAudience { expected, actual }) => {
                    format!(
                        "Authentication failed: invalid audience '{actual}', expected '{expected}'."
                    )
                }
                BearerRefusal::Rejected(VerifyError::Expired) => {
                    "Authentication failed: the token has expired.".into()
                }
                BearerRefusal::Rejected(VerifyError::NotYetValid) => {
                    "Authentication failed: the token is not valid yet.".into()
                }
                _ => "Authentication failed: the token signature could not be validated.".into(),
            };
            Box::new(remote_exception(
                StatusCode::UNAUTHORIZED,
                "SecurityException",
                "java.lang.SecurityException",
                &message,
            ))
        })
    }

    fn list_status(&self, uri: &Uri, key: &[String], display: &str) -> Response {
        let list_size =
            match query_param(uri, "listSize").map(|s| s.parse::<usize>()) {
                None => usize::MAX,
                Some(Ok(n)) if n > 0 => n,
                Some(_) => return remote_exception(
                    StatusCode::BAD_REQUEST,
                    "IllegalArgumentException",
                    "java.lang.IllegalArgumentException",
                    "Invalid value for webhdfs parameter \"listSize\": must be a positive integer",
                ),
            };
        let list_after = query_param(uri, "listAfter").filter(|s| !s.is_empty());
        let list_before = query_param(uri, "listBefore").filter(|s| !s.is_empty());
        let tree = lock(&self.tree);
        let Some(target) = tree.get(key) else {
            return not_found(display);
        };
        if !target.is_directory {
            let mut status = file_status(&target);
            status["pathSuffix"] = json!("");
            return webhdfs_json(
                StatusCode::OK,
                json!({"FileStatuses": {"FileStatus": [status]}}),
            );
        }
        let after = list_after.map(|name| {
            let mut k = key.to_vec();
            k.push(name);
            k
        });
        let (entries, _) = tree.list(key, false, after.as_deref(), list_size);
        let statuses: Vec<Value> = entries
            .iter()
            .filter(|e| list_before.as_deref().is_none_or(|b| e.name() < b))
            .map(file_status)
            .collect();
        webhdfs_json(
            StatusCode::OK,
            json!({"FileStatuses": {"FileStatus": statuses}}),
        )
    }

    /// Step one answers 307 pointing at `...&write=true`; step two stores.
    fn create(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        key: &[String],
        body: Bytes,
        op: &str,
    ) -> Response {
        let location = {
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
            let mut query: Vec<(String, String)> =
                url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                    .into_owned()
                    .filter(|(k, _)| !k.eq_ignore_ascii_case("write"))
                    .collect();
            query.push(("write".into(), "true".into()));
            let query = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            format!("https://{host}{}?{query}", uri.path())
        };
        let write = query_param(uri, "write").is_some_and(|w| w.eq_ignore_ascii_case("true"));
        let mut response = if !write {
            StatusCode::TEMPORARY_REDIRECT.into_response()
        } else {
            let overwrite =
                query_param(uri, "overwrite").is_some_and(|w| w.eq_ignore_ascii_case("true"));
            let mode = match query_param(uri, "permission") {
                None => None,
                Some(p) => match u16::from_str_radix(&p, 8) {
                    Ok(m) if m <= 0o7777 => Some(m),
                    _ => {
                        return remote_exception(
                            StatusCode::BAD_REQUEST,
                            "IllegalArgumentException",
                            "java.lang.IllegalArgumentException",
                            &format!("Invalid value for webhdfs parameter \"permission\": {p}"),
                        )
                    }
                },
            };
            match lock(&self.tree).create_file(key, body.to_vec(), overwrite, mode) {
                Ok(()) => StatusCode::CREATED.into_response(),
                Err(e) => return tree_error(op, e),
            }
        };
        if let Ok(value) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, value);
        }
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        response
    }
}

/// One `FileStatus` object as the real service writes it.
fn file_status(entry: &Entry) -> Value {
    let mut status = json!({
        "length": entry.length,
        "pathSuffix": entry.name(),
        "type": if entry.is_directory { "DIRECTORY" } else { "FILE" },
        "blockSize": if entry.is_directory { 0 } else { 268_435_456u64 },
        "accessTime": entry.accessed_ms,
        "modificationTime": entry.modified_ms,
        "replication": if entry.is_directory { 0 } else { 1 },
        "permission": format!("{:o}", entry.mode),
        "owner": entry.owner,
        "group": entry.group,
        "aclBit": false,
    });
    if !entry.is_directory {
        status["msExpirationTime"] = json!(0);
    }
    status
}

fn not_found(display: &str) -> Response {
    remote_exception(
        StatusCode::NOT_FOUND,
        "FileNotFoundException",
        "java.io.FileNotFoundException",
        &format!(
            "File/Folder does not exist: {display} [{}][{}]",
            request_id(),
            httpdate::fmt_http_date(SystemTime::now())
        ),
    )
}

fn tree_error(op: &str, error: TreeError) -> Response {
    match error {
        TreeError::AlreadyExists(path) => remote_exception(
            StatusCode::FORBIDDEN,
            "FileAlreadyExistsException",
            "org.apache.hadoop.fs.FileAlreadyExistsException",
            &format!("{op} failed: /{path} already exists"),
        ),
        other => remote_exception(
            StatusCode::FORBIDDEN,
            "IOException",
            "java.io.IOException",
            &format!("{op} failed: {other}"),
        ),
    }
}

/// A scripted failure as a WebHDFS `RemoteException`.
fn fault_response(fault: Fault, op: &str) -> Response {
    let status = fault.status_code(StatusCode::INTERNAL_SERVER_ERROR);
    let response = if status == StatusCode::TOO_MANY_REQUESTS {
        remote_exception(
            status,
            "ThrottledException",
            "com.microsoft.azure.datalake.store.ThrottledException",
            &format!("{op} failed: the account is being throttled; retry later"),
        )
    } else {
        remote_exception(
            status,
            "RuntimeException",
            "java.lang.RuntimeException",
            &format!("{op} failed with an internal error"),
        )
    };
    fault.finish(response)
}

fn bad_request(
    status: StatusCode,
    exception: &str,
    java_class: &str,
    message: &str,
) -> Box<Response> {
    Box::new(remote_exception(status, exception, java_class, message))
}

fn remote_exception(
    status: StatusCode,
    exception: &str,
    java_class: &str,
    message: &str,
) -> Response {
    webhdfs_json(
        status,
        json!({"RemoteException": {
            "exception": exception,
            "javaClassName": java_class,
            "message": message,
        }}),
    )
}

fn webhdfs_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;
