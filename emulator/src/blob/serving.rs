//! Serving a request: reading the body, classifying the operation (Get Blob,
//! Put Blob, Create Container, Get User Delegation Key), choosing bearer or
//! SAS authorization, and recording what was answered. It must not render
//! error bodies itself (see `errors`) nor check signatures (see `bearer`, `sas`).

#[allow(unused_imports)]
use super::*;

/// What [`handle`] learns while answering, for the recording.
pub(super) struct Trace {
    pub(super) authorization: Authorization,
    pub(super) principal_oid: Option<String>,
    /// The `x-ms-version` the answer reports.
    pub(super) version: String,
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut trace = Trace {
        authorization: Authorization::Anonymous,
        principal_oid: None,
        version: SERVICE_VERSION.to_string(),
    };
    let outcome = match read_body(&method, &headers, body).await {
        Ok(body) => answer(&shared, &method, &uri, &headers, &body, &mut trace),
        Err(e) => Err(e),
    };
    let mut response = match outcome {
        Ok(response) => response,
        Err(error) => error.render(&request_id, method == Method::HEAD),
    };
    let out = response.headers_mut();
    for (name, value) in [
        ("x-ms-request-id", request_id.as_str()),
        (X_MS_VERSION, trace.version.as_str()),
        ("server", SERVER),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name, value);
        }
    }
    let error_code = out
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    shared.log.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(redact_sig),
        x_ms_version: header_text(X_MS_VERSION),
        range: header_text("x-ms-range").or_else(|| header_text("range")),
        authorization: trace.authorization,
        principal_oid: trace.principal_oid,
        status: response.status().as_u16(),
        error_code,
    });
    response
}

pub(super) async fn read_body(
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, StorageError> {
    if *method != Method::PUT && *method != Method::POST {
        return Ok(Bytes::new());
    }
    let too_large = || {
        StorageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!("The request body is too large and exceeds the maximum permissible limit of the emulator ({MAX_PUT_BLOB_BYTES} bytes)."),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PUT_BLOB_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_PUT_BLOB_BYTES)
        .await
        .map_err(|_| too_large())
}

/// The operations the fake implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Operation {
    GetBlob { head: bool },
    PutBlob,
    CreateContainer,
    GetUserDelegationKey,
}

impl Operation {
    /// The data role a token's principal needs.
    pub(super) fn role(self) -> BlobRole {
        match self {
            Self::GetBlob { .. } | Self::GetUserDelegationKey => BlobRole::Reader,
            Self::PutBlob | Self::CreateContainer => BlobRole::Contributor,
        }
    }
}

/// Who the request was authorized as.
pub(super) enum Access {
    Token(Box<Claims>),
    Sas(SasGrant),
}

pub(super) fn answer(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    trace: &mut Trace,
) -> Result<Response, StorageError> {
    let version = match headers.get(X_MS_VERSION) {
        None => None,
        Some(value) => match value.to_str().ok().filter(|v| is_version(v)) {
            Some(v) => Some(v.to_string()),
            None => return Err(invalid_header(X_MS_VERSION, value.to_str().unwrap_or(""))),
        },
    };
    if let Some(v) = &version {
        trace.version = v.clone();
    }
    let path = RequestPath::parse(uri.path())?;
    let query = Query::parse(uri.query());
    let operation = classify(method, &path, &query)?;
    let account = {
        let data = shared.data();
        let account = data
            .accounts
            .get(&path.account.to_ascii_lowercase())
            .ok_or_else(account_not_found)?;
        AccountKey {
            name: account.name.clone(),
            key: account.key.clone(),
        }
    };

    let access = if query.get("sig").is_some() {
        if matches!(
            operation,
            Operation::CreateContainer | Operation::GetUserDelegationKey
        ) {
            return Err(bearer_only());
        }
        if version.is_none() {
            if let Some(sv) = query.get("sv").filter(|v| is_version(v)) {
                trace.version = sv.to_string();
            }
        }
        let grant = verify_sas(shared, &account, &path, &query, trace)?;
        if let Some(oid) = &grant.delegated_oid {
            require_role(shared, &account.name, oid, operation.role())?;
        }
        Access::Sas(grant)
    } else {
        let claims = authenticate_bearer(shared, headers, version.as_deref(), trace)?;
        require_role(shared, &account.name, &claims.oid, operation.role())?;
        Access::Token(Box::new(claims))
    };

    let container = path.container.as_deref().unwrap_or_default();
    let blob = path.blob.as_deref().unwrap_or_default();
    match (operation, &access) {
        (Operation::GetBlob { head }, _) => {
            if let Access::Sas(grant) = &access {
                grant.require('r')?;
            }
            get_blob(
                shared,
                &account.name,
                container,
                blob,
                head,
                headers,
                &access,
            )
        }
        (Operation::PutBlob, _) => put_blob(
            shared,
            &account.name,
            container,
            blob,
            headers,
            body,
            &access,
        ),
        (Operation::CreateContainer, Access::Token(_)) => {
            create_container(shared, &account.name, container)
        }
        (Operation::GetUserDelegationKey, Access::Token(claims)) => {
            // Bearer authentication required a version.
            get_user_delegation_key(shared, claims, version.as_deref().unwrap_or_default(), body)
        }
        (Operation::CreateContainer | Operation::GetUserDelegationKey, Access::Sas(_)) => {
            Err(bearer_only())
        }
    }
}

