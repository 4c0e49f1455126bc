//! Where the gateway listens: a Unix domain socket (the default), optional
//! loopback TCP, and a Windows named pipe. Binding happens before serving, so
//! the socket accepts as soon as startup returns. [`serve`] serves the
//! connections of a bound listener (HTTP/2, per-transport `:authority` rule,
//! protocol errors logged).

#[cfg(windows)]
pub mod pipe;
#[cfg(unix)]
pub mod uds;

pub mod serve;

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

/// Binds what the configuration asks for.
pub async fn bind(config: &Config) -> Result<Listeners, String> {
    let mut listeners = Listeners::default();
    #[cfg(unix)]
    {
        listeners.unix = Some(uds::bind(&config.socket, config.socket_group.as_deref())?);
    }
    #[cfg(windows)]
    {
        let name = config
            .pipe
            .clone()
            .unwrap_or_else(|| r"\\.\pipe\identity-gateway".to_string());
        listeners.pipe =
            Some(pipe::listen(&name).map_err(|e| format!("cannot serve on pipe {name}: {e}"))?);
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
