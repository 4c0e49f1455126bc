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
        let name = config
            .pipe
            .clone()
            .unwrap_or_else(|| r"\\.\pipe\identity-gateway".to_string());
        listeners.pipe = Some(pipe::listen(&name).map_err(|source| BindError::Pipe {
            name: name.clone(),
            source,
        })?);
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
