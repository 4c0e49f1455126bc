//! Where the gateway listens: a Unix domain socket (the default), optional
//! loopback TCP, and a Windows named pipe. Binding happens before serving, so
//! the socket accepts as soon as startup returns. [`serve`] serves the
//! connections of a bound listener (HTTP/2, per-transport `:authority` rule,
//! protocol errors logged).

pub mod limits;
pub mod peer;
#[cfg(windows)]
pub mod pipe;
#[cfg(unix)]
pub mod uds;

pub mod serve;

use std::{io, net::SocketAddr, path::PathBuf};

use tokio::net::TcpListener;

use crate::config::Config;

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// A file-system step on the socket or its directory failed.
    #[error("{what} {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("another identity-gateway is already serving on {} (stop it, or pick another --socket)", .0.display())]
    AlreadyServing(PathBuf),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("socket group '{0}' does not exist")]
    NoSuchGroup(String),
    /// The socket directory is not safe to put the socket in.
    #[error("socket directory {}: {reason}", .path.display())]
    UnsafeDirectory { path: PathBuf, reason: String },
    #[error("--tcp {0}: only loopback addresses are allowed")]
    TcpNotLoopback(SocketAddr),
    #[error("cannot listen on {addr}")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot serve on pipe {name}")]
    Pipe {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The pipe's security descriptor could not be built (e.g. an unknown
    /// account in `socket_group` or `pipe_access`).
    #[error("pipe {name}: {message}")]
    PipeSecurity { name: String, message: String },
}

impl BindError {
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) fn io(what: &'static str, path: &std::path::Path, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_owned(),
            source,
        }
    }
}

/// The bound listeners, handed to [`crate::App::serve`].
#[derive(Debug, Default)]
pub struct Listeners {
    #[cfg(unix)]
    pub unix: Option<uds::BoundSocket>,
    #[cfg(windows)]
    pub pipe: Option<pipe::PipeIncoming>,
    pub tcp: Option<TcpListener>,
}

/// The Windows pipe the configuration names (or the default).
pub fn pipe_name(config: &Config) -> String {
    config
        .pipe
        .clone()
        .unwrap_or_else(|| crate::windows::DEFAULT_PIPE.to_string())
}

/// Where gRPC is served, for the startup log: the socket, or the pipe on Windows.
pub fn describe(config: &Config) -> String {
    if cfg!(windows) {
        format!("pipe {}", pipe_name(config))
    } else {
        format!("unix socket {}", config.socket.display())
    }
}

/// Binds what the configuration asks for.
pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
    let mut listeners = Listeners::default();
    #[cfg(unix)]
    {
        let gid = config
            .socket_group
            .as_deref()
            .map(uds::resolve_group)
            .transpose()?;
        listeners.unix = Some(uds::bind_with_gid(&config.socket, gid)?);
    }
    #[cfg(windows)]
    {
        let name = pipe_name(config);
        let clients = crate::windows::pipe_security::client_entries(
            config.socket_group.as_deref(),
            &config.pipe_access,
        );
        let security =
            crate::windows::pipe_security::PipeSecurity::new(&clients).map_err(|message| {
                BindError::PipeSecurity {
                    name: name.clone(),
                    message,
                }
            })?;
        tracing::info!(pipe = %name, sddl = security.sddl(), "pipe security");
        listeners.pipe = Some(pipe::listen(&name, std::sync::Arc::new(security)).map_err(
            |source| BindError::Pipe {
                name: name.clone(),
                source,
            },
        )?);
    }
    if let Some(addr) = config.tcp {
        if !addr.ip().is_loopback() {
            return Err(BindError::TcpNotLoopback(addr));
        }
        listeners.tcp = Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError::Tcp { addr, source })?,
        );
    }
    Ok(listeners)
}
