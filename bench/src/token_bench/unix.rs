//! The benchmarks themselves (Unix socket transport).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::canned;
use identity_gateway::{config::Config, App};
use identity_gateway_bench::support::{
    connect_unix, parse_flags, rss_kib, socket_dir, wait_ready, Spawned, DEFAULT_GATEWAY,
};
use identity_gateway_client::{proto::GetTokenRequest, GatewayClient};
use identity_gateway_emulator::{
    imds::{ImdsConfig, ImdsFake, RateLimits},
    sample, TokenAuthority,
};
use identity_gateway_identity::SourceKind;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

const RESOURCE: &str = "https://vault.azure.net";

struct Args {
    gateway: PathBuf,
    seconds_per_round: f64,
    rounds: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        gateway: PathBuf::from(DEFAULT_GATEWAY),
        seconds_per_round: 1.0,
        rounds: 5,
    };
    parse_flags(|flag, value| match flag {
        "--gateway" => args.gateway = PathBuf::from(value),
        "--seconds-per-round" => args.seconds_per_round = value.parse().expect("seconds"),
        "--rounds" => args.rounds = value.parse().expect("rounds"),
        other => panic!("unknown flag {other}"),
    });
    args
}

#[tokio::main]
pub(crate) async fn main() {
    // `token-bench --drive SOCKET KIND COUNT [CONCURRENCY]`: send COUNT calls
    // of KIND (health|token) from CONCURRENCY callers (default 1) sharing one
    // connection, and exit; for instruction and syscall counting
    // (callgrind, `perf stat`, `strace -c`).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--serve-canned") {
        let gateway = health_channel(Path::new(&argv[3]))
            .await
            .expect("connect to the gateway");
        canned::serve(Path::new(&argv[2]), gateway, &argv[4]).await;
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--drive") {
        let (socket, kind, count) = (&argv[2], &argv[3], argv[4].parse::<usize>().expect("count"));
        let concurrency = argv
            .get(5)
            .map_or(1, |c| c.parse::<usize>().expect("concurrency"));
        drive(Path::new(socket), kind == "health", count, concurrency).await;
        return;
    }
    let args = parse_args();
    println!("# identity-gateway token benchmarks");
    println!("gateway binary: {}", args.gateway.display());
    println!(
        "cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    production_startup(&args).await;
    external_gateway(&args).await;
    cold_callers().await;
    imds_limits().await;
}

