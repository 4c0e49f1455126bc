//! The in-memory blob operations: Get Blob (ranges, conditional headers),
//! Get Blob Properties, Put Blob and Create Container, with Storage's
//! response headers.

#[allow(unused_imports)]
use super::*;

pub(super) fn get_blob(
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
pub(super) fn requested_range(
    headers: &HeaderMap,
) -> Result<Option<(u64, Option<u64>)>, StorageError> {
    pub(super) fn parse(value: &str) -> Option<(u64, Option<u64>)> {
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

pub(super) fn put_blob(
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

pub(super) fn create_container(
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
