//! `identity-gateway healthcheck`: asks a running gateway's
//! `grpc.health.v1.Health/Check` over its Unix socket (its named pipe on
//! Windows) and turns the answer into an exit code, for container probes
//! (Kubernetes' native `grpc` probe dials TCP only, and this daemon serves
//! tokens on a socket by design), Windows monitoring, and scripts.
//!
//! This module is a client of the gateway; it shares nothing with the
//! serving code but the socket path or pipe name. It sends no secret, so it
//! does not check who owns the pipe (client-rs does, before sending calls).

use std::{path::PathBuf, time::Duration};

use crate::config::Config;

/// The gRPC service name whose health says "the gateway's own API is up".
pub const GATEWAY_SERVICE: &str = "identity_gateway.v1.IdentityGateway";

/// `identity-gateway healthcheck [--service NAME] [--timeout SECS]`.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// The service to ask about: "" for the server as a whole (liveness),
    /// or identity_gateway.v1.IdentityGateway for the gateway's API
    /// (readiness).
    #[arg(long, default_value = "", value_name = "NAME")]
    pub service: String,

    /// Give up after this many seconds (connect and call together).
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub timeout: u64,
}

/// What the gateway said, or why it could not be asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Answered SERVING.
    Serving,
    /// Answered, but not SERVING (the status's name, e.g. "NOT_SERVING").
    NotServing(String),
    /// No answer: the socket or pipe is missing, refused, timed out, or the service
    /// is unknown to the server.
    Unreachable(String),
}

impl Health {
    /// The process exit code: 0 serving, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Health::Serving => 0,
            Health::NotServing(_) | Health::Unreachable(_) => 1,
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Health::Serving => f.write_str("SERVING"),
            Health::NotServing(status) => f.write_str(status),
            Health::Unreachable(why) => write!(f, "unreachable: {why}"),
        }
    }
}

/// Where the gateway to ask listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix domain socket (Linux).
    Socket(PathBuf),
    /// A named pipe, `\\.\pipe\NAME` (Windows).
    Pipe(String),
}

impl Target {
    /// The gateway `config` describes: on Windows its pipe (`--pipe`, or
    /// `--socket` when that names a pipe, else the default pipe), elsewhere
    /// its socket.
    pub fn of(config: &Config) -> Self {
        if cfg!(windows) {
            let socket = config.socket.to_string_lossy();
            if is_pipe_name(&socket) && config.pipe.is_none() {
                return Self::Pipe(socket.into_owned());
            }
            return Self::Pipe(crate::transport::pipe_name(config));
        }
        Self::Socket(config.socket.clone())
    }
}

/// `\\.\pipe\...`, in either case (Windows compares pipe names
/// case-insensitively).
fn is_pipe_name(text: &str) -> bool {
    text.get(..9)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(r"\\.\pipe\"))
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Socket(path) => write!(f, "{}", path.display()),
            Self::Pipe(name) => f.write_str(name),
        }
    }
}

/// Asks the gateway at `target` about `service` within `timeout`.
pub async fn check(target: &Target, service: &str, timeout: Duration) -> Health {
    match tokio::time::timeout(timeout, ask(target, service)).await {
        Ok(health) => health,
        Err(_) => Health::Unreachable(format!("no answer on {target} within {timeout:?}")),
    }
}

async fn ask(target: &Target, service: &str) -> Health {
    use tonic::transport::Endpoint;
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };
    // The URI is a placeholder; the connector decides where bytes go.
    let endpoint = Endpoint::from_static("http://identity-gateway.local");
    let channel = match target {
        #[cfg(unix)]
        Target::Socket(path) => {
            let path = path.clone();
            connect_via(endpoint, move || tokio::net::UnixStream::connect(path.clone())).await
        }
        #[cfg(windows)]
        Target::Pipe(name) => {
            let name = name.clone();
            connect_via(endpoint, move || {
                let name = name.clone();
                async move { open_pipe(&name).await }
            })
            .await
        }
        other => {
            return Health::Unreachable(format!(
                "{other}: not a transport of this platform (a Unix socket on Linux, a named pipe on Windows)"
            ))
        }
    };
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            return Health::Unreachable(format!("cannot connect to {target}: {}", source_chain(&e)))
        }
    };
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    match HealthClient::new(channel).check(request).await {
        Ok(reply) => match reply.into_inner().status() {
            ServingStatus::Serving => Health::Serving,
            other => Health::NotServing(other.as_str_name().to_string()),
        },
        Err(status) => Health::Unreachable(format!(
            "{}: {}",
            status.code().description(),
            status.message()
        )),
    }
}

/// A channel over whatever `connect` opens (the endpoint's URI is a
/// placeholder; the connector decides where bytes go).
async fn connect_via<S, F, Fut>(
    endpoint: tonic::transport::Endpoint,
    connect: F,
) -> Result<tonic::transport::Channel, tonic::transport::Error>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<S>> + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let connect = connect.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connect().await?)) }
        }))
        .await
}

/// Opens the client end of pipe `name`, waiting while every instance is
/// busy (the caller's timeout bounds the wait).
#[cfg(windows)]
async fn open_pipe(
    name: &str,
) -> std::io::Result<tokio::net::windows::named_pipe::NamedPipeClient> {
    /// All instances are connected to other clients; one frees up soon.
    const ERROR_PIPE_BUSY: i32 = 231;
    loop {
        match tokio::net::windows::named_pipe::ClientOptions::new().open(name) {
            Err(e) if e.raw_os_error() == Some(ERROR_PIPE_BUSY) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_names_are_told_from_socket_paths() {
        assert!(is_pipe_name(r"\\.\pipe\identity-gateway"));
        assert!(is_pipe_name(r"\\.\PIPE\x"));
        assert!(!is_pipe_name("/run/identity-gateway/socket"));
        assert!(!is_pipe_name(r"\\.\pip"));
        assert!(!is_pipe_name("\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"));
    }

    #[tokio::test]
    async fn nobody_listening_is_unreachable() {
        let target = if cfg!(windows) {
            Target::Pipe(r"\\.\pipe\identity-gateway-nobody-here".into())
        } else {
            Target::Socket("/nonexistent/identity-gateway.sock".into())
        };
        let health = check(&target, "", Duration::from_secs(5)).await;
        assert!(matches!(health, Health::Unreachable(_)), "{health}");
        assert_eq!(health.exit_code(), 1);
    }
}
