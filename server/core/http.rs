//! The one HTTP client every upstream call shares (rustls, connect and request
//! timeouts, extra CA roots from config), and size-capped body reading so a
//! hostile or broken upstream cannot make the gateway buffer without bound.

use std::{path::PathBuf, time::Duration};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use url::Url;

use crate::error::GatewayError;

/// `[upstream]`: the one HTTP client every upstream call shares, and the
/// hosts tokens may go to besides each service's own cloud suffix.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Extra hosts (`host` or `host:port`; `*.suffix` allowed) tokens may be
    /// sent to besides each service's own cloud suffix: private endpoints,
    /// emulators. Tokens for a service still go only to hosts listed here or
    /// of that service's suffix.
    pub allowed_hosts: Vec<String>,
    /// Allow plain `http://` to allowed hosts (emulators only; never Azure).
    pub allow_http: bool,
    /// PEM CA certificates trusted in addition to the system roots (HTTPS
    /// upstreams and SQL TLS).
    pub ca_files: Vec<PathBuf>,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    /// Largest upstream JSON/XML body read into memory.
    pub max_body_bytes: usize,
    /// ARM endpoint override (emulator, private link).
    pub arm_endpoint: Option<Url>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allow_http: false,
            ca_files: Vec::new(),
            connect_timeout_secs: 5,
            request_timeout_secs: 60,
            max_body_bytes: 4 * 1024 * 1024,
            arm_endpoint: None,
        }
    }
}

/// Why the shared HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpClientError {
    /// An `upstream.ca_files` entry could not be read.
    #[error("upstream.ca_files: cannot read {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An `upstream.ca_files` entry is not a PEM bundle.
    #[error("upstream.ca_files: {path} is not PEM")]
    ParseCa {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    /// reqwest refused the settings (e.g. no TLS backend).
    #[error("cannot build the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// Builds the shared client. IMDS must never go through a proxy, and no
/// upstream here needs one, so proxies from the environment are ignored.
pub fn build_client(config: &UpstreamConfig) -> Result<reqwest::Client, HttpClientError> {
    build_client_with(config, Duration::from_secs(config.connect_timeout_secs))
}

/// The client with another connect timeout: the identity source's (IMDS is
/// link-local, so a connect that takes more than about a second means there
/// is none, and callers should hear so at once). Same roots, same limits.
pub fn build_client_with(
    config: &UpstreamConfig,
    connect_timeout: Duration,
) -> Result<reqwest::Client, HttpClientError> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(connect_timeout)
        .timeout(Duration::from_secs(config.request_timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("identity-gateway/", env!("CARGO_PKG_VERSION")));
    for path in &config.ca_files {
        let pem = std::fs::read(path).map_err(|source| HttpClientError::ReadCa {
            path: path.clone(),
            source,
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
            HttpClientError::ParseCa {
                path: path.clone(),
                source,
            }
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(HttpClientError::Build)
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
