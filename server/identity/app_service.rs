//! The App Service / Functions / Container Apps identity endpoint
//! (`IDENTITY_ENDPOINT` + `X-IDENTITY-HEADER`, api-version 2019-08-01).

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    response,
    retry::FetchError,
    source::{token_request_url, SelectorParams},
    AccessToken, IdentitySelector,
};

pub const API_VERSION: &str = "2019-08-01";

/// The App Service token source. `Debug` hides the header secret.
#[derive(Clone)]
pub struct AppServiceSource {
    endpoint: Url,
    header: SecretString,
}

impl std::fmt::Debug for AppServiceSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppServiceSource")
            .field("endpoint", &self.endpoint.as_str())
            .field("header", &"** redacted **")
            .finish()
    }
}

impl AppServiceSource {
    pub fn new(endpoint: Url, header: &str) -> Self {
        Self {
            endpoint,
            header: SecretString::from(header.to_owned()),
        }
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        selector: &IdentitySelector,
        resource: &str,
        now: SystemTime,
    ) -> Result<AccessToken, FetchError> {
        let url = token_request_url(
            &self.endpoint,
            &[("api-version", API_VERSION)],
            resource,
            selector,
            SelectorParams {
                client_id: "client_id",
                object_id: "principal_id",
                resource_id: Some("mi_res_id"),
            },
        )?;
        let request = http
            .get(url)
            .header("X-IDENTITY-HEADER", self.header.expose_secret());
        response::send(request, resource, now).await
    }
}
