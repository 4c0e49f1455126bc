//! Data Lake directory listings behind one interface: ADLS Gen1 (WebHDFS
//! `LISTSTATUS`, paged with `listSize`/`listAfter`, token for
//! `https://datalake.azure.net/`) and ADLS Gen2 (`dfs` List Paths, paged with
//! `continuation`, token for `https://storage.azure.com/`).
//!
//! [`Listing`] validates a request (generation from the host, filesystem,
//! path, page size, continuation) and passes the exfiltration guard;
//! [`fetch_page`] fetches ONE page at a time, so a caller can stream a folder
//! of any size while holding a single page. Knows nothing about gRPC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{header, StatusCode};
use serde::Deserialize;
use url::Url;

use super::{
    http::read_capped,
    throttle::{sanitize_message, send_with_retry, BodyUse},
    HostGuard, Service,
};
use crate::{error::GatewayError, token::IdentitySelector, Upstream};

/// Entries per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// The most entries per page (the Gen2 `maxResults` cap).
pub const MAX_PAGE_SIZE: u32 = 5000;
/// The largest Gen1 `listSize` the gateway asks for (the batch the Gen1
/// SDKs use); bigger pages are fetched in several requests' worth.
const GEN1_MAX_LIST_SIZE: u32 = 4000;
/// The Gen1 WebHDFS API version.
const GEN1_API_VERSION: &str = "2016-11-01";
/// The `x-ms-version` sent to the dfs endpoint.
pub const GEN2_VERSION: &str = "2025-05-05";
const MAX_PATH_LEN: usize = 2048;
const MAX_CONTINUATION_LEN: usize = 4096;

/// Which Data Lake API an account speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// WebHDFS on `*.azuredatalakestore.net` (retired by Azure in 2024).
    Gen1,
    /// The `dfs` endpoint of a hierarchical-namespace storage account.
    Gen2,
}

impl Generation {
    fn service(self) -> Service {
        match self {
            Generation::Gen1 => Service::DataLakeGen1,
            Generation::Gen2 => Service::Storage,
        }
    }

    fn upstream(self) -> &'static str {
        match self {
            Generation::Gen1 => "ADLS Gen1",
            Generation::Gen2 => "ADLS Gen2",
        }
    }
}

/// The generation a host's suffix says, if it says one.
pub fn generation_of_host(host: &str) -> Option<Generation> {
    let host = identity_gateway_core::normalize_host(host);
    if Service::DataLakeGen1
        .host_suffixes()
        .iter()
        .any(|s| host.ends_with(s))
    {
        Some(Generation::Gen1)
    } else if host.contains(".dfs.core.") {
        Some(Generation::Gen2)
    } else {
        None
    }
}

/// What a caller asked to list, before validation.
#[derive(Debug, Clone, Default)]
pub struct ListRequest<'a> {
    pub account_url: &'a str,
    /// `None` to infer it from the host.
    pub generation: Option<Generation>,
    pub filesystem: &'a str,
    pub path: &'a str,
    pub recursive: bool,
    /// 0 for the default.
    pub page_size: u32,
}

/// A validated listing: where, what, how many per page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    generation: Generation,
    /// `https://host[:port]`, no path.
    base: Url,
    account: String,
    filesystem: String,
    /// Components of the directory, without empty ones.
    directory: Vec<String>,
    recursive: bool,
    page_size: u32,
}

