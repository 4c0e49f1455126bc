//! GetToken and WatchToken: the token cache, exposed.

use std::{pin::Pin, sync::Arc};

use futures::Stream;
use identity_gateway_core::{AccessToken, GatewayError, IdentitySelector};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    admission::{Admitted, CallerId},
    audit::Audit,
    context::CallContext,
    metrics::ServiceMetrics,
    policy::{CallerPolicy, Target},
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
/// the gateway shuts down or the token expired without a refresh, and with
/// PERMISSION_DENIED when the caller policy in force (after a reload) no
/// longer grants the caller this token.
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

    /// WatchToken: the token now and each refreshed one while the caller
    /// listens, for as long as the caller policy in force grants it: the
    /// caller is judged again before each refreshed token and whenever the
    /// policy is replaced (reload), and a denial ends the stream.
    pub async fn watch_token(
        &self,
        ctx: &CallContext,
        request: TokenRequest,
    ) -> Result<TokenWatch, GatewayError> {
        let outcome = async {
            drop(self.admission.admit(ctx)?);
            let watching = self.admission.admit_watch(ctx)?;
            // Subscribed before the check, so a reload from here on is seen.
            let policy = self.policy.subscribe();
            let (resource, selector) = self.allowed_token(ctx, &request)?;
            let caller = CallerId::of(&ctx.peer).fairness_key();
            let (first, updates) = self
                .tokens
                .watch_as(caller, &selector, resource, ctx.budget)
                .await?;
            let watch = Watch {
                first: Some(first),
                updates,
                policy,
                shutdown: self.shutdown.clone(),
                ctx: ctx.clone(),
                resource: resource.to_owned(),
                selector,
                identity: request.identity.clone(),
                audit: Arc::clone(&self.audit),
                metrics: self.metrics.clone(),
                _watching: watching,
                ended: false,
            };
            let stream: TokenWatch =
                Box::pin(futures::stream::unfold(watch, |mut watch| async move {
                    let next = watch.next().await?;
                    Some((next, watch))
                }));
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

/// An open WatchToken stream: what it sends next, and what it needs to
/// judge its caller again.
struct Watch {
    /// The token of the call, not yet sent.
    first: Option<Arc<AccessToken>>,
    /// The cache entry's refreshed tokens.
    updates: watch::Receiver<Option<Arc<AccessToken>>>,
    /// The caller policy in force, replaced on reload.
    policy: watch::Receiver<Arc<CallerPolicy>>,
    shutdown: CancellationToken,
    ctx: CallContext,
    resource: String,
    selector: IdentitySelector,
    identity: IdentityRef,
    audit: Arc<Audit>,
    metrics: ServiceMetrics,
    /// The caller's watch place, given back when the stream is dropped.
    _watching: Admitted,
    /// The last message (an error) was sent.
    ended: bool,
}

impl Watch {
    /// The next message: a token, or the error that ends the stream (then
    /// `None`). On shutdown the stream ends with UNAVAILABLE so watchers
    /// reconnect (to this gateway once it is back) instead of holding the
    /// drain; when the policy in force no longer grants the caller, with
    /// PERMISSION_DENIED.
    async fn next(&mut self) -> Option<Result<Arc<AccessToken>, GatewayError>> {
        if self.ended {
            return None;
        }
        let next = self.next_token().await;
        self.ended = next.is_err();
        Some(next)
    }

    async fn next_token(&mut self) -> Result<Arc<AccessToken>, GatewayError> {
        if let Some(first) = self.first.take() {
            if self.shutdown.is_cancelled() {
                return Err(shutting_down());
            }
            match self.policy.has_changed() {
                // A reload while the first token was fetched: judge again.
                Ok(true) => self.judge()?,
                Ok(false) => {}
                // The gateway is gone: no policy to judge by.
                Err(_) => return Err(shutting_down()),
            }
            return Ok(first);
        }
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Err(shutting_down()),
                changed = self.policy.changed() => {
                    if changed.is_err() {
                        // The gateway is gone: no policy to judge by.
                        return Err(shutting_down());
                    }
                    self.judge()?;
                }
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return Err(GatewayError::Unavailable(
                            "the token expired and could not be refreshed; reconnect to keep watching"
                                .into(),
                        ));
                    }
                    let token = self.updates.borrow_and_update().clone();
                    if let Some(token) = token {
                        self.judge()?;
                        return Ok(token);
                    }
                }
            }
        }
    }

    /// The policy in force now on this stream's caller, identity and
    /// audience: the decision a new WatchToken call would get. A denial is
    /// counted and audited.
    fn judge(&mut self) -> Result<(), GatewayError> {
        let policy = Arc::clone(&self.policy.borrow_and_update());
        let target = Target::Token {
            resource: &self.resource,
        };
        let verdict = policy.check(&self.ctx.policy_caller(), &self.selector, target);
        if let Err(error) = &verdict {
            self.metrics.denial(&target);
            self.audit.stream_denied(
                &self.ctx,
                "WatchToken",
                &self.resource,
                &self.identity,
                error,
            );
        }
        verdict
    }
}

