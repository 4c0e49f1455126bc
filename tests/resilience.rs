//! Faults and hostile callers, through the real socket: retries that use the
//! whole deadline, a fair IMDS budget, and limits that hold before any work
//! (large requests, idle connections under a descriptor limit, audit volume).

use std::{
    convert::Infallible,
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use identity_gateway_client::{proto, GatewayClient, Identity};
use identity_gateway_core::clock::Clock;
use identity_gateway_emulator::{
    imds::{ImdsConfig, ScriptedResponse},
    sample,
};
use identity_gateway_identity::CacheEvent;
use tower::ServiceExt;

use crate::common::TestEnv;

const VAULT: &str = "https://vault.azure.net";
const BIN: &str = env!("CARGO_BIN_EXE_identity-gateway");

fn token_request(resource: &str, timeout: Duration) -> tonic::Request<proto::GetTokenRequest> {
    let mut request = tonic::Request::new(proto::GetTokenRequest {
        resource: resource.into(),
        ..Default::default()
    });
    request.set_timeout(timeout);
    request
}

#[tokio::test]
async fn gone_for_twenty_seconds_ends_in_a_token_within_a_thirty_second_deadline() {
    let env = TestEnv::new().await;
    let (gw, clock) = env.start_manual(env.config()).await;
    let start = clock.now();
    let c = clock.clone();
    env.imds.set_fault(Some(Arc::new(move || {
        (c.now() - start < Duration::from_secs(20)).then(|| ScriptedResponse::status(410))
    })));
    let reply = gw
        .client
        .rpc()
        .get_token(token_request(VAULT, Duration::from_secs(30)))
        .await
        .expect("a token once IMDS is back")
        .into_inner();
    env.verify(&reply.access_token, VAULT);
    let took = clock.now() - start;
    assert!(
        took >= Duration::from_secs(20) && took < Duration::from_secs(30),
        "{took:?}"
    );
    let backoffs = clock.backoffs();
    assert!(
        backoffs.iter().all(|b| *b <= Duration::from_secs(5)),
        "410 is polled often enough to notice IMDS is back: {backoffs:?}"
    );
}

#[tokio::test]
async fn gone_past_the_deadline_says_what_imds_answered_and_how_long_it_was_tried() {
    let env = TestEnv::new().await;
    let (gw, clock) = env.start_manual(env.config()).await;
    env.imds
        .set_fault(Some(Arc::new(|| Some(ScriptedResponse::status(410)))));
    let start = clock.now();
    let err = gw
        .client
        .rpc()
        .get_token(token_request(VAULT, Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let message = err.message();
    assert!(message.contains("410"), "{message}");
    assert!(message.contains("attempts over 2"), "{message}");
    let took = clock.now() - start;
    assert!(
        took > Duration::from_secs(28) && took < Duration::from_secs(30),
        "the last attempt landed just inside the deadline: {took:?}"
    );
}

#[tokio::test]
async fn five_throttles_with_retry_after_two_end_in_a_token_within_thirty_seconds() {
    let env = TestEnv::new().await;
    env.imds
        .script((0..5).map(|_| ScriptedResponse::throttled(2)));
    let (gw, clock) = env.start_manual(env.config()).await;
    let start = clock.now();
    let reply = gw
        .client
        .rpc()
        .get_token(token_request(VAULT, Duration::from_secs(30)))
        .await
        .expect("a token after five 429s")
        .into_inner();
    env.verify(&reply.access_token, VAULT);
    assert_eq!(env.imds.token_requests(), 6);
    assert_eq!(clock.backoffs(), vec![Duration::from_secs(2); 5]);
    assert!(clock.now() - start < Duration::from_secs(30));
}

#[tokio::test]
async fn a_flood_of_one_millisecond_callers_cannot_starve_another_identitys_refresh() {
    let env = TestEnv::with_imds(ImdsConfig {
        token_lifetime: Duration::from_secs(3600),
        ..ImdsConfig::default()
    })
    .await;
    env.imds.set_latency(Duration::from_millis(50));
    let (gw, clock) = env.start_manual(env.config()).await;
    let mut events = gw.gateway.tokens().events();
    let user = Identity::ClientId(sample::USER_CLIENT_ID.into());
    let first = gw.client.get_token_for(VAULT, user.clone()).await.unwrap();

    // The flood: distinct resources, 1 ms deadlines, 64 at a time, until
    // told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_client = gw.client.clone();
    let flooding = Arc::clone(&stop);
    let flood = tokio::spawn(async move {
        let (mut sent, mut refused) = (0usize, 0usize);
        while !flooding.load(std::sync::atomic::Ordering::SeqCst) {
            let batch = (sent..sent + 64).map(|i| {
                let mut rpc = flood_client.rpc();
                async move {
                    rpc.get_token(token_request(
                        &format!("https://flood-{i}.example.test"),
                        Duration::from_millis(1),
                    ))
                    .await
                }
            });
            for result in futures::future::join_all(batch).await {
                refused += usize::from(result.is_err());
            }
            sent += 64;
        }
        (sent, refused)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!flood.is_finished(), "the flood is running");

    // The other identity's token reaches its refresh time mid-flood.
    let asked = Instant::now();
    clock.advance(Duration::from_secs(3600 - 290));
    // (The flood's own events may overrun the receiver: skip the gap.)
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(CacheEvent::Fetched {
                    resource,
                    background: true,
                }) if resource == VAULT => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the refresh happened");
    let refresh_took = asked.elapsed();
    assert!(
        refresh_took < Duration::from_secs(2),
        "refresh waited {refresh_took:?} behind the flood"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (sent, refused) = flood.await.unwrap();
    assert!(
        refused * 10 > sent * 8,
        "most flood calls ran out of time: {refused} of {sent}"
    );
    // Calls the server is still finishing after their callers left.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tokens = gw.gateway.tokens();
    assert!(
        tokens.abandoned_fetches() > 0,
        "fetches whose callers left were dropped"
    );
    let upstream = env.imds.token_requests();
    assert!(
        upstream < sent / 4,
        "{upstream} IMDS requests for {sent} callers that gave up"
    );
    // Failed and dropped keys are gone: what is left is what was fetched.
    assert!(tokens.keys() <= upstream, "{} keys", tokens.keys());
    let refreshes = env
        .imds
        .requests()
        .iter()
        .filter(|r| r.query_value("client_id") == Some(sample::USER_CLIENT_ID))
        .count();
    assert_eq!(refreshes, 2, "the first fetch and the refresh");
    let after = gw.client.get_token_for(VAULT, user).await.unwrap();
    env.verify(after.secret(), VAULT);
    drop(first);
}

/// The gateway binary with `--emulator` under an open-file limit, its
/// stderr (log) collected.
struct Gateway {
    child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
    log: std::thread::JoinHandle<String>,
}

impl Gateway {
    async fn start(nofile: u64, log: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("gw.sock");
        let mut command = Command::new(BIN);
        command
            .args(["--emulator", "--socket"])
            .arg(&socket)
            .env("IDENTITY_GATEWAY_LOG", log)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut all);
            all
        });
        let banner = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            std::thread::spawn(move || lines.for_each(drop));
            first
        });
        tokio::time::timeout(Duration::from_secs(60), banner)
            .await
            .expect("banner")
            .unwrap();
        Self {
            child,
            socket,
            _dir: dir,
            log,
        }
    }

    async fn client(&self) -> GatewayClient {
        GatewayClient::connect(self.socket.to_str().unwrap())
            .await
            .unwrap()
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, wait, and the whole log.
    fn stop(mut self) -> String {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.log.join().unwrap()
    }
}

/// Serves `calls` cached GetTokens one after another and returns their
/// latencies, sorted.
async fn well_behaved(client: GatewayClient, calls: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let mut rpc = client.rpc();
        rpc.get_token(token_request(VAULT, Duration::from_secs(5)))
            .await
            .expect("the well-behaved caller is served");
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// A GetToken whose body claims `len` bytes and streams them from one
/// shared buffer (so 500 of them cost the test little memory).
async fn oversized_call(channel: tonic::transport::Channel, len: u32) -> bool {
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
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(30), channel.oneshot(request)).await {
        Ok(Ok(response)) => {
            let status = response
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap_or("?").to_string());
            // Refused: a trailers-only error, never a token.
            status.is_some_and(|s| s != "0")
        }
        // Reset by the server: refused too.
        Ok(Err(_)) => true,
        Err(_) => false,
    }
}

