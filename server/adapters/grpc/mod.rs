//! The gRPC adapter: proto in, one [`Gateway`] operation, proto out. It
//! reads the caller and deadline from the transport ([`context`]), converts
//! messages ([`convert`]) and maps errors to statuses in exactly one place
//! ([`status`]) and reports the identity source's reachability through
//! per-service gRPC health ([`health`]); row batches ([`sql_rows`]) and
//! tokens ([`token_reply`]) are written in place. No validation, policy or
//! audit here: those live in the operations. This layer knows nothing about
//! upstream HTTP.

mod context;
mod convert;
pub mod health;
pub mod sql_rows;
mod status;
pub mod token_reply;

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt, TryStreamExt};
use identity_gateway_service::Gateway;
use tonic::{Request, Response, Status};

pub use context::call_context;
pub use status::status;

use crate::proto::{identity_gateway_server::IdentityGateway, *};

/// A server-streamed reply.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC face of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayService {
    gateway: Arc<Gateway>,
}

impl GatewayService {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

#[tonic::async_trait]
impl IdentityGateway for GatewayService {
    async fn get_token(
        &self,
        request: Request<GetTokenRequest>,
    ) -> Result<Response<GetTokenResponse>, Status> {
        let ctx = call_context(&request);
        let request = convert::token_request(request.into_inner());
        let token = self
            .gateway
            .get_token(&ctx, request)
            .await
            .map_err(status)?;
        Ok(Response::new(GetTokenResponse::new(token)))
    }

    type WatchTokenStream = ResponseStream<GetTokenResponse>;

    async fn watch_token(
        &self,
        request: Request<WatchTokenRequest>,
    ) -> Result<Response<Self::WatchTokenStream>, Status> {
        let ctx = call_context(&request);
        let request = convert::watch_request(request.into_inner());
        let tokens = self
            .gateway
            .watch_token(&ctx, request)
            .await
            .map_err(status)?;
        let stream = tokens.map_ok(GetTokenResponse::new).map_err(status);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let ctx = call_context(&request);
        let request = convert::secret_request(request.into_inner()).map_err(status)?;
        let secret = self
            .gateway
            .get_secret(&ctx, request)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::secret(&secret)))
    }

    type ListDataLakeStream = ResponseStream<ListDataLakeResponse>;

    async fn list_data_lake(
        &self,
        request: Request<ListDataLakeRequest>,
    ) -> Result<Response<Self::ListDataLakeStream>, Status> {
        let ctx = call_context(&request);
        let request = convert::data_lake_request(request.into_inner()).map_err(status)?;
        let pages = self
            .gateway
            .list_data_lake(&ctx, request)
            .await
            .map_err(status)?;
        let stream = pages.map_ok(convert::data_lake_page).map_err(status);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_service_sas(
        &self,
        request: Request<GetServiceSasRequest>,
    ) -> Result<Response<GetServiceSasResponse>, Status> {
        let ctx = call_context(&request);
        let request = convert::sas_request(request.into_inner()).map_err(status)?;
        let issued = self
            .gateway
            .get_service_sas(&ctx, request)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::sas(&issued)))
    }

    async fn get_resource_group(
        &self,
        request: Request<GetResourceGroupRequest>,
    ) -> Result<Response<GetResourceGroupResponse>, Status> {
        let ctx = call_context(&request);
        let request = convert::resource_group_request(request.into_inner()).map_err(status)?;
        let group = self
            .gateway
            .get_resource_group(&ctx, request)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::resource_group(group)))
    }

    type ReadBlobStream = ResponseStream<ReadBlobResponse>;

    async fn read_blob(
        &self,
        request: Request<ReadBlobRequest>,
    ) -> Result<Response<Self::ReadBlobStream>, Status> {
        let ctx = call_context(&request);
        let request = convert::blob_request(request.into_inner());
        let download = self
            .gateway
            .read_blob(&ctx, request)
            .await
            .map_err(status)?;
        let props = download.properties;
        let first = ReadBlobResponse {
            properties: Some(BlobProperties {
                size: props.size,
                content_type: props.content_type,
                etag: props.etag,
                last_modified: props.last_modified.map(convert::timestamp),
            }),
            data: Default::default(),
        };
        let data = download.body.map(|chunk| {
            chunk
                .map(|data| ReadBlobResponse {
                    properties: None,
                    data: data.into(),
                })
                .map_err(status)
        });
        let stream: ResponseStream<ReadBlobResponse> =
            Box::pin(futures::stream::once(async move { Ok(first) }).chain(data));
        Ok(Response::new(stream))
    }

    type QuerySqlStream = ResponseStream<QuerySqlResponse>;

    async fn query_sql(
        &self,
        request: Request<QuerySqlRequest>,
    ) -> Result<Response<Self::QuerySqlStream>, Status> {
        let ctx = call_context(&request);
        let request = convert::sql_request(request.into_inner()).map_err(status)?;
        let events = self
            .gateway
            .query_sql(&ctx, request)
            .await
            .map_err(status)?;
        let stream = events.map(|event| event.map(convert::sql_event).map_err(status));
        Ok(Response::new(Box::pin(stream)))
    }
}
