//! Serving a request in Key Vault's order: route, method, `api-version`,
//! bearer token (the shared front-door check, rendered as Key Vault's 401 with
//! its challenge), scripted faults, then the secret operations. Access checks
//! live in `access`, bodies in `bundles` and `errors`.

#[allow(unused_imports)]
use super::*;

pub(super) async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut seen = TokenSeen::default();
    let mut response = inner.serve(&method, &uri, &headers, &mut seen);
    let response_headers = response.headers_mut();
    if let Some(client_id) = headers.get("x-ms-client-request-id") {
        response_headers.insert("x-ms-client-request-id", client_id.clone());
    }
    let status = response.status().as_u16();
    inner
        .log
        .push(RecordedRequest::new(&method, &uri, seen, status));
    response
}

/// What a request asks for, from its path.
pub(super) enum Route<'a> {
    ListSecrets,
    Latest(&'a str),
    Version(&'a str, &'a str),
    ListVersions(&'a str),
}

pub(super) fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/secrets")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::ListSecrets);
    }
    let rest = rest.strip_prefix('/')?;
    let mut parts = rest.splitn(2, '/');
    let name = parts.next()?;
    match parts.next() {
        None | Some("") => Some(Route::Latest(name)),
        Some("versions") | Some("versions/") => Some(Route::ListVersions(name)),
        Some(version) if !version.contains('/') => Some(Route::Version(name, version)),
        Some(version) => version
            .strip_suffix('/')
            .filter(|v| !v.contains('/'))
            .map(|v| Route::Version(name, v)),
    }
}

/// `api-version`s Key Vault serves: the GA list plus previews
/// (`7.6-preview.2`, `2025-06-01-preview`, ...).
pub fn supported_api_version(version: &str) -> bool {
    const GA: &[&str] = &[
        "2016-10-01",
        "7.0",
        "7.1",
        "7.2",
        "7.3",
        "7.4",
        "7.5",
        "7.6",
        "2025-07-01",
        // What azure-keyvault-secrets 4.12 (Python) sends by default.
        "2026-04-01",
    ];
    if GA.contains(&version) {
        return true;
    }
    if let Some(base) = version.strip_suffix("-preview") {
        return is_date(base) || is_numbered(base);
    }
    if let Some((base, n)) = version.split_once("-preview.") {
        return is_numbered(base) && !n.is_empty() && n.chars().all(|c| c.is_ascii_digit());
    }
    false
}

pub(super) fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

pub(super) fn is_numbered(s: &str) -> bool {
    matches!(s.split_once('.'), Some((major, minor)) if major == "7"
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit()))
}