async fn channel(socket: &std::path::Path) -> tonic::transport::Channel {
    let path = socket.to_owned();
    tonic::transport::Endpoint::from_static("http://gateway.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_keeps_getting_tokens_under_large_requests_and_idle_connections() {
    // The test itself opens 2,000 connections.
    raise_own_descriptor_limit(4096);
    let gw = Gateway::start(1024, "warn").await;
    let good = gw.client().await;
    well_behaved(good.clone(), 1).await;

    // 500 concurrent 4 MiB requests over 8 connections.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(channel(&gw.socket).await);
    }
    let attack = futures::future::join_all(
        (0..500).map(|i| oversized_call(channels[i % channels.len()].clone(), 4 << 20)),
    );
    let (refused, latencies) = tokio::join!(attack, well_behaved(good.clone(), 200));
    assert!(
        refused.iter().all(|r| *r),
        "every oversized request is refused"
    );
    let under_large = p99(&latencies);
    assert!(
        under_large < Duration::from_millis(500),
        "p99 {under_large:?}"
    );
    drop(channels);

    // 2,000 connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..2000 {
        match std::os::unix::net::UnixStream::connect(&gw.socket) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let latencies = well_behaved(good.clone(), 200).await;
    let under_idle = p99(&latencies);
    assert!(
        under_idle < Duration::from_millis(500),
        "p99 {under_idle:?}"
    );
    let rss_kib = gw.peak_rss_kib();
    drop(idle);
    let log = gw.stop();
    eprintln!("p99 under large requests {under_large:?}, under idle connections {under_idle:?}, peak RSS {rss_kib} KiB");
    assert!(
        log.contains("too many open connections"),
        "refused connections are logged: {log}"
    );
    assert!(
        log.matches("too many open connections").count() < 5,
        "but not once per connection"
    );
    assert!(rss_kib < 128 * 1024, "peak RSS {rss_kib} KiB (debug build)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_stays_bounded_under_a_flood() {
    let gw = Gateway::start(4096, "warn,audit=info").await;
    let client = gw.client().await;
    well_behaved(client.clone(), 1).await;
    let calls = 5000usize;
    let denials = 500usize;
    let cached = futures::stream::iter(0..calls)
        .map(|_| {
            let mut rpc = client.rpc();
            async move {
                rpc.get_token(token_request(VAULT, Duration::from_secs(10)))
                    .await
            }
        })
        .buffer_unordered(32)
        .count();
    // Requests as large as the limit allows, each refused (not a URL):
    // denials stay lines of their own, but short ones.
    let long = "x".repeat(60 * 1024);
    let refused = futures::stream::iter(0..denials)
        .map(|_| {
            let mut rpc = client.rpc();
            let long = long.clone();
            async move {
                rpc.get_token(token_request(&long, Duration::from_secs(10)))
                    .await
            }
        })
        .buffer_unordered(8)
        .count();
    tokio::join!(cached, refused);
    let log = gw.stop();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains("audit")).collect();
    let bytes: usize = audit.iter().map(|l| l.len() + 1).sum();
    let counted: u64 = audit
        .iter()
        .map(|l| {
            l.split_whitespace()
                .find_map(|f| f.strip_prefix("count="))
                .map_or(1, |n| n.parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(
        counted as usize,
        calls + denials + 1,
        "every call is in the audit, as a line or in a count"
    );
    assert!(
        audit.len() <= denials + 20,
        "{} audit lines for {} calls",
        audit.len(),
        calls + denials
    );
    assert!(
        bytes < (denials + 20) * 1024,
        "{bytes} bytes of audit for {} calls",
        calls + denials
    );
}

fn raise_own_descriptor_limit(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
