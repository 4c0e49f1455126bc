//! The legacy MSI VM extension (`http://localhost:50342/oauth2/token`,
//! `Metadata: true`, no api-version), deprecated since 2019 but still named by
//! older tutorials. It knows client_id and object_id, not resource ids.

use std::time::SystemTime;

use url::Url;

use super::{
    response,
    retry::FetchError,
    source::{token_request_url, SelectorParams},
    AccessToken, IdentitySelector,
};

#[derive(Debug, Clone)]
pub struct LegacyMsiSource {
    endpoint: Url,
}

impl LegacyMsiSource {
    pub fn new(endpoint: Url) -> Self {
        Self { endpoint }
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
            &[],
            resource,
            selector,
            SelectorParams {
                client_id: "client_id",
                object_id: "object_id",
                resource_id: None,
            },
        )?;
        response::send(http.get(url).header("Metadata", "true"), resource, now).await
    }
}
