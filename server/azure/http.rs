//! The one HTTP client every upstream call shares (rustls, connect and request
//! timeouts, extra CA roots from config), and size-capped body reading so a
//! hostile or broken upstream cannot make the gateway buffer without bound.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::{config::UpstreamConfig, error::GatewayError};

/// Builds the shared client. IMDS must never go through a proxy, and no
/// upstream here needs one, so proxies from the environment are ignored.
pub fn build_client(config: &UpstreamConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
        .timeout(Duration::from_secs(config.request_timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("identity-gateway/", env!("CARGO_PKG_VERSION")));
    for path in &config.ca_files {
        let pem = std::fs::read(path)
            .map_err(|e| format!("upstream.ca_files: cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("upstream.ca_files: {} is not PEM: {e}", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Reads a response body, refusing more than `max` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
    upstream: &str,
) -> Result<Bytes, GatewayError> {
    if let Some(len) = response.content_length() {
        if len > max as u64 {
            return Err(GatewayError::Upstream(format!(
                "{upstream} answered {len} bytes, more than the {max}-byte limit"
            )));
        }
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        GatewayError::Unavailable(format!("{upstream}: reading the answer failed: {e}"))
    })? {
        if body.len() + chunk.len() > max {
            return Err(GatewayError::Upstream(format!(
                "{upstream} answered more than the {max}-byte limit"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Maps a transport failure (no HTTP answer) to an error naming the upstream.
pub fn transport_error(upstream: &str, err: &reqwest::Error) -> GatewayError {
    if err.is_timeout() {
        GatewayError::Unavailable(format!("{upstream} did not answer in time"))
    } else if err.is_connect() {
        GatewayError::Unavailable(format!("{upstream} is unreachable: {}", root_cause(err)))
    } else {
        GatewayError::Unavailable(format!("{upstream} request failed: {}", root_cause(err)))
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Parses a `Retry-After` header given in seconds (the form Azure uses).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}
