//! GetServiceSas: a user delegation SAS signed locally (least privilege) or
//! ARM `listServiceSas`. The SAS is the payload; it is never logged.

use identity_gateway_azure::sas::{self, IssuedSas, SasInput, SasMethod};
use identity_gateway_core::{Cloud, GatewayError};

use crate::{
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
            let _admitted = self.admission.admit(ctx)?;
            let selector = validate::identity(request.identity.clone())?;
            let plan = sas::plan(
                &self.upstream,
                request.method,
                input,
                request.cloud,
                self.limits.sas_max_lifetime,
            )?;
            self.authorize(
                &ctx.policy_caller(),
                &selector,
                Target::Sas {
                    account: &plan.account,
                    method: plan.method,
                    permissions: &plan.permissions,
                    lifetime: input.expires_in.unwrap_or(sas::DEFAULT_LIFETIME),
                    subscription: (plan.method == SasMethod::ArmListServiceSas)
                        .then_some(plan.subscription_id.as_str()),
                },
            )?;
            sas::issue(&self.upstream, ctx.budget, &selector, request.cloud, &plan).await
        }
        .await;
        let detail = match &outcome {
            Ok(issued) => format!(
                "sas_permissions={} sas_expiry={}",
                issued.signed_permissions,
                rfc3339(issued.expires_on)
            ),
            Err(_) => format!(
                "asked sas_permissions={} sas_expires_in={}s",
                input.permissions.escape_debug(),
                input.expires_in.unwrap_or(sas::DEFAULT_LIFETIME).as_secs()
            ),
        };
        self.audit.record_with(
            &self.metrics,
            ctx,
            "GetServiceSas",
            &target,
            &request.identity,
            Some(&detail),
            &outcome,
        );
        outcome
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "?".into())
}
