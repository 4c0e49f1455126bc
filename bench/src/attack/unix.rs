//! The hostile-load benchmark itself (Unix: process groups, rlimits, the
//! Unix socket); see `attack.rs`.

use std::{
    convert::Infallible,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use identity_gateway_bench::support::{
    connect_unix, peak_rss_kib, rss_kib, socket_dir, wait_ready, Spawned, DEFAULT_GATEWAY,
};
use identity_gateway_client::{proto, GatewayClient};
use identity_gateway_emulator::{imds::ImdsConfig, imds::ImdsFake, sample, TokenAuthority};
use tower::ServiceExt;

const VAULT: &str = "https://vault.azure.net";

/// A gateway under NOFILE 1024 (with `audit`, also on that loopback TCP port,
/// its audit log counted), and a well-behaved client on its socket whose
/// first call has been made.
async fn start(
    gateway: &Path,
    imds: &str,
    audit: Option<u16>,
) -> (
    Spawned,
    GatewayClient,
    Option<std::thread::JoinHandle<usize>>,
) {
    let (dir, socket) = socket_dir("gw.sock");
    let mut command = Command::new(gateway);
    command
        .args(["--imds-endpoint", imds, "--socket"])
        .arg(&socket);
    if let Some(port) = audit {
        command.args(["--tcp", &format!("127.0.0.1:{port}")]);
    }
    let audit = audit.is_some();
    command
        .env(
            "IDENTITY_GATEWAY_LOG",
            if audit { "warn,audit=info" } else { "error" },
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(if audit { Stdio::piped() } else { Stdio::null() });
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start the gateway binary");
    let log = child.stderr.take().map(|mut stderr| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf.len()
        })
    });
    let gw = Spawned::new(child, socket, dir);
    let path = gw.socket.to_str().unwrap();
    wait_ready("gateway", Duration::from_millis(5), || async move {
        GatewayClient::connect(path).await.ok().map(drop)
    })
    .await;
    let good = GatewayClient::connect(path).await.unwrap();
    well_behaved(good.clone(), 1).await;
    (gw, good, log)
}

