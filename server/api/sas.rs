//! GetServiceSas: not implemented yet (a later change fills this in).

use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::{gateway::GatewayState, proto::*};

pub(super) async fn get_service_sas(
    _state: &GatewayState,
    _request: Request<GetServiceSasRequest>,
) -> Result<Response<GetServiceSasResponse>, Status> {
    Err(unimplemented("GetServiceSas"))
}
