//! Assembly: the shared state every RPC uses ([`GatewayState`]) and
//! [`serve`], which runs the gRPC service (plus health and reflection) on
//! listeners the caller already bound, until the shutdown future resolves,
//! then drains in-flight calls.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    api::GatewayService,
    azure::{http, keyvault::SecretCache, HostGuard},
    clock::{Clock, SystemClock},
    config::Config,
    error::GatewayError,
    identity::{
        retry::RetryPolicy, AccessToken, CacheSettings, IdentitySelector, TokenCache, TokenSource,
    },
    policy::CallerPolicy,
    proto::{identity_gateway_server::IdentityGatewayServer, FILE_DESCRIPTOR_SET},
    transport::{
        serve::{ConnectionServer, Transport},
        Listeners,
    },
};

/// What every RPC shares.
#[derive(Debug)]
pub struct GatewayState {
    pub config: Config,
    pub tokens: TokenCache,
    /// The one HTTP client for every upstream.
    pub http: reqwest::Client,
    /// The exfiltration guard.
    pub hosts: HostGuard,
    /// Who may ask for what.
    pub policy: CallerPolicy,
    /// GetSecret's short-lived cache (off unless `keyvault.secret_cache_ttl_secs`).
    pub secrets: SecretCache,
    pub clock: Arc<dyn Clock>,
    /// Azure SQL connection pools.
    pub sql: crate::azure::sql::SqlPools,
    /// Cancelled when the gateway starts shutting down: long-lived streams
    /// (WatchToken) end so the drain can finish.
    pub shutdown: CancellationToken,
}

impl GatewayState {
    /// Builds the state with the real clock.
    pub fn new(config: Config) -> Result<Self, String> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// Builds the state with an injected clock (tests).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let http = http::build_client(&config.upstream)?;
        let source = TokenSource::from_config(&config.identity)?;
        let identity = &config.identity;
        let settings = CacheSettings {
            refresh_before: Duration::from_secs(identity.refresh_before_secs),
            max_concurrent: identity.max_concurrent,
            max_per_second: identity.max_per_second,
            request_timeout: identity.request_timeout(),
            retry: RetryPolicy {
                max_retries: identity.max_retries,
                gone_window: Duration::from_secs(identity.gone_retry_secs),
                ..RetryPolicy::default()
            },
        };
        let tokens = TokenCache::new(source, http.clone(), settings, Arc::clone(&clock));
        let hosts = HostGuard::new(&config.upstream.allowed_hosts, config.upstream.allow_http);
        let policy = CallerPolicy::new(&config.policy);
        let secrets = SecretCache::new(Duration::from_secs(config.keyvault.secret_cache_ttl_secs));
        Ok(Self {
            config,
            tokens,
            http,
            hosts,
            policy,
            secrets,
            clock,
            sql: crate::azure::sql::SqlPools::new(),
            shutdown: CancellationToken::new(),
        })
    }

    /// A token, giving up with DEADLINE_EXCEEDED when the caller's budget runs out.
    pub async fn tokens_within(
        &self,
        budget: Option<Duration>,
        selector: &IdentitySelector,
        resource: &str,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        within_budget(budget, self.tokens.get(selector, resource, budget), || {
            format!("no token for '{resource}'")
        })
        .await
    }
}

/// Runs `work`, giving up with DEADLINE_EXCEEDED ("<what> within the
/// caller's deadline (<budget>)") when `budget` runs out first.
pub async fn within_budget<T>(
    budget: Option<Duration>,
    work: impl Future<Output = Result<T, GatewayError>>,
    what: impl FnOnce() -> String,
) -> Result<T, GatewayError> {
    match budget {
        None => work.await,
        Some(budget) => tokio::time::timeout(budget, work).await.map_err(|_| {
            GatewayError::DeadlineExceeded(format!(
                "{} within the caller's deadline ({budget:?})",
                what()
            ))
        })?,
    }
}

/// How long in-flight calls get to finish once shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves until `shutdown` resolves, then stops accepting, ends watch
/// streams, lets in-flight calls finish (at most [`DRAIN_TIMEOUT`]), and
/// returns.
pub async fn serve(
    state: Arc<GatewayState>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let streams = state.shutdown.clone();
    tokio::spawn(async move {
        shutdown.await;
        streams.cancel();
        let _ = stop_tx.send(true);
    });
    let drain_deadline = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        }
    };
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IdentityGatewayServer<GatewayService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor set is valid");
    let service = IdentityGatewayServer::new(GatewayService::new(state))
        .max_decoding_message_size(4 * 1024 * 1024);
    let routes = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let server = Arc::new(
        ConnectionServer::new(routes).http2_keepalive_interval(Some(Duration::from_secs(30))),
    );

    let mut servers = Vec::new();
    #[cfg(unix)]
    if let Some(unix) = listeners.unix {
        let incoming = unix.into_listener();
        let s = Arc::clone(&server);
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            s.serve(Transport::Local, incoming, stop).await;
            Ok::<(), tonic::transport::Error>(())
        }));
    }
    #[cfg(windows)]
    if let Some(incoming) = listeners.pipe {
        let s = Arc::clone(&server);
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            s.serve(Transport::Local, incoming, stop).await;
            Ok::<(), tonic::transport::Error>(())
        }));
    }
    if let Some(tcp) = listeners.tcp {
        let incoming = TcpListenerStream::new(tcp);
        let s = Arc::clone(&server);
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            s.serve(Transport::Tcp, incoming, stop).await;
            Ok::<(), tonic::transport::Error>(())
        }));
    }
    let aborts: Vec<_> = servers.iter().map(|s| s.abort_handle()).collect();
    let drained = async {
        for server in servers {
            match server.await {
                Ok(result) => result?,
                Err(join) if join.is_cancelled() => {}
                Err(join) => tracing::error!(%join, "a listener task failed"),
            }
        }
        Ok::<(), tonic::transport::Error>(())
    };
    tokio::select! {
        result = drained => result,
        () = drain_deadline => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "calls still running after the drain timeout; stopping anyway");
            aborts.iter().for_each(|a| a.abort());
            Ok(())
        }
    }
}
