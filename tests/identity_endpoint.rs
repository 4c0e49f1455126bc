//! The App Service-compatible identity endpoint over real loopback HTTP: it
//! shares the gRPC side's token cache, keeps its secret in a private file that
//! disappears on stop, refuses callers without the secret, maps upstream
//! failures to the statuses SDKs expect, and speaks exactly the protocol the
//! gateway's own App Service source (written from the reference) speaks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use identity_gateway_client::Identity;
use identity_gateway_emulator::sample;
use identity_gateway_identity::SourceKind;

use crate::common::{IdentityEndpoint, TestEnv, TestGateway};

const VAULT: &str = "https://vault.azure.net";

/// A gateway whose configuration turns the identity endpoint on: the
/// composition root starts it and stops it with the gateway.
async fn gateway_with_endpoint(env: &TestEnv) -> (TestGateway, IdentityEndpoint) {
    let mut config = env.config();
    config.identity_endpoint.listen = Some("127.0.0.1:0".parse().expect("addr"));
    let gw = env.start(config).await;
    let endpoint = gw.identity_endpoint.clone().expect("enabled by config");
    (gw, endpoint)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

async fn get_json(
    url: &str,
    query: &[(&str, &str)],
    header: Option<&str>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut url = url::Url::parse(url).expect("endpoint URL");
    url.query_pairs_mut().extend_pairs(query);
    let mut request = http().get(url);
    if let Some(header) = header {
        request = request.header("X-IDENTITY-HEADER", header);
    }
    let response = request.send().await.expect("endpoint answers");
    let status = response.status();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

#[tokio::test]
async fn tokens_come_from_the_same_cache_as_grpc() {
    let env = TestEnv::new().await;
    let (gw, endpoint) = gateway_with_endpoint(&env).await;
    let header_file = endpoint.header_file.clone();
    #[cfg(unix)]
    assert_eq!(
        header_file,
        env.dir.path().join("identity-header"),
        "next to the socket"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&header_file)
            .expect("header file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "readable by the socket's group");
    }
    let secret = std::fs::read_to_string(&header_file).expect("read secret");
    assert!(secret.len() >= 64, "at least 32 random bytes, hex");

    let (status, body) = get_json(
        &endpoint.url,
        &[("resource", VAULT), ("api-version", "2019-08-01")],
        Some(&secret),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let access_token = body["access_token"].as_str().expect("access_token");
    let claims = env.verify(access_token, VAULT);
    assert_eq!(claims.oid, sample::SYSTEM_OBJECT_ID);
    assert_eq!(
        body["expires_on"],
        claims.exp.to_string(),
        "epoch seconds as a string"
    );
    assert_eq!(body["resource"], VAULT);
    assert_eq!(body["token_type"], "Bearer");

    let over_grpc = gw.client.get_token(VAULT).await.expect("gRPC token");
    assert_eq!(over_grpc.secret(), access_token, "one cache for both faces");
    assert_eq!(env.imds.token_requests(), 1);

    gw.shutdown().await;
    assert!(!header_file.exists(), "the secret file is removed on stop");
}

#[tokio::test]
async fn callers_without_the_secret_are_refused_before_any_upstream_call() {
    let env = TestEnv::new().await;
    let (gw, endpoint) = gateway_with_endpoint(&env).await;
    let query = [("resource", VAULT), ("api-version", "2019-08-01")];
    let (status, body) = get_json(&endpoint.url, &query, None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = get_json(&endpoint.url, &query, Some("not-the-secret")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("access_token").is_none());
    assert_eq!(env.imds.token_requests(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unassigned_identity_is_a_400_as_sdks_expect() {
    let env = TestEnv::new().await;
    let (gw, endpoint) = gateway_with_endpoint(&env).await;
    let secret = std::fs::read_to_string(&endpoint.header_file).expect("secret");
    let (status, body) = get_json(
        &endpoint.url,
        &[
            ("resource", VAULT),
            ("api-version", "2019-08-01"),
            ("client_id", "00000000-0000-0000-0000-000000000001"),
        ],
        Some(&secret),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["statusCode"], 400);
    let message = body["message"].as_str().expect("message");
    assert!(!message.is_empty());
    assert!(!message.contains(&secret));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_gateways_own_app_service_source_accepts_the_endpoint() {
    let env = TestEnv::new().await;
    let (front, endpoint) = gateway_with_endpoint(&env).await;
    let secret = std::fs::read_to_string(&endpoint.header_file).expect("secret");

    // A second gateway whose identity source is the first one's endpoint.
    let back_dir = tempfile::tempdir().expect("temp dir");
    let mut config = env.config();
    config.socket = back_dir.path().join("back.sock");
    config.identity.source = SourceKind::AppService;
    config.identity.app_service_endpoint = Some(endpoint.url.parse().expect("URL"));
    config.identity.app_service_header = Some(secret);
    let back = env.start(config).await;

    let token = back
        .client
        .get_token("https://management.azure.com/")
        .await
        .expect("token through the App Service protocol");
    let claims = env.verify(token.secret(), "https://management.azure.com/");
    assert_eq!(claims.oid, sample::SYSTEM_OBJECT_ID);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let expires = token
        .expires_on
        .duration_since(UNIX_EPOCH)
        .expect("expiry")
        .as_secs();
    assert_eq!(expires, claims.exp);
    assert!(expires > now);

    // A user-assigned selector crosses both hops (client_id in App Service terms).
    let user = back
        .client
        .get_token_for(VAULT, Identity::ClientId(sample::USER_CLIENT_ID.into()))
        .await
        .expect("user-assigned token");
    assert_eq!(env.verify(user.secret(), VAULT).oid, sample::USER_OBJECT_ID);

    back.shutdown().await;
    front.shutdown().await;
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = TestEnv::new().await;
    let (_gw, endpoint) = gateway_with_endpoint(&env).await;
    let addr = url::Url::parse(&endpoint.url).expect("endpoint URL");
    let addr = format!(
        "{}:{}",
        addr.host_str().expect("host"),
        addr.port().expect("port")
    );
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /msi/token?resource=x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    // The rest of the headers never come: the gateway closes within its
    // header-read timeout (10 s), not never.
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 20 s");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A well-behaved client is served meanwhile and after.
    let header = std::fs::read_to_string(&endpoint.header_file).unwrap();
    let (status, _) = get_json(
        &endpoint.url,
        &[("resource", VAULT), ("api-version", "2019-08-01")],
        Some(header.trim()),
    )
    .await;
    assert_eq!(status, 200);
}
