//! QuerySql: not implemented yet (a later change fills this in).

use tonic::{Request, Response, Status};

use super::unimplemented;
use crate::{gateway::GatewayState, proto::*};

pub(super) async fn query_sql(
    _state: &GatewayState,
    _request: Request<QuerySqlRequest>,
) -> Result<Response<super::ResponseStream<QuerySqlResponse>>, Status> {
    Err(unimplemented("QuerySql"))
}
