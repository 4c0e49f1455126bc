//! ARM's front door: scripted faults, the bearer-token check (the shared
//! front-door check, rendered with ARM's 401 codes and challenge),
//! `api-version`, case-insensitive routing and RBAC by `oid` with ARM's
//! `AuthorizationFailed`.

#[allow(unused_imports)]
use super::*;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let (response, token_oid) = answer(&shared, &method, &uri, &headers, &body);
    shared.log.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        body: body_text,
        token_oid,
        status: response.status().as_u16(),
    });
    response
}

pub(super) fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> (Response, Option<String>) {
    if let Some(fault) = shared.faults.next() {
        let status = StatusCode::from_u16(fault.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        let response = arm_error(status, &fault.code, &fault.message);
        return (with_retry_after(response, fault.retry_after_secs), None);
    }

    let claims = match authenticate(&shared.authority, headers) {
        Ok(claims) => claims,
        Err(refusal) => return (refusal.into_response(), None),
    };
    let oid = Some(claims.oid.clone());

    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let api_version = query
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.as_str());
    match api_version {
        None => {
            return (
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                ),
                oid,
            )
        }
        Some(v) if !valid_api_version(v) => {
            return (
                arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidApiVersionParameter",
                    &format!("The api-version '{v}' is invalid. The supported versions are '2025-04-01,2024-11-01,2024-07-01,2024-03-01,2023-07-01,2022-09-01,2021-04-01,2019-10-01'."),
                ),
                oid,
            )
        }
        Some(_) => {}
    }

    let raw: Vec<String> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let lower: Vec<String> = raw.iter().map(|s| s.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
    let response = match (method, lower.as_slice()) {
        (&Method::GET, ["subscriptions", _, "resourcegroups", _]) => {
            get_resource_group(shared, &claims, &raw[1], &raw[3])
        }
        (
            &Method::POST,
            ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.storage", "storageaccounts", _, "listservicesas"],
        ) => list_service_sas(shared, &claims, &raw[1], &raw[3], &raw[7], body),
        _ => arm_error(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            &format!(
                "The resource type could not be found for '{} {}' in the emulator.",
                method,
                uri.path()
            ),
        ),
    };
    (response, oid)
}

/// ARM api-versions are dates, optionally with a `-preview` suffix.
pub(super) fn valid_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v);
    let bytes = date.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// A refusal from ARM's front door: a 401 with a challenge or a 403.
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// `error_description` of the 401 challenge.
    pub(super) challenge: Option<&'static str>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let response = arm_error(self.status, self.code, &self.message);
        match self.challenge {
            Some(description) => bearer::with_challenge(
                response,
                &format!(
                    "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\", error_description=\"{description}\""
                ),
            ),
            None => response,
        }
    }
}

pub(super) fn authenticate(
    authority: &TokenAuthority,
    headers: &HeaderMap,
) -> Result<crate::authority::Claims, Refusal> {
    let token = match bearer::presented(headers) {
        Ok(token) => token,
        // ARM verifies an empty token, and refuses it as invalid.
        Err(BearerRefusal::EmptyToken) => "",
        Err(BearerRefusal::Missing | BearerRefusal::Unreadable) => {
            return Err(unauthorized(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                "The authentication failed because of missing 'Authorization' header.",
            ))
        }
        Err(_) => return Err(unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            "The authentication failed because of an invalid 'Authorization' header format.",
        )),
    };
    bearer::verify(authority, token, &ARM_AUDIENCES, &mut TokenSeen::default())
        .map_err(|e| match e {
            VerifyError::WrongAudience { actual, .. } => unauthorized(
                "InvalidAuthenticationTokenAudience",
                &format!(
                    "The access token has been obtained for wrong audience or resource '{actual}'. It should exactly match with one of the allowed audiences '{}'.",
                    ARM_AUDIENCES.join("','")
                ),
                "The access token has been obtained for wrong audience or resource.",
            ),
            VerifyError::Expired => {
                let now = OffsetDateTime::now_utc();
                unauthorized(
                    "ExpiredAuthenticationToken",
                    &format!(
                        "The access token expiry UTC time is earlier than current UTC time '{}'.",
                        now.format(&Rfc3339).unwrap_or_default()
                    ),
                    "The access token has expired.",
                )
            }
            VerifyError::NotYetValid => unauthorized(
                "InvalidAuthenticationToken",
                "The access token is not valid yet.",
                "The access token is not valid yet.",
            ),
            VerifyError::BadToken(_) => unauthorized(
                "InvalidAuthenticationToken",
                "The access token is invalid.",
                "The access token is invalid.",
            ),
        })
}

pub(super) fn unauthorized(
    code: &'static str,
    message: &str,
    description: &'static str,
) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        code,
        message: message.to_string(),
        challenge: Some(description),
    }
}

pub(super) fn authorize(
    shared: &Shared,
    claims: &crate::authority::Claims,
    action: &str,
    scope: &str,
) -> Result<(), Refusal> {
    let oid = claims.oid.to_ascii_lowercase();
    let scope_lower = scope.to_ascii_lowercase();
    let allowed = shared.data().grants.iter().any(|g| {
        g.object_id == oid
            && (g.action == "*" || g.action.eq_ignore_ascii_case(action))
            && (scope_lower == g.scope || scope_lower.starts_with(&format!("{}/", g.scope)))
    });
    if allowed {
        Ok(())
    } else {
        Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: "AuthorizationFailed",
            message: format!(
                "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                claims.appid, claims.oid
            ),
            challenge: None,
        })
    }
}
