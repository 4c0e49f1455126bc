//! GetSecret: not implemented yet (a later change fills this in).

use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::{gateway::GatewayState, proto::*};

pub(super) async fn get_secret(
    _state: &GatewayState,
    _request: Request<GetSecretRequest>,
) -> Result<Response<GetSecretResponse>, Status> {
    Err(unimplemented("GetSecret"))
}
