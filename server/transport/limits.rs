//! Connection limits at accept, before any request is read: connections
//! open in total and per peer (uid from the socket's peer credentials, IP
//! on TCP, the client token's user SID on the Windows pipe, one shared
//! bucket for pipe clients whose token could not be read), connections that
//! send nothing closed after a while, and accept errors (EMFILE, ENFILE,
//! ...) logged once per run and backed off instead of retried in a hot loop.
//!
//! [`ConnectionLimits::limit`] wraps any stream of accepted connections and
//! yields [`Limited`] connections (which keep the peer's connect info): the
//! connection-serving loop ([`super::serve`]) takes the socket's, the pipe's
//! and the attributed TCP listener's connections through it, and
//! [`LimitedTcpListener`] does the same for the identity endpoint. It knows
//! nothing of HTTP/2 or the services; the numbers come from `[limits]`.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt};
use identity_gateway_service::LimitsConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};
use tonic::transport::server::Connected;

/// Whose connection it is, for the per-peer count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Uid(u32),
    Ip(IpAddr),
    /// A pipe client's user SID, upper-cased ([`PeerKey::sid`]).
    Sid(Arc<str>),
    Unknown,
}

impl PeerKey {
    /// A Windows account by user SID; Windows writes SIDs in upper case, any
    /// other case is another spelling of the same account.
    pub fn sid(user_sid: &str) -> Self {
        Self::Sid(user_sid.to_ascii_uppercase().into())
    }
}

/// A connection that can say who is at the other end.
pub trait PeerOf {
    fn peer_key(&self) -> PeerKey;
}

#[cfg(unix)]
impl PeerOf for tokio::net::UnixStream {
    fn peer_key(&self) -> PeerKey {
        self.peer_cred()
            .map_or(PeerKey::Unknown, |cred| PeerKey::Uid(cred.uid()))
    }
}

impl PeerOf for tokio::net::TcpStream {
    fn peer_key(&self) -> PeerKey {
        self.peer_addr()
            .map_or(PeerKey::Unknown, |addr| PeerKey::Ip(addr.ip()))
    }
}

/// The limits and the counts, shared by every listener of one server.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    counts: Arc<Counts>,
}

#[derive(Debug)]
struct Counts {
    max_total: usize,
    max_per_peer: usize,
    first_byte_timeout: Duration,
    open: AtomicUsize,
    per_peer: Mutex<HashMap<PeerKey, usize>>,
    refused: AtomicU64,
    last_refusal_logged: Mutex<Option<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a connection may stay silent after it was accepted.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "connection refused" line per this interval.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Longest pause between accept attempts after accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

impl ConnectionLimits {
    /// From `[limits]` (`max_connections`, `max_connections_per_caller`),
    /// lowered to what the process's descriptor limit leaves room for.
    pub fn new(config: &LimitsConfig) -> Self {
        Self::with_share(config, 1)
    }

    /// Like [`new`](Self::new) with `1/share` of the connection budget (the
    /// identity endpoint takes a quarter beside the gRPC listeners).
    pub fn with_share(config: &LimitsConfig, share: usize) -> Self {
        let mut total = config.max_connections / share.max(1);
        if let Some(room) = descriptor_room() {
            let room = room / share.max(1);
            if total > room {
                tracing::warn!(
                    configured = total,
                    allowed = room,
                    "limits.max_connections lowered to fit the open-file limit (raise LimitNOFILE / ulimit -n to allow more)"
                );
                total = room;
            }
        }
        Self::with(
            total,
            config.max_connections_per_caller.min(total),
            FIRST_BYTE_TIMEOUT,
        )
    }

