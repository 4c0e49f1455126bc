//! The Azure Instance Metadata Service token endpoint
//! (`GET /metadata/identity/oauth2/token`, `Metadata: true`, api-version
//! 2018-02-01, `resource` passed verbatim, at most one identity selector).

use std::time::SystemTime;

use url::Url;

use super::{
    response,
    retry::FetchError,
    source::{token_request_url, SelectorParams},
    AccessToken, IdentitySelector,
};

/// api-version sent to IMDS (the documented minimum, as the Python SDK uses).
pub const API_VERSION: &str = "2018-02-01";

/// The IMDS token source.
#[derive(Debug, Clone)]
pub struct ImdsSource {
    token_url: Url,
}

impl ImdsSource {
    /// `base` is e.g. `http://169.254.169.254` (any path on it is replaced).
    pub fn new(base: &Url) -> Result<Self, super::source::SourceError> {
        let token_url = base
            .join("/metadata/identity/oauth2/token")
            .map_err(|source| super::source::SourceError::ImdsEndpoint {
                endpoint: base.clone(),
                source,
            })?;
        Ok(Self { token_url })
    }

    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        selector: &IdentitySelector,
        resource: &str,
        now: SystemTime,
    ) -> Result<AccessToken, FetchError> {
        let url = token_request_url(
            &self.token_url,
            &[("api-version", API_VERSION)],
            resource,
            selector,
            SelectorParams {
                client_id: "client_id",
                object_id: "object_id",
                resource_id: Some("msi_res_id"),
            },
        )?;
        response::send(http.get(url).header("Metadata", "true"), resource, now).await
    }
}
