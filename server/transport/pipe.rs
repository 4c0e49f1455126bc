//! Windows named pipe listener.
//!
//! - Every instance carries the explicit security descriptor of
//!   [`crate::windows::pipe_security`] and rejects remote clients.
//! - The first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`: if
//!   any process (a running gateway, or an impostor that squatted the name)
//!   already has the name, startup fails instead of sharing it.
//! - [`WAITING_INSTANCES`] instances wait at all times, each replaced before
//!   its client is handed over, so a burst of clients connects instead of
//!   getting `ERROR_PIPE_BUSY`; a failure to create the next instance is
//!   logged and retried, never the silent end of the accept stream.
//! - Each connection is identified ([`crate::windows::caller`]) once the
//!   client's first bytes arrived, in its own task, so a silent client
//!   delays nobody. The connection caps of `[limits]` ([`super::limits`])
//!   then count it under the client's user SID (clients whose token could
//!   not be read share one bucket).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::windows::named_pipe::{NamedPipeServer, ServerOptions},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::windows::{
    caller::{self, PipeCaller},
    pipe_security::PipeSecurity,
};

/// Instances waiting for clients at any time.
pub const WAITING_INSTANCES: usize = 8;
/// How long a connected client may stay silent before it is dropped.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// `ERROR_ACCESS_DENIED`: what `FILE_FLAG_FIRST_PIPE_INSTANCE` yields when the
/// name is taken.
const ERROR_ACCESS_DENIED: i32 = 5;

/// What a pipe connection tells the API about its caller (cloned into
/// every request: a pid and an `Arc`).
#[derive(Debug, Clone, Default)]
pub struct PipeConnectInfo {
    /// The client's identity, read at connect time.
    pub caller: PipeCaller,
}

impl super::serve::PeerLabel for PipeConnectInfo {
    fn peer_label(&self) -> String {
        self.caller.to_string()
    }
}

/// One client connection on the pipe.
#[derive(Debug)]
pub struct PipeConnection {
    pipe: NamedPipeServer,
    info: PipeConnectInfo,
}

impl Connected for PipeConnection {
    type ConnectInfo = PipeConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl super::limits::PeerOf for PipeConnection {
    fn peer_key(&self) -> super::limits::PeerKey {
        match &self.info.caller.account {
            Some(account) => super::limits::PeerKey::sid(&account.user_sid),
            None => super::limits::PeerKey::Unknown,
        }
    }
}

impl AsyncRead for PipeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for PipeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().pipe).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().pipe).poll_shutdown(cx)
    }
}

/// The accepted connections of a pipe, as tonic's `serve_with_incoming` wants them.
pub type PipeIncoming = ReceiverStream<io::Result<PipeConnection>>;

/// Creates the first instance of `name` (failing if another process owns the
/// name) plus the other waiting instances, and accepts connections until
/// the stream is dropped.
pub fn listen(name: &str, security: Arc<PipeSecurity>) -> io::Result<PipeIncoming> {
    let first = create(name, &security, true).map_err(|e| {
        if e.raw_os_error() == Some(ERROR_ACCESS_DENIED) {
            io::Error::new(
                e.kind(),
                format!(
                    "another process already serves {name} (a running gateway, or a \
                     process squatting the name); stop it or choose --pipe"
                ),
            )
        } else {
            e
        }
    })?;
    let mut waiting = vec![first];
    for _ in 1..WAITING_INSTANCES {
        waiting.push(create(name, &security, false)?);
    }
    let (tx, rx) = mpsc::channel(WAITING_INSTANCES * 4);
    for instance in waiting {
        tokio::spawn(accept_loop(
            name.to_owned(),
            Arc::clone(&security),
            instance,
            tx.clone(),
        ));
    }
    Ok(ReceiverStream::new(rx))
}

fn create(name: &str, security: &PipeSecurity, first: bool) -> io::Result<NamedPipeServer> {
    let mut attributes = security.attributes();
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(true);
    // SAFETY: `attributes` points at a descriptor `security` keeps alive for
    // the duration of the call (Windows copies it into the pipe object).
    unsafe {
        options.create_with_security_attributes_raw(
            name,
            &mut attributes as *mut _ as *mut std::ffi::c_void,
        )
    }
}

/// One waiting instance's life: wait for a client, put a fresh instance in
/// its place, hand the connection on; until the server stops listening.
async fn accept_loop(
    name: String,
    security: Arc<PipeSecurity>,
    mut waiting: NamedPipeServer,
    tx: mpsc::Sender<io::Result<PipeConnection>>,
) {
    loop {
        let connected = tokio::select! {
            connected = waiting.connect() => connected,
            () = tx.closed() => return,
        };
        let next = loop {
            match create(&name, &security, false) {
                Ok(next) => break next,
                Err(e) => {
                    tracing::error!(pipe = %name, error = %e, "cannot create the next pipe instance; retrying in 1 s");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = tx.closed() => return,
                    }
                }
            }
        };
        let instance = std::mem::replace(&mut waiting, next);
        if let Err(e) = connected {
            // The client went away between connecting and our noticing.
            tracing::debug!(pipe = %name, error = %e, "pipe client left before it was accepted");
            continue;
        }
        tokio::spawn(identify_and_hand_over(instance, tx.clone()));
    }
}

async fn identify_and_hand_over(
    pipe: NamedPipeServer,
    tx: mpsc::Sender<io::Result<PipeConnection>>,
) {
    // Windows allows impersonating the client only once data has been read
    // from it; tokio reads ahead into its buffer when the pipe is readable.
    match tokio::time::timeout(FIRST_BYTES_TIMEOUT, pipe.readable()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "pipe client failed before sending anything");
            return;
        }
        Err(_) => {
            tracing::warn!(timeout = ?FIRST_BYTES_TIMEOUT, "pipe client sent nothing; dropped");
            return;
        }
    }
    let caller = caller::identify(&pipe);
    if caller.is_network_logon() {
        tracing::warn!(target: "audit", %caller, "refused a network logon on the pipe");
        return;
    }
    tracing::info!(target: "audit", %caller, "pipe client connected");
    let connection = PipeConnection {
        pipe,
        info: PipeConnectInfo { caller },
    };
    let _ = tx.send(Ok(connection)).await;
}
