//! GetToken and WatchToken: the token cache, exposed.

use std::time::SystemTime;

use futures::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use super::{audit, request, ResponseStream};
use crate::{
    gateway::GatewayState,
    identity::{AccessToken, IdentitySelector},
    policy::Target,
    proto::{GetTokenRequest, GetTokenResponse, WatchTokenRequest},
};

pub(super) async fn get_token(
    state: &GatewayState,
    request: Request<GetTokenRequest>,
) -> Result<Response<GetTokenResponse>, Status> {
    let caller = request::caller(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    let outcome = async {
        let (resource, selector) = allowed(state, &caller, &message.resource, message.identity)?;
        let token = state.tokens_within(budget, &selector, resource).await?;
        Ok(Response::new(to_proto(&token)))
    }
    .await;
    audit::record(&caller, "GetToken", &message.resource, &outcome);
    outcome
}

pub(super) async fn watch_token(
    state: &GatewayState,
    request: Request<WatchTokenRequest>,
) -> Result<Response<ResponseStream<GetTokenResponse>>, Status> {
    let caller = request::caller(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    let outcome = async {
        let (resource, selector) = allowed(state, &caller, &message.resource, message.identity)?;
        let (first, updates) = state.tokens.watch(&selector, resource, budget).await?;
        let first = futures::stream::once(async move { Ok(to_proto(&first)) });
        let next = WatchStream::from_changes(updates)
            .filter_map(|token| async move { token.map(|t| Ok(to_proto(&t))) });
        // On shutdown the stream ends with UNAVAILABLE so watchers reconnect
        // (to this gateway once it is back) instead of holding the drain.
        let shutdown = state.shutdown.clone();
        let ended = shutdown.clone();
        let goodbye = futures::stream::once(async move {
            Err(Status::unavailable(if ended.is_cancelled() {
                "identity-gateway is shutting down; reconnect to keep watching"
            } else {
                "the token expired and could not be refreshed; reconnect to keep watching"
            }))
        });
        let stream: ResponseStream<GetTokenResponse> = Box::pin(
            first
                .chain(next)
                .take_until(shutdown.cancelled_owned())
                .chain(goodbye),
        );
        Ok(Response::new(stream))
    }
    .await;
    audit::record(&caller, "WatchToken", &message.resource, &outcome);
    outcome
}

/// The request's audience and identity, validated and allowed by the caller policy.
fn allowed<'a>(
    state: &GatewayState,
    caller: &request::CallerInfo,
    resource: &'a str,
    identity: Option<crate::proto::Identity>,
) -> Result<(&'a str, IdentitySelector), crate::error::GatewayError> {
    let resource = request::resource(resource)?;
    let selector = request::identity(identity)?;
    state
        .policy
        .check(caller.policy_caller(), &selector, Target::Token(resource))?;
    Ok((resource, selector))
}

fn to_proto(token: &AccessToken) -> GetTokenResponse {
    GetTokenResponse {
        access_token: token.secret().to_string(),
        token_type: token.token_type.clone(),
        expires_on: Some(timestamp(token.expires_on)),
        resource: token.resource.clone(),
    }
}

/// A wall-clock time as a protobuf timestamp.
pub(crate) fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}
