//! The tonic service: proto in, domain calls, proto out. Each RPC lives in its
//! own module; errors become statuses only through `status`. This layer knows
//! nothing about HTTP.

mod arm;
mod audit;
mod blob;
mod datalake;
pub mod request;
mod sas;
mod secret;
mod sql;
pub mod status;
mod token;

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::{
    error::GatewayError,
    gateway::GatewayState,
    proto::{identity_gateway_server::IdentityGateway, *},
};

/// A server-streamed reply.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC face of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayService {
    state: Arc<GatewayState>,
}

impl GatewayService {
    pub fn new(state: Arc<GatewayState>) -> Self {
        Self { state }
    }
}

/// The status an RPC answers until a later change implements it.
#[allow(dead_code)]
fn unimplemented(rpc: &str) -> Status {
    GatewayError::Unimplemented(format!("{rpc} is not implemented in this build yet")).into()
}

#[tonic::async_trait]
impl IdentityGateway for GatewayService {
    async fn get_token(
        &self,
        request: Request<GetTokenRequest>,
    ) -> Result<Response<GetTokenResponse>, Status> {
        token::get_token(&self.state, request).await
    }

    type WatchTokenStream = ResponseStream<GetTokenResponse>;

    async fn watch_token(
        &self,
        request: Request<WatchTokenRequest>,
    ) -> Result<Response<Self::WatchTokenStream>, Status> {
        token::watch_token(&self.state, request).await
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        secret::get_secret(&self.state, request).await
    }

    type ListDataLakeStream = ResponseStream<ListDataLakeResponse>;

    async fn list_data_lake(
        &self,
        request: Request<ListDataLakeRequest>,
    ) -> Result<Response<Self::ListDataLakeStream>, Status> {
        datalake::list_data_lake(Arc::clone(&self.state), request).await
    }

    async fn get_service_sas(
        &self,
        request: Request<GetServiceSasRequest>,
    ) -> Result<Response<GetServiceSasResponse>, Status> {
        sas::get_service_sas(&self.state, request).await
    }

    async fn get_resource_group(
        &self,
        request: Request<GetResourceGroupRequest>,
    ) -> Result<Response<GetResourceGroupResponse>, Status> {
        arm::get_resource_group(&self.state, request).await
    }

    type ReadBlobStream = ResponseStream<ReadBlobResponse>;

    async fn read_blob(
        &self,
        request: Request<ReadBlobRequest>,
    ) -> Result<Response<Self::ReadBlobStream>, Status> {
        blob::read_blob(&self.state, request).await
    }

    type QuerySqlStream = ResponseStream<QuerySqlResponse>;

    async fn query_sql(
        &self,
        request: Request<QuerySqlRequest>,
    ) -> Result<Response<Self::QuerySqlStream>, Status> {
        sql::query_sql(&self.state, request).await
    }
}