impl Listing {
    /// Validates `request` and checks its host against the guard. Nothing
    /// here fetches a token or calls Azure.
    pub fn new(guard: &HostGuard, request: &ListRequest<'_>) -> Result<Self, GatewayError> {
        const FIELD: &str = "account_url";
        let raw = request.account_url.trim();
        if raw.is_empty() {
            return Err(GatewayError::invalid(
                FIELD,
                "is required (e.g. https://myadls.azuredatalakestore.net or https://acct.dfs.core.windows.net)",
            ));
        }
        let mut url = Url::parse(raw)
            .map_err(|e| GatewayError::invalid(FIELD, format!("not an absolute URL ({e})")))?;
        // One spelling of the host for the guard, the policy's account and
        // the requests (no trailing dot, lower case).
        identity_gateway_core::normalize_url(&mut url);
        let host = identity_gateway_core::normalize_host(
            url.host_str()
                .ok_or_else(|| GatewayError::invalid(FIELD, "URL has no host"))?,
        );
        let inferred = generation_of_host(&host);
        let generation = match (inferred, request.generation) {
            (Some(inferred), Some(asked)) if inferred != asked => {
                return Err(GatewayError::invalid(
                    "generation",
                    format!("{host} is an ADLS {inferred:?} host, not {asked:?}"),
                ))
            }
            (Some(generation), _) | (None, Some(generation)) => generation,
            (None, None) => {
                // Refuse hostile hosts as such before asking for a generation.
                guard
                    .check(Service::Storage, FIELD, &url)
                    .or_else(|_| guard.check(Service::DataLakeGen1, FIELD, &url))?;
                return Err(GatewayError::invalid(
                    "generation",
                    format!(
                        "{host} does not say which ADLS generation it is; set generation (GEN1 for WebHDFS, GEN2 for dfs)"
                    ),
                ));
            }
        };
        guard.check(generation.service(), FIELD, &url)?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(GatewayError::invalid(
                FIELD,
                "must be just the account's address (put the filesystem and directory in their own fields)",
            ));
        }
        let filesystem = match generation {
            Generation::Gen1 => {
                if !request.filesystem.is_empty() {
                    return Err(GatewayError::invalid(
                        "filesystem",
                        "is for ADLS Gen2 only; Gen1 accounts have one namespace",
                    ));
                }
                if request.recursive {
                    return Err(GatewayError::invalid(
                        "recursive",
                        "is for ADLS Gen2 only; WebHDFS LISTSTATUS lists one directory",
                    ));
                }
                String::new()
            }
            Generation::Gen2 => {
                validate_filesystem(request.filesystem)?;
                request.filesystem.to_string()
            }
        };
        let directory = split_path(request.path)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n > MAX_PAGE_SIZE => {
                return Err(GatewayError::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})"),
                ))
            }
            n => n,
        };
        let mut base = url.clone();
        base.set_path("");
        let account = host.split('.').next().unwrap_or_default().to_string();
        Ok(Self {
            generation,
            base,
            account,
            filesystem,
            directory,
            recursive: request.recursive,
            page_size,
        })
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The account name (the host's first label), for the caller policy.
    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The token audience for this generation.
    pub fn audience(&self) -> &'static str {
        self.generation.service().audience(super::Cloud::Public)
    }

    /// The directory as the caller policy's `datalake_paths` name it:
    /// `filesystem/dir/...` for Gen2, `dir/...` for Gen1.
    pub fn policy_path(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if !self.filesystem.is_empty() {
            parts.push(&self.filesystem);
        }
        parts.extend(self.directory.iter().map(String::as_str));
        parts.join("/")
    }

    /// `https://host/[filesystem/]path`, for the audit line.
    pub fn describe(&self) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        let mut out = base.to_string();
        if !self.filesystem.is_empty() {
            out.push('/');
            out.push_str(&self.filesystem);
        }
        out.push('/');
        out.push_str(&self.directory.join("/"));
        out
    }

    /// Checks a continuation a caller passed back.
    pub fn validate_continuation(&self, continuation: &str) -> Result<(), GatewayError> {
        const FIELD: &str = "continuation";
        if continuation.len() > MAX_CONTINUATION_LEN {
            return Err(GatewayError::invalid(FIELD, "is too long"));
        }
        if continuation.chars().any(char::is_control) {
            return Err(GatewayError::invalid(
                FIELD,
                "must not contain control characters",
            ));
        }
        if self.generation == Generation::Gen1 && continuation.contains('/') {
            return Err(GatewayError::invalid(
                FIELD,
                "is not a continuation from an ADLS Gen1 listing",
            ));
        }
        Ok(())
    }

    /// The request URL for the page after `continuation`.
    fn page_url(&self, continuation: Option<&str>) -> Url {
        let mut url = self.base.clone();
        match self.generation {
            Generation::Gen1 => {
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.clear().push("webhdfs").push("v1");
                    for component in &self.directory {
                        segments.push(component);
                    }
                    if self.directory.is_empty() {
                        // `/webhdfs/v1/` names the root.
                        segments.push("");
                    }
                }
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("op", "LISTSTATUS")
                    .append_pair("listSize", &self.gen1_list_size().to_string())
                    .append_pair("api-version", GEN1_API_VERSION);
                if let Some(after) = continuation {
                    query.append_pair("listAfter", after);
                }
            }
            Generation::Gen2 => {
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.clear().push(&self.filesystem);
                }
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("resource", "filesystem")
                    .append_pair("recursive", if self.recursive { "true" } else { "false" })
                    .append_pair("maxResults", &self.page_size.to_string());
                if !self.directory.is_empty() {
                    query.append_pair("directory", &self.directory.join("/"));
                }
                if let Some(token) = continuation {
                    query.append_pair("continuation", token);
                }
            }
        }
        url
    }

    /// One more than a page, to learn without another request whether more
    /// follow, within what Gen1 serves per request.
    fn gen1_list_size(&self) -> u32 {
        (self.page_size + 1).min(GEN1_MAX_LIST_SIZE)
    }
}

