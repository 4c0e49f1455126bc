//! GetServiceSas: a user delegation SAS signed locally (least privilege) or
//! ARM `listServiceSas`. The SAS is the payload; it is never logged.

use identity_gateway_azure::sas::{self, IssuedSas, SasInput, SasMethod};
use identity_gateway_core::{Cloud, GatewayError};

use crate::{
    audit,
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

/// A SAS request.
#[derive(Debug, Clone)]
pub struct SasRequest {
    pub method: SasMethod,
    pub cloud: Cloud,
    pub identity: IdentityRef,
    pub input: SasInput,
}

impl Gateway {
    /// GetServiceSas.
    pub async fn get_service_sas(
        &self,
        ctx: &CallContext,
        request: SasRequest,
    ) -> Result<IssuedSas, GatewayError> {
        let input = &request.input;
        let target = format!(
            "/blob/{}/{}{}{}",
            input.account,
            input.container,
            if input.blob.is_empty() { "" } else { "/" },
            input.blob
        );
        let outcome = async {
            let selector = validate::identity(request.identity.clone())?;
            let plan = sas::plan(
                &self.upstream,
                request.method,
                input,
                request.cloud,
                self.limits.sas_max_lifetime,
            )?;
            let caller = ctx.policy_caller();
            self.policy.check(
                caller.clone(),
                &selector,
                Target::StorageAccount(&plan.account),
            )?;
            if request.method == SasMethod::ArmListServiceSas {
                self.policy.check(
                    caller,
                    &selector,
                    Target::Subscription(&plan.subscription_id),
                )?;
            }
            sas::issue(&self.upstream, ctx.budget, &selector, request.cloud, &plan).await
        }
        .await;
        audit::record(ctx, "GetServiceSas", &target, &outcome);
        outcome
    }
}
