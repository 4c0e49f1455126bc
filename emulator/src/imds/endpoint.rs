//! The running endpoint: request admission (recording, in-flight count, IMDS's
//! rate limits), latency and scripted answers from the shared front door, the
//! three flavors' token routes, identity selection and the token cache. Bodies
//! are built in `replies`; query checks live in `request`.

#[allow(unused_imports)]
use super::*;

/// State shared by the server task and the handles.
pub(super) struct Shared {
    pub(super) authority: Arc<TokenAuthority>,
    pub(super) config: ImdsConfig,
    pub(super) state: Mutex<FakeState>,
    pub(super) log: RequestLog<RecordedRequest>,
    pub(super) script: FaultScript<ScriptedResponse>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(super) struct FakeState {
    pub(super) latency: Duration,
    pub(super) limits: Option<RateLimits>,
    /// Arrival times of admitted requests within the last second.
    pub(super) window: VecDeque<Instant>,
    pub(super) in_flight: usize,
    pub(super) max_concurrent_seen: usize,
    pub(super) throttled: usize,
    /// Like real IMDS, one token per (identity object id, resource).
    pub(super) tokens: HashMap<(String, String), CachedToken>,
    pub(super) caching_disabled: bool,
    /// Consulted for token requests the script does not answer.
    pub(super) fault: Option<super::FaultRule>,
}

#[derive(Clone)]
pub(super) struct CachedToken {
    pub(super) token: String,
    pub(super) not_before: u64,
    pub(super) expires_on: u64,
}

impl Shared {
    pub(super) fn new(authority: Arc<TokenAuthority>, config: ImdsConfig) -> Self {
        Self {
            authority,
            config,
            state: Mutex::new(FakeState::default()),
            log: RequestLog::with_capacity(MAX_RECORDED_REQUESTS),
            script: FaultScript::default(),
        }
    }

    /// Critical sections never await, so a plain mutex is fine; a panic in
    /// one must not wedge the fake, hence the poison recovery.
    pub(super) fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the request, counts it in flight and applies the rate limits.
    /// Returns the record's index, the in-flight guard and whether the
    /// request was admitted.
    pub(super) fn arrive(self: &Arc<Self>, parts: &Parts) -> (Option<usize>, InFlight, bool) {
        let index = self.log.push(self.record(parts));
        let now = Instant::now();
        let mut state = self.lock();
        state.in_flight += 1;
        state.max_concurrent_seen = state.max_concurrent_seen.max(state.in_flight);
        let guard = InFlight(self.clone());
        let admitted = match state.limits {
            None => true,
            Some(limits) => {
                while state
                    .window
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
                {
                    state.window.pop_front();
                }
                let over_rate = state.window.len() >= limits.per_second as usize;
                let over_concurrency = state.in_flight > limits.concurrent;
                if over_rate || over_concurrency {
                    state.throttled += 1;
                    false
                } else {
                    state.window.push_back(now);
                    true
                }
            }
        };
        (index, guard, admitted)
    }

    pub(super) fn record(&self, parts: &Parts) -> RecordedRequest {
        let secret = match &self.config.flavor {
            Flavor::AppService { header_secret } => Some(header_secret.as_str()),
            _ => None,
        };
        let headers = RECORDED_HEADERS
            .iter()
            .flat_map(|name| {
                parts.headers.get_all(*name).iter().map(move |value| {
                    let shown = if *name == "x-identity-header" {
                        match secret {
                            Some(s) if value.as_bytes() == s.as_bytes() => REDACTED_MATCHING,
                            Some(_) => REDACTED_WRONG,
                            None => "** redacted **",
                        }
                        .to_string()
                    } else {
                        String::from_utf8_lossy(value.as_bytes()).into_owned()
                    };
                    (name.to_string(), shown)
                })
            })
            .collect();
        RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parse_query(parts.uri.query()),
            headers,
            status: 0,
        }
    }

    pub(super) fn set_status(&self, index: Option<usize>, status: u16) {
        if let Some(index) = index {
            self.log.update(index, |record| record.status = status);
        }
    }

