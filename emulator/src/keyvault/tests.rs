//! Key Vault fake tests: routing, api-versions, the 401 challenge and token
//! checks, RBAC and access policies, versions and paging.

use super::*;
use crate::front_door::{
    testing::{Kit, OID, OTHER_OID},
    Fault,
};

async fn vault(kit: &Kit) -> KeyVaultFake {
    KeyVaultFake::start(
        Arc::clone(&kit.authority),
        &kit.ca,
        VaultSettings::new("myvault"),
    )
    .await
    .unwrap()
}

async fn get(
    kit: &Kit,
    url: String,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = kit.http.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn token_less_and_wrong_audience_requests_get_the_challenge() {
    let kit = Kit::new();
    let fake = vault(&kit).await;
    let url = format!("{}/secrets/s?api-version=7.5", fake.vault_url());
    let (status, headers, body) = get(&kit, url.clone(), None).await;
    assert_eq!(status, 401);
    assert_eq!(
        headers["www-authenticate"],
        "Bearer authorization=\"https://login.windows.net/dc822496-97fa-4380-991a-c8b4ba5d4f73\", resource=\"https://vault.azure.net\""
    );
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert_eq!(
        body["error"]["message"],
        "AKV10000: Request is missing a Bearer or PoP token."
    );
    let storage = kit.token_for(OID, "https://storage.azure.com/");
    let (status, headers, body) = get(&kit, url.clone(), Some(&storage)).await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("AKV10022: Invalid audience"),
        "{message}"
    );
    let expired = kit.expired_token(KEY_VAULT_AUDIENCE);
    assert_eq!(get(&kit, url, Some(&expired)).await.0, 401);
    let log = fake.requests();
    assert_eq!(log.len(), 3);
    assert!(!log[0].bearer);
    assert_eq!(
        log[1].audience.as_deref(),
        Some("https://storage.azure.com/")
    );
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let kit = Kit::new();
    let fake = vault(&kit).await;
    let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
    for query in ["", "?api-version=6.0", "?api-version=latest"] {
        let (status, _, body) = get(
            &kit,
            format!("{}/secrets/s{query}", fake.vault_url()),
            Some(&token),
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(body["error"]["code"], "BadParameter");
    }
}

#[tokio::test]
async fn secrets_are_served_by_name_and_version_case_insensitively() {
    let kit = Kit::new();
    let fake = vault(&kit).await;
    let v1 = fake.set_secret("Db-Password", SecretSpec::new("one"));
    let v2 = fake.set_secret(
        "db-password",
        SecretSpec::new("two")
            .content_type("text/plain")
            .tag("env", "test")
            .not_before(1_493_938_400)
            .expires(1_893_456_000),
    );
    assert_eq!(v1.len(), 32);
    let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
    let base = fake.vault_url();
    for path in ["/secrets/DB-PASSWORD", "/secrets/db-password/"] {
        let (status, _, body) =
            get(&kit, format!("{base}{path}?api-version=7.6"), Some(&token)).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["value"], "two");
        assert_eq!(body["id"], format!("{base}/secrets/Db-Password/{v2}"));
        assert_eq!(body["contentType"], "text/plain");
        assert_eq!(body["tags"]["env"], "test");
        assert_eq!(body["attributes"]["nbf"], 1_493_938_400);
        assert_eq!(body["attributes"]["exp"], 1_893_456_000);
        assert_eq!(body["attributes"]["enabled"], true);
        assert_eq!(body["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert!(body["attributes"]["created"].as_u64().unwrap() > 1_600_000_000);
        assert!(body.get("kid").is_none() && body.get("managed").is_none());
    }
    let (status, _, body) = get(
        &kit,
        format!("{base}/secrets/db-password/{v1}?api-version=7.4"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], "one");
    assert!(body.get("contentType").is_none() && body.get("tags").is_none());

    let (status, _, body) = get(
        &kit,
        format!("{base}/secrets/db-password/versions?api-version=7.5&maxresults=1"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert!(body["value"][0].get("value").is_none());
    let next = body["nextLink"].as_str().unwrap().to_string();
    let (_, _, body) = get(&kit, next, Some(&token)).await;
    assert_eq!(
        body["value"][0]["id"],
        format!("{base}/secrets/Db-Password/{v2}")
    );
    assert!(body["nextLink"].is_null());
}

#[tokio::test]
async fn refusals_use_the_services_codes_and_messages() {
    let kit = Kit::new();
    let fake = vault(&kit).await;
    fake.set_secret("old", SecretSpec::new("x").disabled());
    let cert = fake.set_secret("cert", SecretSpec::new("pfx").certificate_backed());
    let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
    let base = fake.vault_url();
    let url = |path: &str| format!("{base}{path}?api-version=7.5");

    let (status, _, body) = get(&kit, url("/secrets/missing"), Some(&token)).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("A secret with (name/id) missing was not found in this key vault."));

    let (status, _, body) = get(&kit, url("/secrets/old"), Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["innererror"]["code"], "SecretDisabled");

    let (_, _, body) = get(&kit, url("/secrets/cert"), Some(&token)).await;
    assert_eq!(body["managed"], true);
    assert_eq!(body["kid"], format!("{base}/keys/cert/{cert}"));

    let (status, _, body) = get(&kit, url("/secrets/bad_name"), Some(&token)).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "BadParameter");

    fake.set_grant(Grant::only([OTHER_OID]));
    let (status, _, body) = get(&kit, url("/secrets/cert"), Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "ForbiddenByRbac");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!(";oid={OID};")), "{message}");
    assert!(message.contains("Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'"));
    fake.set_access_model(AccessModel::AccessPolicy);
    let (status, _, body) = get(&kit, url("/secrets/cert"), Some(&token)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["innererror"]["code"], "AccessDenied");
    assert!(body["error"]["message"].as_str().unwrap().contains(
        "does not have secrets get permission on key vault 'myvault;location=westeurope'"
    ));
    let other = kit.token_for(OTHER_OID, KEY_VAULT_AUDIENCE);
    assert_eq!(get(&kit, url("/secrets/cert"), Some(&other)).await.0, 200);
}

