//! Serving accepted connections: HTTP/2 (hyper) with tonic's routes as the
//! service, one task per connection.
//!
//! This owns what tonic's `serve_with_incoming_shutdown` did for the gateway
//! (the same HTTP/2 settings, the peer's connect info as a request extension —
//! [`tonic::transport::server::UdsConnectInfo`] on the socket, `TcpConnectInfo`
//! on TCP — the client's `grpc-timeout`, graceful shutdown) plus what tonic
//! cannot do:
//!
//! - **which `:authority` each transport accepts.** gRPC clients on a Unix
//!   socket send the socket path as `:authority`, which is no URI authority.
//!   The patched h2 (`third_party/h2/PATCH.md`) passes such a request on with
//!   the raw value as [`h2::ext::UnparsedAuthority`]; local transports accept
//!   it, TCP resets the stream with `PROTOCOL_ERROR` exactly as unpatched h2
//!   did.
//! - **a `warn` line for a protocol error**, once per connection, naming the
//!   peer (uid/pid on the socket) with a hint, where hyper and tonic only log
//!   at `debug`.
//!
//! It knows nothing of the gateway's services: the caller hands it
//! [`tonic::service::Routes`] and owns the listener and the stop signal.

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{Stream, StreamExt};
use http::{HeaderMap, Request, Response};
use hyper::{body::Incoming, server::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
    task::JoinSet,
};
use tonic::{body::Body, service::Routes, transport::server::Connected, Status};
use tower::ServiceExt;

/// What kind of transport a listener is: it decides which `:authority`
/// values are accepted and how a protocol error is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The Unix socket or the Windows named pipe: any `:authority` (gRPC
    /// clients send the socket path), protocol errors logged at `warn`.
    Local,
    /// Loopback TCP: `:authority` must be a valid URI authority, as HTTP/2
    /// requires.
    Tcp,
}

/// Names the peer of a connection in log lines: uid/gid/pid on the Unix
/// socket, the address on TCP.
pub trait PeerLabel {
    /// A short description such as `uid=1000 gid=1000 pid=4242`.
    fn peer_label(&self) -> String;
}

#[cfg(unix)]
impl PeerLabel for tonic::transport::server::UdsConnectInfo {
    fn peer_label(&self) -> String {
        match &self.peer_cred {
            Some(cred) => match cred.pid() {
                Some(pid) => format!("uid={} gid={} pid={pid}", cred.uid(), cred.gid()),
                None => format!("uid={} gid={}", cred.uid(), cred.gid()),
            },
            None => "unknown peer (no credentials)".to_string(),
        }
    }
}

impl PeerLabel for tonic::transport::server::TcpConnectInfo {
    fn peer_label(&self) -> String {
        match self.remote_addr {
            Some(addr) => format!("tcp={addr}"),
            None => "tcp=unknown".to_string(),
        }
    }
}

/// The named pipe carries no peer information (yet).
impl PeerLabel for () {
    fn peer_label(&self) -> String {
        "pipe client".to_string()
    }
}

/// Serves the connections of one listener with one set of routes.
#[derive(Clone)]
pub struct ConnectionServer {
    routes: Routes,
    http2: http2::Builder<TokioExecutor>,
    request_timeout: Option<Duration>,
}

impl fmt::Debug for ConnectionServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionServer").finish_non_exhaustive()
    }
}

/// tonic's default for the keep-alive ping's answer.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

impl ConnectionServer {
    /// HTTP/2 exactly as tonic's `Server` sets it up by default, serving `routes`.
    pub fn new(routes: Routes) -> Self {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        // tonic passes `None` for these, which lifts h2's own limits; keep it.
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(None)
            .keep_alive_interval(None)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .adaptive_window(false)
            .max_pending_accept_reset_streams(None)
            .max_local_error_reset_streams(None);
        Self {
            routes: routes.prepare(),
            http2,
            request_timeout: None,
        }
    }

    /// Adjusts the HTTP/2 settings (limits on streams, windows, frames and
    /// headers: see `app::serve`).
    pub fn http2(mut self, configure: impl FnOnce(&mut http2::Builder<TokioExecutor>)) -> Self {
        configure(&mut self.http2);
        self
    }

    /// Bounds every call (until its reply starts) whatever the caller's
    /// `grpc-timeout` (tonic's `Server::timeout`).
    pub fn request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sends an HTTP/2 PING this often on idle connections (tonic's
    /// `http2_keepalive_interval`).
    pub fn http2_keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.http2.keep_alive_interval(interval);
        self
    }

