//! Blob Storage with the identity's bearer token: downloading a blob (Get
//! Blob), and what the SAS module shares with it: the service version, the
//! blob endpoint of an account, name validation and Storage's XML errors.
//!
//! Downloads stream: the body goes to the caller in chunks of at most
//! [`CHUNK_SIZE`] as the caller reads them (never buffered whole). Timeouts:
//! the response headers must arrive within `upstream.request_timeout_secs`,
//! and so must every next piece of the body (a stalled download fails with
//! UNAVAILABLE); the download as a whole is bounded only by the caller's
//! gRPC deadline, so large blobs are not cut at the shared client's
//! whole-request timeout.

use std::{
    pin::Pin,
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use identity_gateway_core::normalize_host;
use serde::Deserialize;
use url::Url;

use super::{
    http::read_capped,
    throttle::{sanitize_message, send_with_retry, BodyUse},
    Cloud, Service,
};
use crate::{
    error::GatewayError,
    token::{AccessToken, IdentitySelector},
    Upstream,
};

/// `x-ms-version` sent to Storage: Azurite 3.35's own version, well past
/// 2017-11-09 (the first that accepts bearer tokens).
pub const STORAGE_API_VERSION: &str = "2025-11-05";
/// Largest `data` chunk of a ReadBlob stream.
pub const CHUNK_SIZE: usize = 64 * 1024;

const UPSTREAM: &str = "Storage";

/// A byte stream of a blob's content.
pub type BlobBody = Pin<Box<dyn Stream<Item = Result<Bytes, GatewayError>> + Send + 'static>>;

/// What the first ReadBlob message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    /// Size of the whole blob (not of the range).
    pub size: u64,
    pub content_type: String,
    pub etag: String,
    pub last_modified: Option<SystemTime>,
}

/// An open download: properties, then the content.
pub struct BlobDownload {
    pub properties: BlobProperties,
    pub body: BlobBody,
}

impl std::fmt::Debug for BlobDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobDownload")
            .field("properties", &self.properties)
            .finish_non_exhaustive()
    }
}

/// Checks a blob URL: a Storage host (or an allowed one), https, at least a
/// container and a blob in the path, and no query other than `snapshot` /
/// `versionid` (ReadBlob authenticates with the token, never with a SAS).
pub fn blob_url(up: &Upstream, raw: &str) -> Result<Url, GatewayError> {
    const FIELD: &str = "blob_url";
    let url = up.hosts.check_url(Service::Storage, FIELD, raw)?;
    if url.fragment().is_some() {
        return Err(GatewayError::invalid(FIELD, "must not have a #fragment"));
    }
    for (key, _) in url.query_pairs() {
        if key != "snapshot" && key != "versionid" {
            return Err(GatewayError::invalid(
                FIELD,
                format!("query parameter '{key}' is not allowed (only snapshot and versionid); ReadBlob uses the identity's token, not a SAS"),
            ));
        }
    }
    let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    if segments.len() < 2 || segments.iter().any(|s| s.is_empty()) {
        return Err(GatewayError::invalid(
            FIELD,
            "expected https://<account>.blob.core.windows.net/<container>/<blob> (or <endpoint>/<account>/<container>/<blob> for path-style endpoints)",
        ));
    }
    Ok(url)
}

/// The storage account a checked blob URL points at: the first host label on
/// Storage hosts (`acct.blob.core.windows.net`), else the first path segment
/// (path-style endpoints such as Azurite's `127.0.0.1:10000/devstoreaccount1`).
///
/// The host is taken in [`normalize_host`]'s form, the same the guard
/// checked and (for URLs from [`blob_url`]) the request goes to: with a
/// trailing dot, `victim.blob.core.windows.net.` is still account `victim`.
pub fn account_of(url: &Url) -> String {
    let host = normalize_host(url.host_str().unwrap_or_default());
    let azure_host = Service::Storage
        .host_suffixes()
        .iter()
        .any(|suffix| host.ends_with(suffix));
    if azure_host {
        host.split('.').next().unwrap_or_default().to_string()
    } else {
        url.path_segments()
            .and_then(|mut s| s.next())
            .unwrap_or_default()
            .to_string()
    }
}

/// The `Range` header for `offset`/`length` (0 = to the end), if any.
pub fn range_header(offset: u64, length: u64) -> Result<Option<String>, GatewayError> {
    match (offset, length) {
        (0, 0) => Ok(None),
        (offset, 0) => Ok(Some(format!("bytes={offset}-"))),
        (offset, length) => {
            let last = offset
                .checked_add(length - 1)
                .ok_or_else(|| GatewayError::invalid("length", "offset + length overflows"))?;
            Ok(Some(format!("bytes={offset}-{last}")))
        }
    }
}

