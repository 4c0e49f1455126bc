//! The composition root: the only reader of the whole [`Config`], and the
//! only place that builds the HTTP client, the token cache, the upstream
//! clients, the policy and the operations. [`App::start`] is the one
//! startup `main`, the integration tests and the benchmarks share; then
//! [`App::serve`] runs the gRPC service (plus health and reflection) on the
//! listeners it bound, until the shutdown future resolves, and drains.
//! [`App::reloader`] re-reads the caller policy from the configuration file
//! (`main` calls it on SIGHUP, and on Windows on the service's PARAMCHANGE
//! or a console's Ctrl-Break) without touching connections; open WatchToken
//! streams are judged again by the new policy.
//! It also builds the one metrics registry and hands each layer its handles,
//! and starts the opt-in metrics listener.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use identity_gateway_azure::{keyvault::SecretCache, sql::SqlPools, Upstream};
use identity_gateway_core::metrics::UpstreamMetrics;
use identity_gateway_core::{
    clock::{Clock, SystemClock},
    http::{self, HttpClientError},
    HostGuard,
};
use identity_gateway_identity::{CacheSettings, SourceError, TokenCache, TokenSource};
use identity_gateway_service::{
    CallerPolicy, Gateway, GatewayParts, Limits, LimitsConfig, PolicyError,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    adapters::{
        grpc::GatewayService,
        http_identity::{self, EndpointError, RunningIdentityEndpoint},
    },
    config::{Config, ConfigError},
    metrics::{
        endpoint::{self as metrics_endpoint, MetricsEndpointError, RunningMetricsEndpoint},
        Metrics, MetricsBuilder,
    },
    proto::{identity_gateway_server::IdentityGatewayServer, FILE_DESCRIPTOR_SET},
    transport::{
        self,
        limits::ConnectionLimits,
        peer::Attributor,
        serve::{ConnectionServer, Transport},
        BindError, Listeners,
    },
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
    Policy(#[from] PolicyError),
    #[error(transparent)]
    HttpClient(#[from] HttpClientError),
    #[error(transparent)]
    TokenSource(#[from] SourceError),
    #[error(transparent)]
    IdentityEndpoint(#[from] EndpointError),
    #[error(transparent)]
    MetricsEndpoint(#[from] MetricsEndpointError),
    #[cfg(feature = "emulator")]
    #[error(transparent)]
    Emulator(#[from] crate::emulator_mode::EmulatorError),
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
    /// Where loopback callers are looked up (`/proc` when unset); tests
    /// point it at an empty directory to see unattributable callers.
    pub proc_root: Option<PathBuf>,
}

/// A started gateway: listeners bound, operations built, identity endpoint
/// serving; [`serve`](Self::serve) runs the gRPC service.
#[derive(Debug)]
pub struct App {
    config: Config,
    gateway: Arc<Gateway>,
    listeners: Listeners,
    attributor: Attributor,
    identity_endpoint: Option<RunningIdentityEndpoint>,
    metrics: Metrics,
    metrics_endpoint: Option<RunningMetricsEndpoint>,
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
            let emulator = crate::emulator_mode::start(&config.socket).await?;
            emulator.configure(&mut config);
            config.validate()?;
            Some(emulator)
        } else {
            None
        };
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let (gateway, metrics) = build(&config, clock)?;
        let gateway = Arc::new(gateway);
        let socket_gid = socket_gid(&config)?;
        let mut attributor = Attributor::new(socket_gid);
        if let Some(dir) = options.proc_root {
            attributor = attributor.with_proc(dir);
        }
        let identity_endpoint =
            http_identity::start(&gateway, &config, attributor.clone(), socket_gid).await?;
        let metrics_endpoint = metrics_endpoint::start(&metrics, &config).await?;
        Ok(Self {
            config,
            gateway,
            listeners,
            attributor,
            identity_endpoint,
            metrics,
            metrics_endpoint,
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

    /// Re-reads the caller policy from the configuration file the gateway
    /// started with (see [`Reloader`]).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            gateway: Arc::clone(&self.gateway),
            file: self.config.config_file.clone(),
        }
    }

    /// The identity endpoint, when configured.
    pub fn identity_endpoint(&self) -> Option<&RunningIdentityEndpoint> {
        self.identity_endpoint.as_ref()
    }

    /// The metrics registry (what a scrape of the endpoint returns).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics listener, when configured.
    pub fn metrics_endpoint(&self) -> Option<&RunningMetricsEndpoint> {
        self.metrics_endpoint.as_ref()
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
        let served = serve(
            self.gateway,
            self.listeners,
            self.attributor,
            &self.config.limits,
            shutdown,
        )
        .await;
        if let Some(endpoint) = self.identity_endpoint {
            endpoint.stop().await;
        }
        if let Some(endpoint) = self.metrics_endpoint {
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
    build(config, clock).map(|(gateway, _)| gateway)
}

/// [`build_gateway`], and the metrics registry its layers report to. The
/// identity source gets its own client with `identity.connect_timeout_secs`
/// (about a second, as the Azure SDKs use), so off Azure a token request
/// fails fast instead of waiting out the upstream connect timeout.
pub fn build(config: &Config, clock: Arc<dyn Clock>) -> Result<(Gateway, Metrics), StartupError> {
    let metrics = MetricsBuilder::new();
    let http = http::build_client(&config.upstream)?;
    let identity_http =
        http::build_client_with(&config.upstream, config.identity.connect_timeout())?;
    let source = TokenSource::from_config(&config.identity)?;
    let tokens = TokenCache::with_metrics(
        source,
        identity_http,
        CacheSettings::from_config(&config.identity),
        Arc::clone(&clock),
        metrics.identity.clone(),
    );
    let upstream = Upstream {
        http,
        clock: Arc::clone(&clock),
        hosts: HostGuard::new(&config.upstream.allowed_hosts, config.upstream.allow_http),
        config: config.upstream.clone(),
        tokens: Arc::new(tokens.clone()),
        metrics: UpstreamMetrics::clone(&metrics.upstream),
    };
    let sql = Arc::new(SqlPools::new(upstream.clone(), config.sql.clone()));
    let gateway = Gateway::new(GatewayParts {
        tokens: tokens.clone(),
        upstream,
        policy: CallerPolicy::compile(&config.policy, crate::windows::account::policy_accounts())?,
        secrets: SecretCache::new(Duration::from_secs(config.keyvault.secret_cache_ttl_secs)),
        sql: Arc::clone(&sql),
        limits: Limits {
            sas_max_lifetime: Duration::from_secs(config.sas.max_expiry_secs),
            callers: config.limits.clone(),
        },
        shutdown: CancellationToken::new(),
        metrics: metrics.service.clone(),
    });
    let metrics = metrics.finish(tokens, sql);
    Ok((gateway, metrics))
}

/// How long in-flight calls get to finish once shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves until `shutdown` resolves, then stops accepting, ends watch
/// streams, lets in-flight calls finish (at most [`DRAIN_TIMEOUT`]), and
/// returns.
async fn serve(
    gateway: Arc<Gateway>,
    listeners: Listeners,
    attributor: Attributor,
    limits: &LimitsConfig,
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
    crate::adapters::grpc::health::follow_source_health(
        health_reporter.clone(),
        gateway.tokens().source_health(),
    );
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
    // Requests are refused from their 5-byte length prefix, before their
    // body is read; the small receive windows bound what h2 buffers for a
    // stream (and a connection) before the service sees it.
    let max_request = limits.max_request_bytes.max(1024);
    let service = IdentityGatewayServer::new(GatewayService::new(gateway))
        .max_decoding_message_size(max_request);
    let window = u32::try_from(max_request)
        .unwrap_or(u32::MAX)
        .clamp(16 * 1024, 1024 * 1024);
    let routes = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service);
    let max_streams = limits.max_concurrent_streams.max(1);
    let server = Arc::new(
        ConnectionServer::new(routes)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2(|h2| {
                h2.max_concurrent_streams(max_streams)
                    .initial_stream_window_size(window)
                    .initial_connection_window_size(window.saturating_mul(4))
                    .max_frame_size(16 * 1024)
                    .max_header_list_size(16 * 1024)
                    .max_pending_accept_reset_streams(32);
            })
            .request_timeout(Some(Duration::from_secs(
                limits.request_timeout_secs.max(1),
            ))),
    );
    let connections = ConnectionLimits::new(limits);

    let mut servers = Vec::new();
    #[cfg(unix)]
    if let Some(unix) = listeners.unix {
        let incoming = connections.limit(unix.into_listener());
        let s = Arc::clone(&server);
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            s.serve(Transport::Local, incoming, stop).await;
            Ok::<(), tonic::transport::Error>(())
        }));
    }
    #[cfg(windows)]
    if let Some(pipe) = listeners.pipe {
        // Counted per user SID, in the same totals as the other listeners.
        let incoming = connections.limit(pipe);
        let s = Arc::clone(&server);
        let stop = stopped();
        servers.push(tokio::spawn(async move {
            s.serve(Transport::Local, incoming, stop).await;
            Ok::<(), tonic::transport::Error>(())
        }));
    }
    if let Some(tcp) = listeners.tcp {
        // Each connection is attributed to its owner at accept.
        let incoming = connections.limit(Box::pin(transport::peer::incoming(tcp, attributor)));
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

/// The socket group's gid (for loopback callers and the header file).
fn socket_gid(config: &Config) -> Result<Option<u32>, StartupError> {
    #[cfg(unix)]
    {
        Ok(config
            .socket_group
            .as_deref()
            .map(transport::uds::resolve_group)
            .transpose()?)
    }
    #[cfg(not(unix))]
    {
        let _ = config;
        Ok(None)
    }
}

/// Reloads the caller policy from the configuration file: on SIGHUP (on
/// Windows PARAMCHANGE or Ctrl-Break, see [`crate::lifecycle`]), or
/// when a test or tool asks. Only `[policy]` is taken from the new file;
/// other settings apply at the next start. A file that does not parse, or a
/// policy that does not compile, leaves the policy in force and says why.
/// Connections and calls in flight are not touched: each call judges with
/// the policy it read at its start. Open WatchToken streams are woken and
/// judged by the new policy; one it no longer grants ends with
/// PERMISSION_DENIED (see [`Gateway::replace_policy`]).
#[derive(Debug, Clone)]
pub struct Reloader {
    gateway: Arc<Gateway>,
    file: Option<PathBuf>,
}

/// Why a reload kept the old policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    #[error(
        "the gateway was started without --config; there is no file to reload the policy from"
    )]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{}: {source}", .file.display())]
    Policy {
        file: PathBuf,
        #[source]
        source: PolicyError,
    },
}

impl Reloader {
    /// Reloads from the file the gateway started with, logging the outcome.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let result = match &self.file {
            Some(file) => self.reload_from(file),
            None => Err(ReloadError::NoFile),
        };
        match &result {
            Ok(()) => tracing::info!(
                file = %self.file.as_deref().unwrap_or(Path::new("")).display(),
                policy = %self.gateway.policy().summary(),
                "caller policy reloaded (other settings apply at the next start)"
            ),
            Err(error) => tracing::error!(
                error = %crate::error_chain(error),
                "caller policy NOT reloaded; the previous policy stays in force"
            ),
        }
        result
    }

    /// Reads `file`, compiles its `[policy]` and puts it in force.
    pub fn reload_from(&self, file: &Path) -> Result<(), ReloadError> {
        let config = Config::from_file(file)?;
        let policy =
            CallerPolicy::compile(&config.policy, crate::windows::account::policy_accounts())
                .map_err(|source| ReloadError::Policy {
                    file: file.to_owned(),
                    source,
                })?;
        self.gateway.replace_policy(policy);
        Ok(())
    }
}
