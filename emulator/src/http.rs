//! Serving an axum router on loopback, over plain HTTP (IMDS is plain HTTP on
//! Azure too) or HTTPS with the emulator's [`TestCa`](crate::tls::TestCa).
//! A [`RunningServer`] stops its server when dropped.

use std::{net::SocketAddr, sync::Arc};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

/// A fake's server task; aborted on drop.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    https: bool,
    task: JoinHandle<()>,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` or `https://localhost:<port>`.
    pub fn base_url(&self) -> String {
        if self.https {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds 127.0.0.1:`port`; when a fixed port is taken (another emulator, a
/// parallel test), falls back to a free one and says so: every caller reads
/// the real address back from the [`RunningServer`].
async fn bind_loopback(port: u16) -> std::io::Result<TcpListener> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Err(e) if port != 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(port, "emulator port in use; using a free port instead");
            TcpListener::bind(("127.0.0.1", 0)).await
        }
        result => result,
    }
}

/// Serves `router` over plain HTTP on 127.0.0.1 (port 0 picks a free one).
pub async fn serve_http(router: Router, port: u16) -> std::io::Result<RunningServer> {
    let listener = bind_loopback(port).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, service).await {
            tracing::warn!(%e, "emulator HTTP server stopped");
        }
    });
    Ok(RunningServer {
        addr,
        https: false,
        task,
    })
}

/// Serves `router` over HTTPS (HTTP/1.1 and h2) on 127.0.0.1.
pub async fn serve_https(
    router: Router,
    port: u16,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<RunningServer> {
    let listener = bind_loopback(port).await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _peer)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = TowerToHyperService::new(router);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(RunningServer {
        addr,
        https: true,
        task,
    })
}
