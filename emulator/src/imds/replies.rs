//! The wire bodies the endpoints answer with: each flavor's token JSON (every
//! field a string, in real IMDS's order) and error JSON, and the headers
//! (`Server`, content type) that go with them.

#[allow(unused_imports)]
use super::*;

pub(super) fn error_code_for(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized_client",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        429 => "too_many_requests",
        410 | 503 => "service_unavailable",
        _ => "server_error",
    }
}

pub(super) fn description_for(status: u16) -> &'static str {
    match status {
        404 => "The identity endpoint is being updated; retry with backoff",
        410 => "The identity endpoint is being upgraded; it will be back within 70 seconds",
        429 => "Too many requests to the managed identity endpoint; retry with backoff",
        503 => "The identity endpoint is temporarily unavailable",
        s if s >= 500 => "An internal error occurred in the identity endpoint",
        _ => "The request was refused",
    }
}

pub(super) fn json_response(status: u16, body: &impl Serialize, flavor: &Flavor) -> Response {
    let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    raw_response(status, body, flavor)
}

pub(super) fn raw_response(status: u16, body: String, flavor: &Flavor) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    if matches!(flavor, Flavor::Imds) {
        headers.insert(header::SERVER, HeaderValue::from_static(IMDS_SERVER_HEADER));
    }
    response
}

pub(super) struct IssuedToken {
    pub(super) access_token: String,
    pub(super) expires_in: u64,
    pub(super) ext_expires_in: u64,
    pub(super) not_before: u64,
    pub(super) expires_on: u64,
}

/// IMDS's answer: every field a string, in the order real IMDS emits them.
#[derive(Serialize)]
pub(super) struct ImdsToken {
    pub(super) access_token: String,
    pub(super) client_id: String,
    pub(super) expires_in: String,
    pub(super) expires_on: String,
    pub(super) ext_expires_in: String,
    pub(super) not_before: String,
    pub(super) resource: String,
    pub(super) token_type: String,
}

#[derive(Serialize)]
pub(super) struct AppServiceToken {
    pub(super) access_token: String,
    pub(super) expires_on: String,
    pub(super) resource: String,
    pub(super) token_type: String,
    pub(super) client_id: String,
}

#[derive(Serialize)]
pub(super) struct LegacyMsiToken {
    pub(super) access_token: String,
    pub(super) refresh_token: String,
    pub(super) expires_in: String,
    pub(super) expires_on: String,
    pub(super) not_before: String,
    pub(super) resource: String,
    pub(super) token_type: String,
}

#[derive(Serialize)]
pub(super) struct OAuthError {
    pub(super) error: String,
    pub(super) error_description: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AppServiceError {
    pub(super) status_code: u16,
    pub(super) message: String,
    pub(super) correlation_id: String,
}
