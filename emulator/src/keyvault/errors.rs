//! Key Vault's error JSON (`{"error":{"code","message","innererror"}}`), its
//! response headers, and scripted faults rendered in that shape.

#[allow(unused_imports)]
use super::*;

pub(super) fn invalid_name(name: &str) -> Response {
    kv_error(
        StatusCode::BAD_REQUEST,
        "BadParameter",
        None,
        &format!("The request URI contains an invalid name: {name}"),
    )
}

/// A scripted failure in Key Vault's error shape.
pub(super) fn fault_response(fault: Fault) -> Response {
    let status = fault.status_code(StatusCode::INTERNAL_SERVER_ERROR);
    let (code, message) = match status {
        StatusCode::TOO_MANY_REQUESTS => (
            "Throttled",
            "Operations per second is over the limit for this vault. Please retry after the time in the Retry-After header.",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        _ => ("InternalServerError", "Internal server error."),
    };
    fault.finish(kv_error(status, code, None, message))
}

pub(super) fn kv_error(
    status: StatusCode,
    code: &str,
    inner: Option<&str>,
    message: &str,
) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    kv_json(status, json!({"error": error}))
}

pub(super) fn kv_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000;includeSubDomains"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(id) = HeaderValue::from_str(&request_id()) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert(
        "x-ms-keyvault-region",
        HeaderValue::from_static("westeurope"),
    );
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static(SERVICE_VERSION),
    );
    headers.insert(
        "x-ms-keyvault-network-info",
        HeaderValue::from_static("conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;"),
    );
    response
}