/// The Storage token for `selector` (Storage's audience is the same in every cloud).
pub async fn storage_token(
    up: &Upstream,
    budget: Option<Duration>,
    selector: &IdentitySelector,
) -> Result<std::sync::Arc<AccessToken>, GatewayError> {
    up.tokens
        .token(selector, Service::Storage.audience(Cloud::Public), budget)
        .await
}

/// `x-ms-date` now, in RFC 1123 form.
pub fn ms_date(up: &Upstream) -> String {
    httpdate::fmt_http_date(up.clock.wall())
}

/// Opens a download of `url` (already checked by [`blob_url`]).
pub async fn open(
    up: &Upstream,
    budget: Option<Duration>,
    selector: &IdentitySelector,
    url: &Url,
    offset: u64,
    length: u64,
) -> Result<BlobDownload, GatewayError> {
    let range = range_header(offset, length)?;
    let token = storage_token(up, budget, selector).await?;
    let response = send_with_retry(up, budget, UPSTREAM, BodyUse::Streamed, || {
        let mut request = up
            .http
            .get(url.clone())
            .bearer_auth(token.secret())
            .header("x-ms-version", STORAGE_API_VERSION)
            .header("x-ms-date", ms_date(up));
        if let Some(range) = &range {
            request = request.header(reqwest::header::RANGE, range);
        }
        request
    })
    .await?;
    let status = response.status().as_u16();
    let what = format!("blob {}", display_url(url));
    if status != 200 && status != 206 {
        let headers = response.headers().clone();
        let body = read_capped(response, up.config.max_body_bytes, UPSTREAM)
            .await
            .unwrap_or_default();
        return Err(storage_error(status, &headers, &body, &what));
    }
    let properties = properties(status, response.headers())?;
    let expected = response.content_length();
    let stall = Duration::from_secs(up.config.request_timeout_secs);
    Ok(BlobDownload {
        properties,
        body: chunked(response, expected, stall, what),
    })
}

fn properties(
    status: u16,
    headers: &reqwest::header::HeaderMap,
) -> Result<BlobProperties, GatewayError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let size = if status == 206 {
        // `bytes <first>-<last>/<total>`
        header("content-range")
            .and_then(|v| v.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                GatewayError::Upstream(format!(
                    "{UPSTREAM} answered a range without a usable Content-Range"
                ))
            })?
    } else {
        header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                GatewayError::Upstream(format!("{UPSTREAM} answered a blob without Content-Length"))
            })?
    };
    Ok(BlobProperties {
        size,
        content_type: header("content-type")
            .unwrap_or("application/octet-stream")
            .to_string(),
        etag: header("etag").unwrap_or_default().to_string(),
        last_modified: header("last-modified").and_then(|v| httpdate::parse_http_date(v).ok()),
    })
}

struct Reader {
    response: reqwest::Response,
    buffer: BytesMut,
    received: u64,
    expected: Option<u64>,
    stall: Duration,
    what: String,
    done: bool,
}

/// Re-chunks the response body into pieces of at most [`CHUNK_SIZE`], reading
/// the next piece only when the consumer asks (backpressure).
fn chunked(
    response: reqwest::Response,
    expected: Option<u64>,
    stall: Duration,
    what: String,
) -> BlobBody {
    let reader = Reader {
        response,
        buffer: BytesMut::new(),
        received: 0,
        expected,
        stall,
        what,
        done: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        loop {
            if r.buffer.len() >= CHUNK_SIZE {
                return Some((Ok(r.buffer.split_to(CHUNK_SIZE).freeze()), r));
            }
            if r.done {
                if r.buffer.is_empty() {
                    return None;
                }
                return Some((Ok(r.buffer.split().freeze()), r));
            }
            match tokio::time::timeout(r.stall, r.response.chunk()).await {
                Ok(Ok(Some(piece))) => {
                    r.received += piece.len() as u64;
                    r.buffer.extend_from_slice(&piece);
                }
                Ok(Ok(None)) => {
                    r.done = true;
                    if let Some(expected) = r.expected.filter(|e| *e != r.received) {
                        let err = GatewayError::Unavailable(format!(
                            "{UPSTREAM} ended the download of {} after {} of {expected} bytes",
                            r.what, r.received
                        ));
                        r.buffer.clear();
                        return Some((Err(err), r));
                    }
                }
                Ok(Err(e)) => {
                    r.done = true;
                    r.buffer.clear();
                    let err = if e.is_timeout() {
                        GatewayError::DeadlineExceeded(format!(
                            "the download of {} did not finish within the caller's deadline",
                            r.what
                        ))
                    } else {
                        GatewayError::Unavailable(format!(
                            "{UPSTREAM}: the download of {} broke off: {e}",
                            r.what
                        ))
                    };
                    return Some((Err(err), r));
                }
                Err(_) => {
                    r.done = true;
                    r.buffer.clear();
                    let err = GatewayError::Unavailable(format!(
                        "{UPSTREAM} stalled: no data for {} for {}s",
                        r.what,
                        r.stall.as_secs()
                    ));
                    return Some((Err(err), r));
                }
            }
        }
    }))
    .fuse()
    .boxed()
}

