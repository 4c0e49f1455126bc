//! The App Service-compatible identity endpoint: an opt-in HTTP listener on
//! loopback that speaks the App Service / Functions managed-identity protocol
//! (`IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`, api-version 2019-08-01), so an
//! unmodified Azure SDK in any language gets its tokens from the gateway's
//! shared token cache by setting two environment variables. A thin adapter
//! over [`Gateway::get_token`]: validation, policy and the audit line live
//! in the operation; this module owns only the HTTP protocol.
//!
//! It owns the listener, the header secret (random, written to a 0640 file
//! of the socket group, so the apps that may reach the socket may read it;
//! removed on stop) and the protocol: query parsing, the header check,
//! selectors and the JSON shapes. It never logs the secret or a token, and
//! never listens on anything but a loopback address.
//!
//! Callers are attributed like loopback gRPC callers: each connection's
//! owner is looked up in the kernel's TCP table at accept
//! ([`crate::transport::peer`]); the caller policy judges that uid, and
//! refuses callers it could not attribute unless the policy allows
//! anonymous loopback callers.

use std::{
    fmt,
    io::{self, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use axum::{
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    Router,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use identity_gateway_core::GatewayError;
use identity_gateway_service::{
    ops::token::TokenRequest, CallContext, Gateway, IdentityRef, Peer, Transport,
};

use crate::{
    config::Config,
    transport::peer::{AttributedListener, Attributor, TcpCaller},
};

/// The URL path SDKs are pointed at (`IDENTITY_ENDPOINT=http://<addr>/msi/token`).
pub const TOKEN_PATH: &str = "/msi/token";
/// The protocol version served.
pub const API_VERSION: &str = "2019-08-01";
/// The request header that must carry the secret.
pub const SECRET_HEADER: &str = "x-identity-header";
/// File name of the secret when no path is configured: next to the socket.
pub const DEFAULT_HEADER_FILE_NAME: &str = "identity-header";
/// How long one request may wait for a token (the cache retries within it).
const TOKEN_BUDGET: Duration = Duration::from_secs(30);

/// A running endpoint. [`stop`](Self::stop) it to finish in-flight requests;
/// dropping it aborts the server. Either way the header file is removed.
pub struct RunningIdentityEndpoint {
    addr: SocketAddr,
    header_file: HeaderFile,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for RunningIdentityEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningIdentityEndpoint")
            .field("addr", &self.addr)
            .field("header_file", &self.header_file.0)
            .finish_non_exhaustive()
    }
}

impl RunningIdentityEndpoint {
    /// The bound address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What to put in `IDENTITY_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    /// The 0640 file (socket group) holding what to put in `IDENTITY_HEADER`.
    pub fn header_file(&self) -> &Path {
        &self.header_file.0
    }

    /// Stops accepting, lets in-flight requests finish, removes the header file.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Keep-alive connections get a moment to finish, not forever.
            match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(Ok(())) => {}
                Ok(Err(join)) => tracing::error!(%join, "the identity endpoint task failed"),
                Err(_) => task.abort(),
            }
        }
    }
}

impl Drop for RunningIdentityEndpoint {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Removes the secret file on drop.
struct HeaderFile(PathBuf);

impl Drop for HeaderFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why the identity endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("identity endpoint {0}: only loopback addresses are allowed")]
    NotLoopback(SocketAddr),
    #[error("identity endpoint: cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("identity endpoint: cannot write the header secret to {path}")]
    HeaderFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where the header secret goes: the configured file, else
