//! Validation, parsing and error mapping of the Key Vault client, and the
//! client itself against the emulator's Key Vault fake over real TLS.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use identity_gateway_emulator::{
    faults::{Fault, Grant},
    keyvault::{AccessModel, KeyVaultFake, SecretSpec, VaultSettings},
    tls::TestCa,
    TokenAuthority,
};
use secrecy::ExposeSecret;

use super::*;
use crate::testing;
use identity_gateway_core::{clock::ManualClock, http::UpstreamConfig};

const OID: &str = "72f5fd3e-9ee8-4f05-a3a0-60539e85b40e";

#[test]
fn secret_names_versions_and_vault_names_are_validated() {
    assert!(validate_secret_name("db-Password-2").is_ok());
    assert!(validate_secret_name(&"a".repeat(127)).is_ok());
    for bad in ["", "a_b", "a.b", "a b", "ä", &"a".repeat(128), "../x"] {
        let err = validate_secret_name(bad).unwrap_err();
        assert!(
            matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "name"),
            "{bad}: {err}"
        );
    }
    assert!(validate_version("").is_ok());
    assert!(validate_version("4387e9f3d6e14c459867679a90fd0f79").is_ok());
    for bad in [
        "latest",
        "4387e9f3d6e14c459867679a90fd0f7",
        "4387e9f3d6e14c459867679a90fd0f7g",
    ] {
        let err = validate_version(bad).unwrap_err();
        assert!(matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "version"));
    }
    assert!(validate_vault_name("my-vault-01").is_ok());
    for bad in [
        "ab",
        "my--vault",
        "-vault",
        "vault-",
        "1vault",
        "my_vault",
        &"v".repeat(25),
    ] {
        let err = validate_vault_name(bad).unwrap_err();
        assert!(
            matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "vault_name"),
            "{bad}"
        );
    }
}

#[test]
fn vault_urls_pass_the_guard_and_decide_the_audience() {
    let guard = HostGuard::new(&["localhost".into()], false);
    let vault = Vault::from_url(&guard, "https://MyVault.vault.azure.net/", Cloud::Public).unwrap();
    assert_eq!(vault.host(), "myvault.vault.azure.net");
    assert_eq!(vault.base_url(), "https://myvault.vault.azure.net");
    assert_eq!(vault.audience(), "https://vault.azure.net");
    assert_eq!(
        vault.secret_url("s", "").as_str(),
        "https://myvault.vault.azure.net/secrets/s?api-version=7.5"
    );
    // The host's suffix wins over the cloud field.
    let gov = Vault::from_url(&guard, "https://v.vault.usgovcloudapi.net", Cloud::Public).unwrap();
    assert_eq!(gov.audience(), "https://vault.usgovcloudapi.net");
    let by_name = Vault::from_name(&guard, "MyVault", Cloud::China).unwrap();
    assert_eq!(by_name.base_url(), "https://myvault.vault.azure.cn");
    assert_eq!(by_name.audience(), "https://vault.azure.cn");
    let local = Vault::from_url(&guard, "https://localhost:8443", Cloud::UsGovernment).unwrap();
    assert_eq!(local.audience(), "https://vault.usgovcloudapi.net");
    assert_eq!(
        local
            .secret_url("s", "0123456789abcdef0123456789abcdef")
            .as_str(),
        "https://localhost:8443/secrets/s/0123456789abcdef0123456789abcdef?api-version=7.5"
    );
    for hostile in [
        "https://evil.example",
        "https://myvault.vault.azure.net.evil.example",
        "http://myvault.vault.azure.net",
        "https://user:pw@myvault.vault.azure.net",
        "https://myvault.vault.azure.net/secrets/x",
        "https://myvault.vault.azure.net?x=1",
        "https://hsm.managedhsm.azure.net",
        "not a url",
    ] {
        let err = Vault::from_url(&guard, hostile, Cloud::Public).unwrap_err();
        assert!(
            matches!(&err, GatewayError::InvalidArgument { field, .. } if field == "vault_url"),
            "{hostile}: {err}"
        );
    }
}

