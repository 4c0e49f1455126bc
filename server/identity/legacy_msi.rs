//! The legacy MSI VM extension (`http://localhost:50342/oauth2/token`,
//! `Metadata: true`, no api-version), deprecated since 2019 but still named by
//! older tutorials. It knows client_id and object_id, not resource ids.

use std::time::SystemTime;

use url::Url;

use super::{response, retry::FetchError, AccessToken, IdentitySelector};
use crate::error::GatewayError;

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
        let mut url = self.endpoint.clone();
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("resource", resource);
            match selector {
                IdentitySelector::SystemAssigned => {}
                IdentitySelector::ClientId(id) => {
                    query.append_pair("client_id", id);
                }
                IdentitySelector::ObjectId(id) => {
                    query.append_pair("object_id", id);
                }
                IdentitySelector::ResourceId(_) => {
                    return Err(FetchError::Rejected(GatewayError::invalid(
                        "identity.resource_id",
                        "the legacy MSI extension cannot select an identity by resource id; use client_id or object_id",
                    )))
                }
            }
        }
        response::send(http.get(url).header("Metadata", "true"), resource, now).await
    }
}