/// `identity-header` in the socket's directory (on Windows:
/// `%ProgramData%\identity-gateway`; `--emulator` puts it in the current
/// directory).
pub fn header_file_path(config: &Config) -> PathBuf {
    match &config.identity_endpoint.header_file {
        Some(path) => path.clone(),
        None if cfg!(windows) => crate::windows::data_dir().join(DEFAULT_HEADER_FILE_NAME),
        None => config
            .socket
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
            .join(DEFAULT_HEADER_FILE_NAME),
    }
}

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on `listener` until `stop`: each connection with the
/// caller as `ConnectInfo<TcpCaller>`, a header-read timeout (slow clients are
/// cut off) and graceful shutdown of keep-alive connections.
async fn serve_endpoint(
    mut listener: crate::transport::limits::LimitedTcpListener,
    app: Router,
    mut stop: oneshot::Receiver<()>,
) {
    use axum::serve::Listener as _;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut stop => break,
        };
        let connection_peer = peer.clone();
        let service =
            app.clone()
                .map_request(move |request: axum::http::Request<hyper::body::Incoming>| {
                    let mut request = request.map(axum::body::Body::new);
                    request
                        .extensions_mut()
                        .insert(ConnectInfo(connection_peer.clone()));
                    request
                });
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(
                    TokioIo::new(io),
                    hyper_util::service::TowerToHyperService::new(service),
                );
            let mut connection = std::pin::pin!(connection);
            let shutting_down = async move {
                // (The guard wait_for returns is not Send: drop it here.)
                let _ = closing.wait_for(|c| *c).await.is_ok();
            };
            let close = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(?peer, %e, "identity endpoint connection ended");
                    }
                    false
                }
                () = shutting_down => true,
            };
            if close {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        });
    }
    let _ = closing_tx.send(true);
    // Wait for the connections to wind down (the caller bounds this).
    closing_tx.closed().await;
}

/// Starts the endpoint when `[identity_endpoint] listen` (or
/// `--identity-endpoint`) is set: binds, writes a fresh secret readable by
/// `socket_gid` (the socket group, when configured), serves; callers are
/// attributed by `attributor`.
pub async fn start(
    gateway: &Arc<Gateway>,
    config: &Config,
    attributor: Attributor,
    socket_gid: Option<u32>,
) -> Result<Option<RunningIdentityEndpoint>, EndpointError> {
    let Some(listen) = config.identity_endpoint.listen else {
        return Ok(None);
    };
    if !listen.ip().is_loopback() {
        return Err(EndpointError::NotLoopback(listen));
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| EndpointError::Listen {
            addr: listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EndpointError::Listen {
            addr: listen,
            source,
        })?;
    let secret = new_secret();
    let path = header_file_path(config);
    #[cfg(windows)]
    if config.identity_endpoint.header_file.is_none() {
        crate::windows::secure_dir(&crate::windows::data_dir()).map_err(|message| {
            EndpointError::HeaderFile {
                path: path.clone(),
                source: io::Error::other(message),
            }
        })?;
    }
    write_secret(&path, &secret, socket_gid).map_err(|source| EndpointError::HeaderFile {
        path: path.clone(),
        source,
    })?;
    let header_file = HeaderFile(path);
    let app = router(Arc::clone(gateway), secret);
    // Its own counts: a flood here cannot take the gRPC socket's places.
    let listener = crate::transport::limits::LimitedTcpListener::new(
        AttributedListener::new(listener, attributor),
        crate::transport::limits::ConnectionLimits::with_share(&config.limits, 4),
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_endpoint(listener, app, stop_rx));
    tracing::info!(
        %addr,
        header_file = %header_file.0.display(),
        "identity endpoint serving (App Service protocol, api-version {API_VERSION})"
    );
    Ok(Some(RunningIdentityEndpoint {
        addr,
        header_file,
        stop: Some(stop_tx),
        task: Some(task),
    }))
}

/// 32 random bytes, hex: what SDKs send back in `X-IDENTITY-HEADER`.
fn new_secret() -> SecretString {
    let bytes: [u8; 32] = rand::random();
    SecretString::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Writes the secret to a fresh 0640 file next to `path` (group `gid` when
/// given: the socket group, whose members are the apps that may call the
/// gateway) and renames it over `path`, so no reader ever sees a partial or
/// wider-permission file. Group and mode are set on the open file, never
/// through a path.
fn write_secret(path: &Path, secret: &SecretString, gid: Option<u32>) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Some(gid) = gid {
                std::os::unix::fs::fchown(&file, None, Some(gid))?;
            }
            // Only now, with the group set, may the group read it.
            file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        }
        #[cfg(not(unix))]
        let _ = gid;
        file.write_all(secret.expose_secret().as_bytes())?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

#[derive(Clone)]
struct EndpointState {
    gateway: Arc<Gateway>,
    secret: Arc<SecretString>,
}

/// The HTTP routes: the token path, matched case-insensitively (App Service
/// itself is reached as both `/msi/token` and `/MSI/token`).
fn router(gateway: Arc<Gateway>, secret: SecretString) -> Router {
    let state = EndpointState {
        gateway,
        secret: Arc::new(secret),
    };
    Router::new().fallback(token).with_state(state)
}

/// An App Service-style error body.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "correlationId": uuid::Uuid::new_v4().to_string(),
    });
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