pub(super) struct AccountKey {
    pub(super) name: String,
    pub(super) key: Vec<u8>,
}

/// `/<account>[/<container>[/<blob>]]`, decoded.
pub(super) struct RequestPath {
    pub(super) account: String,
    pub(super) container: Option<String>,
    pub(super) blob: Option<String>,
}

impl RequestPath {
    pub(super) fn parse(raw: &str) -> Result<Self, StorageError> {
        let invalid = || {
            StorageError::new(
                StatusCode::BAD_REQUEST,
                "InvalidUri",
                "The requested URI does not represent any resource on the server.",
            )
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| invalid())
        };
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        let (account, rest) = match trimmed.split_once('/') {
            Some((account, rest)) => (account, rest),
            None => (trimmed, ""),
        };
        if account.is_empty() {
            return Err(invalid());
        }
        let (container, blob) = match rest.split_once('/') {
            Some((container, blob)) => (container, blob),
            None => (rest, ""),
        };
        Ok(Self {
            account: decode(account)?,
            container: (!container.is_empty())
                .then(|| decode(container))
                .transpose()?,
            blob: (!blob.is_empty()).then(|| decode(blob)).transpose()?,
        })
    }
}

/// Decoded query parameters; the first of a repeated name wins.
pub(super) struct Query(pub(super) Vec<(String, String)>);

impl Query {
    pub(super) fn parse(raw: Option<&str>) -> Self {
        Self(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(super) fn classify(
    method: &Method,
    path: &RequestPath,
    query: &Query,
) -> Result<Operation, StorageError> {
    let restype = query.get("restype");
    let comp = query.get("comp");
    let container = path.container.is_some();
    let blob = path.blob.is_some();
    let operation = match *method {
        Method::POST
            if !container && restype == Some("service") && comp == Some("userdelegationkey") =>
        {
            Some(Operation::GetUserDelegationKey)
        }
        Method::PUT if container && !blob && restype == Some("container") && comp.is_none() => {
            Some(Operation::CreateContainer)
        }
        Method::GET | Method::HEAD if blob && restype.is_none() && comp.is_none() => {
            Some(Operation::GetBlob {
                head: *method == Method::HEAD,
            })
        }
        Method::PUT if blob && restype.is_none() && comp.is_none() => Some(Operation::PutBlob),
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE => None,
        _ => {
            return Err(StorageError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "UnsupportedHttpVerb",
                "The resource doesn't support specified Http Verb.",
            ))
        }
    };
    if blob && (query.get("snapshot").is_some() || query.get("versionid").is_some()) {
        return Err(not_implemented("snapshots and versions"));
    }
    operation.ok_or_else(|| {
        not_implemented(&format!(
            "{method} {}{}",
            match (container, blob) {
                (false, _) => "on the account",
                (true, false) => "on a container",
                (true, true) => "on a blob",
            },
            comp.map(|c| format!(" with comp={c}")).unwrap_or_default()
        ))
    })
}
