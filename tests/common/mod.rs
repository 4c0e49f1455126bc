//! The integration-test harness: the emulator's fakes on loopback and a real
//! gateway serving on a Unix socket in a temp dir (a uniquely named pipe on
//! Windows), reached through `identity-gateway-client`.
//!
//! Two steps, so a test can start extra fakes with the shared authority and CA
//! before the gateway starts:
//! ```ignore
//! let env = TestEnv::new().await;                 // authority, CA, fake IMDS
//! let mut config = env.config();                  // points at them
//! let gw = env.start(config).await;               // gateway + client
//! ```
#![allow(dead_code)]

#[cfg(unix)]
pub mod as_uid;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use identity_gateway::{config::Config, transport, App, Options, Reloader};
use identity_gateway_client::GatewayClient;
use identity_gateway_core::clock::{Clock, ManualClock};
use identity_gateway_emulator::{
    imds::{ImdsConfig, ImdsFake},
    sample,
    tls::TestCa,
    Claims, TokenAuthority,
};
use identity_gateway_identity::SourceKind;
use identity_gateway_service::Gateway;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};

/// Fakes and files shared by one test.
pub struct TestEnv {
    pub dir: TempDir,
    pub authority: Arc<TokenAuthority>,
    pub ca: Arc<TestCa>,
    pub ca_file: PathBuf,
    pub imds: ImdsFake,
}

impl TestEnv {
    /// The sample identities, default token lifetime.
    pub async fn new() -> Self {
        Self::with_imds(ImdsConfig::default()).await
    }

    pub async fn with_imds(imds: ImdsConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
        let ca = Arc::new(TestCa::generate(&["localhost", "127.0.0.1"]));
        let ca_file = dir.path().join("emulator-ca.pem");
        std::fs::write(&ca_file, ca.ca_pem()).expect("write CA");
        let imds = ImdsFake::start(Arc::clone(&authority), imds)
            .await
            .expect("start fake IMDS");
        Self {
            dir,
            authority,
            ca,
            ca_file,
            imds,
        }
    }

    /// A gateway configuration pointing at this environment.
    pub fn config(&self) -> Config {
        let mut config = Config {
            socket: self.dir.path().join("gw.sock"),
            ..Config::default()
        };
        config.identity.source = SourceKind::Imds;
        config.identity.imds_endpoint = self.imds.base_url().parse().expect("IMDS URL");
        config.upstream.ca_files = vec![self.ca_file.clone()];
        config.upstream.allow_http = true;
        config.upstream.allowed_hosts = vec!["localhost".into(), "127.0.0.1".into()];
        // Tests run in parallel: each gateway gets its own pipe name.
        #[cfg(windows)]
        {
            config.pipe = Some(format!(
                r"\\.\pipe\identity-gateway-test-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
        }
        config
    }

    /// Starts a gateway on the real clock.
    pub async fn start(&self, config: Config) -> TestGateway {
        Self::start_app(config, Options::default()).await
    }

    /// Starts a gateway whose token cache runs on `clock`.
    pub async fn start_with_clock(&self, config: Config, clock: Arc<dyn Clock>) -> TestGateway {
        let options = Options {
            clock: Some(clock),
            ..Options::default()
        };
        Self::start_app(config, options).await
    }

    /// The product's one startup ([`App::start_with`]), serving in a task.
    pub async fn start_app(config: Config, options: Options) -> TestGateway {
        let socket = config.socket.clone();
        let target = if cfg!(windows) {
            transport::pipe_name(&config)
        } else {
            socket.to_str().expect("UTF-8 path").to_string()
        };
        let app = App::start_with(config, options)
            .await
            .expect("gateway starts");
        let gateway = Arc::clone(app.gateway());
        let reloader = app.reloader();
        let identity_endpoint = app.identity_endpoint().map(|e| IdentityEndpoint {
            url: e.url(),
            header_file: e.header_file().to_path_buf(),
        });
        let metrics = app.metrics_endpoint().map(|e| e.addr().clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(async move {
            let _ = stopped.await;
        }));
        let client = GatewayClient::connect(&target)
            .await
            .expect("connect to gateway");
        TestGateway {
            client,
            gateway,
            reloader,
            identity_endpoint,
            metrics,
            socket,
            target,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts a gateway on a [`ManualClock`] and returns both.
    pub async fn start_manual(&self, config: Config) -> (TestGateway, ManualClock) {
        let clock = ManualClock::new();
        let gateway = self.start_with_clock(config, Arc::new(clock.clone())).await;
        (gateway, clock)
    }

    /// Verifies a token the way the fakes do (signature, exact audience, expiry).
    pub fn verify(&self, token: &str, audience: &str) -> Claims {
        self.authority
            .verify(token, audience, SystemTime::now())
            .unwrap_or_else(|e| panic!("token for {audience} did not verify: {e}"))
    }
}

/// Where a started gateway's identity endpoint is.
#[derive(Debug, Clone)]
pub struct IdentityEndpoint {
    pub url: String,
    pub header_file: PathBuf,
}

/// A gateway serving on a temp-dir socket; stops when dropped.
pub struct TestGateway {
    pub client: GatewayClient,
    pub gateway: Arc<Gateway>,
    /// What SIGHUP calls in the binary.
    pub reloader: Reloader,
    /// Set when the config asked for the identity endpoint.
    pub identity_endpoint: Option<IdentityEndpoint>,
    /// Set when the config asked for the metrics listener.
    pub metrics: Option<identity_gateway::metrics::endpoint::BoundAddr>,
    pub socket: PathBuf,
    /// What clients dial: the socket path, or the pipe name on Windows.
    pub target: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), identity_gateway::StartupError>>>,
}

impl TestGateway {
    /// Asks the gateway to stop and waits until it has drained.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("gateway drained within 10 s")
                .expect("gateway task")
                .expect("gateway served");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits (bounded) for the next cache event matching `pred`.
pub async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<identity_gateway_identity::CacheEvent>,
    pred: impl Fn(&identity_gateway_identity::CacheEvent) -> bool,
) -> identity_gateway_identity::CacheEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(event) if pred(&event) => return event,
                Ok(_) => continue,
                Err(e) => panic!("cache events closed: {e}"),
            }
        }
    })
    .await
    .expect("cache event within 20 s")
}

pub async fn read_blob(
    client: &identity_gateway_client::GatewayClient,
    url: &str,
    identity: Option<identity_gateway_client::Identity>,
    offset: u64,
    length: u64,
) -> Result<(identity_gateway_client::proto::BlobProperties, Vec<Vec<u8>>), tonic::Status> {
    let mut stream = client
        .rpc()
        .read_blob(identity_gateway_client::proto::ReadBlobRequest {
            blob_url: url.into(),
            identity: identity.and_then(|i| i.to_proto()),
            offset,
            length,
        })
        .await?
        .into_inner();
    let first = stream
        .next()
        .await
        .expect("a first message")?
        .properties
        .expect("properties first");
    let mut chunks = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message?;
        assert!(message.properties.is_none(), "properties only once");
        chunks.push(message.data.to_vec());
    }
    Ok((first, chunks))
}

/// Captures the `audit` log lines of this test process (every test's: pick
/// yours by what is unique to it). Returns a reader of what was captured.
pub fn audit_capture() -> impl Fn() -> String {
    use std::sync::{Mutex, OnceLock};
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let lines = LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(Arc::clone(&lines));
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("audit=info"))
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
        lines
    });
    let lines = Arc::clone(lines);
    move || String::from_utf8_lossy(&lines.lock().unwrap()).into_owned()
}
