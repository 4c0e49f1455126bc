//! The `identity-gateway` binary itself: `--emulator` serves on the socket it
//! prints, hands out verifiable tokens, and SIGTERM drains, exits 0 and
//! removes the socket. Also: a second instance on a live socket refuses to
//! start, and a bad flag is a clear usage error. (On Windows the binary is
//! exercised by `scripts/windows-tests.sh` under wine: pipe, service stop,
//! second instance.)

use std::process::Command;
#[cfg(unix)]
use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::Duration,
};

#[cfg(unix)]
use identity_gateway_client::GatewayClient;

const BIN: &str = env!("CARGO_BIN_EXE_identity-gateway");

#[cfg(unix)]
fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[cfg(unix)]
#[tokio::test]
async fn emulator_binary_serves_tokens_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");
    let mut child = Command::new(BIN)
        .args(["--emulator", "--socket"])
        .arg(&socket)
        .env("IDENTITY_GATEWAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The banner is printed once the socket is bound and the fakes are up.
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("banner").expect("UTF-8 banner");
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        first
    });
    let banner = tokio::time::timeout(Duration::from_secs(60), banner)
        .await
        .expect("gateway printed its banner")
        .unwrap();
    assert!(banner.contains("identity-gateway"), "{banner}");

    let client = GatewayClient::connect(socket.to_str().unwrap())
        .await
        .unwrap();
    let token = client.get_token("https://vault.azure.net").await.unwrap();
    let claims = jwt_claims(token.secret());
    assert_eq!(claims["aud"], "https://vault.azure.net");
    assert!(claims["iss"]
        .as_str()
        .unwrap()
        .starts_with("https://sts.windows.net/"));

    // A second instance must not steal a live socket.
    let second = Command::new(BIN)
        .args(["--emulator", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = Command::new(BIN)
        .args(["--tcp", "0.0.0.0:7777", "--socket", "/nonexistent/x.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let help = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--socket",
        "--tcp",
        "--imds-endpoint",
        "--config",
        "--emulator",
        "IDENTITY_GATEWAY_SOCKET",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_ends_open_watch_streams_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gw.sock");
    let mut child = Command::new(BIN)
        .args(["--emulator", "--socket"])
        .arg(&socket)
        .env("IDENTITY_GATEWAY_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ready = async {
        loop {
            if let Ok(client) = GatewayClient::connect(socket.to_str().unwrap()).await {
                if client.get_token("https://vault.azure.net").await.is_ok() {
                    break client;
                }
            }
            tokio::task::yield_now().await;
        }
    };
    let client = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("gateway ready within 60 s");
    let mut watch = Box::pin(
        client
            .watch_token(
                "https://vault.azure.net",
                identity_gateway_client::Identity::SystemAssigned,
            )
            .await
            .unwrap(),
    );
    use futures::StreamExt;
    watch.next().await.unwrap().unwrap();

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch stream ends promptly on shutdown");
    let err = end.expect("a final status").unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!socket.exists());
}

#[cfg(unix)]
#[test]
fn the_service_subcommand_points_linux_users_at_systemd() {
    let out = Command::new(BIN)
        .args(["service", "install"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("systemd"), "{stderr}");
}
