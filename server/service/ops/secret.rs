//! GetSecret: a Key Vault secret read with the selected identity's token,
//! through the optional secret cache. Every input is validated and the vault
//! host passes the exfiltration guard and the caller policy before any token
//! is fetched. The secret value is never logged.

use std::sync::Arc;

use identity_gateway_azure::keyvault::{self, CacheKey, Secret, Vault};
use identity_gateway_core::{within_budget, Cloud, GatewayError};

use crate::{
    audit,
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

/// Which vault: by URL or by name (in the request's cloud).
#[derive(Debug, Clone)]
pub enum VaultRef {
    Url(String),
    Name(String),
}

/// A secret request.
#[derive(Debug, Clone, Default)]
pub struct SecretRequest {
    pub vault: Option<VaultRef>,
    pub name: String,
    /// Empty: the latest version.
    pub version: String,
    pub identity: IdentityRef,
    pub cloud: Cloud,
    /// Skip the gateway's secret cache.
    pub bypass_cache: bool,
}

impl Gateway {
    /// GetSecret.
    pub async fn get_secret(
        &self,
        ctx: &CallContext,
        request: SecretRequest,
    ) -> Result<Arc<Secret>, GatewayError> {
        let mut target = describe(&request);
        let outcome = async {
            let _admitted = self.admission.admit(ctx)?;
            let vault = match &request.vault {
                Some(VaultRef::Url(url)) => {
                    Vault::from_url(&self.upstream.hosts, url, request.cloud)?
                }
                Some(VaultRef::Name(name)) => {
                    Vault::from_name(&self.upstream.hosts, name, request.cloud)?
                }
                None => {
                    return Err(GatewayError::invalid(
                        "vault",
                        "set vault_url (https://myvault.vault.azure.net) or vault_name",
                    ))
                }
            };
            keyvault::validate_secret_name(&request.name)?;
            keyvault::validate_version(&request.version)?;
            let version = request.version.to_ascii_lowercase();
            let selector = validate::identity(request.identity.clone())?;
            target = format!("{}/secrets/{}/{}", vault.base_url(), request.name, version);
            self.authorize(
                &ctx.policy_caller(),
                &selector,
                Target::Secret {
                    vault: vault.host(),
                    name: &request.name,
                },
            )?;

            let clock = &self.upstream.clock;
            let key = CacheKey::new(&selector, &vault, &request.name, &version);
            if !request.bypass_cache {
                if let Some(secret) = self.secrets.get(&key, clock.now()) {
                    return Ok(secret);
                }
            }
            let fetch = keyvault::get_secret(
                &self.upstream,
                &selector,
                &vault,
                &request.name,
                &version,
                ctx.budget,
            );
            let secret =
                within_budget(ctx.budget, fetch, || "Key Vault did not answer".into()).await?;
            let secret = Arc::new(secret);
            if self.secrets.enabled() {
                self.secrets.put(key, Arc::clone(&secret), clock.now());
            }
            Ok(secret)
        }
        .await;
        self.audit.record(
            &self.metrics,
            ctx,
            "GetSecret",
            &target,
            &request.identity,
            &outcome,
        );
        outcome
    }
}

/// The audit target before validation: what the caller named, without
/// credentials or query string.
fn describe(request: &SecretRequest) -> String {
    let vault = match &request.vault {
        Some(VaultRef::Url(url)) => audit::url_target(url),
        Some(VaultRef::Name(name)) => name.clone(),
        None => String::new(),
    };
    format!("{vault}/secrets/{}", request.name)
}