async fn token(
    State(state): State<EndpointState>,
    ConnectInfo(caller): ConnectInfo<TcpCaller>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !uri.path().eq_ignore_ascii_case(TOKEN_PATH) {
        return error(StatusCode::NOT_FOUND, "no such path; use /msi/token");
    }
    let (response, refused) = answer(&state, caller.peer.clone(), &method, &uri, &headers).await;
    // Requests that reach the operation are audited there; these were
    // refused by the protocol before it.
    if let Some(outcome) = refused {
        tracing::info!(
            target: "audit",
            caller = %caller.peer,
            rpc = "IdentityEndpoint",
            outcome = %outcome,
        );
    }
    response
}

/// The response, and a short outcome when the protocol refused the request
/// before the operation saw it.
async fn answer(
    state: &EndpointState,
    peer: Peer,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> (Response, Option<String>) {
    if method != Method::GET {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "only GET is allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return (response, Some("method not allowed".into()));
    }
    if headers.contains_key("x-forwarded-for") {
        // A proxy in front of this endpoint would hand tokens to remote callers.
        return refuse(
            StatusCode::BAD_REQUEST,
            "requests through a proxy (X-Forwarded-For) are refused",
        );
    }
    let sent: Vec<_> = headers.get_all(SECRET_HEADER).iter().collect();
    match sent.as_slice() {
        [] => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the X-IDENTITY-HEADER header is required (the value of IDENTITY_HEADER)",
            )
        }
        [value] if constant_time_eq(value.as_bytes(), state.secret.expose_secret().as_bytes()) => {}
        _ => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "the X-IDENTITY-HEADER header does not match this gateway's secret",
            )
        }
    }
    let query = match TokenQuery::parse(uri.query().unwrap_or("")) {
        Ok(query) => query,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    // The connection's owner from the TCP table (or anonymous): judged by
    // the policy like any other caller.
    let ctx = CallContext {
        peer,
        transport: Transport::IdentityEndpoint,
        budget: Some(TOKEN_BUDGET),
        started: std::time::Instant::now(),
    };
    let client_id = match &query.identity {
        IdentityRef::ClientId(id) => Some(id.trim().to_string()),
        _ => None,
    };
    let fetched = state
        .gateway
        .get_token(
            &ctx,
            TokenRequest {
                resource: query.resource,
                identity: query.identity,
            },
        )
        .await;
    match fetched {
        Ok(token) => {
            let expires_on = token
                .expires_on
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let mut body = json!({
                "access_token": token.secret(),
                "expires_on": expires_on.to_string(),
                "resource": token.resource,
                "token_type": token.token_type,
            });
            if let Some(id) = client_id {
                body["client_id"] = json!(id);
            }
            let response = (
                StatusCode::OK,
                [(header::CACHE_CONTROL, "no-store")],
                axum::Json(body),
            )
                .into_response();
            (response, None)
        }
        Err(e) => (error(status_of(&e), &e.to_string()), None),
    }
}

fn refuse(status: StatusCode, message: &str) -> (Response, Option<String>) {
    (error(status, message), Some(format!("{status}: {message}")))
}