    pub fn with(max_total: usize, max_per_peer: usize, first_byte_timeout: Duration) -> Self {
        Self {
            counts: Arc::new(Counts {
                max_total: max_total.max(1),
                max_per_peer: max_per_peer.max(1),
                first_byte_timeout,
                open: AtomicUsize::new(0),
                per_peer: Mutex::new(HashMap::new()),
                refused: AtomicU64::new(0),
                last_refusal_logged: Mutex::new(None),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Connections closed at accept because a limit was reached.
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }

    /// Wraps `incoming`: connections over a limit are closed at once (the
    /// client sees the connection end instead of a hang in the backlog),
    /// accept errors are backed off, and every yielded connection holds its
    /// place in the counts until it is dropped.
    pub fn limit<S, IO>(
        &self,
        incoming: S,
    ) -> impl Stream<Item = io::Result<Limited<IO>>> + Send + 'static
    where
        S: Stream<Item = io::Result<IO>> + Send + Unpin + 'static,
        IO: PeerOf + Send + 'static,
    {
        let state = (incoming, self.clone(), AcceptErrors::default());
        futures::stream::unfold(state, |(mut incoming, limits, mut errors)| async move {
            loop {
                match incoming.next().await? {
                    Ok(io) => {
                        errors.recovered();
                        match limits.admit(io.peer_key()) {
                            Some(slot) => {
                                let limited =
                                    Limited::new(io, slot, limits.counts.first_byte_timeout);
                                return Some((Ok(limited), (incoming, limits, errors)));
                            }
                            None => drop(io),
                        }
                    }
                    Err(error) => {
                        let pause = errors.failed(&error);
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        })
    }

    fn admit(&self, peer: PeerKey) -> Option<Slot> {
        let c = &self.counts;
        let mut per_peer = lock(&c.per_peer);
        let total = c.open.load(Ordering::SeqCst);
        let mine = per_peer.get(&peer).copied().unwrap_or(0);
        let refusal = if total >= c.max_total {
            Some(("limits.max_connections", c.max_total))
        } else if mine >= c.max_per_peer {
            Some(("limits.max_connections_per_caller", c.max_per_peer))
        } else {
            None
        };
        if let Some((limit, max)) = refusal {
            drop(per_peer);
            let refused = c.refused.fetch_add(1, Ordering::Relaxed) + 1;
            let mut last = lock(&c.last_refusal_logged);
            let now = Instant::now();
            if last.is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL) {
                *last = Some(now);
                tracing::warn!(
                    ?peer,
                    limit,
                    max,
                    open = total,
                    refused_so_far = refused,
                    "connection refused: too many open connections"
                );
            }
            return None;
        }
        *per_peer.entry(peer.clone()).or_insert(0) += 1;
        c.open.fetch_add(1, Ordering::SeqCst);
        Some(Slot {
            counts: Arc::clone(c),
            peer,
        })
    }
}

/// Descriptors kept for everything but client connections (upstream HTTP
/// and SQL connections, the listeners, files).
#[cfg(unix)]
const DESCRIPTOR_RESERVE: u64 = 256;
/// The open-file limit [`raise_descriptor_limit`] asks for.
#[cfg(unix)]
const WANTED_DESCRIPTORS: u64 = 4096;

/// Client connections the open-file limit leaves room for, if known.
fn descriptor_room() -> Option<usize> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return None;
        }
        let soft = limit.rlim_cur;
        if soft == libc::RLIM_INFINITY {
            return None;
        }
        Some(usize::try_from(soft.saturating_sub(DESCRIPTOR_RESERVE).max(16)).unwrap_or(usize::MAX))
    }
    #[cfg(not(unix))]
    None
}

/// Raises the soft open-file limit towards 4096 as far as the hard limit
/// allows (systemd's LimitNOFILE and container runtimes set the hard one).
pub fn raise_descriptor_limit() {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            let wanted = WANTED_DESCRIPTORS.min(limit.rlim_max);
            if limit.rlim_cur < wanted {
                limit.rlim_cur = wanted;
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
    }
}

/// Consecutive accept errors: the first is logged, the rest counted, and
/// the pause before the next attempt doubles up to a second.
#[derive(Debug, Default)]
struct AcceptErrors {
    run: u64,
    pause: Duration,
}

impl AcceptErrors {
    fn failed(&mut self, error: &io::Error) -> Duration {
        if self.run == 0 {
            tracing::error!(%error, "cannot accept connections (out of file descriptors?); backing off until it clears");
            self.pause = Duration::from_millis(10);
        } else {
            self.pause = (self.pause * 2).min(MAX_ACCEPT_BACKOFF);
        }
        self.run += 1;
        self.pause
    }

    fn recovered(&mut self) {
        if self.run > 0 {
            tracing::warn!(failed_attempts = self.run, "accepting connections again");
            self.run = 0;
        }
    }
}

/// A connection's place in the counts.
#[derive(Debug)]
struct Slot {
    counts: Arc<Counts>,
    peer: PeerKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_peer = lock(&self.counts.per_peer);
        if let Some(n) = per_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&self.peer);
            }
        }
        self.counts.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An accepted connection within the limits. Reads fail with `TimedOut`
/// if nothing arrives within the first-byte timeout.
#[derive(Debug)]
pub struct Limited<IO> {
    io: IO,
    first_byte: Option<Pin<Box<Sleep>>>,
    _slot: Slot,
}

impl<IO> Limited<IO> {
    fn new(io: IO, slot: Slot, first_byte_timeout: Duration) -> Self {
        Self {
            io,
            first_byte: Some(Box::pin(tokio::time::sleep(first_byte_timeout))),
            _slot: slot,
        }
    }
}

impl<IO: Connected> Connected for Limited<IO> {
    type ConnectInfo = IO::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.first_byte = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = self
                    .first_byte
                    .as_mut()
                    .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client sent nothing after connecting",
                    )))
                } else {
                    Poll::Pending
                }
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The identity endpoint's listener with these limits: attributed
/// connections (see [`super::peer`]) counted per uid, or per IP when the
/// owner is unknown.
#[derive(Debug)]
pub struct LimitedTcpListener {
    listener: super::peer::AttributedListener,
    limits: ConnectionLimits,
}