#[test]
fn bundles_parse_with_every_field() {
    let body = br#"{
      "value": "mysecretvalue",
      "id": "https://myvault.vault.azure.net/secrets/mysecretname/4387e9f3d6e14c459867679a90fd0f79",
      "contentType": "text/plain",
      "attributes": {"enabled": true, "nbf": 1493938400, "exp": 1893456000,
                     "created": 1493938410, "updated": 1493938411,
                     "recoverableDays": 90, "recoveryLevel": "Recoverable+Purgeable"},
      "tags": {"env": "test"},
      "kid": "https://myvault.vault.azure.net/keys/mycert/4387e9f3d6e14c459867679a90fd0f79",
      "managed": true
    }"#;
    let secret = parse_bundle(body).unwrap();
    assert_eq!(secret.value.expose_secret(), "mysecretvalue");
    assert_eq!(secret.name, "mysecretname");
    assert_eq!(secret.version, "4387e9f3d6e14c459867679a90fd0f79");
    assert_eq!(secret.content_type.as_deref(), Some("text/plain"));
    assert!(secret.enabled && secret.managed);
    let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
    assert_eq!(secret.not_before, at(1_493_938_400));
    assert_eq!(secret.expires, at(1_893_456_000));
    assert_eq!(secret.created, at(1_493_938_410));
    assert_eq!(secret.updated, at(1_493_938_411));
    assert_eq!(secret.tags.get("env").map(String::as_str), Some("test"));
    assert!(!format!("{secret:?}").contains("mysecretvalue"));

    let minimal = parse_bundle(
        br#"{"value":"v","id":"https://v.vault.azure.net/secrets/n/0123456789abcdef0123456789abcdef","attributes":{"enabled":false}}"#,
    )
    .unwrap();
    assert!(!minimal.enabled && !minimal.managed);
    assert!(minimal.not_before.is_none() && minimal.expires.is_none() && minimal.tags.is_empty());

    for garbage in [
        &b"<html>"[..],
        br#"{"id":"https://v.vault.azure.net/secrets/n/1"}"#,
        br#"{"value":"v"}"#,
        br#"{"value":"v","id":"https://v.vault.azure.net/keys/n/1"}"#,
        br#"{"value":"v","id":"x","tags":{"a":1}}"#,
    ] {
        let err = parse_bundle(garbage).unwrap_err();
        assert!(matches!(err, GatewayError::Upstream(_)), "{err}");
    }
}

#[test]
fn challenges_parse_and_only_parent_domains_are_followed() {
    assert_eq!(
        challenge_resource(
            r#"Bearer authorization="https://login.windows.net/t", resource="https://vault.azure.net""#
        )
        .as_deref(),
        Some("https://vault.azure.net")
    );
    assert_eq!(
        challenge_resource(
            r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://vault.usgovcloudapi.net/.default""#
        )
        .as_deref(),
        Some("https://vault.usgovcloudapi.net")
    );
    assert_eq!(challenge_resource("Basic realm=x"), None);
    assert_eq!(challenge_resource("Bearer authorization=\"x\""), None);

    assert!(challenge_allowed(
        "https://vault.azure.net",
        "myvault.vault.azure.net"
    ));
    assert!(challenge_allowed(
        "https://vault.usgovcloudapi.net/",
        "v.vault.usgovcloudapi.net"
    ));
    for (resource, host) in [
        ("https://management.azure.com/", "myvault.vault.azure.net"),
        ("https://evil.example", "myvault.vault.azure.net"),
        ("https://vault.azure.net", "localhost"),
        ("https://myvault.vault.azure.net", "myvault.vault.azure.net"),
        ("https://net", "myvault.vault.azure.net"),
        ("http://vault.azure.net", "myvault.vault.azure.net"),
        ("https://vault.azure.net/x", "myvault.vault.azure.net"),
        ("https://vault.azure.net:444", "myvault.vault.azure.net"),
        ("not a url", "myvault.vault.azure.net"),
    ] {
        assert!(!challenge_allowed(resource, host), "{resource} for {host}");
    }
}

