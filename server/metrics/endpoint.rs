//! The opt-in metrics listener: `GET /metrics` answers the registry as
//! OpenMetrics text (which Prometheus scrapes natively), on loopback TCP or
//! on a Unix socket of its own (0660, the socket group, like the gRPC
//! socket). Off unless `[metrics] listen` or `--metrics-listen` is set. It
//! serves nothing else and takes no input.

use std::{fmt, net::SocketAddr, path::PathBuf};

use axum::{http::header, response::IntoResponse, routing::get, Router};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use super::Metrics;
use crate::config::{Config, MetricsListen};

/// The content type of the answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsEndpointError {
    #[error("metrics listen {0}: only loopback addresses are allowed")]
    NotLoopback(SocketAddr),
    #[error("cannot listen for metrics on {addr}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[cfg(unix)]
    #[error("metrics socket")]
    Unix(#[source] crate::transport::BindError),
    #[error("metrics on a Unix socket are not available on this platform")]
    Unsupported,
}

/// Where a running endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "http://{addr}/metrics"),
            Self::Unix(path) => write!(f, "unix:{} (GET /metrics)", path.display()),
        }
    }
}

/// A running endpoint; [`stop`](Self::stop) it, or drop it to abort.
#[derive(Debug)]
pub struct RunningMetricsEndpoint {
    addr: BoundAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningMetricsEndpoint {
    /// Where it listens (the real port when 0 was asked).
    pub fn addr(&self) -> &BoundAddr {
        &self.addr
    }

    /// Stops accepting and waits a moment for scrapes in flight.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for RunningMetricsEndpoint {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn router(metrics: Metrics) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()).into_response() }
        }),
    )
}

/// Starts the endpoint when configured.
pub async fn start(
    metrics: &Metrics,
    config: &Config,
) -> Result<Option<RunningMetricsEndpoint>, MetricsEndpointError> {
    let Some(listen) = &config.metrics.listen else {
        return Ok(None);
    };
    let app = router(metrics.clone());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stopped = async {
        let _ = stop_rx.await;
    };
    let (addr, task) = match listen {
        MetricsListen::Tcp(addr) => {
            if !addr.ip().is_loopback() {
                return Err(MetricsEndpointError::NotLoopback(*addr));
            }
            let listener =
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| MetricsEndpointError::Tcp {
                        addr: *addr,
                        source,
                    })?;
            let bound = listener
                .local_addr()
                .map_err(|source| MetricsEndpointError::Tcp {
                    addr: *addr,
                    source,
                })?;
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(%e, "metrics endpoint stopped");
                }
            });
            (BoundAddr::Tcp(bound), task)
        }
        #[cfg(unix)]
        MetricsListen::Unix(path) => {
            let bound = crate::transport::uds::bind(path, config.socket_group.as_deref())
                .map_err(MetricsEndpointError::Unix)?;
            let listener = unix::Incoming(bound.into_listener());
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(%e, "metrics endpoint stopped");
                }
            });
            (BoundAddr::Unix(path.clone()), task)
        }
        #[cfg(not(unix))]
        MetricsListen::Unix(_) => return Err(MetricsEndpointError::Unsupported),
    };
    tracing::info!(%addr, "metrics endpoint serving");
    Ok(Some(RunningMetricsEndpoint {
        addr,
        stop: Some(stop_tx),
        task: Some(task),
    }))
}

#[cfg(unix)]
mod unix {
    use crate::transport::uds::UnixListenerWithGuard;

    /// The bound socket (removed when dropped) as an axum listener.
    pub(super) struct Incoming(pub(super) UnixListenerWithGuard);

    impl axum::serve::Listener for Incoming {
        type Io = tokio::net::UnixStream;
        type Addr = tokio::net::unix::SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                match self.0.accept().await {
                    Ok(accepted) => return accepted,
                    Err(e) => {
                        tracing::warn!(%e, "metrics socket: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.0.local_addr()
        }
    }
}