impl LimitedTcpListener {
    pub fn new(listener: super::peer::AttributedListener, limits: ConnectionLimits) -> Self {
        Self { listener, limits }
    }
}

impl axum::serve::Listener for LimitedTcpListener {
    type Io = Limited<tokio::net::TcpStream>;
    type Addr = super::peer::TcpCaller;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // (AttributedListener backs off its own accept errors.)
            let (io, caller) = self.listener.accept().await;
            if let Some(slot) = self.limits.admit(caller_key(&caller)) {
                let limited = Limited::new(io, slot, self.limits.counts.first_byte_timeout);
                return (limited, caller);
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

fn caller_key(caller: &super::peer::TcpCaller) -> PeerKey {
    match caller.peer.uid {
        Some(uid) => PeerKey::Uid(uid),
        None => PeerKey::Ip(caller.remote.ip()),
    }
}

impl PeerOf for super::peer::AttributedTcp {
    fn peer_key(&self) -> PeerKey {
        caller_key(&self.connect_info())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn accept_errors_are_backed_off_not_spun() {
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&polls);
        let failing = futures::stream::repeat_with(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Err::<tokio::net::TcpStream, _>(io::Error::from_raw_os_error(libc::EMFILE))
        });
        let limits = ConnectionLimits::with(10, 10, FIRST_BYTE_TIMEOUT);
        let mut limited = Box::pin(limits.limit(failing));
        let waited = tokio::time::timeout(Duration::from_secs(10), limited.next()).await;
        assert!(waited.is_err(), "no connection ever comes");
        let n = polls.load(Ordering::SeqCst);
        assert!((5..=20).contains(&n), "{n} accept attempts in 10 s");
    }

    /// An accepted connection that is only a key (the accounting does not
    /// read or write).
    #[derive(Debug)]
    struct Keyed(PeerKey);

    impl PeerOf for Keyed {
        fn peer_key(&self) -> PeerKey {
            self.0.clone()
        }
    }

    #[tokio::test]
    async fn pipe_clients_are_counted_per_user_sid_and_unreadable_tokens_share_a_bucket() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<io::Result<Keyed>>();
        let limits = ConnectionLimits::with(6, 2, FIRST_BYTE_TIMEOUT);
        let mut accepted =
            Box::pin(limits.limit(tokio_stream::wrappers::UnboundedReceiverStream::new(rx)));
        let alice = "S-1-5-21-1-2-3-1001";
        let arrivals = [
            PeerKey::sid(alice),
            PeerKey::sid(&alice.to_ascii_lowercase()),
            PeerKey::sid(alice), // alice's third: refused
            PeerKey::sid("S-1-5-21-1-2-3-1002"),
            PeerKey::Unknown,
            PeerKey::Unknown,
            PeerKey::Unknown, // a third unreadable token: refused
        ];
        for key in arrivals {
            tx.send(Ok(Keyed(key))).unwrap();
        }
        drop(tx);
        let mut held = Vec::new();
        while let Some(conn) = accepted.next().await {
            held.push(conn.unwrap());
        }
        let keys: Vec<PeerKey> = held.iter().map(|c| c.io.0.clone()).collect();
        assert_eq!(
            keys,
            [
                PeerKey::sid(alice),
                PeerKey::sid(alice),
                PeerKey::sid("S-1-5-21-1-2-3-1002"),
                PeerKey::Unknown,
                PeerKey::Unknown,
            ]
        );
        assert_eq!((limits.open(), limits.refused()), (5, 2));
        // The total cap applies across accounts; a closed connection gives
        // its place back.
        held.truncate(1);
        assert_eq!(limits.open(), 1);
        assert!(limits.admit(PeerKey::sid(alice)).is_some());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn connections_over_the_per_peer_limit_are_closed_and_silent_ones_time_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let limits = ConnectionLimits::with(10, 2, Duration::from_millis(300));
        let mut accepted = Box::pin(limits.limit(incoming));
        let mut clients = Vec::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            clients.push(tokio::net::UnixStream::connect(&path).await.unwrap());
            held.push(accepted.next().await.unwrap().unwrap());
        }
        assert_eq!(limits.open(), 2);
        let mut third = tokio::net::UnixStream::connect(&path).await.unwrap();
        // The third is closed at accept; the stream waits for the next.
        let next = tokio::time::timeout(Duration::from_millis(200), accepted.next()).await;
        assert!(next.is_err());
        let mut buf = [0u8; 1];
        assert_eq!(third.read(&mut buf).await.unwrap(), 0, "closed at once");
        assert_eq!(limits.refused(), 1);
        // A silent connection's reads fail after the first-byte timeout.
        let err = held[0].read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(held);
        assert_eq!(limits.open(), 0);
    }
}