/// A Gen2 filesystem name: 3-63 of `a-z0-9-` (a leading `$` for system
/// filesystems), starting and ending with a letter or digit, no `--`.
pub fn validate_filesystem(name: &str) -> Result<(), GatewayError> {
    const FIELD: &str = "filesystem";
    if name.is_empty() {
        return Err(GatewayError::invalid(
            FIELD,
            "is required for ADLS Gen2 (the container name)",
        ));
    }
    let bytes = name.as_bytes();
    let shape_ok = (3..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit() || bytes[0] == b'$')
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
        && !name.contains("--");
    if shape_ok {
        Ok(())
    } else {
        Err(GatewayError::invalid(
            FIELD,
            "must be 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
        ))
    }
}

/// A directory path: empty or `/` for the root; no `.`/`..` components or
/// control characters.
pub fn split_path(path: &str) -> Result<Vec<String>, GatewayError> {
    const FIELD: &str = "path";
    if path.len() > MAX_PATH_LEN {
        return Err(GatewayError::invalid(
            FIELD,
            format!("is longer than {MAX_PATH_LEN} bytes"),
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(GatewayError::invalid(
            FIELD,
            "must not contain control characters",
        ));
    }
    let components: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if components.iter().any(|c| c == "." || c == "..") {
        return Err(GatewayError::invalid(
            FIELD,
            "must not contain '.' or '..' components",
        ));
    }
    Ok(components)
}

/// One listed file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Gen1: the name inside the listed directory. Gen2: the path from the
    /// filesystem root.
    pub name: String,
    pub is_directory: bool,
    pub length: i64,
    pub modified: Option<SystemTime>,
    pub owner: String,
    pub group: String,
    /// Gen1: octal ("770"); Gen2: rwx ("rwxr-x---").
    pub permissions: String,
}

/// One page, and the continuation of the next when there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub continuation: Option<String>,
}

/// A JSON number or a string holding one (the dfs endpoint sends strings).
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose {
    Int(i64),
    Bool(bool),
    Text(String),
}