pub(super) fn valid_object_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub(super) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Inner {
    pub(super) fn serve(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Response {
        let settings = lock(&self.settings).clone();
        let Some(route) = route(uri.path()) else {
            return kv_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                None,
                &format!("The requested URI {} does not exist.", uri.path()),
            );
        };
        if method != Method::GET {
            return kv_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                None,
                &format!("The requested resource does not support http method '{method}'."),
            );
        }
        match query_param(uri, "api-version") {
            None => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    None,
                    "The api-version query parameter is missing.",
                )
            }
            Some(v) if !supported_api_version(&v) => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    None,
                    &format!(
                        "The specified version ({v}) is not recognized. Consider using the latest supported version (2026-04-01)."
                    ),
                )
            }
            Some(_) => {}
        }
        let claims = match self.authenticate(&settings, headers, seen) {
            Ok(claims) => claims,
            Err(response) => return *response,
        };
        if let Some(fault) = self.faults.next() {
            return fault_response(fault);
        }
        let base = vault_base(uri, headers);
        match route {
            Route::ListSecrets => {
                if let Err(r) = authorize(&settings, &claims, "list", None) {
                    return *r;
                }
                self.list_secrets(&base, uri)
            }
            Route::ListVersions(name) => {
                if !valid_object_name(name) {
                    return invalid_name(name);
                }
                if let Err(r) = authorize(&settings, &claims, "list", Some(name)) {
                    return *r;
                }
                self.list_versions(&base, uri, name)
            }
            Route::Latest(name) => self.get(&settings, &claims, &base, name, None),
            Route::Version(name, version) => {
                self.get(&settings, &claims, &base, name, Some(version))
            }
        }
    }

    /// Verifies the bearer token; every refusal is a 401 with the challenge.
    pub(super) fn authenticate(
        &self,
        settings: &VaultSettings,
        headers: &HeaderMap,
        seen: &mut TokenSeen,
    ) -> Result<Claims, Box<Response>> {
        bearer::authenticate(&self.authority, headers, &[&settings.audience], seen).map_err(
            |refusal| {
                let message = match refusal {
                    refusal if refusal.no_token() => {
                        "AKV10000: Request is missing a Bearer or PoP token.".to_string()
                    }
                    BearerRefusal::Rejected(VerifyError::WrongAudience { expected, actual }) => {
                        format!("AKV10022: Invalid audience. Expected {expected}, found: {actual}.")
                    }
                    BearerRefusal::Rejected(VerifyError::Expired) => {
                        "AKV10032: Token has expired.".into()
                    }
                    BearerRefusal::Rejected(VerifyError::NotYetValid) => {
                        "AKV10031: Token not yet valid.".into()
                    }
                    _ => {
                        "AKV10046: Unable to resolve the key used for signature validation.".into()
                    }
                };
                let challenge = format!(
                    "Bearer authorization=\"https://login.windows.net/{}\", resource=\"{}\"",
                    self.authority.tenant_id(),
                    settings.audience
                );
                Box::new(bearer::with_challenge(
                    kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", None, &message),
                    &challenge,
                ))
            },
        )
    }

    pub(super) fn get(
        &self,
        settings: &VaultSettings,
        claims: &Claims,
        base: &str,
        name: &str,
        version: Option<&str>,
    ) -> Response {
        if !valid_object_name(name) {
            return invalid_name(name);
        }
        if let Err(response) = authorize(settings, claims, "get", Some(name)) {
            return *response;
        }
        let secrets = lock(&self.secrets);
        let found = secrets.get(&name.to_lowercase()).and_then(|secret| {
            let stored = match version {
                None => secret.versions.last(),
                Some(v) => secret
                    .versions
                    .iter()
                    .find(|s| s.id.eq_ignore_ascii_case(v)),
            };
            stored.map(|s| (secret, s))
        });
        let Some((secret, stored)) = found else {
            let what = match version {
                Some(v) => format!("{name}/{v}"),
                None => name.to_string(),
            };
            return kv_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                None,
                &format!(
                    "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
            );
        };
        if !stored.spec.enabled {
            return kv_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("SecretDisabled"),
                "Operation get is not allowed on a disabled secret.",
            );
        }
        let mut bundle = item_json(base, &secret.name, stored);
        bundle.insert("value".into(), Value::String(stored.spec.value.clone()));
        kv_json(StatusCode::OK, Value::Object(bundle))
    }

    pub(super) fn list_versions(&self, base: &str, uri: &Uri, name: &str) -> Response {
        let secrets = lock(&self.secrets);
        let Some(secret) = secrets.get(&name.to_lowercase()) else {
            return kv_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                None,
                &format!(
                    "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
                ),
            );
        };
        let items: Vec<Value> = secret
            .versions
            .iter()
            .map(|v| Value::Object(item_json(base, &secret.name, v)))
            .collect();
        paged(
            base,
            &format!("/secrets/{}/versions", secret.name),
            uri,
            items,
        )
    }

    pub(super) fn list_secrets(&self, base: &str, uri: &Uri) -> Response {
        let secrets = lock(&self.secrets);
        let mut names: Vec<&StoredSecret> = secrets.values().collect();
        names.sort_by_key(|s| s.name.to_lowercase());
        let items: Vec<Value> = names
            .into_iter()
            .filter_map(|secret| {
                let latest = secret.versions.last()?;
                let mut item = item_json(base, &secret.name, latest);
                item.insert(
                    "id".into(),
                    Value::String(format!("{base}/secrets/{}", secret.name)),
                );
                item.remove("kid");
                Some(Value::Object(item))
            })
            .collect();
        paged(base, "/secrets", uri, items)
    }
}
