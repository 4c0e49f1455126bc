//! What an operator watches and diagnoses: the Prometheus endpoint (scraped
//! and parsed with a real Prometheus text parser; the counters move with the
//! calls), per-service gRPC health and fail-fast token requests when the
//! identity source is unreachable, and `diagnose` against a healthy and a
//! broken setup.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use identity_gateway::{
    config::MetricsListen,
    diagnose::{self, DiagnoseArgs, Outcome},
    metrics::endpoint::BoundAddr,
};
use identity_gateway_client::Error;
use identity_gateway_service::policy::{IdEntry, RuleConfig};
use prometheus_parse::{Sample, Scrape, Value};
use tonic::Code;

use crate::common::TestEnv;

const BIN: &str = env!("CARGO_BIN_EXE_identity-gateway");
const VAULT: &str = "https://vault.azure.net";
const STORAGE: &str = "https://storage.azure.com/";
const GATEWAY_SERVICE: &str = "identity_gateway.v1.IdentityGateway";
const HINT: &str = "is this an Azure VM with a managed identity enabled?";

/// One HTTP/1.0 GET over any byte stream; the body.
fn http_get(mut stream: impl Read + Write) -> String {
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    body.to_string()
}

/// Scrapes the endpoint and parses the text with `prometheus-parse`.
async fn scrape(addr: &BoundAddr) -> Vec<Sample> {
    let addr = addr.clone();
    let body = tokio::task::spawn_blocking(move || match addr {
        BoundAddr::Tcp(addr) => http_get(TcpStream::connect(addr).unwrap()),
        BoundAddr::Unix(path) => http_get(std::os::unix::net::UnixStream::connect(path).unwrap()),
    })
    .await
    .unwrap();
    assert!(
        body.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let lines = body.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines)
        .expect("Prometheus text parses")
        .samples
}

/// The value of the sample `name` whose labels include all of `labels`
/// (0 when there is none: a counter that never moved is not exported).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name}: unexpected {other:?}"),
        })
        .sum()
}

fn has(samples: &[Sample], name: &str) -> bool {
    samples.iter().any(|s| s.metric == name)
}

