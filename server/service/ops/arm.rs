//! GetResourceGroup: the ARM read the tutorials do.

use identity_gateway_azure::arm::{self, ArmCall, ResourceGroup};
use identity_gateway_core::{Cloud, GatewayError};

use crate::{
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

/// A resource group read.
#[derive(Debug, Clone, Default)]
pub struct ResourceGroupRequest {
    pub subscription_id: String,
    pub name: String,
    pub identity: IdentityRef,
    pub cloud: Cloud,
}

impl Gateway {
    /// GetResourceGroup.
    pub async fn get_resource_group(
        &self,
        ctx: &CallContext,
        request: ResourceGroupRequest,
    ) -> Result<ResourceGroup, GatewayError> {
        let target = format!(
            "/subscriptions/{}/resourcegroups/{}",
            request.subscription_id, request.name
        );
        let outcome = async {
            let _admitted = self.admission.admit(ctx)?;
            let selector = validate::identity(request.identity.clone())?;
            let subscription = arm::subscription_id("subscription_id", &request.subscription_id)?;
            arm::resource_group_name("name", &request.name)?;
            self.authorize(
                &ctx.policy_caller(),
                &selector,
                Target::ResourceGroup { subscription },
            )?;
            let call = ArmCall {
                up: &self.upstream,
                budget: ctx.budget,
                selector: &selector,
                cloud: request.cloud,
            };
            arm::get_resource_group(call, &request.subscription_id, &request.name).await
        }
        .await;
        self.audit.record(
            &self.metrics,
            ctx,
            "GetResourceGroup",
            &target,
            &request.identity,
            &outcome,
        );
        outcome
    }
}