#[test]
fn error_answers_map_to_gateway_errors_with_azures_reason() {
    let guard = HostGuard::default();
    let vault = Vault::from_url(&guard, "https://v.vault.azure.net", Cloud::Public).unwrap();
    let map = |status: u16, body: &str| {
        map_error(
            &Refusal {
                status: StatusCode::from_u16(status).unwrap(),
                body: body.as_bytes(),
                audience: "https://vault.azure.net",
                challenge: Some("https://vault.azure.net"),
            },
            &vault,
            "db",
            "",
        )
    };
    let rbac = map(
        403,
        r#"{"error":{"code":"Forbidden","message":"Caller is not authorized to perform action on resource.\r\nCaller: appid=a;oid=o\r\n","innererror":{"code":"ForbiddenByRbac"}}}"#,
    );
    assert!(
        matches!(&rbac, GatewayError::PermissionDenied(m)
        if m.contains("Azure RBAC") && m.contains("Key Vault Secrets User") && m.contains("Caller: appid=a;oid=o")),
        "{rbac}"
    );
    let policy = map(
        403,
        r#"{"error":{"code":"Forbidden","message":"does not have secrets get permission","innererror":{"code":"AccessDenied"}}}"#,
    );
    assert!(
        matches!(&policy, GatewayError::PermissionDenied(m) if m.contains("access policy")),
        "{policy}"
    );
    let disabled = map(
        403,
        r#"{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled secret.","innererror":{"code":"SecretDisabled"}}}"#,
    );
    assert!(
        matches!(&disabled, GatewayError::PermissionDenied(m) if m.contains("disabled")),
        "{disabled}"
    );
    let missing = map(
        404,
        r#"{"error":{"code":"SecretNotFound","message":"A secret with (name/id) db was not found in this key vault."}}"#,
    );
    assert!(
        matches!(&missing, GatewayError::NotFound(m) if m.contains("'db'") && m.contains("SecretNotFound")),
        "{missing}"
    );
    assert!(matches!(map(429, "{}"), GatewayError::Throttled(m) if m.contains("retries")));
    assert!(matches!(map(503, "not json"), GatewayError::Unavailable(_)));
    assert!(
        matches!(map(401, r#"{"error":{"code":"Unauthorized","message":"AKV10022: Invalid audience."}}"#),
        GatewayError::PermissionDenied(m) if m.contains("401") && m.contains("AKV10022"))
    );
    assert!(matches!(map(418, ""), GatewayError::Upstream(_)));
}

#[test]
fn the_cache_is_per_identity_and_expires() {
    let guard = HostGuard::default();
    let vault = Vault::from_url(&guard, "https://v.vault.azure.net", Cloud::Public).unwrap();
    let secret = Arc::new(parse_bundle(br#"{"value":"v","id":"https://v.vault.azure.net/secrets/n/0123456789abcdef0123456789abcdef"}"#).unwrap());
    let system = CacheKey::new(&IdentitySelector::SystemAssigned, &vault, "N", "");
    let user = CacheKey::new(&IdentitySelector::ClientId("c".into()), &vault, "n", "");
    let t0 = Instant::now();

    let off = SecretCache::new(Duration::ZERO);
    off.put(system.clone(), Arc::clone(&secret), t0);
    assert!(off.get(&system, t0).is_none());

    let cache = SecretCache::new(Duration::from_secs(30));
    cache.put(system.clone(), Arc::clone(&secret), t0);
    assert!(cache
        .get(
            &CacheKey::new(&IdentitySelector::SystemAssigned, &vault, "n", ""),
            t0 + Duration::from_secs(29)
        )
        .is_some());
    assert!(
        cache.get(&user, t0).is_none(),
        "another identity must not see the cached value"
    );
    assert!(cache.get(&system, t0 + Duration::from_secs(30)).is_none());
    assert!(!format!("{cache:?}").contains("\"v\""));
}

/// A vault fake, an upstream whose HTTP client trusts the fake's CA (and
/// resolves the test vault host to it) on a manual clock, and a token
/// provider that mints real tokens and records the audiences asked for.
struct Bench {
    fake: KeyVaultFake,
    up: Upstream,
    clock: ManualClock,
    tokens: Arc<testing::MintingTokens>,
}

const TEST_VAULT_HOST: &str = "myvault.vault.test";

impl Bench {
    async fn new() -> Self {
        let authority = Arc::new(TokenAuthority::generate(
            "dc822496-97fa-4380-991a-c8b4ba5d4f73",
        ));
        let ca = TestCa::generate(&["localhost", "127.0.0.1", TEST_VAULT_HOST]);
        let fake = KeyVaultFake::start(Arc::clone(&authority), &ca, VaultSettings::new("myvault"))
            .await
            .unwrap();
        let port = Url::parse(&fake.vault_url()).unwrap().port().unwrap();
        let clock = ManualClock::new();
        let tokens = testing::MintingTokens::new(authority);
        let mut up = testing::upstream(UpstreamConfig::default(), &clock, tokens.clone());
        // The shared client, plus a name the fake answers for (no DNS here).
        up.http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap())
            .resolve(TEST_VAULT_HOST, SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        Self {
            fake,
            up,
            clock,
            tokens,
        }
    }

    async fn get(
        &self,
        vault: &Vault,
        name: &str,
        version: &str,
        budget: Option<Duration>,
    ) -> Result<Secret, GatewayError> {
        get_secret(
            &self.up,
            &IdentitySelector::SystemAssigned,
            vault,
            name,
            version,
            budget,
        )
        .await
    }

    fn vault(&self) -> Vault {
        let guard = HostGuard::new(&["localhost".into()], false);
        Vault::from_url(&guard, &self.fake.vault_url(), Cloud::Public).unwrap()
    }

    fn asked(&self) -> Vec<String> {
        self.tokens.asked()
    }
}

#[tokio::test]
async fn secrets_are_read_with_every_field() {
    let bench = Bench::new().await;
    let old = bench
        .fake
        .set_secret("Db-Password", SecretSpec::new("first"));
    let latest = bench.fake.set_secret(
        "db-password",
        SecretSpec::new("second")
            .content_type("text/plain")
            .tag("env", "test")
            .not_before(1_700_000_000)
            .expires(1_900_000_000),
    );
    let vault = bench.vault();
    let secret = bench.get(&vault, "DB-password", "", None).await.unwrap();
    assert_eq!(secret.value.expose_secret(), "second");
    assert_eq!(secret.name, "Db-Password");
    assert_eq!(secret.version, latest);
    assert_eq!(
        secret.id,
        format!("{}/secrets/Db-Password/{latest}", bench.fake.vault_url())
    );
    assert_eq!(secret.content_type.as_deref(), Some("text/plain"));
    assert_eq!(secret.tags.get("env").map(String::as_str), Some("test"));
    assert_eq!(
        secret.not_before,
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    assert!(secret.created.is_some() && secret.updated.is_some() && secret.enabled);

    let first = bench.get(&vault, "db-password", &old, None).await.unwrap();
    assert_eq!(first.value.expose_secret(), "first");
    assert_eq!(
        bench.asked(),
        ["https://vault.azure.net", "https://vault.azure.net"]
    );
    let seen = bench.fake.requests();
    assert_eq!(seen[0].path, "/secrets/DB-password");
    assert_eq!(
        seen[0].query_param("api-version").as_deref(),
        Some(API_VERSION)
    );
    assert_eq!(seen[1].path, format!("/secrets/db-password/{old}"));
    assert!(seen.iter().all(|r| r.oid.as_deref() == Some(OID)));
}

#[tokio::test]
async fn refusals_map_with_the_reason() {
    let bench = Bench::new().await;
    bench
        .fake
        .set_secret("off", SecretSpec::new("x").disabled());
    bench.fake.set_secret("on", SecretSpec::new("x"));
    let vault = bench.vault();
    let get = |name: &'static str| bench.get(&vault, name, "", None);

    assert!(
        matches!(get("missing").await, Err(GatewayError::NotFound(m)) if m.contains("SecretNotFound"))
    );
    assert!(
        matches!(get("off").await, Err(GatewayError::PermissionDenied(m)) if m.contains("SecretDisabled"))
    );
    bench
        .fake
        .set_grant(Grant::only(["00000000-0000-0000-0000-000000000001"]));
    let rbac = get("on").await.unwrap_err();
    assert!(
        matches!(&rbac, GatewayError::PermissionDenied(m) if m.contains("ForbiddenByRbac") && m.contains(OID)),
        "{rbac}"
    );
    bench.fake.set_access_model(AccessModel::AccessPolicy);
    let policy = get("on").await.unwrap_err();
    assert!(
        matches!(&policy, GatewayError::PermissionDenied(m) if m.contains("AccessDenied") && m.contains("access policy")),
        "{policy}"
    );
}

#[tokio::test]
async fn throttling_is_retried_after_retry_after() {
    let bench = Bench::new().await;
    bench.fake.set_secret("s", SecretSpec::new("v"));
    bench
        .fake
        .faults()
        .push([Fault::throttle(2), Fault::status(503)]);
    let vault = bench.vault();
    let secret = bench.get(&vault, "s", "", None).await.unwrap();
    assert_eq!(secret.value.expose_secret(), "v");
    let statuses: Vec<u16> = bench.fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 503, 200]);
    // Retry-After: 2, then the second backoff step (no Retry-After on the 503).
    assert_eq!(
        bench.clock.backoffs(),
        [Duration::from_secs(2), Duration::from_secs(1)]
    );
}

#[tokio::test]
async fn persistent_throttling_ends_in_resource_exhausted_within_the_deadline() {
    let bench = Bench::new().await;
    bench.fake.set_secret("s", SecretSpec::new("v"));
    bench
        .fake
        .faults()
        .push((0..10).map(|_| Fault::throttle(1)));
    let vault = bench.vault();
    let err = bench.get(&vault, "s", "", None).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::Throttled(m) if m.contains("429")),
        "{err}"
    );
    assert_eq!(bench.fake.requests().len(), 4, "three retries");

    // A Retry-After longer than the time left ends the call at once.
    let err = bench
        .get(&vault, "s", "", Some(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Throttled(_)));
    assert_eq!(bench.fake.requests().len(), 5);
    assert_eq!(bench.clock.backoffs().len(), 3);
}