#[tokio::test]
async fn scripted_throttling_answers_429_with_retry_after_then_serves() {
    let kit = Kit::new();
    let fake = vault(&kit).await;
    fake.set_secret("s", SecretSpec::new("v"));
    fake.faults().push([Fault::throttle(3)]);
    let token = kit.token_for(OID, KEY_VAULT_AUDIENCE);
    let url = format!("{}/secrets/s?api-version=7.5", fake.vault_url());
    let (status, headers, body) = get(&kit, url.clone(), Some(&token)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(body["error"]["code"], "Throttled");
    assert_eq!(get(&kit, url, Some(&token)).await.0, 200);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
}

#[test]
fn routes_accept_the_trailing_slash_form() {
    assert!(matches!(route("/secrets/a"), Some(Route::Latest("a"))));
    assert!(matches!(route("/secrets/a/"), Some(Route::Latest("a"))));
    assert!(matches!(
        route("/secrets/a/0123"),
        Some(Route::Version("a", "0123"))
    ));
    assert!(matches!(
        route("/secrets/a/versions"),
        Some(Route::ListVersions("a"))
    ));
    assert!(matches!(route("/secrets"), Some(Route::ListSecrets)));
    assert!(route("/keys/a").is_none());
    assert!(route("/secrets/a/b/c").is_none());
}

#[test]
fn api_versions_follow_the_service_list() {
    for ok in [
        "7.4",
        "7.5",
        "7.6",
        "2025-07-01",
        "2026-04-01",
        "7.6-preview.2",
        "2025-06-01-preview",
        "2026-03-01-preview",
    ] {
        assert!(supported_api_version(ok), "{ok}");
    }
    for bad in [
        "",
        "7",
        "8.0",
        "7.x",
        "2025-07-01x",
        "latest",
        "7.6-preview.",
    ] {
        assert!(!supported_api_version(bad), "{bad}");
    }
}

#[test]
fn skiptokens_round_trip_and_reject_garbage() {
    assert_eq!(decode_skiptoken(&encode_skiptoken(50)), Some(50));
    assert_eq!(decode_skiptoken("!!"), None);
}