#[tokio::test]
async fn metrics_are_scraped_over_tcp_and_the_counters_move() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    config.metrics.listen = Some(MetricsListen::Tcp("127.0.0.1:0".parse().unwrap()));
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    config.policy.rules = vec![RuleConfig {
        uids: vec![IdEntry::Id(me)],
        identities: vec!["system".into()],
        resources: vec![VAULT.into()],
        ..RuleConfig::default()
    }];
    let gw = env.start(config).await;
    let addr = gw.metrics.clone().expect("metrics endpoint");
    assert!(matches!(addr, BoundAddr::Tcp(a) if a.port() != 0));

    let before = scrape(&addr).await;
    assert_eq!(
        value(
            &before,
            "identity_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(value(&before, "identity_gateway_calls_total", &[]), 0.0);
    assert!(has(&before, "identity_gateway_sql_pools"));
    assert!(has(&before, "identity_gateway_identity_source_up"));

    gw.client.get_token(VAULT).await.unwrap();
    gw.client.get_token(VAULT).await.unwrap();
    let denied = gw.client.get_token(STORAGE).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let after = scrape(&addr).await;
    let calls = |code| {
        value(
            &after,
            "identity_gateway_calls_total",
            &[("rpc", "GetToken"), ("code", code), ("transport", "unix")],
        )
    };
    assert_eq!(calls("OK"), 2.0);
    assert_eq!(calls("PermissionDenied"), 1.0);
    assert_eq!(
        value(
            &after,
            "identity_gateway_call_duration_seconds_count",
            &[("rpc", "GetToken")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &after,
            "identity_gateway_policy_denials_total",
            &[("target", "token")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "identity_gateway_token_cache_lookups_total",
            &[("result", "miss")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "identity_gateway_token_cache_lookups_total",
            &[("result", "hit")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "identity_gateway_upstream_requests_total",
            &[("service", "imds"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(env.imds.token_requests(), 1);
    assert_eq!(
        value(
            &after,
            "identity_gateway_governor_wait_seconds_count",
            &[("priority", "foreground")]
        ),
        1.0
    );
    let left = value(
        &after,
        "identity_gateway_token_expiry_seconds",
        &[("resource", VAULT), ("identity", "system")],
    );
    assert!(
        left > 3000.0 && left <= 2.0 * 86_400.0,
        "time to expiry {left}"
    );
    assert_eq!(
        value(&after, "identity_gateway_identity_source_up", &[]),
        1.0
    );
}

#[tokio::test]
async fn metrics_can_have_a_unix_socket_of_their_own() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let path = env.dir.path().join("metrics.sock");
    config.metrics.listen = Some(MetricsListen::Unix(path.clone()));
    let gw = env.start(config).await;
    assert_eq!(gw.metrics, Some(BoundAddr::Unix(path.clone())));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    gw.client.get_token(VAULT).await.unwrap();
    let samples = scrape(&BoundAddr::Unix(path.clone())).await;
    assert_eq!(
        value(
            &samples,
            "identity_gateway_calls_total",
            &[("rpc", "GetToken"), ("code", "OK")]
        ),
        1.0
    );
    gw.shutdown().await;
    assert!(!path.exists(), "the metrics socket is removed at stop");
}

/// A loopback port that never completes a TCP handshake: a listener whose
/// accept queue is full (nobody accepts), so further SYNs are dropped, as a
/// firewall black-holing 169.254.169.254 would. Keep the returned values alive.
fn black_hole() -> (SocketAddr, TcpListener, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..4096 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(stream) => held.push(stream),
            Err(_) => return (addr, listener, held),
        }
    }
    panic!("the accept queue never filled");
}

async fn health(socket: &Path, service: &str) -> i32 {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let path = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://gateway.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
        .unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

const SERVING: i32 = 1;
const NOT_SERVING: i32 = 2;

#[tokio::test]
async fn off_azure_a_token_request_fails_in_seconds_with_the_reason_and_health_tells() {
    let env = TestEnv::new().await;
    let (addr, listener, held) = black_hole();
    let mut config = env.config();
    config.identity.imds_endpoint = format!("http://{addr}").parse().unwrap();
    let gw = env.start(config).await;
    assert_eq!(
        health(&gw.socket, GATEWAY_SERVICE).await,
        SERVING,
        "nothing known yet"
    );

    // No deadline: the gateway's own connect timeout (1 s) decides.
    let started = Instant::now();
    let err = gw.client.get_token(VAULT).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let Error::Unavailable(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains(HINT), "{message}");
    assert!(message.contains(&addr.to_string()), "{message}");

    assert_eq!(health(&gw.socket, GATEWAY_SERVICE).await, NOT_SERVING);
    assert_eq!(
        health(&gw.socket, "").await,
        SERVING,
        "the process still serves"
    );

    // The source comes back: the probe notices, without any caller trying.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepting = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            listener.set_nonblocking(true).unwrap();
            let mut accepted = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => accepted.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            drop((held, accepted));
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(&gw.socket, GATEWAY_SERVICE).await != SERVING {
        assert!(Instant::now() < deadline, "health never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    accepting.join().unwrap();
}

#[tokio::test]
async fn a_refused_imds_connection_fails_at_once_with_the_hint() {
    let env = TestEnv::new().await;
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = env.config();
    config.identity.imds_endpoint = format!("http://{dead}").parse().unwrap();
    let gw = env.start(config).await;
    let started = Instant::now();
    let err = gw.client.get_token(VAULT).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.to_string().contains(HINT), "{err}");
    assert_eq!(health(&gw.socket, GATEWAY_SERVICE).await, NOT_SERVING);
}

#[tokio::test]
async fn diagnose_passes_against_the_emulator_and_names_the_identity() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let arm = TcpListener::bind("127.0.0.1:0").unwrap();
    config.upstream.arm_endpoint = Some(
        format!("http://{}", arm.local_addr().unwrap())
            .parse()
            .unwrap(),
    );
    let gw = env.start(config.clone()).await;
    let report = diagnose::run(&config, &DiagnoseArgs::default()).await;
    let text = report.to_text();
    assert!(report.ok, "{text}");
    let outcome = |prefix: &str| {
        report
            .checks
            .iter()
            .find(|c| c.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no check {prefix}: {text}"))
    };
    assert_eq!(outcome("IMDS reachable").outcome, Outcome::Ok, "{text}");
    assert_eq!(outcome("token for ARM").outcome, Outcome::Ok, "{text}");
    let identity = outcome("identity");
    assert_eq!(identity.outcome, Outcome::Ok, "{text}");
    assert!(
        identity.detail.contains(&format!(
            "tenant={}",
            identity_gateway_emulator::sample::TENANT_ID
        )) && identity.detail.contains("without verifying"),
        "{text}"
    );
    assert_eq!(
        outcome("upstream http://127.0.0.1").outcome,
        Outcome::Ok,
        "{text}"
    );
    let socket = outcome("socket");
    assert_eq!(socket.outcome, Outcome::Ok, "{text}");
    assert!(
        socket.detail.contains("mode 0660") && socket.detail.contains("a gateway answers"),
        "{text}"
    );
    assert_eq!(outcome("policy").outcome, Outcome::Warn, "no rules: {text}");
    assert!(!text.contains(".ey"), "never the token: {text}");
    drop(gw);
}

#[test]
fn diagnose_fails_with_the_fix_when_imds_is_dead() {
    let dir = tempfile::tempdir().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = Command::new(BIN)
        .args(["--imds-endpoint", &format!("http://{dead}"), "--socket"])
        .arg(dir.path().join("gw.sock"))
        .args(["diagnose", "--json"])
        .env("IDENTITY_GATEWAY_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["ok"], false);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks[0]["name"], "IMDS reachable");
    assert_eq!(checks[0]["outcome"], "fail");
    let fix = checks[0]["fix"].as_str().unwrap();
    assert!(
        fix.contains(HINT) && fix.contains("system-assigned") && fix.contains("user-assigned"),
        "{fix}"
    );
    assert_eq!(checks[1]["name"], "token for ARM");
    assert_eq!(checks[1]["outcome"], "skip");

    // The readable form says the same, with the fix.
    let output = Command::new(BIN)
        .args(["--imds-endpoint", &format!("http://{dead}"), "--socket"])
        .arg(dir.path().join("gw.sock"))
        .arg("diagnose")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("[FAIL] IMDS reachable"), "{text}");
    assert!(text.contains("fix: is this an Azure VM"), "{text}");
    assert!(text.contains("result: 1 check failed"), "{text}");
}

#[test]
fn diagnose_passes_against_the_built_in_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["--emulator", "--socket"])
        .arg(dir.path().join("gw.sock"))
        .args(["diagnose", "--json"])
        .env("IDENTITY_GATEWAY_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("JSON report");
    assert_eq!(report["ok"], true);
    let names: Vec<_> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        names[0],
        ("IMDS reachable".into(), "ok".into()),
        "{names:?}"
    );
    assert_eq!(names[1], ("token for ARM".into(), "ok".into()), "{names:?}");
    assert_eq!(names[2], ("identity".into(), "ok".into()), "{names:?}");
}

#[tokio::test]
async fn upstream_requests_and_retries_are_counted_by_service_and_status() {
    use identity_gateway_emulator::{
        arm::{ArmFake, Fault},
        imds::ScriptedResponse,
        sample,
    };
    let env = TestEnv::new().await;
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    arm.push_fault(Fault::throttled(2));
    env.imds.script([ScriptedResponse::status(503)]);
    let mut config = env.config();
    config.upstream.arm_endpoint = Some(arm.base_url().parse().unwrap());
    config.metrics.listen = Some(MetricsListen::Tcp("127.0.0.1:0".parse().unwrap()));
    // A manual clock: the backoffs are recorded, not slept.
    let (gw, _clock) = env.start_manual(config).await;
    gw.client
        .rpc()
        .get_resource_group(identity_gateway_client::proto::GetResourceGroupRequest {
            subscription_id: sample::SUBSCRIPTION_ID.into(),
            name: sample::RESOURCE_GROUP.into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let samples = scrape(gw.metrics.as_ref().unwrap()).await;
    let requests = |service, status| {
        value(
            &samples,
            "identity_gateway_upstream_requests_total",
            &[("service", service), ("status", status)],
        )
    };
    let retries = |service, reason| {
        value(
            &samples,
            "identity_gateway_upstream_retries_total",
            &[("service", service), ("reason", reason)],
        )
    };
    assert_eq!(requests("imds", "503"), 1.0);
    assert_eq!(requests("imds", "200"), 1.0);
    assert_eq!(retries("imds", "503"), 1.0);
    assert_eq!(requests("azure_resource_manager", "429"), 1.0);
    assert_eq!(requests("azure_resource_manager", "200"), 1.0);
    assert_eq!(retries("azure_resource_manager", "429"), 1.0);
    assert_eq!(
        value(
            &samples,
            "identity_gateway_calls_total",
            &[("rpc", "GetResourceGroup"), ("code", "OK")]
        ),
        1.0
    );
}
