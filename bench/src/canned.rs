//! The second baseline of the token benchmark: a bench-only gRPC server (its
//! own process; tonic's stock server with the gateway's keepalive setting,
//! where the gateway serves connections with `transport::serve`, hyper's
//! HTTP/2 configured as tonic does) whose GetToken
//! answers a reply captured once from the real gateway, cloned from memory.
//! Against it, the empty RPC shows what a token-sized payload costs, and
//! GetToken what the gateway itself adds. Every other RPC is UNIMPLEMENTED.

use std::{path::Path, pin::Pin, time::Duration};

use futures::Stream;
use identity_gateway::proto::{
    identity_gateway_server::{IdentityGateway, IdentityGatewayServer},
    *,
};
use identity_gateway_client::GatewayClient;
use tonic::{transport::Server, Request, Response, Status};

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct Canned {
    reply: GetTokenResponse,
}

fn no<T>() -> Result<T, Status> {
    Err(Status::unimplemented(
        "the canned-reply server only answers GetToken",
    ))
}

#[tonic::async_trait]
impl IdentityGateway for Canned {
    async fn get_token(
        &self,
        _request: Request<GetTokenRequest>,
    ) -> Result<Response<GetTokenResponse>, Status> {
        Ok(Response::new(self.reply.clone()))
    }
    type WatchTokenStream = Replies<GetTokenResponse>;
    async fn watch_token(
        &self,
        _r: Request<WatchTokenRequest>,
    ) -> Result<Response<Self::WatchTokenStream>, Status> {
        no()
    }
    async fn get_secret(
        &self,
        _r: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        no()
    }
    type ListDataLakeStream = Replies<ListDataLakeResponse>;
    async fn list_data_lake(
        &self,
        _r: Request<ListDataLakeRequest>,
    ) -> Result<Response<Self::ListDataLakeStream>, Status> {
        no()
    }
    async fn get_service_sas(
        &self,
        _r: Request<GetServiceSasRequest>,
    ) -> Result<Response<GetServiceSasResponse>, Status> {
        no()
    }
    async fn get_resource_group(
        &self,
        _r: Request<GetResourceGroupRequest>,
    ) -> Result<Response<GetResourceGroupResponse>, Status> {
        no()
    }
    type ReadBlobStream = Replies<ReadBlobResponse>;
    async fn read_blob(
        &self,
        _r: Request<ReadBlobRequest>,
    ) -> Result<Response<Self::ReadBlobStream>, Status> {
        no()
    }
    type QuerySqlStream = Replies<QuerySqlResponse>;
    async fn query_sql(
        &self,
        _r: Request<QuerySqlRequest>,
    ) -> Result<Response<Self::QuerySqlStream>, Status> {
        no()
    }
}

/// `token-bench --serve-canned SOCKET GATEWAY_SOCKET RESOURCE`: captures one
/// GetToken reply from the gateway, then serves it (and Health) on SOCKET
/// until killed.
pub async fn serve(socket: &Path, gateway: tonic::transport::Channel, resource: &str) {
    let got = GatewayClient::from_channel(gateway)
        .rpc()
        .get_token(identity_gateway_client::proto::GetTokenRequest {
            resource: resource.to_string(),
            identity: None,
        })
        .await
        .expect("a token from the gateway to replay")
        .into_inner();
    // The same message, as the server-side generated type.
    let reply = GetTokenResponse {
        access_token: got.access_token,
        token_type: got.token_type,
        expires_on: got.expires_on.map(|t| prost_types::Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        }),
        resource: got.resource,
    };
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IdentityGatewayServer<Canned>>()
        .await;
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the canned socket");
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health)
        .add_service(IdentityGatewayServer::new(Canned { reply }))
        .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
        .await
        .expect("canned server");
}