#[tokio::test]
async fn a_challenge_for_a_parent_domain_is_followed_once() {
    let bench = Bench::new().await;
    bench.fake.set_secret("s", SecretSpec::new("sovereign"));
    // The vault lives at myvault.vault.test and wants tokens for https://vault.test,
    // as a sovereign vault wants its own cloud's audience.
    bench.fake.set_audience("https://vault.test");
    let port = Url::parse(&bench.fake.vault_url()).unwrap().port().unwrap();
    let guard = HostGuard::new(&["*.vault.test".into()], false);
    let vault = Vault::from_url(
        &guard,
        &format!("https://{TEST_VAULT_HOST}:{port}"),
        Cloud::Public,
    )
    .unwrap();
    let secret = bench.get(&vault, "s", "", None).await.unwrap();
    assert_eq!(secret.value.expose_secret(), "sovereign");
    assert_eq!(
        bench.asked(),
        ["https://vault.azure.net", "https://vault.test"]
    );
    let seen: Vec<(u16, Option<String>)> = bench
        .fake
        .requests()
        .into_iter()
        .map(|r| (r.status, r.audience))
        .collect();
    assert_eq!(
        seen,
        [
            (401, Some("https://vault.azure.net".to_string())),
            (200, Some("https://vault.test".to_string()))
        ]
    );
}

#[tokio::test]
async fn a_challenge_for_an_unrelated_audience_is_not_followed() {
    let bench = Bench::new().await;
    bench.fake.set_secret("s", SecretSpec::new("v"));
    bench.fake.set_audience("https://vault.test");
    let vault = bench.vault(); // https://localhost:<port>: vault.test is not its parent
    let err = bench.get(&vault, "s", "", None).await.unwrap_err();
    assert!(
        matches!(&err, GatewayError::PermissionDenied(m) if m.contains("401") && m.contains("https://vault.test") && m.contains("AKV10022")),
        "{err}"
    );
    assert_eq!(bench.asked(), ["https://vault.azure.net"]);
    assert_eq!(bench.fake.requests().len(), 1);
}