/// The `--drive` mode: `count` calls of one kind, split across `concurrency`
/// callers on one HTTP/2 connection.
async fn drive(socket: &Path, health: bool, count: usize, concurrency: usize) {
    let channel = health_channel(socket).await.expect("connect");
    let callers: Vec<_> = (0..concurrency)
        .map(|i| {
            let channel = channel.clone();
            let calls = count / concurrency + usize::from(i < count % concurrency);
            tokio::spawn(async move {
                // The generated stubs, as `run_round` calls them.
                let mut gateway = GatewayClient::from_channel(channel.clone()).rpc();
                let mut checks = HealthClient::new(channel);
                for _ in 0..calls {
                    if health {
                        drop(
                            checks
                                .check(HealthCheckRequest::default())
                                .await
                                .expect("health"),
                        );
                    } else {
                        let request = GetTokenRequest {
                            resource: RESOURCE.to_string(),
                            identity: None,
                        };
                        drop(gateway.get_token(request).await.expect("token"));
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
}

async fn health_channel(socket: &Path) -> Option<tonic::transport::Channel> {
    // The same HTTP/2 windows identity-gateway-client uses.
    let endpoint = tonic::transport::Endpoint::from_static("http://gateway.local")
        .initial_connection_window_size(8 * 1024 * 1024)
        .initial_stream_window_size(1024 * 1024);
    connect_unix(endpoint, socket).await.ok()
}

/// A channel to `socket` once a health check answers there, polling every
/// `every`.
async fn answering(what: &str, socket: &Path, every: Duration) -> tonic::transport::Channel {
    wait_ready(what, every, || async move {
        let ch = health_channel(socket).await?;
        let mut health = HealthClient::new(ch.clone());
        health
            .check(HealthCheckRequest::default())
            .await
            .ok()
            .map(|_| ch)
    })
    .await
}

/// Spawns `gateway` with `extra` args on a fresh socket; returns it once a
/// health check answers, with the time that took.
async fn spawn_ready(
    gateway: &Path,
    extra: &[&str],
) -> (Spawned, tonic::transport::Channel, Duration) {
    let (dir, socket) = socket_dir("gw.sock");
    let started = Instant::now();
    let child = Command::new(gateway)
        .args(extra)
        .arg("--socket")
        .arg(&socket)
        .env("IDENTITY_GATEWAY_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the gateway binary (build it with cargo build --release)");
    let gateway = Spawned::new(child, socket, dir);
    let ch = answering("gateway", &gateway.socket, Duration::from_millis(1)).await;
    (gateway, ch, started.elapsed())
}

/// The production shape: no emulator, IMDS configured but not yet asked.
async fn production_startup(args: &Args) {
    println!("\n## startup and idle memory, production shape (no emulator)");
    println!("| run | socket answering health check after spawn | idle RSS |");
    println!("|---:|---:|---:|");
    let mut startups = Vec::new();
    for run in 1..=5 {
        let (gateway, _channel, startup) =
            spawn_ready(&args.gateway, &["--imds-endpoint", "http://127.0.0.1:9"]).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss = rss_kib(gateway.pid()) as f64 / 1024.0;
        println!(
            "| {run} | {:.1} ms | {rss:.1} MB |",
            startup.as_secs_f64() * 1e3
        );
        startups.push(startup);
    }
    startups.sort();
    println!("median startup: {:.1} ms", startups[2].as_secs_f64() * 1e3);
}

/// The bench-only canned-reply server (`canned.rs`), this binary in its own
/// process, replaying a reply captured from the gateway on `gateway_socket`.
async fn spawn_canned(gateway_socket: &Path) -> (Spawned, tonic::transport::Channel) {
    let (dir, socket) = socket_dir("canned.sock");
    let child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--serve-canned")
        .arg(&socket)
        .arg(gateway_socket)
        .arg(RESOURCE)
        .spawn()
        .expect("start the canned-reply server");
    let server = Spawned::new(child, socket, dir);
    let ch = answering(
        "canned-reply server",
        &server.socket,
        Duration::from_millis(5),
    )
    .await;
    (server, ch)
}

async fn external_gateway(args: &Args) {
    // The production shape, as deployed, against a fake IMDS in this process
    // (no latency, no limits: only the first call goes upstream).
    let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
    let fake = ImdsFake::start(authority, ImdsConfig::default())
        .await
        .expect("fake IMDS");
    let imds = fake.base_url();
    // One caller (this process) makes every call, far past the default
    // per-caller rate (20,000/s): lifted, as this measures the token path.
    let limits = tempfile::NamedTempFile::new().expect("config file");
    std::fs::write(
        limits.path(),
        "[limits]\nper_caller_rate = 10000000\nper_caller_burst = 10000000\n",
    )
    .expect("write the config file");
    let config = limits.path().to_str().expect("utf-8 temp path");
    let (gateway, channel, _) = spawn_ready(
        &args.gateway,
        &[
            "--source",
            "imds",
            "--imds-endpoint",
            imds.as_str(),
            "--config",
            config,
        ],
    )
    .await;
    let pid = gateway.pid();
    let client = GatewayClient::from_channel(channel.clone());
    client.get_token(RESOURCE).await.expect("warm the cache");
    let (canned, canned_channel) = spawn_canned(&gateway.socket).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_kib(pid) as f64 / 1024.0;
    let canned_idle = rss_kib(canned.pid()) as f64 / 1024.0;

    println!(
        "\n## cached GetToken vs empty unary RPC (health Check) vs canned token-size reply, UDS"
    );
    println!(
        "{} rounds of {:.1} s per kind per concurrency, interleaved; medians",
        args.rounds, args.seconds_per_round
    );
    println!("gateway: production shape, --source imds against a fake IMDS in the bench process");
    println!(
        "| callers | empty RPC/s | canned reply/s | GetToken/s | GetToken/empty | canned/empty | GetToken/canned | empty p50/p99 µs | canned p50/p99 µs | GetToken p50/p99 µs |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for callers in [1usize, 16, 64, 256] {
        let mut empty = Vec::new();
        let mut replay = Vec::new();
        let mut token = Vec::new();
        for _ in 0..args.rounds {
            empty.push(run_round(callers, args.seconds_per_round, Kind::Health, &channel).await);
            replay.push(
                run_round(
                    callers,
                    args.seconds_per_round,
                    Kind::Token,
                    &canned_channel,
                )
                .await,
            );
            token.push(run_round(callers, args.seconds_per_round, Kind::Token, &channel).await);
        }
        let (e, c, t) = (
            Summary::median(&empty),
            Summary::median(&replay),
            Summary::median(&token),
        );
        println!(
            "| {callers} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0}/{:.0} | {:.0}/{:.0} | {:.0}/{:.0} |",
            e.rate,
            c.rate,
            t.rate,
            t.rate / e.rate,
            c.rate / e.rate,
            t.rate / c.rate,
            e.p50,
            e.p99,
            c.p50,
            c.p99,
            t.p50,
            t.p99
        );
    }
    let after = rss_kib(pid) as f64 / 1024.0;
    let canned_after = rss_kib(canned.pid()) as f64 / 1024.0;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "gateway RSS: idle {idle:.1} MB, right after the load {after:.1} MB, 3 s later {:.1} MB",
        rss_kib(pid) as f64 / 1024.0
    );
    println!(
        "canned-reply server RSS (no trimming): idle {canned_idle:.1} MB, after the load {canned_after:.1} MB, 3 s later {:.1} MB",
        rss_kib(canned.pid()) as f64 / 1024.0
    );
    drop(canned);
    drop(gateway);
}

#[derive(Clone, Copy)]
enum Kind {
    Health,
    Token,
}

struct Summary {
    rate: f64,
    p50: f64,
    p99: f64,
}

impl Summary {
    fn median(samples: &[Summary]) -> Summary {
        let med = |f: fn(&Summary) -> f64| {
            let mut v: Vec<f64> = samples.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Summary {
            rate: med(|s| s.rate),
            p50: med(|s| s.p50),
            p99: med(|s| s.p99),
        }
    }
}

async fn run_round(
    callers: usize,
    seconds: f64,
    kind: Kind,
    channel: &tonic::transport::Channel,
) -> Summary {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let channel = channel.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                // Both kinds go through tonic's generated stubs, like for like.
                let mut gateway = GatewayClient::from_channel(channel.clone()).rpc();
                let mut health = HealthClient::new(channel);
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match kind {
                        Kind::Health => {
                            health
                                .check(HealthCheckRequest::default())
                                .await
                                .expect("health");
                        }
                        Kind::Token => {
                            let request = GetTokenRequest {
                                resource: RESOURCE.to_string(),
                                identity: None,
                            };
                            gateway.get_token(request).await.expect("token");
                        }
                    }
                    latencies.push(t0.elapsed().as_secs_f64() * 1e6);
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller task"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Summary {
        rate: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

/// A gateway in this process (so the fake IMDS's counters are readable).
async fn in_process(
    imds: ImdsConfig,
) -> (
    ImdsFake,
    GatewayClient,
    tempfile::TempDir,
    tokio::sync::oneshot::Sender<()>,
) {
    let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
    let fake = ImdsFake::start(authority, imds).await.expect("fake IMDS");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        socket: dir.path().join("gw.sock"),
        ..Config::default()
    };
    config.identity.source = SourceKind::Imds;
    config.identity.imds_endpoint = fake.base_url().parse().expect("url");
    let socket = config.socket.clone();
    let app = App::start(config).await.expect("gateway starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.serve(async move {
        let _ = stopped.await;
    }));
    let client = GatewayClient::connect(socket.to_str().expect("path"))
        .await
        .expect("connect");
    (fake, client, dir, stop)
}

async fn cold_callers() {
    let (fake, client, _dir, _stop) = in_process(ImdsConfig::default()).await;
    fake.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    let calls = (0..1000).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.get_token(RESOURCE).await })
    });
    let results = futures::future::join_all(calls).await;
    let errors = results.iter().filter(|r| !matches!(r, Ok(Ok(_)))).count();
    println!("\n## 1,000 concurrent cold callers of one key");
    println!(
        "upstream requests: {}, errors: {errors}, all answered in {:.0} ms (fake IMDS latency 200 ms)",
        fake.token_requests(),
        started.elapsed().as_secs_f64() * 1e3
    );
}

async fn imds_limits() {
    let (fake, client, _dir, _stop) = in_process(ImdsConfig::default()).await;
    fake.set_rate_limits(Some(RateLimits::IMDS));
    fake.set_latency(Duration::from_millis(30));
    let started = Instant::now();
    let calls = (0..100).flat_map(|_| {
        (0..20).map(|r| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .get_token(&format!("https://resource-{r}.example.test"))
                    .await
            })
        })
    });
    let results = futures::future::join_all(calls.collect::<Vec<_>>()).await;
    let errors = results.iter().filter(|r| !matches!(r, Ok(Ok(_)))).count();
    println!("\n## 100 clients x 20 resources, fake IMDS enforcing 20 rps / 5 concurrent");
    println!(
        "calls: {}, errors: {errors}, upstream requests: {}, 429s from IMDS: {}, max concurrent at IMDS: {}, wall time {:.2} s",
        results.len(),
        fake.token_requests(),
        fake.throttled(),
        fake.max_concurrent_seen(),
        started.elapsed().as_secs_f64()
    );
}
