//! ListDataLake: not implemented yet (a later change fills this in).

use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::{gateway::GatewayState, proto::*};

pub(super) async fn list_data_lake(
    _state: &GatewayState,
    _request: Request<ListDataLakeRequest>,
) -> Result<Response<super::ResponseStream<ListDataLakeResponse>>, Status> {
    Err(unimplemented("ListDataLake"))
}