    /// Accepts from `incoming` until `stop` resolves, then stops accepting
    /// (dropping `incoming`, so the listener closes), asks every connection to
    /// finish gracefully (GOAWAY; calls in flight complete) and returns once
    /// all have closed. Dropping the returned future aborts the connections.
    pub async fn serve<I, IO>(
        &self,
        transport: Transport,
        incoming: I,
        stop: impl Future<Output = ()>,
    ) where
        I: Stream<Item = std::io::Result<IO>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IO::ConnectInfo: PeerLabel,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        {
            let mut incoming = pin!(incoming);
            let mut stop = pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    accepted = incoming.next() => match accepted {
                        Some(Ok(io)) => {
                            let this = self.clone();
                            let stop = stop_rx.clone();
                            connections.spawn(async move {
                                this.serve_connection(transport, io, stop).await;
                            });
                        }
                        Some(Err(e)) => tracing::debug!(error = %e, "accepting a connection failed"),
                        None => break,
                    },
                }
            }
        }
        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
    }

    /// Serves one connection until it ends or, after `stop` turns true, until
    /// its calls in flight have finished. Returns the protocol error it
    /// logged, if any.
    pub async fn serve_connection<IO>(
        &self,
        transport: Transport,
        io: IO,
        mut stop: watch::Receiver<bool>,
    ) -> Option<h2::Reason>
    where
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IO::ConnectInfo: PeerLabel,
    {
        let info = io.connect_info();
        let service = ConnectionService {
            routes: self.routes.clone(),
            info: info.clone(),
            transport,
            request_timeout: self.request_timeout,
            refused_authority: Arc::new(AtomicBool::new(false)),
        };
        let mut conn = pin!(self.http2.serve_connection(TokioIo::new(io), service));
        let mut stopping = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                _ = stop.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        let err = result.err()?;
        match protocol_error(&err) {
            Some(reason) => {
                let peer = info.peer_label();
                let err = error_chain(&err);
                match transport {
                    Transport::Local => tracing::warn!(
                        %peer,
                        error = %err,
                        hint = "the client broke the HTTP/2 protocol: is it a gRPC client with \
                                plaintext (insecure) credentials? HTTP/1.1, TLS and raw bytes are \
                                refused on the socket; point the client at unix:///<socket path>",
                        "protocol error on a local connection; closed it"
                    ),
                    Transport::Tcp => {
                        tracing::debug!(%peer, error = %err, "protocol error on a TCP connection")
                    }
                }
                Some(reason)
            }
            None => {
                tracing::debug!(error = %err, "connection ended with an error");
                None
            }
        }
    }
}

/// `err: its source: ...`; hyper's own message is only "http2 error".
fn error_chain(err: &hyper::Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

/// The reason of a GOAWAY this side sent because the peer broke the protocol.
fn protocol_error(err: &hyper::Error) -> Option<h2::Reason> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return match h2.reason() {
                Some(reason) if h2.is_go_away() && h2.is_library() => {
                    (reason != h2::Reason::NO_ERROR).then_some(reason)
                }
                _ => None,
            };
        }
        source = e.source();
    }
    None
}

/// The per-connection service: the routes, with the connection's info as a
/// request extension, the transport's `:authority` rule and the client's
/// `grpc-timeout`.
#[derive(Clone)]
struct ConnectionService<C> {
    routes: Routes,
    info: C,
    transport: Transport,
    /// The server's own bound on a call (until its reply starts).
    request_timeout: Option<Duration>,
    /// Set once the first request with an unparsed authority was refused, so
    /// the log says it once per connection.
    refused_authority: Arc<AtomicBool>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl<C> hyper::service::Service<Request<Incoming>> for ConnectionService<C>
where
    C: PeerLabel + Clone + Send + Sync + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if self.transport == Transport::Tcp {
            if let Some(authority) = request.extensions().get::<h2::ext::UnparsedAuthority>() {
                if !self.refused_authority.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        peer = %self.info.peer_label(),
                        authority = ?authority,
                        "refused a request whose :authority is no host[:port] on TCP (RST_STREAM PROTOCOL_ERROR)"
                    );
                }
                // Exactly what unpatched h2 answers: hyper turns an h2 error
                // returned by the service into RST_STREAM with its reason.
                return Box::pin(std::future::ready(Err(h2::Error::from(
                    h2::Reason::PROTOCOL_ERROR,
                )
                .into())));
            }
        }
        request.extensions_mut().insert(self.info.clone());
        let timeout = match (grpc_timeout(request.headers()), self.request_timeout) {
            (Some(caller), Some(server)) => Some(caller.min(server)),
            (caller, server) => caller.or(server),
        };
        let call = self.routes.clone().oneshot(request);
        Box::pin(async move {
            let response = match timeout {
                None => call.await,
                Some(timeout) => match tokio::time::timeout(timeout, call).await {
                    Ok(response) => response,
                    // tonic's server answers an expired `grpc-timeout` so.
                    Err(_) => Ok(status_response(Status::cancelled("Timeout expired"))),
                },
            };
            Ok(response.unwrap_or_else(|never: Infallible| match never {}))
        })
    }
}

fn status_response(status: Status) -> Response<Body> {
    let (parts, ()) = status.into_http::<()>().into_parts();
    Response::from_parts(parts, Body::empty())
}

/// The `grpc-timeout` header (gRPC over HTTP/2: at most 8 digits and a unit),
/// or `None` when absent or malformed, as tonic's server reads it.
fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    parse_grpc_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` value; the one parser the connection layer and the gRPC
/// adapter (the caller's deadline budget) share.
pub(crate) fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    let (digits, unit) = raw.split_at(raw.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_follows_the_spec() {
        let parse = |v: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&headers)
        };
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("123456789S"), None, "more than 8 digits");
        assert_eq!(parse("m"), None);
        assert_eq!(parse("10x"), None);
        assert_eq!(grpc_timeout(&HeaderMap::new()), None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn http1_on_the_socket_is_a_logged_protocol_error() {
        use tokio::io::AsyncWriteExt;
        let (server_io, mut client) = tokio::net::UnixStream::pair().unwrap();
        let server = ConnectionServer::new(Routes::default());
        let (_stop_tx, stop) = watch::channel(false);
        let served = tokio::spawn(async move {
            server
                .serve_connection(Transport::Local, server_io, stop)
                .await
        });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("connection closed")
            .unwrap();
        assert_eq!(reason, Some(h2::Reason::PROTOCOL_ERROR));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_client_hanging_up_is_no_protocol_error() {
        let (server_io, client) = tokio::net::UnixStream::pair().unwrap();
        let server = ConnectionServer::new(Routes::default());
        let (_stop_tx, stop) = watch::channel(false);
        drop(client);
        let reason = server
            .serve_connection(Transport::Local, server_io, stop)
            .await;
        assert_eq!(reason, None);
    }
}