fn shutting_down() -> GatewayError {
    GatewayError::Unavailable(
        "identity-gateway is shutting down; reconnect to keep watching".into(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant, SystemTime};

    use secrecy::SecretString;

    use super::*;
    use crate::{
        account::SidStringsOnly,
        admission::Admission,
        context::{Peer, Transport},
        LimitsConfig, PolicyConfig,
    };

    const VAULT: &str = "https://vault.azure.net";

    fn policy(resource: &str) -> Arc<CallerPolicy> {
        let text = format!(
            "[[rules]]\nname = \"app\"\nuids = [1000]\nidentities = [\"system\"]\nresources = [\"{resource}\"]\n"
        );
        let config: PolicyConfig = toml::from_str(&text).unwrap();
        Arc::new(CallerPolicy::compile(&config, &SidStringsOnly).unwrap())
    }

    fn token(value: &str) -> Arc<AccessToken> {
        Arc::new(AccessToken {
            token: SecretString::from(value.to_owned()),
            token_type: "Bearer".into(),
            expires_on: SystemTime::now() + Duration::from_secs(3600),
            resource: VAULT.into(),
        })
    }

    #[tokio::test]
    async fn each_refreshed_token_is_judged_by_the_policy_in_force() {
        let ctx = CallContext {
            peer: Peer {
                uid: Some(1000),
                gid: Some(1000),
                ..Peer::default()
            },
            transport: Transport::UnixSocket,
            budget: None,
            started: Instant::now(),
        };
        let admission = Arc::new(Admission::new(LimitsConfig::default()));
        let (policy_tx, policy_rx) = watch::channel(policy(VAULT));
        let (token_tx, token_rx) = watch::channel(None);
        let mut stream = Watch {
            first: Some(token("one")),
            updates: token_rx,
            policy: policy_rx,
            shutdown: CancellationToken::new(),
            ctx: ctx.clone(),
            resource: VAULT.into(),
            selector: IdentitySelector::SystemAssigned,
            identity: IdentityRef::Default,
            audit: Arc::new(Audit::default()),
            metrics: ServiceMetrics::default(),
            _watching: admission.admit_watch(&ctx).unwrap(),
            ended: false,
        };
        async fn next(
            stream: &mut Watch,
        ) -> Result<Option<Result<Arc<AccessToken>, GatewayError>>, tokio::time::error::Elapsed>
        {
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await
        }
        let sent = next(&mut stream).await.unwrap().unwrap().unwrap();
        assert_eq!(sent.secret(), "one");
        token_tx.send_replace(Some(token("two")));
        let sent = next(&mut stream).await.unwrap().unwrap().unwrap();
        assert_eq!(sent.secret(), "two");

        // The policy replaced without waking the stream: the refresh is
        // judged by it all the same, and not sent.
        policy_tx.send_if_modified(|p| {
            *p = policy("https://storage.azure.com/");
            false
        });
        token_tx.send_replace(Some(token("three")));
        let Err(GatewayError::PermissionDenied(message)) =
            next(&mut stream).await.unwrap().unwrap()
        else {
            panic!("the refresh was sent under a policy that denies it");
        };
        assert!(
            message.contains("rule 'app'") && message.contains("uid 1000"),
            "{message}"
        );
        assert!(!message.contains("three"), "{message}");
        assert!(next(&mut stream).await.unwrap().is_none(), "ended");
    }
}
