//! `identity-gateway healthcheck`: asks a running gateway's
//! `grpc.health.v1.Health/Check` over its Unix socket and turns the answer
//! into an exit code, for container probes (Kubernetes' native `grpc` probe
//! dials TCP only, and this daemon serves tokens on a socket by design) and
//! for scripts.
//!
//! This module is a client of the gateway; it shares nothing with the
//! serving code but the socket path.

use std::{path::Path, time::Duration};

#[cfg(unix)]
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

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
    /// No answer: the socket is missing, refused, timed out, or the service
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

/// Asks the gateway on `socket` about `service` within `timeout`.
pub async fn check(socket: &Path, service: &str, timeout: Duration) -> Health {
    match tokio::time::timeout(timeout, ask(socket, service)).await {
        Ok(health) => health,
        Err(_) => Health::Unreachable(format!(
            "no answer on {} within {timeout:?}",
            socket.display()
        )),
    }
}

#[cfg(unix)]
async fn ask(socket: &Path, service: &str) -> Health {
    use tonic::transport::{Endpoint, Uri};
    let path = socket.to_path_buf();
    // The URI is a placeholder; the connector decides where bytes go.
    let channel = Endpoint::from_static("http://identity-gateway.local")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await;
    let channel = match channel {
        Ok(channel) => channel,
        Err(e) => {
            return Health::Unreachable(format!(
                "cannot connect to {}: {}",
                socket.display(),
                source_chain(&e)
            ))
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

#[cfg(not(unix))]
async fn ask(socket: &Path, _service: &str) -> Health {
    Health::Unreachable(format!(
        "{}: healthcheck supports Unix sockets only on this platform",
        socket.display()
    ))
}

#[cfg(unix)]
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
