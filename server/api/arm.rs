//! GetResourceGroup: the ARM read the VM tutorials start with.

use tonic::{Request, Response, Status};

use super::{audit, request};
use crate::{
    azure::arm::{self, ArmCall},
    gateway::GatewayState,
    policy::Target,
    proto::{GetResourceGroupRequest, GetResourceGroupResponse},
};

pub(super) async fn get_resource_group(
    state: &GatewayState,
    request: Request<GetResourceGroupRequest>,
) -> Result<Response<GetResourceGroupResponse>, Status> {
    let caller = request::caller(&request);
    let peer = request::peer(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    let target = format!(
        "/subscriptions/{}/resourcegroups/{}",
        message.subscription_id, message.name
    );
    let outcome = async {
        let selector = request::identity(message.identity)?;
        let cloud = request::cloud(message.cloud)?;
        let subscription = arm::subscription_id("subscription_id", &message.subscription_id)?;
        arm::resource_group_name("name", &message.name)?;
        state
            .policy
            .check(peer, &selector, Target::Subscription(subscription))?;
        let call = ArmCall {
            state,
            budget,
            selector: &selector,
            cloud,
        };
        let group = arm::get_resource_group(call, &message.subscription_id, &message.name).await?;
        Ok(Response::new(GetResourceGroupResponse {
            id: group.id,
            name: group.name,
            r#type: group.resource_type,
            location: group.location,
            provisioning_state: group.provisioning_state,
            managed_by: group.managed_by.unwrap_or_default(),
            tags: group.tags.into_iter().collect(),
        }))
    }
    .await;
    audit::record(&caller, "GetResourceGroup", &target, &outcome);
    outcome
}
