//! The token sources, behind one enum: IMDS (VMs), the App Service identity
//! endpoint, and the legacy MSI VM extension. Each makes one HTTP request per
//! call; retries, limits and caching live in the cache above them.

use std::{str::FromStr, time::SystemTime};

use serde::Deserialize;

use super::{
    app_service::AppServiceSource, imds::ImdsSource, legacy_msi::LegacyMsiSource,
    retry::FetchError, AccessToken, IdentitySelector,
};
use crate::IdentityConfig;

/// How a source names the identity selectors in its query string; `None`
/// means the source cannot select that way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SelectorParams {
    pub client_id: &'static str,
    pub object_id: &'static str,
    pub resource_id: Option<&'static str>,
}

/// The token request URL: `endpoint` with `fixed` query pairs, `resource`
/// verbatim, and the selector under the source's own parameter name.
pub(crate) fn token_request_url(
    endpoint: &url::Url,
    fixed: &[(&str, &str)],
    resource: &str,
    selector: &IdentitySelector,
    names: SelectorParams,
) -> Result<url::Url, FetchError> {
    let mut url = endpoint.clone();
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in fixed {
            query.append_pair(key, value);
        }
        query.append_pair("resource", resource);
        match selector {
            IdentitySelector::SystemAssigned => {}
            IdentitySelector::ClientId(id) => {
                query.append_pair(names.client_id, id);
            }
            IdentitySelector::ObjectId(id) => {
                query.append_pair(names.object_id, id);
            }
            IdentitySelector::ResourceId(id) => match names.resource_id {
                Some(name) => {
                    query.append_pair(name, id);
                }
                None => {
                    return Err(FetchError::Rejected(identity_gateway_core::error::GatewayError::invalid(
                        "identity.resource_id",
                        "this identity source cannot select an identity by resource id; use client_id or object_id",
                    )))
                }
            },
        }
    }
    Ok(url)
}

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

/// Why the configured token source cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// `source = "app-service"` without both its settings.
    #[error("source app-service needs IDENTITY_ENDPOINT and IDENTITY_HEADER")]
    AppServiceIncomplete,
    /// The IMDS endpoint cannot take the token path.
    #[error("bad IMDS endpoint {endpoint}")]
    ImdsEndpoint {
        endpoint: url::Url,
        #[source]
        source: url::ParseError,
    },
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
    pub fn from_config(config: &IdentityConfig) -> Result<Self, SourceError> {
        let app_service = || match (&config.app_service_endpoint, &config.app_service_header) {
            (Some(endpoint), Some(header)) => Ok(AppServiceSource::new(endpoint.clone(), header)),
            _ => Err(SourceError::AppServiceIncomplete),
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

    /// The `service` label of its requests in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Imds(_) => "imds",
            Self::AppService(_) => "app_service",
            Self::LegacyMsi(_) => "legacy_msi",
        }
    }

    /// Host and port to probe while it is unreachable.
    pub(crate) fn probe_address(&self) -> Option<(String, u16)> {
        let url = match self {
            Self::Imds(s) => s.token_url(),
            Self::AppService(s) => s.endpoint(),
            Self::LegacyMsi(s) => s.endpoint(),
        };
        crate::reachability::probe_address(url)
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
