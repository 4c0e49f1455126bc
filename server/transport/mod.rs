//! Where the gateway listens: a Unix domain socket (the default), optional
//! loopback TCP, and a Windows named pipe. Binding happens before serving, so
//! the socket accepts as soon as startup returns.

#[cfg(windows)]
pub mod pipe;
#[cfg(unix)]
pub mod uds;

use tokio::net::TcpListener;

use crate::config::Config;

/// The bound listeners, handed to [`crate::gateway::serve`].
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
pub async fn bind(config: &Config) -> Result<Listeners, String> {
    let mut listeners = Listeners::default();
    #[cfg(unix)]
    {
        listeners.unix = Some(uds::bind(&config.socket, config.socket_group.as_deref())?);
    }
    #[cfg(windows)]
    {
        let name = pipe_name(config);
        let clients = crate::windows::pipe_security::client_entries(
            config.socket_group.as_deref(),
            &config.pipe_access,
        );
        let security = crate::windows::pipe_security::PipeSecurity::new(&clients)
            .map_err(|e| format!("pipe {name}: {e}"))?;
        tracing::info!(pipe = %name, dacl = security.sddl(), "pipe security");
        listeners.pipe = Some(
            pipe::listen(&name, std::sync::Arc::new(security))
                .map_err(|e| format!("cannot serve on pipe {name}: {e}"))?,
        );
    }
    if let Some(addr) = config.tcp {
        if !addr.ip().is_loopback() {
            return Err(format!("--tcp {addr}: only loopback addresses are allowed"));
        }
        listeners.tcp = Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?,
        );
    }
    Ok(listeners)
}
