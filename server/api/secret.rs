//! GetSecret: a Key Vault secret read with the selected identity's token,
//! through the optional secret cache. Every input is validated and the vault
//! host passes the exfiltration guard and the caller policy before any token
//! is fetched. The secret value is never logged.

use std::sync::Arc;

use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};

use super::{audit, request, token::timestamp};
use crate::{
    azure::keyvault::{self, CacheKey, Secret, Vault},
    error::GatewayError,
    gateway::{within_budget, GatewayState},
    policy::Target,
    proto::{get_secret_request, GetSecretRequest, GetSecretResponse},
};

pub(super) async fn get_secret(
    state: &GatewayState,
    request: Request<GetSecretRequest>,
) -> Result<Response<GetSecretResponse>, Status> {
    let caller = request::caller(&request);
    let peer = request::peer(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    let mut target = describe(&message);
    let outcome = async {
        let cloud = request::cloud(message.cloud)?;
        let vault = match &message.vault {
            Some(get_secret_request::Vault::VaultUrl(url)) => {
                Vault::from_url(&state.hosts, url, cloud)?
            }
            Some(get_secret_request::Vault::VaultName(name)) => {
                Vault::from_name(&state.hosts, name, cloud)?
            }
            None => {
                return Err(GatewayError::invalid(
                    "vault",
                    "set vault_url (https://myvault.vault.azure.net) or vault_name",
                ))
            }
        };
        keyvault::validate_secret_name(&message.name)?;
        keyvault::validate_version(&message.version)?;
        let version = message.version.to_ascii_lowercase();
        let selector = request::identity(message.identity.clone())?;
        target = format!("{}/secrets/{}/{}", vault.base_url(), message.name, version);
        state
            .policy
            .check(peer, &selector, Target::Vault(vault.host()))?;

        let key = CacheKey::new(&selector, &vault, &message.name, &version);
        if !message.bypass_cache {
            if let Some(secret) = state.secrets.get(&key, state.clock.now()) {
                return Ok(to_proto(&secret));
            }
        }
        let fetch = keyvault::get_secret(
            state,
            &vault,
            &message.name,
            &version,
            budget,
            |audience, left| {
                let selector = &selector;
                async move { state.tokens_within(left, selector, &audience).await }
            },
        );
        let secret = within_budget(budget, fetch, || "Key Vault did not answer".into()).await?;
        let secret = Arc::new(secret);
        if state.secrets.enabled() {
            state
                .secrets
                .put(key, Arc::clone(&secret), state.clock.now());
        }
        Ok(to_proto(&secret))
    }
    .await
    .map(Response::new)
    .map_err(Status::from);
    audit::record(&caller, "GetSecret", &target, &outcome);
    outcome
}

/// The audit target before validation: what the caller named, without
/// credentials or query string.
fn describe(message: &GetSecretRequest) -> String {
    let vault = match &message.vault {
        Some(get_secret_request::Vault::VaultUrl(url)) => audit::url_target(url),
        Some(get_secret_request::Vault::VaultName(name)) => name.clone(),
        None => String::new(),
    };
    format!("{vault}/secrets/{}", message.name)
}

fn to_proto(secret: &Secret) -> GetSecretResponse {
    GetSecretResponse {
        value: secret.value.expose_secret().to_string(),
        id: secret.id.clone(),
        name: secret.name.clone(),
        version: secret.version.clone(),
        content_type: secret.content_type.clone().unwrap_or_default(),
        enabled: secret.enabled,
        created: secret.created.map(timestamp),
        updated: secret.updated.map(timestamp),
        not_before: secret.not_before.map(timestamp),
        expires: secret.expires.map(timestamp),
        tags: secret.tags.clone().into_iter().collect(),
        managed: secret.managed,
    }
}
