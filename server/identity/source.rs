//! The token sources, behind one enum: IMDS (VMs), the App Service identity
//! endpoint, and the legacy MSI VM extension. Each makes one HTTP request per
//! call; retries, limits and caching live in the cache above them.

use std::{str::FromStr, time::SystemTime};

use serde::Deserialize;

use super::{
    app_service::AppServiceSource, imds::ImdsSource, legacy_msi::LegacyMsiSource,
    retry::FetchError, AccessToken, IdentitySelector,
};
use crate::config::IdentityConfig;

/// Which source to use, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// App Service when its endpoint and header are configured, else IMDS.
    #[default]
    Auto,
    Imds,
    AppService,
    LegacyMsi,
}

impl FromStr for SourceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "imds" => Ok(Self::Imds),
            "app-service" => Ok(Self::AppService),
            "legacy-msi" => Ok(Self::LegacyMsi),
            other => Err(format!(
                "unknown source '{other}' (expected auto, imds, app-service or legacy-msi)"
            )),
        }
    }
}

/// A configured token source.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Imds(ImdsSource),
    AppService(AppServiceSource),
    LegacyMsi(LegacyMsiSource),
}

impl TokenSource {
    /// Picks the source the configuration asks for.
    pub fn from_config(config: &IdentityConfig) -> Result<Self, String> {
        let app_service = || match (&config.app_service_endpoint, &config.app_service_header) {
            (Some(endpoint), Some(header)) => Ok(AppServiceSource::new(endpoint.clone(), header)),
            _ => Err("source app-service needs IDENTITY_ENDPOINT and IDENTITY_HEADER".to_string()),
        };
        match config.source {
            SourceKind::Imds => Ok(Self::Imds(ImdsSource::new(&config.imds_endpoint)?)),
            SourceKind::LegacyMsi => Ok(Self::LegacyMsi(LegacyMsiSource::new(
                config.legacy_msi_endpoint.clone(),
            ))),
            SourceKind::AppService => app_service().map(Self::AppService),
            SourceKind::Auto => match app_service() {
                Ok(source) => Ok(Self::AppService(source)),
                Err(_) => Ok(Self::Imds(ImdsSource::new(&config.imds_endpoint)?)),
            },
        }
    }

    /// Short name for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Imds(_) => "IMDS",
            Self::AppService(_) => "the App Service identity endpoint",
            Self::LegacyMsi(_) => "the legacy MSI extension",
        }
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> String {
        match self {
            Self::Imds(s) => s.token_url().to_string(),
            Self::AppService(s) => s.endpoint().to_string(),
            Self::LegacyMsi(s) => s.endpoint().to_string(),
        }
    }

    /// One request for a token; no retries.
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        selector: &IdentitySelector,
        resource: &str,
        now: SystemTime,
    ) -> Result<AccessToken, FetchError> {
        match self {
            Self::Imds(s) => s.fetch(http, selector, resource, now).await,
            Self::AppService(s) => s.fetch(http, selector, resource, now).await,
            Self::LegacyMsi(s) => s.fetch(http, selector, resource, now).await,
        }
    }
}
