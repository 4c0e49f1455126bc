//! ReadBlob: not implemented yet (a later change fills this in).

use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::{gateway::GatewayState, proto::*};

pub(super) async fn read_blob(
    _state: &GatewayState,
    _request: Request<ReadBlobRequest>,
) -> Result<Response<super::ResponseStream<ReadBlobResponse>>, Status> {
    Err(unimplemented("ReadBlob"))
}
