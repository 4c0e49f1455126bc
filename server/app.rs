//! The composition root: the only reader of the whole [`Config`], and the
//! only place that builds the HTTP client, the token cache, the upstream
//! clients, the policy and the operations. [`App::start`] is the one
//! startup `main`, the integration tests and the benchmarks share; then
//! [`App::serve`] runs the gRPC service (plus health and reflection) on the
//! listeners it bound, until the shutdown future resolves, and drains.

use std::{future::Future, sync::Arc, time::Duration};

use identity_gateway_azure::{keyvault::SecretCache, sql::SqlPools, Upstream};
use identity_gateway_core::{
    clock::{Clock, SystemClock},
    http::{self, HttpClientError},
    HostGuard,
};
use identity_gateway_identity::{CacheSettings, SourceError, TokenCache, TokenSource};
use identity_gateway_service::{CallerPolicy, Gateway, GatewayParts, Limits};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::{
    adapters::{
        grpc::GatewayService,
        http_identity::{self, EndpointError, RunningIdentityEndpoint},
    },
    config::{Config, ConfigError},
    proto::{identity_gateway_server::IdentityGatewayServer, FILE_DESCRIPTOR_SET},
    transport::{self, BindError, Listeners},
};

/// Why the gateway could not start. Each variant keeps its cause as
/// `source()`, so `main` prints the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    HttpClient(#[from] HttpClientError),
    #[error(transparent)]
    TokenSource(#[from] SourceError),
    #[error(transparent)]
    IdentityEndpoint(#[from] EndpointError),
    #[cfg(feature = "emulator")]
    #[error(transparent)]
    Emulator(#[from] crate::emulator_mode::EmulatorError),
    /// A policy rule names a Windows account that does not exist.
    #[error("policy {0}")]
    Policy(String),
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// How to start besides the configuration.
#[derive(Debug, Default)]
pub struct Options {
    /// The token cache's clock (tests drive a manual one); the real clock
    /// when unset.
    pub clock: Option<Arc<dyn Clock>>,
    /// Start the built-in emulator and point the gateway at it (`--emulator`).
    #[cfg(feature = "emulator")]
    pub emulator: bool,
}

/// A started gateway: listeners bound, operations built, identity endpoint
/// serving; [`serve`](Self::serve) runs the gRPC service.
#[derive(Debug)]
pub struct App {
    config: Config,
    gateway: Arc<Gateway>,
    listeners: Listeners,
    identity_endpoint: Option<RunningIdentityEndpoint>,
    #[cfg(feature = "emulator")]
    emulator: Option<crate::emulator_mode::RunningEmulator>,
}

impl App {
    /// Starts with the real clock and no emulator.
    pub async fn start(config: Config) -> Result<Self, StartupError> {
        Self::start_with(config, Options::default()).await
    }

    /// Binds first (a second instance fails on the live socket before it
    /// starts anything else), then starts the emulator if asked and points
    /// the configuration at it (validated again), then builds the operations
    /// and starts the identity endpoint.
    pub async fn start_with(
        #[allow(unused_mut)] mut config: Config,
        options: Options,
    ) -> Result<Self, StartupError> {
        let listeners = transport::bind(&config).await?;
        #[cfg(feature = "emulator")]
        let emulator = if options.emulator {
            let emulator = crate::emulator_mode::start().await?;
            emulator.configure(&mut config);
            config.validate()?;
            Some(emulator)
        } else {
            None
        };
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let gateway = Arc::new(build_gateway(&config, clock)?);
        let identity_endpoint = http_identity::start(&gateway, &config).await?;
        Ok(Self {
            config,
            gateway,
            listeners,
            identity_endpoint,
            #[cfg(feature = "emulator")]
            emulator,
        })
    }

    /// The configuration the gateway runs with (the emulator's endpoints
    /// applied).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The operations.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// The identity endpoint, when configured.
    pub fn identity_endpoint(&self) -> Option<&RunningIdentityEndpoint> {
        self.identity_endpoint.as_ref()
    }

    /// The running emulator (`--emulator`).
    #[cfg(feature = "emulator")]
    pub fn emulator(&self) -> Option<&crate::emulator_mode::RunningEmulator> {
        self.emulator.as_ref()
    }

    /// Serves until `shutdown` resolves, then stops accepting, ends watch
    /// streams, lets in-flight calls finish (at most [`DRAIN_TIMEOUT`]),
    /// stops the identity endpoint and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        let served = serve(self.gateway, self.listeners, shutdown).await;
        if let Some(endpoint) = self.identity_endpoint {
            endpoint.stop().await;
        }
        #[cfg(feature = "emulator")]
        drop(self.emulator);
        served.map_err(StartupError::Serve)
    }
}

/// Builds the operations from `config`: the one HTTP client, the token
/// cache on `clock`, the upstream clients' shared [`Upstream`], the policy,
/// the secret cache and the SQL pools.
pub fn build_gateway(config: &Config, clock: Arc<dyn Clock>) -> Result<Gateway, StartupError> {
    let http = http::build_client(&config.upstream)?;
    let source = TokenSource::from_config(&config.identity)?;
    let tokens = TokenCache::new(
        source,
        http.clone(),
        CacheSettings::from_config(&config.identity),
        Arc::clone(&clock),
    );
    let upstream = Upstream {
        http,
        clock: Arc::clone(&clock),
        hosts: HostGuard::new(&config.upstream.allowed_hosts, config.upstream.allow_http),
        config: config.upstream.clone(),
        tokens: Arc::new(tokens.clone()),
    };
    let sql = Arc::new(SqlPools::new(upstream.clone(), config.sql.clone()));
    Ok(Gateway::new(GatewayParts {
        tokens,
        upstream,
        policy: CallerPolicy::new(&policy_with_sids(&config.policy)?),
        secrets: SecretCache::new(Duration::from_secs(config.keyvault.secret_cache_ttl_secs)),
        sql,
        limits: Limits {
            sas_max_lifetime: Duration::from_secs(config.sas.max_expiry_secs),
        },
        shutdown: CancellationToken::new(),
    }))
}

/// The policy with every rule's `accounts` as SIDs: on Windows, account
/// names are looked up once, here (an unknown name stops startup, naming
/// it); elsewhere no caller has an account, so they are left as written.
fn policy_with_sids(
    policy: &identity_gateway_service::policy::PolicyConfig,
) -> Result<identity_gateway_service::policy::PolicyConfig, StartupError> {
    #[cfg_attr(not(windows), allow(unused_mut))]
    let mut policy = policy.clone();
    #[cfg(windows)]
    for (i, rule) in policy.rules.iter_mut().enumerate() {
        for account in &mut rule.accounts {
            *account = crate::windows::pipe_security::resolve_account(account)
                .map_err(|e| StartupError::Policy(format!("rule {}: {e}", i + 1)))?;
        }
    }
    Ok(policy)
}

/// How long in-flight calls get to finish once shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves until `shutdown` resolves, then stops accepting, ends watch
/// streams, lets in-flight calls finish (at most [`DRAIN_TIMEOUT`]), and
/// returns.
async fn serve(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let streams = Arc::clone(&gateway);
    tokio::spawn(async move {
        shutdown.await;
        streams.begin_shutdown();
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
    let service = IdentityGatewayServer::new(GatewayService::new(gateway))
        .max_decoding_message_size(4 * 1024 * 1024);
    let router = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);

    let mut servers = Vec::new();
    #[cfg(unix)]
    if let Some(unix) = listeners.unix {
        let incoming = unix.into_listener();
        let r = router.clone();
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            r.serve_with_incoming_shutdown(incoming, stop).await
        }));
    }
    #[cfg(windows)]
    if let Some(incoming) = listeners.pipe {
        let r = router.clone();
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            r.serve_with_incoming_shutdown(incoming, stop).await
        }));
    }
    if let Some(tcp) = listeners.tcp {
        let incoming = TcpListenerStream::new(tcp);
        let r = router.clone();
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            r.serve_with_incoming_shutdown(incoming, stop).await
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
