//! GetToken and WatchToken: the token cache, exposed.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use identity_gateway_core::{AccessToken, GatewayError, IdentitySelector, TokenProvider};
use tokio_stream::wrappers::WatchStream;

use crate::{
    audit,
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

/// A token request: the audience exactly as given, and the identity.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub resource: String,
    pub identity: IdentityRef,
}

/// The current token, then every refreshed one; ends with UNAVAILABLE when
/// the gateway shuts down or the token expired without a refresh.
pub type TokenWatch = Pin<Box<dyn Stream<Item = Result<Arc<AccessToken>, GatewayError>> + Send>>;

impl Gateway {
    /// GetToken: a token of the selected identity for `resource`.
    pub async fn get_token(
        &self,
        ctx: &CallContext,
        request: TokenRequest,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        let outcome = async {
            let (resource, selector) = self.allowed_token(ctx, &request)?;
            self.tokens.token(&selector, resource, ctx.budget).await
        }
        .await;
        audit::record(
            ctx,
            "GetToken",
            &request.resource,
            &request.identity,
            &outcome,
        );
        outcome
    }

    /// WatchToken: the token now and each refreshed one while the caller listens.
    pub async fn watch_token(
        &self,
        ctx: &CallContext,
        request: TokenRequest,
    ) -> Result<TokenWatch, GatewayError> {
        let outcome = async {
            let (resource, selector) = self.allowed_token(ctx, &request)?;
            let (first, updates) = self.tokens.watch(&selector, resource, ctx.budget).await?;
            let first = futures::stream::once(async move { Ok(first) });
            let next =
                WatchStream::from_changes(updates).filter_map(|token| async move { token.map(Ok) });
            // On shutdown the stream ends with UNAVAILABLE so watchers reconnect
            // (to this gateway once it is back) instead of holding the drain.
            let shutdown = self.shutdown.clone();
            let ended = shutdown.clone();
            let goodbye = futures::stream::once(async move {
                Err(GatewayError::Unavailable(if ended.is_cancelled() {
                    "identity-gateway is shutting down; reconnect to keep watching".into()
                } else {
                    "the token expired and could not be refreshed; reconnect to keep watching"
                        .into()
                }))
            });
            let stream: TokenWatch = Box::pin(
                first
                    .chain(next)
                    .take_until(shutdown.cancelled_owned())
                    .chain(goodbye),
            );
            Ok(stream)
        }
        .await;
        audit::record(
            ctx,
            "WatchToken",
            &request.resource,
            &request.identity,
            &outcome,
        );
        outcome
    }

    /// The request's audience and identity, validated and allowed by the caller policy.
    fn allowed_token<'a>(
        &self,
        ctx: &CallContext,
        request: &'a TokenRequest,
    ) -> Result<(&'a str, IdentitySelector), GatewayError> {
        let resource = validate::resource(&request.resource)?;
        let selector = validate::identity(request.identity.clone())?;
        self.policy()
            .check(&ctx.policy_caller(), &selector, Target::Token { resource })?;
        Ok((resource, selector))
    }
}
