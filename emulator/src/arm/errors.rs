//! ARM's error envelope (`{"error":{"code","message"}}`), its response
//! headers, and the named errors the operations return.

#[allow(unused_imports)]
use super::*;

pub(super) fn invalid_values(field: &str) -> Response {
    arm_error(
        StatusCode::BAD_REQUEST,
        "InvalidValuesForRequestParameters",
        &format!("Values for request parameters are invalid: {field}."),
    )
}

pub(super) fn subscription_not_found(subscription: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "SubscriptionNotFound",
        &format!("The subscription '{subscription}' could not be found."),
    )
}

/// ARM's error envelope.
pub(super) fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    arm_json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

pub(super) fn arm_json(status: StatusCode, body: &serde_json::Value) -> Response {
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
