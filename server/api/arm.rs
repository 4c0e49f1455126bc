//! GetResourceGroup: not implemented yet (a later change fills this in).

use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::{gateway::GatewayState, proto::*};

pub(super) async fn get_resource_group(
    _state: &GatewayState,
    _request: Request<GetResourceGroupRequest>,
) -> Result<Response<GetResourceGroupResponse>, Status> {
    Err(unimplemented("GetResourceGroup"))
}