    pub(super) async fn respond(&self, parts: &Parts) -> Response {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let flavor = &self.config.flavor;
        let path = parts.uri.path();
        if !flavor.is_token_path(path) {
            return self.error(Rejection::new(
                404,
                "not_found",
                format!("No route matches '{path}'"),
            ));
        }
        let scripted = self.script.next().or_else(|| {
            let fault = self.lock().fault.clone();
            fault.and_then(|rule| rule())
        });
        if let Some(scripted) = scripted {
            let answer_normally = (200..300).contains(&scripted.status) && scripted.body.is_none();
            if !answer_normally {
                return self.scripted(scripted);
            }
        }
        if parts.method != Method::GET {
            let mut response = self.error(Rejection::new(
                405,
                "method_not_allowed",
                format!("The method {} is not allowed; use GET", parts.method),
            ));
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        let result = match flavor {
            Flavor::Imds => self.imds(parts),
            Flavor::AppService { header_secret } => self.app_service(parts, header_secret),
            Flavor::LegacyMsi => self.legacy_msi(parts),
        };
        match result {
            Ok(response) => response,
            Err(rejection) => self.error(rejection),
        }
    }

    pub(super) fn imds(&self, parts: &Parts) -> Result<Response, Rejection> {
        require_metadata_header(parts, "invalid_request")?;
        if parts.headers.contains_key("x-forwarded-for") {
            return Err(Rejection::invalid(
                "Requests carrying an X-Forwarded-For header are rejected: IMDS must not be reached through a proxy",
            ));
        }
        let query = Query::parse(parts)?;
        match query.get("api-version") {
            None => {
                return Err(Rejection::invalid(
                    "Required query variable 'api-version' is missing",
                ))
            }
            Some(v) if !is_supported_imds_api_version(v) => {
                return Err(Rejection::invalid(format!(
                    "api-version '{v}' is invalid; use {IMDS_MIN_API_VERSION} or newer"
                )))
            }
            Some(_) => {}
        }
        let resource = query.resource()?;
        let bypass_cache = match query.get("bypass_cache") {
            None => false,
            Some("true") => true,
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "bypass_cache must be 'true', not '{other}'"
                )))
            }
        };
        let selector = query.selector(&[
            ("client_id", SelectBy::Client),
            ("object_id", SelectBy::Object),
            ("msi_res_id", SelectBy::Resource),
            ("mi_res_id", SelectBy::Resource),
        ])?;
        let principal = self
            .select(selector)
            .map_err(|e| e.rejection(MULTIPLE_USER_ASSIGNED))?;
        self.check_known_resource(resource)?;
        let token = self.token_for(principal, resource, bypass_cache);
        Ok(json_response(
            200,
            &ImdsToken {
                access_token: token.access_token,
                client_id: principal.client_id.clone(),
                expires_in: token.expires_in.to_string(),
                expires_on: token.expires_on.to_string(),
                ext_expires_in: token.ext_expires_in.to_string(),
                not_before: token.not_before.to_string(),
                resource: resource.to_string(),
                token_type: "Bearer".into(),
            },
            &self.config.flavor,
        ))
    }

    pub(super) fn app_service(&self, parts: &Parts, secret: &str) -> Result<Response, Rejection> {
        let presented: Vec<_> = parts.headers.get_all("x-identity-header").iter().collect();
        match presented.as_slice() {
            [] => {
                return Err(Rejection::new(
                    400,
                    "bad_request",
                    "The X-IDENTITY-HEADER header is required",
                ))
            }
            [value] if value.as_bytes() == secret.as_bytes() => {}
            _ => {
                return Err(Rejection::new(
                    401,
                    "unauthorized",
                    "The X-IDENTITY-HEADER header is not valid",
                ))
            }
        }
        let query = Query::parse(parts)?;
        match query.get("api-version") {
            Some(APP_SERVICE_API_VERSION) => {}
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "api-version '{other}' is not supported; use {APP_SERVICE_API_VERSION}"
                )))
            }
            None => {
                return Err(Rejection::invalid(
                    "The api-version query parameter is required",
                ))
            }
        }
        let resource = query.resource()?;
        let selector = query.selector(&[
            ("client_id", SelectBy::Client),
            ("principal_id", SelectBy::Object),
            ("object_id", SelectBy::Object),
            ("mi_res_id", SelectBy::Resource),
        ])?;
        // App Service uses the system-assigned identity when none is named,
        // even if exactly one user-assigned identity is attached.
        let principal = match selector {
            Selector::Default => self.config.identities.system.as_ref(),
            other => self.select(other).ok(),
        }
        .ok_or_else(|| Rejection::invalid(APP_SERVICE_NO_IDENTITY))?;
        self.check_known_resource(resource)?;
        let token = self.token_for(principal, resource, false);
        Ok(json_response(
            200,
            &AppServiceToken {
                access_token: token.access_token,
                expires_on: token.expires_on.to_string(),
                resource: resource.to_string(),
                token_type: "Bearer".into(),
                client_id: principal.client_id.clone(),
            },
            &self.config.flavor,
        ))
    }

    pub(super) fn legacy_msi(&self, parts: &Parts) -> Result<Response, Rejection> {
        require_metadata_header(parts, "bad_request_102")?;
        let query = Query::parse(parts)?;
        let resource = query.resource()?;
        let selector = query.selector(&[
            ("client_id", SelectBy::Client),
            ("object_id", SelectBy::Object),
        ])?;
        let principal = self
            .select(selector)
            .map_err(|e| e.rejection(MULTIPLE_USER_ASSIGNED))?;
        self.check_known_resource(resource)?;
        let token = self.token_for(principal, resource, false);
        Ok(json_response(
            200,
            &LegacyMsiToken {
                access_token: token.access_token,
                refresh_token: String::new(),
                expires_in: token.expires_in.to_string(),
                expires_on: token.expires_on.to_string(),
                not_before: token.not_before.to_string(),
                resource: resource.to_string(),
                token_type: "Bearer".into(),
            },
            &self.config.flavor,
        ))
    }

    /// IMDS's identity choice: a selector must name an attached user-assigned
    /// identity; without one, the system-assigned identity, else the only
    /// user-assigned one.
    pub(super) fn select(&self, selector: Selector<'_>) -> Result<&Principal, SelectError> {
        let identities = &self.config.identities;
        let user = |matches: &dyn Fn(&UserAssigned) -> bool| {
            identities
                .user_assigned
                .iter()
                .find(|u| matches(u))
                .map(|u| &u.principal)
                .ok_or(SelectError::NotFound)
        };
        match selector {
            Selector::Default => match (&identities.system, identities.user_assigned.as_slice()) {
                (Some(system), _) => Ok(system),
                (None, [only]) => Ok(&only.principal),
                (None, []) => Err(SelectError::NotFound),
                (None, _) => Err(SelectError::Ambiguous),
            },
            Selector::By(SelectBy::Client, id) => {
                user(&|u| u.principal.client_id.eq_ignore_ascii_case(id))
            }
            Selector::By(SelectBy::Object, id) => {
                user(&|u| u.principal.object_id.eq_ignore_ascii_case(id))
            }
            Selector::By(SelectBy::Resource, id) => {
                user(&|u| u.resource_id.eq_ignore_ascii_case(id))
            }
        }
    }

    pub(super) fn check_known_resource(&self, resource: &str) -> Result<(), Rejection> {
        let Some(known) = &self.config.known_resources else {
            return Ok(());
        };
        let wanted = resource.trim_end_matches('/');
        if known.iter().any(|k| k.trim_end_matches('/') == wanted) {
            return Ok(());
        }
        let now = time::OffsetDateTime::now_utc();
        Err(Rejection::new(
            400,
            "invalid_resource",
            format!(
                "AADSTS500011: The resource principal named {resource} was not found in the tenant named {tenant}. \
                 This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. \
                 You might have sent your authentication request to the wrong tenant. Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}",
                tenant = self.authority.tenant_id(),
                trace = uuid::Uuid::new_v4(),
                correlation = uuid::Uuid::new_v4(),
                stamp = format_args!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
                    now.year(),
                    u8::from(now.month()),
                    now.day(),
                    now.hour(),
                    now.minute(),
                    now.second()
                ),
            ),
        ))
    }

    /// The cached token for (identity, resource) while it has more than half
    /// its life left, else a freshly minted one.
    pub(super) fn token_for(
        &self,
        principal: &Principal,
        resource: &str,
        bypass_cache: bool,
    ) -> IssuedToken {
        let now = SystemTime::now();
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let lifetime = self.config.token_lifetime.as_secs();
        let key = (principal.object_id.clone(), resource.to_string());
        let cached = if bypass_cache {
            None
        } else {
            let state = self.lock();
            state
                .tokens
                .get(&key)
                .filter(|t| {
                    !state.caching_disabled && t.expires_on.saturating_sub(now_secs) > lifetime / 2
                })
                .cloned()
        };
        let token = match cached {
            Some(token) => token,
            None => {
                let (jwt, claims) =
                    self.authority
                        .mint(principal, resource, now, self.config.token_lifetime);
                let token = CachedToken {
                    token: jwt,
                    not_before: claims.nbf,
                    expires_on: claims.exp,
                };
                self.lock().tokens.insert(key, token.clone());
                token
            }
        };
        IssuedToken {
            expires_in: token.expires_on.saturating_sub(now_secs),
            ext_expires_in: lifetime,
            not_before: token.not_before,
            expires_on: token.expires_on,
            access_token: token.token,
        }
    }

    pub(super) fn scripted(&self, scripted: ScriptedResponse) -> Response {
        let response = match scripted.body {
            Some(body) => raw_response(scripted.status, body, &self.config.flavor),
            None => self.error(Rejection::new(
                scripted.status,
                error_code_for(scripted.status),
                description_for(scripted.status),
            )),
        };
        with_retry_after(response, scripted.retry_after)
    }

    /// The flavor's error body: IMDS and the legacy extension send
    /// `{"error","error_description"}`, App Service `{"statusCode","message","correlationId"}`.
    pub(super) fn error(&self, rejection: Rejection) -> Response {
        let flavor = &self.config.flavor;
        match flavor {
            Flavor::AppService { .. } => json_response(
                rejection.status,
                &AppServiceError {
                    status_code: rejection.status,
                    message: rejection.description,
                    correlation_id: uuid::Uuid::new_v4().to_string(),
                },
                flavor,
            ),
            Flavor::Imds | Flavor::LegacyMsi => json_response(
                rejection.status,
                &OAuthError {
                    error: rejection.code.to_string(),
                    error_description: rejection.description,
                },
                flavor,
            ),
        }
    }

    pub(super) fn throttled_response(&self) -> Response {
        self.error(Rejection::new(
            429,
            "too_many_requests",
            "Too many requests to the managed identity endpoint; retry with backoff",
        ))
    }
}

/// Keeps the in-flight count honest even when the client hangs up and the
/// handler future is dropped.
pub(super) struct InFlight(pub(super) Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

pub(super) async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let (index, _in_flight, admitted) = shared.arrive(&parts);
    let response = if admitted {
        shared.respond(&parts).await
    } else {
        shared.throttled_response()
    };
    shared.set_status(index, response.status().as_u16());
    response
}
