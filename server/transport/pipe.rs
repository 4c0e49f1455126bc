//! Windows named pipe listener: one pipe instance is always waiting, so a
//! client never finds the name missing between connections.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::windows::named_pipe::{NamedPipeServer, ServerOptions},
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// One client connection on the pipe.
#[derive(Debug)]
pub struct PipeConnection(NamedPipeServer);

impl Connected for PipeConnection {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for PipeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PipeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The accepted connections of a pipe, as tonic's `serve_with_incoming` wants them.
pub type PipeIncoming = ReceiverStream<io::Result<PipeConnection>>;

/// Creates the first instance of `name` (failing if another process owns the
/// name) and accepts connections on it until the stream is dropped.
pub fn listen(name: &str) -> io::Result<PipeIncoming> {
    let mut waiting = ServerOptions::new()
        .first_pipe_instance(true)
        .create(name)?;
    let (tx, rx) = mpsc::channel(16);
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            if let Err(e) = waiting.connect().await {
                if tx.send(Err(e)).await.is_err() {
                    return;
                }
                continue;
            }
            let next = match ServerOptions::new().create(&name) {
                Ok(next) => next,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let connected = std::mem::replace(&mut waiting, next);
            if tx.send(Ok(PipeConnection(connected))).await.is_err() {
                return;
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