/// The HTTP status an SDK expects for each failure: 400 means "no such
/// identity" to the Azure SDKs (they stop), 429 and 5xx make them retry.
fn status_of(error: &GatewayError) -> StatusCode {
    match error {
        GatewayError::InvalidArgument { .. } | GatewayError::IdentityUnavailable(_) => {
            StatusCode::BAD_REQUEST
        }
        GatewayError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
        GatewayError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        GatewayError::Unavailable(_) | GatewayError::Unimplemented(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        GatewayError::DeadlineExceeded(_) | GatewayError::Cancelled(_) => {
            StatusCode::GATEWAY_TIMEOUT
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token request as the protocol carries it (validated by the operation).
#[derive(Debug, PartialEq, Eq)]
struct TokenQuery {
    resource: String,
    identity: IdentityRef,
}

impl TokenQuery {
    /// Parses the query string: `resource` and `api-version` required, at most
    /// one of `client_id`, `principal_id`/`object_id`, `mi_res_id`/`msi_res_id`;
    /// repeated or unknown parameters are refused.
    fn parse(query: &str) -> Result<Self, GatewayError> {
        let mut resource = None;
        let mut api_version = None;
        let mut selectors = Vec::new();
        let mut seen = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.contains(&name) {
                return Err(GatewayError::invalid(
                    name.into_owned(),
                    "is given more than once",
                ));
            }
            seen.push(name.clone());
            match name.as_ref() {
                "resource" => resource = Some(value.into_owned()),
                "api-version" => api_version = Some(value.into_owned()),
                "client_id" => selectors.push(IdentityRef::ClientId(value.into_owned())),
                "principal_id" | "object_id" => {
                    selectors.push(IdentityRef::ObjectId(value.into_owned()))
                }
                "mi_res_id" | "msi_res_id" => {
                    selectors.push(IdentityRef::ResourceId(value.into_owned()))
                }
                other => {
                    return Err(GatewayError::invalid(
                        other.to_string(),
                        "is not a parameter of the identity endpoint",
                    ))
                }
            }
        }
        match api_version.as_deref() {
            None => {
                return Err(GatewayError::invalid(
                    "api-version",
                    format!("is required ({API_VERSION})"),
                ))
            }
            Some(v) if is_supported_version(v) => {}
            Some(v) => {
                return Err(GatewayError::invalid(
                    "api-version",
                    format!("'{v}' is not supported; use {API_VERSION}"),
                ))
            }
        }
        let resource = resource.unwrap_or_default();
        if selectors.len() > 1 {
            return Err(GatewayError::invalid(
                "client_id",
                "give at most one of client_id, principal_id, mi_res_id",
            ));
        }
        let identity = selectors.pop().unwrap_or_default();
        Ok(Self { resource, identity })
    }
}

/// `YYYY-MM-DD`, 2019-08-01 or later (the 2017-09-01 protocol differs).
fn is_supported_version(v: &str) -> bool {
    let shape = v.len() == 10
        && v.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            _ => c.is_ascii_digit(),
        });
    shape && v >= API_VERSION
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use axum::{
        body::Body,
        http::{Request, StatusCode},
    };
    use identity_gateway_emulator::{sample, ImdsConfig, ImdsFake, TokenAuthority};
    use tower::ServiceExt;

    use super::*;
    use identity_gateway_core::SystemClock;
    use identity_gateway_identity::SourceKind;

    const CLIENT_ID: &str = sample::USER_CLIENT_ID;

    /// A caller the TCP table named root.
    fn root_caller(port: u16) -> TcpCaller {
        let remote = SocketAddr::from(([127, 0, 0, 1], port));
        TcpCaller {
            local: SocketAddr::from(([127, 0, 0, 1], 42356)),
            remote,
            peer: Peer {
                uid: Some(0),
                gid: Some(0),
                addr: Some(remote),
                attribution: identity_gateway_service::Attribution::TcpTable,
                ..Peer::default()
            },
        }
    }

    #[tokio::test]
    async fn the_caller_policy_applies_to_the_attributed_caller() {
        let f = fixture().await;
        let mut config = f.app_config.clone();
        config.policy = toml::from_str(
            "[[rules]]\nuids = [0]\nidentities = [\"system\"]\nresources = [\"https://vault.azure.net\"]\n",
        )
        .expect("policy");
        let app = router(
            Arc::new(crate::app::build_gateway(&config, Arc::new(SystemClock)).expect("gateway")),
            SecretString::from(f.secret.clone()),
        );
        let ok = "/msi/token?resource=https://vault.azure.net&api-version=2019-08-01";
        let (status, body) = call(&app, ok, Some(&f.secret)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let refused = "/msi/token?resource=https://storage.azure.com/&api-version=2019-08-01";
        let (status, body) = call(&app, refused, Some(&f.secret)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains("policy"),
            "{body}"
        );
    }

    struct Fixture {
        authority: Arc<TokenAuthority>,
        _imds: ImdsFake,
        app: Router,
        app_config: Config,
        secret: String,
    }

    async fn fixture() -> Fixture {
        let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
        let imds = ImdsFake::start(Arc::clone(&authority), ImdsConfig::default())
            .await
            .expect("fake IMDS");
        let mut config = Config::default();
        config.identity.source = SourceKind::Imds;
        config.identity.imds_endpoint = url::Url::parse(&imds.base_url()).expect("url");
        let gateway =
            Arc::new(crate::app::build_gateway(&config, Arc::new(SystemClock)).expect("gateway"));
        let secret = "0123456789abcdef".repeat(4);
        Fixture {
            authority,
            _imds: imds,
            app: router(gateway, SecretString::from(secret.clone())),
            app_config: config,
            secret,
        }
    }

    async fn call(
        app: &Router,
        uri: &str,
        secret: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::get(uri);
        if let Some(secret) = secret {
            request = request.header("X-IDENTITY-HEADER", secret);
        }
        let mut request = request.body(Body::empty()).expect("request");
        request
            .extensions_mut()
            .insert(ConnectInfo(root_caller(50000)));
        let response = app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("JSON body"))
    }

    #[tokio::test]
    async fn serves_a_token_for_the_resource_verbatim() {
        let f = fixture().await;
        let (status, body) = call(
            &f.app,
            "/msi/token?resource=https%3A%2F%2Fvault.azure.net&api-version=2019-08-01",
            Some(&f.secret),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let jwt = body["access_token"].as_str().expect("access_token");
        let claims = f
            .authority
            .verify(jwt, "https://vault.azure.net", SystemTime::now())
            .expect("a token for Key Vault");
        assert_eq!(body["expires_on"], json!(claims.exp.to_string()));
        assert_eq!(body["resource"], "https://vault.azure.net");
        assert_eq!(body["token_type"], "Bearer");
        assert!(body.get("client_id").is_none());
    }

    #[tokio::test]
    async fn selects_a_user_assigned_identity_by_client_id() {
        let f = fixture().await;
        let uri = format!(
            "/MSI/token?api-version=2019-08-01&resource=https://management.azure.com/&client_id={CLIENT_ID}"
        );
        let (status, body) = call(&f.app, &uri, Some(&f.secret)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let claims = f
            .authority
            .verify(
                body["access_token"].as_str().expect("token"),
                "https://management.azure.com/",
                SystemTime::now(),
            )
            .expect("trailing slash kept");
        assert_eq!(claims.appid, CLIENT_ID);
        assert_eq!(body["client_id"], CLIENT_ID);
    }

    #[tokio::test]
    async fn refuses_missing_and_wrong_secrets() {
        let f = fixture().await;
        let uri = "/msi/token?resource=https://vault.azure.net&api-version=2019-08-01";
        let (status, body) = call(&f.app, uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["message"]
            .as_str()
            .unwrap_or("")
            .contains("X-IDENTITY-HEADER"));
        assert!(body.get("access_token").is_none());
        let mut wrong = f.secret.clone();
        wrong.replace_range(0..1, "f");
        let (status, body) = call(&f.app, uri, Some(&wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            !body.to_string().contains(&f.secret),
            "never echo the secret"
        );
        let (status, _) = call(&f.app, uri, Some("")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn refuses_malformed_queries_naming_the_parameter() {
        let f = fixture().await;
        for (query, field) in [
            ("resource=https://vault.azure.net", "api-version"),
            ("resource=https://vault.azure.net&api-version=2017-09-01", "api-version"),
            ("api-version=2019-08-01", "resource"),
            ("resource=https://vault.azure.net/.default&api-version=2019-08-01", "resource"),
            ("resource=a&resource=b&api-version=2019-08-01", "resource"),
            ("resource=a&api-version=2019-08-01&client_id=nope", "client_id"),
            ("resource=a&api-version=2019-08-01&bogus=1", "bogus"),
            (
                &format!("resource=a&api-version=2019-08-01&client_id={CLIENT_ID}&principal_id={CLIENT_ID}"),
                "client_id",
            ),
        ] {
            let (status, body) = call(&f.app, &format!("/msi/token?{query}"), Some(&f.secret)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            let message = body["message"].as_str().unwrap_or("");
            assert!(message.contains(field), "{query}: {message}");
        }
    }

    #[tokio::test]
    async fn refuses_other_methods_paths_and_proxied_requests() {
        let f = fixture().await;
        let request = Request::post("/msi/token?resource=a&api-version=2019-08-01")
            .header("X-IDENTITY-HEADER", &f.secret)
            .extension(ConnectInfo(root_caller(1)))
            .body(Body::empty())
            .expect("request");
        let response = f.app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = call(&f.app, "/metadata/identity/oauth2/token", Some(&f.secret)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let request = Request::get("/msi/token?resource=a&api-version=2019-08-01")
            .header("X-IDENTITY-HEADER", &f.secret)
            .header("X-Forwarded-For", "203.0.113.9")
            .extension(ConnectInfo(root_caller(1)))
            .body(Body::empty())
            .expect("request");
        let response = f.app.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn secrets_are_long_random_hex() {
        let a = new_secret();
        let b = new_secret();
        assert_eq!(a.expose_secret().len(), 64);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[cfg(unix)]
    #[test]
    fn the_secret_file_is_for_the_socket_group_and_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("identity-header");
        std::fs::write(&path, "old").expect("seed");
        // SAFETY: no preconditions.
        let gid = unsafe { libc::getegid() };
        write_secret(&path, &SecretString::from("s3cret".to_string()), Some(gid)).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "s3cret");
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o640,
            "the socket group may read it"
        );
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn the_config_section_parses_and_only_loopback_is_accepted() {
        let config = Config::from_toml(
            "[identity_endpoint]\nlisten = \"127.0.0.1:42356\"\nheader_file = \"/run/ig/h\"\n",
        )
        .expect("valid TOML");
        assert_eq!(
            config.identity_endpoint.listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 42356)))
        );
        assert_eq!(header_file_path(&config), Path::new("/run/ig/h"));
        config.validate().expect("loopback is fine");
        let public = Config::from_toml("[identity_endpoint]\nlisten = \"0.0.0.0:42356\"\n")
            .expect("valid TOML");
        let err = public.validate().expect_err("not loopback").to_string();
        assert!(err.contains("loopback"), "{err}");
        assert!(Config::from_toml("[identity_endpoint]\nlisen = \"x\"\n").is_err());
    }

    #[cfg(windows)]
    #[test]
    fn header_file_defaults_to_program_data_on_windows() {
        let config = Config::default();
        assert_eq!(
            header_file_path(&config),
            crate::windows::data_dir().join("identity-header")
        );
    }

    #[cfg(unix)]
    #[test]
    fn header_file_defaults_next_to_the_socket() {
        let mut config = Config {
            socket: PathBuf::from("/run/identity-gateway/gateway.sock"),
            ..Config::default()
        };
        assert_eq!(
            header_file_path(&config),
            Path::new("/run/identity-gateway/identity-header")
        );
        config.socket = PathBuf::from("gw.sock");
        assert_eq!(header_file_path(&config), Path::new("./identity-header"));
        config.identity_endpoint.header_file = Some(PathBuf::from("/etc/x"));
        assert_eq!(header_file_path(&config), Path::new("/etc/x"));
    }
}