/// [`chunked`] for other modules' tests.
#[cfg(test)]
pub(crate) fn chunked_for_tests(response: reqwest::Response, stall: Duration) -> BlobBody {
    let expected = response.content_length();
    chunked(response, expected, stall, "test blob".into())
}

/// A URL for messages and audit lines: no query string (it could hold a SAS).
pub fn display_url(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[derive(Debug, Default, Deserialize)]
struct StorageErrorXml {
    #[serde(rename = "Code")]
    code: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
    #[serde(rename = "AuthenticationErrorDetail")]
    detail: Option<String>,
}

/// Maps a Storage error answer (XML `<Error><Code>..</Code><Message>..`, or
/// just the `x-ms-error-code` header) to a [`GatewayError`] carrying Azure's
/// code and message. `what` names the target.
pub fn storage_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &[u8],
    what: &str,
) -> GatewayError {
    let parsed: StorageErrorXml = std::str::from_utf8(body)
        .ok()
        .and_then(|text| quick_xml::de::from_str(text.trim_start_matches('\u{feff}')).ok())
        .unwrap_or_default();
    let code = parsed
        .code
        .or_else(|| {
            headers
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("HTTP {status}"));
    let mut detail = format!(
        "{code}: {}",
        parsed
            .message
            .map(|m| sanitize_message(&m))
            .unwrap_or_else(|| "no error details".into())
    );
    if let Some(extra) = parsed.detail {
        detail.push_str(&format!(" ({})", sanitize_message(&extra)));
    }
    match (status, code.as_str()) {
        (416, _) => GatewayError::invalid("offset", format!("is beyond the end of {what} ({detail})")),
        (404, _) => GatewayError::NotFound(format!("{UPSTREAM}: {what} was not found ({detail})")),
        (401, _) => GatewayError::PermissionDenied(format!(
            "{UPSTREAM} rejected the managed identity's token for {what} ({detail})"
        )),
        (403, "AuthorizationPermissionMismatch" | "AuthorizationFailure") => {
            GatewayError::PermissionDenied(format!(
                "Azure RBAC denied the managed identity access to {what}: it needs a Storage Blob Data role ({detail})"
            ))
        }
        (403, _) => GatewayError::PermissionDenied(format!(
            "{UPSTREAM} refused access to {what} ({detail})"
        )),
        (429 | 503, _) => GatewayError::Throttled(format!(
            "{UPSTREAM} kept throttling requests for {what} ({detail})"
        )),
        (500..=599, _) => GatewayError::Unavailable(format!(
            "{UPSTREAM} failed for {what} with HTTP {status} ({detail})"
        )),
        _ => GatewayError::Upstream(format!(
            "{UPSTREAM} refused the request for {what} with HTTP {status} ({detail})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    /// A response whose body arrives as `pieces`, each after its delay.
    fn slow_response(pieces: Vec<(Duration, Vec<u8>)>) -> reqwest::Response {
        let body = futures::stream::iter(pieces).then(|(delay, piece)| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::io::Error>(piece)
        });
        reqwest::Response::from(::http::Response::new(reqwest::Body::wrap_stream(body)))
    }

    async fn drain(mut body: BlobBody) -> (Vec<Bytes>, Option<GatewayError>) {
        let mut chunks = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => chunks.push(chunk),
                Err(e) => {
                    assert!(body.next().await.is_none(), "nothing after an error");
                    return (chunks, Some(e));
                }
            }
        }
        (chunks, None)
    }

    #[tokio::test(start_paused = true)]
    async fn slow_but_steady_downloads_outlive_the_request_timeout() {
        // 200 KiB arriving in 20 pieces 0.9 s apart (18 s in all) with a 1 s
        // stall limit: never stalled, so it completes, re-chunked to 64 KiB.
        let pieces: Vec<(Duration, Vec<u8>)> = (0..20)
            .map(|i| (Duration::from_millis(900), vec![i as u8; 10 * 1024]))
            .collect();
        let total: usize = pieces.iter().map(|(_, p)| p.len()).sum();
        let body = chunked(
            slow_response(pieces),
            Some(total as u64),
            Duration::from_secs(1),
            "blob x".into(),
        );
        let (chunks, error) = drain(body).await;
        assert_eq!(error, None);
        assert_eq!(
            chunks.iter().map(Bytes::len).collect::<Vec<_>>(),
            [65536, 65536, 65536, 8192]
        );
        assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), total);
        assert_eq!(chunks[3][0], 19);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_download_fails_unavailable() {
        let pieces = vec![
            (Duration::ZERO, vec![1u8; 100]),
            (Duration::from_secs(5), vec![2u8; 100]),
        ];
        let body = chunked(
            slow_response(pieces),
            Some(200),
            Duration::from_secs(1),
            "blob x".into(),
        );
        let (chunks, error) = drain(body).await;
        assert!(
            chunks.is_empty(),
            "partial data is not passed on as complete chunks"
        );
        assert!(
            matches!(&error, Some(GatewayError::Unavailable(m)) if m.contains("stalled")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_short_body_is_an_error() {
        let body = chunked(
            slow_response(vec![(Duration::ZERO, vec![0u8; 10])]),
            Some(20),
            Duration::from_secs(1),
            "blob x".into(),
        );
        let (_, error) = drain(body).await;
        assert!(
            matches!(&error, Some(GatewayError::Unavailable(m)) if m.contains("after 10 of 20 bytes")),
            "{error:?}"
        );
    }

    #[test]
    fn account_comes_from_host_or_path() {
        let url = Url::parse("https://acct1.blob.core.windows.net/c/b").unwrap();
        assert_eq!(account_of(&url), "acct1");
        let url = Url::parse("https://127.0.0.1:10000/devstoreaccount1/c/b").unwrap();
        assert_eq!(account_of(&url), "devstoreaccount1");
        // A trailing dot is the same host: the account is the host's, not
        // the path's (the guard passes the host; the request goes there).
        let url = Url::parse("https://victim.blob.core.windows.net./appacct/x").unwrap();
        assert_eq!(account_of(&url), "victim");
    }

    #[test]
    fn ranges() {
        assert_eq!(range_header(0, 0).unwrap(), None);
        assert_eq!(range_header(10, 0).unwrap().as_deref(), Some("bytes=10-"));
        assert_eq!(range_header(0, 1).unwrap().as_deref(), Some("bytes=0-0"));
        assert_eq!(range_header(5, 10).unwrap().as_deref(), Some("bytes=5-14"));
        assert!(range_header(u64::MAX, 2).is_err());
    }

    #[test]
    fn storage_xml_errors_are_mapped() {
        let headers = HeaderMap::new();
        let body = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code><Message>The specified blob does not exist.\nRequestId:1\nTime:2</Message></Error>";
        let err = storage_error(404, &headers, body.as_bytes(), "blob x");
        assert_eq!(
            err,
            GatewayError::NotFound(
                "Storage: blob x was not found (BlobNotFound: The specified blob does not exist.)"
                    .into()
            )
        );
        let body = b"<Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized to perform this operation using this permission.</Message></Error>";
        assert!(matches!(
            storage_error(403, &headers, body, "blob x"),
            GatewayError::PermissionDenied(m) if m.contains("Storage Blob Data role") && m.contains("AuthorizationPermissionMismatch")
        ));
        let body = b"<Error><Code>InvalidAuthenticationInfo</Code><Message>Server failed to authenticate the request.</Message><AuthenticationErrorDetail>Lifetime validation failed. The token is expired.</AuthenticationErrorDetail></Error>";
        assert!(matches!(
            storage_error(401, &headers, body, "blob x"),
            GatewayError::PermissionDenied(m) if m.contains("InvalidAuthenticationInfo") && m.contains("token is expired")
        ));
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ms-error-code",
            HeaderValue::from_static("ContainerNotFound"),
        );
        assert!(matches!(
            storage_error(404, &headers, b"", "blob x"),
            GatewayError::NotFound(m) if m.contains("ContainerNotFound")
        ));
        assert!(matches!(
            storage_error(416, &HeaderMap::new(), b"<Error><Code>InvalidRange</Code></Error>", "blob x"),
            GatewayError::InvalidArgument { field, .. } if field == "offset"
        ));
        assert!(matches!(
            storage_error(503, &HeaderMap::new(), b"not xml", "blob x"),
            GatewayError::Throttled(_)
        ));
    }

    #[test]
    fn properties_come_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-range", HeaderValue::from_static("bytes 0-9/4096"));
        h.insert("content-length", HeaderValue::from_static("10"));
        h.insert("content-type", HeaderValue::from_static("text/csv"));
        h.insert("etag", HeaderValue::from_static("\"0x8D\""));
        h.insert(
            "last-modified",
            HeaderValue::from_static("Sun, 22 Nov 2026 02:00:00 GMT"),
        );
        let p = properties(206, &h).unwrap();
        assert_eq!(p.size, 4096);
        assert_eq!(p.content_type, "text/csv");
        assert_eq!(p.etag, "\"0x8D\"");
        assert!(p.last_modified.is_some());
        assert_eq!(properties(200, &h).unwrap().size, 10);
        h.remove("content-range");
        assert!(properties(206, &h).is_err());
    }
}
