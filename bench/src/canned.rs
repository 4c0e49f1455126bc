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
use prost::Message;
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

/// The `IdentityGateway` impl: GetToken answers the canned reply; each listed
/// unary RPC (`rpc(Request) -> Response`) and server-streaming RPC
/// (`rpc(Request) -> StreamType = Response`) answers UNIMPLEMENTED.
macro_rules! canned_impl {
    (
        unary { $($unary:ident($ureq:ty) -> $uresp:ty;)* }
        streams { $($stream:ident($sreq:ty) -> $stype:ident = $sresp:ty;)* }
    ) => {
        #[tonic::async_trait]
        impl IdentityGateway for Canned {
            async fn get_token(
                &self,
                _request: Request<GetTokenRequest>,
            ) -> Result<Response<GetTokenResponse>, Status> {
                Ok(Response::new(self.reply.clone()))
            }
            $(
                async fn $unary(&self, _r: Request<$ureq>) -> Result<Response<$uresp>, Status> {
                    no()
                }
            )*
            $(
                type $stype = Replies<$sresp>;
                async fn $stream(
                    &self,
                    _r: Request<$sreq>,
                ) -> Result<Response<Self::$stype>, Status> {
                    no()
                }
            )*
        }
    };
}

canned_impl! {
    unary {
        get_secret(GetSecretRequest) -> GetSecretResponse;
        get_service_sas(GetServiceSasRequest) -> GetServiceSasResponse;
        get_resource_group(GetResourceGroupRequest) -> GetResourceGroupResponse;
    }
    streams {
        watch_token(WatchTokenRequest) -> WatchTokenStream = GetTokenResponse;
        list_data_lake(ListDataLakeRequest) -> ListDataLakeStream = ListDataLakeResponse;
        read_blob(ReadBlobRequest) -> ReadBlobStream = ReadBlobResponse;
        query_sql(QuerySqlRequest) -> QuerySqlStream = QuerySqlResponse;
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
    // The same message, as the gateway's reply type: each answer shares the
    // one token, as the gateway's replies share its cache's.
    let reply = GetTokenResponse::decode(&got.encode_to_vec()[..]).expect("re-read the reply");
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
