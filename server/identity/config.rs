//! `[identity]`: where tokens come from and how hard the gateway may push
//! the source.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::SourceKind;

/// The link-local IMDS address every Azure VM serves.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// The legacy MSI VM extension's token URL.
pub const DEFAULT_LEGACY_MSI_ENDPOINT: &str = "http://localhost:50342/oauth2/token";

/// Where tokens come from and how hard the gateway may push the source.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    pub source: SourceKind,
    pub imds_endpoint: Url,
    pub legacy_msi_endpoint: Url,
    pub app_service_endpoint: Option<Url>,
    pub app_service_header: Option<String>,
    /// Concurrent requests to the identity endpoint (IMDS allows 5).
    pub max_concurrent: usize,
    /// Requests per second to the identity endpoint (IMDS allows 20).
    pub max_per_second: u32,
    /// Refresh this long before expiry (tokens living under 2 h); longer-lived
    /// tokens refresh at half-life. Jitter is added either way.
    pub refresh_before_secs: u64,
    /// Timeout of one request to the identity endpoint.
    pub request_timeout_secs: u64,
    /// Connect timeout of requests to the identity endpoint. IMDS is
    /// link-local and answers connects at once; the Azure SDKs give up on
    /// it after about a second, so off Azure a token request fails fast.
    pub connect_timeout_secs: u64,
    /// How long to keep retrying 410 ("IMDS upgrading"), within the caller's deadline.
    pub gone_retry_secs: u64,
    /// Retries of 404/429/5xx/timeouts before giving up.
    pub max_retries: u32,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("source", &self.source)
            .field("imds_endpoint", &self.imds_endpoint.as_str())
            .field("legacy_msi_endpoint", &self.legacy_msi_endpoint.as_str())
            .field("app_service_endpoint", &self.app_service_endpoint)
            .field(
                "app_service_header",
                &self.app_service_header.as_ref().map(|_| "** redacted **"),
            )
            .field("max_concurrent", &self.max_concurrent)
            .field("max_per_second", &self.max_per_second)
            .field("refresh_before_secs", &self.refresh_before_secs)
            .finish_non_exhaustive()
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            source: SourceKind::Auto,
            imds_endpoint: Url::parse(DEFAULT_IMDS_ENDPOINT).expect("constant URL"),
            legacy_msi_endpoint: Url::parse(DEFAULT_LEGACY_MSI_ENDPOINT).expect("constant URL"),
            app_service_endpoint: None,
            app_service_header: None,
            max_concurrent: 5,
            max_per_second: 20,
            refresh_before_secs: 300,
            request_timeout_secs: 10,
            connect_timeout_secs: 1,
            gone_retry_secs: 70,
            max_retries: 5,
        }
    }
}

impl IdentityConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Connect timeout of requests to the identity endpoint (at least 1 s).
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }
}

impl crate::CacheSettings {
    /// The cache's tunables from `[identity]`.
    pub fn from_config(identity: &IdentityConfig) -> Self {
        Self {
            refresh_before: Duration::from_secs(identity.refresh_before_secs),
            max_concurrent: identity.max_concurrent,
            max_per_second: identity.max_per_second,
            request_timeout: identity.request_timeout(),
            connect_timeout: identity.connect_timeout(),
            retry: crate::retry::RetryPolicy {
                max_retries: identity.max_retries,
                gone_window: Duration::from_secs(identity.gone_retry_secs),
                ..crate::retry::RetryPolicy::default()
            },
        }
    }
}