impl Loose {
    fn as_i64(&self) -> Option<i64> {
        match self {
            Loose::Int(n) => Some(*n),
            Loose::Text(s) => s.trim().parse().ok(),
            Loose::Bool(_) => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            Loose::Bool(b) => Some(*b),
            Loose::Text(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Loose::Text(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Loose::Int(n) => n.to_string(),
            Loose::Bool(b) => b.to_string(),
            Loose::Text(s) => s.clone(),
        }
    }
}

#[derive(Deserialize)]
struct Gen1Listing {
    #[serde(rename = "FileStatuses")]
    file_statuses: Gen1Statuses,
}

#[derive(Deserialize)]
struct Gen1Statuses {
    #[serde(rename = "FileStatus", default)]
    file_status: Vec<Gen1Status>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gen1Status {
    #[serde(default)]
    length: Option<Loose>,
    #[serde(default)]
    path_suffix: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    modification_time: Option<Loose>,
    #[serde(default)]
    permission: Option<Loose>,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    group: String,
}

/// Parses a `LISTSTATUS` answer (`{"FileStatuses":{"FileStatus":[..]}}`).
/// `listed` names the listed path, for an entry with an empty `pathSuffix`
/// (LISTSTATUS of a file returns the file itself).
pub fn parse_gen1(body: &[u8], listed: &[String]) -> Result<Vec<Entry>, GatewayError> {
    let listing: Gen1Listing = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Upstream(format!(
            "ADLS Gen1 answered a listing the gateway cannot read ({e})"
        ))
    })?;
    Ok(listing
        .file_statuses
        .file_status
        .into_iter()
        .map(|s| Entry {
            name: if s.path_suffix.is_empty() {
                listed.last().cloned().unwrap_or_default()
            } else {
                s.path_suffix
            },
            is_directory: s.kind.eq_ignore_ascii_case("DIRECTORY"),
            length: s.length.as_ref().and_then(Loose::as_i64).unwrap_or(0),
            modified: s
                .modification_time
                .as_ref()
                .and_then(Loose::as_i64)
                .and_then(epoch_millis),
            owner: s.owner,
            group: s.group,
            permissions: s.permission.map(|p| p.text()).unwrap_or_default(),
        })
        .collect())
}

#[derive(Deserialize)]
struct Gen2Listing {
    #[serde(default)]
    paths: Vec<Gen2Path>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gen2Path {
    name: String,
    #[serde(default)]
    is_directory: Option<Loose>,
    #[serde(default)]
    content_length: Option<Loose>,
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    permissions: String,
}

/// Parses a List Paths answer (`{"paths":[..]}` with string-encoded numbers
/// and booleans; `isDirectory` absent for files; RFC 1123 `lastModified`).
pub fn parse_gen2(body: &[u8]) -> Result<Vec<Entry>, GatewayError> {
    let listing: Gen2Listing = serde_json::from_slice(body).map_err(|e| {
        GatewayError::Upstream(format!(
            "ADLS Gen2 answered a listing the gateway cannot read ({e})"
        ))
    })?;
    Ok(listing
        .paths
        .into_iter()
        .map(|p| Entry {
            name: p.name,
            is_directory: p
                .is_directory
                .as_ref()
                .and_then(Loose::as_bool)
                .unwrap_or(false),
            length: p
                .content_length
                .as_ref()
                .and_then(Loose::as_i64)
                .unwrap_or(0),
            modified: p
                .last_modified
                .as_deref()
                .and_then(|t| httpdate::parse_http_date(t).ok()),
            owner: p.owner,
            group: p.group,
            permissions: p.permissions,
        })
        .collect())
}

fn epoch_millis(ms: i64) -> Option<SystemTime> {
    let ms = u64::try_from(ms).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_millis(ms))
}

#[derive(Deserialize)]
struct Gen1Error {
    #[serde(rename = "RemoteException")]
    remote: Gen1RemoteException,
}

#[derive(Deserialize)]
struct Gen1RemoteException {
    #[serde(default)]
    exception: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Gen2Error {
    error: Gen2ErrorDetail,
}

#[derive(Deserialize)]
struct Gen2ErrorDetail {
    #[serde(default, alias = "Code")]
    code: String,
    #[serde(default, alias = "Message")]
    message: String,
}

/// A failed listing answer and its context.
#[derive(Debug)]
pub struct Refusal<'a> {
    pub status: StatusCode,
    pub body: &'a [u8],
    /// `x-ms-error-code` (Gen2).
    pub error_code: Option<&'a str>,
    pub sent_continuation: bool,
}

/// Maps a Gen1 `RemoteException` or a Gen2 error JSON to the gateway's error.
pub fn map_error(listing: &Listing, refusal: &Refusal<'_>) -> GatewayError {
    let (code, message) = match listing.generation {
        Generation::Gen1 => serde_json::from_slice::<Gen1Error>(refusal.body)
            .map(|e| (e.remote.exception, e.remote.message))
            .unwrap_or_default(),
        Generation::Gen2 => serde_json::from_slice::<Gen2Error>(refusal.body)
            .map(|e| (e.error.code, e.error.message))
            .unwrap_or_default(),
    };
    let code = if code.is_empty() {
        refusal.error_code.unwrap_or_default().to_string()
    } else {
        code
    };
    let upstream = listing.generation.upstream();
    let what = listing.describe();
    // Gen2 appends RequestId and Time lines; the first line is the message.
    let said = Some(sanitize_message(&message))
        .filter(|m| !m.is_empty())
        .map(|m| format!(" Azure said: {m}"))
        .unwrap_or_default();
    let code_part = if code.is_empty() {
        refusal.status.as_u16().to_string()
    } else {
        code.clone()
    };
    match (refusal.status.as_u16(), code.as_str()) {
        (404, _) | (_, "FileNotFoundException") => GatewayError::NotFound(format!(
            "{upstream}: {what} does not exist ({code_part}).{said}"
        )),
        (401, _) | (_, "SecurityException") => GatewayError::PermissionDenied(format!(
            "{upstream} rejected the identity's token for '{}' ({code_part}).{said}",
            listing.audience()
        )),
        (403, "AuthorizationPermissionMismatch") => GatewayError::PermissionDenied(format!(
            "{upstream}: Azure RBAC denied listing {what} (AuthorizationPermissionMismatch): the identity needs a data role such as Storage Blob Data Reader on the account or filesystem.{said}"
        )),
        (403, "AccessControlException") => GatewayError::PermissionDenied(format!(
            "{upstream}: the ACLs deny the identity listing {what} (AccessControlException): it needs read and execute on the folder (and execute on its parents).{said}"
        )),
        (403, _) => GatewayError::PermissionDenied(format!(
            "{upstream} refused listing {what} ({code_part}).{said}"
        )),
        (400, _) => GatewayError::invalid(
            if refusal.sent_continuation {
                "continuation"
            } else {
                "path"
            },
            format!("{upstream} refused the listing ({code_part}).{said}"),
        ),
        (429, _) | (_, "ThrottledException") => GatewayError::Throttled(format!(
            "{upstream} kept throttling after the gateway's retries; retry later"
        )),
        (500..=599, _) => GatewayError::Unavailable(format!(
            "{upstream} answered {} after the gateway's retries.{said}",
            refusal.status
        )),
        _ => GatewayError::Upstream(format!(
            "{upstream} answered {} ({code_part}).{said}",
            refusal.status
        )),
    }
}

/// Fetches the page of `listing` after `continuation` (the first page when
/// `None`) with `selector`'s token, within `budget`, over the shared HTTP client.
/// Throttling and passing server errors are retried ([`send_with_retry`]).
pub async fn fetch_page(
    up: &Upstream,
    listing: &Listing,
    continuation: Option<&str>,
    selector: &IdentitySelector,
    budget: Option<Duration>,
) -> Result<Page, GatewayError> {
    let token = up
        .tokens
        .token(selector, listing.audience(), budget)
        .await?;
    let url = listing.page_url(continuation);
    let upstream = listing.generation.upstream();
    let response = send_with_retry(up, budget, upstream, BodyUse::Buffered, || {
        let request = up
            .http
            .get(url.clone())
            .bearer_auth(token.secret())
            .header(header::ACCEPT, "application/json");
        match listing.generation {
            Generation::Gen1 => request,
            Generation::Gen2 => request
                .header("x-ms-version", GEN2_VERSION)
                .header("x-ms-date", httpdate::fmt_http_date(up.clock.wall())),
        }
    })
    .await?;
    let status = response.status();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let next = header("x-ms-continuation");
    let error_code = header("x-ms-error-code");
    let body = read_capped(response, up.config.max_body_bytes, upstream).await?;
    if !status.is_success() {
        return Err(map_error(
            listing,
            &Refusal {
                status,
                body: &body,
                error_code: error_code.as_deref(),
                sent_continuation: continuation.is_some(),
            },
        ));
    }
    match listing.generation {
        Generation::Gen1 => {
            let mut entries = parse_gen1(&body, &listing.directory)?;
            let asked = listing.gen1_list_size() as usize;
            let page = listing.page_size as usize;
            // A full answer means more may follow; the look-ahead entry (when
            // one was asked for) is not part of this page.
            let continuation = if entries.len() >= asked && !entries.is_empty() {
                entries.truncate(page);
                entries.last().map(|e| e.name.clone())
            } else {
                None
            };
            Ok(Page {
                entries,
                continuation,
            })
        }
        Generation::Gen2 => Ok(Page {
            entries: parse_gen2(&body)?,
            continuation: next,
        }),
    }
}

#[cfg(test)]
mod tests;