fn request(resource: &str) -> tonic::Request<proto::GetTokenRequest> {
    let mut request = tonic::Request::new(proto::GetTokenRequest {
        resource: resource.into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(5));
    request
}

/// `calls` cached GetTokens, 5 ms apart; latencies sorted, and errors.
async fn well_behaved(client: GatewayClient, calls: usize) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(calls);
    let mut errors = 0;
    for _ in 0..calls {
        let t = Instant::now();
        if client.rpc().get_token(request(VAULT)).await.is_err() {
            errors += 1;
        }
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    (latencies, errors)
}

async fn channel(socket: &Path) -> tonic::transport::Channel {
    connect_unix(
        tonic::transport::Endpoint::from_static("http://gateway.local"),
        socket,
    )
    .await
    .expect("connect")
}

async fn oversized(channel: tonic::transport::Channel, len: u32) {
    static CHUNK: [u8; 64 * 1024] = [b'a'; 64 * 1024];
    let mut header = vec![0u8];
    header.extend_from_slice(&len.to_be_bytes());
    let chunks = std::iter::once(Bytes::from(header)).chain(std::iter::repeat_n(
        Bytes::from_static(&CHUNK),
        (len as usize).div_ceil(CHUNK.len()),
    ));
    let body = http_body_util::StreamBody::new(
        futures::stream::iter(chunks).map(|b| Ok::<_, Infallible>(http_body::Frame::data(b))),
    );
    let request = http::Request::builder()
        .method("POST")
        .uri("http://gateway.local/identity_gateway.v1.IdentityGateway/GetToken")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .expect("request");
    let _ = tokio::time::timeout(Duration::from_secs(60), channel.oneshot(request)).await;
}

fn report(name: &str, gw: &Spawned, latencies: &[Duration], errors: usize, extra: &str) {
    let p = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    let pid = gw.pid();
    println!(
        "| {name} | {:.2} ms | {:.2} ms | {errors} | {:.1} MB | {:.1} MB | {extra} |",
        p(50).as_secs_f64() * 1e3,
        p(99).as_secs_f64() * 1e3,
        peak_rss_kib(pid) as f64 / 1024.0,
        rss_kib(pid) as f64 / 1024.0,
    );
}

#[tokio::main]
pub(crate) async fn main() {
    let mut args = std::env::args().skip(1);
    let mut gateway = PathBuf::from(DEFAULT_GATEWAY);
    while let Some(arg) = args.next() {
        if arg == "--gateway" {
            gateway = args.next().expect("--gateway PATH").into();
        }
    }
    // The test process opens 2,000 connections itself.
    // SAFETY: getrlimit/setrlimit on our own process.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(8192);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
    let imds = ImdsFake::start(authority, ImdsConfig::default())
        .await
        .expect("fake IMDS");
    let imds_url = imds.base_url();
    println!("| attack | p50 | p99 | errors | peak RSS | RSS after | notes |");
    println!("|---|---:|---:|---:|---:|---:|---|");

    {
        let (gw, good, _) = start(&gateway, &imds_url, None).await;
        let (lat, errors) = well_behaved(good, 400).await;
        report("none (baseline)", &gw, &lat, errors, "");
    }
    {
        let (gw, good, _) = start(&gateway, &imds_url, None).await;
        let mut channels = Vec::new();
        for _ in 0..8 {
            channels.push(channel(&gw.socket).await);
        }
        let attack = futures::future::join_all(
            (0..500).map(|i| oversized(channels[i % channels.len()].clone(), 4 << 20)),
        );
        let started = Instant::now();
        let ((), (lat, errors)) = tokio::join!(
            async {
                attack.await;
            },
            well_behaved(good, 400)
        );
        let took = started.elapsed();
        drop(channels);
        tokio::time::sleep(Duration::from_secs(2)).await;
        report(
            "500 concurrent 4 MiB requests",
            &gw,
            &lat,
            errors,
            &format!("all refused; attack done in {:.1} s", took.as_secs_f64()),
        );
    }
    {
        let (gw, good, _) = start(&gateway, &imds_url, None).await;
        let mut idle = Vec::new();
        for _ in 0..2000 {
            if let Ok(s) = std::os::unix::net::UnixStream::connect(&gw.socket) {
                idle.push(s);
            }
        }
        let (lat, errors) = well_behaved(good, 400).await;
        report(
            "2,000 idle connections (NOFILE 1024)",
            &gw,
            &lat,
            errors,
            "connections past the limits closed at accept; silent ones after 10 s",
        );
        drop(idle);
    }
    {
        // The flood comes over loopback TCP: another caller than the
        // well-behaved one on the socket (both run as this benchmark's uid).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let (gw, good, log) = start(&gateway, &imds_url, Some(port)).await;
        let flooder = GatewayClient::connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("connect over TCP");
        let flood = futures::stream::iter(0..50_000)
            .map(|_| {
                let rpc = flooder.rpc();
                async move {
                    let mut rpc = rpc;
                    rpc.get_token(request(VAULT)).await.is_ok()
                }
            })
            .buffer_unordered(64)
            .count();
        let started = Instant::now();
        let (_, (lat, errors)) = tokio::join!(flood, well_behaved(good, 400));
        let took = started.elapsed();
        let pid = gw.pid();
        let line = format!(
            "| 50,000 cached GetTokens at 64 concurrency | | | | {:.1} MB | {:.1} MB |",
            peak_rss_kib(pid) as f64 / 1024.0,
            rss_kib(pid) as f64 / 1024.0,
        );
        drop(gw);
        let bytes = log.map(|l| l.join().unwrap_or(0)).unwrap_or(0);
        let p = |q: usize| lat[(lat.len() * q / 100).min(lat.len() - 1)];
        println!(
            "{} | p50 {:.2} ms, p99 {:.2} ms, {errors} errors; audit log {:.1} KB in {:.1} s |",
            line.trim_end_matches(" |"),
            p(50).as_secs_f64() * 1e3,
            p(99).as_secs_f64() * 1e3,
            bytes as f64 / 1024.0,
            took.as_secs_f64()
        );
    }
}
