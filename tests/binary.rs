//! The `identity-gateway` binary itself: `--emulator` serves on the socket it
//! prints, hands out verifiable tokens, and SIGTERM drains, exits 0 and
//! removes the socket. Also: a second instance on a live socket refuses to
//! start, and a bad flag is a clear usage error.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use identity_gateway_client::GatewayClient;

const BIN: &str = env!("CARGO_BIN_EXE_identity-gateway");

fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

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

/// Starts the binary with `--emulator --config FILE`, logging at `info` to a
/// file; returns the child once it serves, and a reader of its log.
async fn start_with_config(
    dir: &std::path::Path,
    config: &std::path::Path,
) -> (std::process::Child, GatewayClient, impl Fn() -> String) {
    let socket = dir.join("gw.sock");
    let log = dir.join("gateway.log");
    let out = dir.join("gateway.out");
    let child = Command::new(BIN)
        .args(["--emulator", "--socket"])
        .arg(&socket)
        .arg("--config")
        .arg(config)
        .env("IDENTITY_GATEWAY_LOG", "info")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = async {
        loop {
            if let Ok(client) = GatewayClient::connect(socket.to_str().unwrap()).await {
                if client.get_token("https://vault.azure.net").await.is_ok() {
                    break client;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let client = tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .expect("gateway ready within 60 s");
    // stderr (the log), then stdout (the banner).
    (child, client, move || {
        std::fs::read_to_string(&log).unwrap() + &std::fs::read_to_string(&out).unwrap()
    })
}

fn stop(mut child: std::process::Child) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn sighup_reloads_the_policy_keeping_watch_streams_and_refuses_an_invalid_file() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let write = |resources: &str| {
        std::fs::write(
            &file,
            format!(
                "[[policy.rules]]\nname = \"ops\"\nuids = [{me}]\nidentities = [\"system\"]\nresources = [{resources}]\n"
            ),
        )
        .unwrap()
    };
    write("\"https://vault.azure.net\"");
    let (child, client, log) = start_with_config(dir.path(), &file).await;
    assert!(log().contains("1 caller policy rule ('ops')"), "{}", log());

    let mut watch = Box::pin(
        client
            .watch_token(
                "https://vault.azure.net",
                identity_gateway_client::Identity::SystemAssigned,
            )
            .await
            .unwrap(),
    );
    watch.next().await.unwrap().unwrap();
    let storage = "https://storage.azure.com/";
    assert_eq!(
        client.get_token(storage).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    let hup = |child: &std::process::Child| {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    };
    let until_logged = |needle: &'static str, count: usize| {
        let log = &log;
        async move {
            for _ in 0..500 {
                if log().matches(needle).count() >= count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("'{needle}' not logged {count} times:\n{}", log());
        }
    };

    write("\"https://vault.azure.net\", \"https://storage.azure.com/\"");
    hup(&child);
    until_logged("caller policy reloaded", 1).await;
    assert!(
        log().contains("SIGHUP: reloading the caller policy"),
        "{}",
        log()
    );
    client.get_token(storage).await.unwrap();

    // A burst of signals: requests that arrive while one is pending are
    // merged, the gateway keeps serving and ends up with the file's policy.
    for _ in 0..20 {
        hup(&child);
    }
    until_logged("caller policy reloaded", 2).await;
    client.get_token(storage).await.unwrap();

    // An invalid file: the gateway keeps running with the policy it had,
    // and says why.
    std::fs::write(
        &file,
        "[[policy.rules]]\nname = \"ops\"\nuids = [\"root\"]\n",
    )
    .unwrap();
    hup(&child);
    until_logged("NOT reloaded", 1).await;
    let text = log();
    assert!(
        text.contains("rule 'ops': uids entry 'root' is neither a number nor"),
        "{text}"
    );
    client.get_token(storage).await.unwrap();

    // The stream opened before both reloads is still open.
    let next = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(next.is_err(), "watch stream still open: {next:?}");
    stop(child);
}

#[tokio::test]
async fn sql_errors_are_not_logged_with_their_text_at_error_level() {
    use identity_gateway_client::proto;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "").unwrap();
    let (child, client, log) = start_with_config(dir.path(), &file).await;
    assert!(
        log().contains("IMDS-equivalent"),
        "startup says there is no policy"
    );
    // The well-known port may have been taken: the banner says which.
    let banner_server = log()
        .lines()
        .find_map(|l| {
            l.split("fake Azure SQL:")
                .nth(1)
                .map(|s| s.trim().to_string())
        })
        .expect("the banner names the SQL fake");
    let mut rpc = client.rpc();
    let result = async {
        let mut events = rpc
            .query_sql(proto::QuerySqlRequest {
                server: banner_server.clone(),
                database: "appdb".into(),
                query: "SELECT * FROM customer_alice_at_example_com".into(),
                ..Default::default()
            })
            .await?
            .into_inner();
        while events.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    let err = result.unwrap_err();
    assert!(
        err.message().contains("customer_alice_at_example_com"),
        "the caller gets the server's message: {err}"
    );
    stop(child);
    let text = log();
    assert!(text.contains("QuerySql"), "audited: {text}");
    for line in text
        .lines()
        .filter(|l| l.contains("customer_alice_at_example_com"))
    {
        assert!(
            !line.contains("ERROR"),
            "SQL error text logged at ERROR: {line}"
        );
    }
}

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
