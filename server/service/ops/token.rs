//! GetToken and WatchToken: the token cache, exposed.

use std::{pin::Pin, sync::Arc};

use futures::{Stream, StreamExt};
use identity_gateway_core::{AccessToken, GatewayError, IdentitySelector};
use tokio_stream::wrappers::WatchStream;

use crate::{
    admission::CallerId,
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
            let admitted = self.admission.admit(ctx)?;
            let (resource, selector) = self.allowed_token(ctx, &request)?;
            if let Some(token) = self.tokens.cached(&selector, resource) {
                return Ok((token, true));
            }
            let caller = CallerId::of(&ctx.peer).fairness_key();
            let token = self
                .tokens
                .get_as(caller, &selector, resource, ctx.budget)
                .await;
            drop(admitted);
            token.map(|t| (t, false))
        }
        .await;
        match outcome {
            Ok((token, true)) => {
                self.audit.cached_grant(
                    &self.metrics,
                    ctx,
                    "GetToken",
                    &request.resource,
                    &request.identity,
                );
                Ok(token)
            }
            outcome => {
                let outcome = outcome.map(|(token, _)| token);
                self.audit.record(
                    &self.metrics,
                    ctx,
                    "GetToken",
                    &request.resource,
                    &request.identity,
                    &outcome,
                );
                outcome
            }
        }
    }

    /// WatchToken: the token now and each refreshed one while the caller listens.
    pub async fn watch_token(
        &self,
        ctx: &CallContext,
        request: TokenRequest,
    ) -> Result<TokenWatch, GatewayError> {
        let outcome = async {
            drop(self.admission.admit(ctx)?);
            let watching = self.admission.admit_watch(ctx)?;
            let (resource, selector) = self.allowed_token(ctx, &request)?;
            let caller = CallerId::of(&ctx.peer).fairness_key();
            let (first, updates) = self
                .tokens
                .watch_as(caller, &selector, resource, ctx.budget)
                .await?;
            let first = futures::stream::once(async move { Ok(first) });
            let next =
                WatchStream::from_changes(updates).filter_map(|token| async move { token.map(Ok) });
            // On shutdown the stream ends with UNAVAILABLE so watchers reconnect
            // (to this gateway once it is back) instead of holding the drain.
            let shutdown = self.shutdown.clone();
            let ended = shutdown.clone();
            let goodbye = futures::stream::once(async move {
                // The caller's watch place is given back when the stream ends.
                drop(watching);
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
        self.audit.record(
            &self.metrics,
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
        self.authorize(&ctx.policy_caller(), &selector, Target::Token { resource })?;
        Ok((resource, selector))
    }
}
