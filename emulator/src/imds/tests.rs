//! Identity endpoint tests: each flavor's request validation, identity
//! selection, minted claims, token caching, scripted answers, latency and
//! rate limits.

use std::sync::OnceLock;

use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::{authority::VerifyError, sample as s};

const VAULT: &str = "https://vault.azure.net";

fn authority() -> Arc<TokenAuthority> {
    static AUTHORITY: OnceLock<Arc<TokenAuthority>> = OnceLock::new();
    AUTHORITY
        .get_or_init(|| Arc::new(TokenAuthority::generate(s::TENANT_ID)))
        .clone()
}

async fn fake(config: ImdsConfig) -> ImdsFake {
    ImdsFake::start(authority(), config).await.unwrap()
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    fn field(&self, name: &str) -> String {
        match &self.json()[name] {
            Value::String(s) => s.clone(),
            other => panic!("{name} is not a string: {other}"),
        }
    }
}

/// A real HTTP GET (or `method`) to `url?query` with `headers`.
async fn call(method: &str, url: &str, query: &str, headers: &[(&str, &str)]) -> Answer {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{url}?{query}"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn imds_get(fake: &ImdsFake, pairs: &[(&str, &str)]) -> Answer {
    call(
        "GET",
        &fake.token_url(),
        &query(pairs),
        &[("Metadata", "true")],
    )
    .await
}

fn vault_query<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut pairs = vec![("api-version", "2018-02-01"), ("resource", VAULT)];
    pairs.extend_from_slice(extra);
    pairs
}

fn claims_of(answer: &Answer, audience: &str) -> crate::Claims {
    authority()
        .verify(&answer.field("access_token"), audience, SystemTime::now())
        .unwrap()
}

#[tokio::test]
async fn imds_answers_string_fields_in_real_order_with_exact_audience() {
    let fake = fake(ImdsConfig::default()).await;
    assert_eq!(
        fake.token_url(),
        format!("{}/metadata/identity/oauth2/token", fake.base_url())
    );
    let answer = imds_get(&fake, &vault_query(&[])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(answer.headers["server"], IMDS_SERVER_HEADER);
    let fields = [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ];
    let mut last = 0;
    for field in fields {
        let at = answer
            .body
            .find(&format!("\"{field}\":\""))
            .unwrap_or_else(|| panic!("{field} missing or not a string: {}", answer.body));
        assert!(at >= last, "{field} out of order: {}", answer.body);
        last = at;
    }
    assert_eq!(answer.json().as_object().unwrap().len(), fields.len());
    assert_eq!(answer.field("resource"), VAULT);
    assert_eq!(answer.field("token_type"), "Bearer");
    assert_eq!(answer.field("client_id"), s::SYSTEM_CLIENT_ID);
    let expires_on: u64 = answer.field("expires_on").parse().unwrap();
    let not_before: u64 = answer.field("not_before").parse().unwrap();
    assert_eq!(expires_on - not_before, 86_700);
    let expires_in: u64 = answer.field("expires_in").parse().unwrap();
    assert!((86_690..=86_700).contains(&expires_in), "{expires_in}");

    let claims = claims_of(&answer, VAULT);
    assert_eq!(claims.appid, s::SYSTEM_CLIENT_ID);
    assert_eq!(claims.oid, s::SYSTEM_OBJECT_ID);
    assert_eq!(claims.xms_mirid, s::VM_RESOURCE_ID);
    assert!(claims.xms_mirid.contains("/resourcegroups/"));
    assert!(matches!(
        authority().verify(
            &answer.field("access_token"),
            "https://vault.azure.net/",
            SystemTime::now()
        ),
        Err(VerifyError::WrongAudience { .. })
    ));

    // A trailing slash is a different audience.
    let slash = imds_get(
        &fake,
        &[
            ("api-version", "2019-08-01"),
            ("resource", "https://vault.azure.net/"),
        ],
    )
    .await;
    assert_eq!(slash.status, 200);
    assert_eq!(
        claims_of(&slash, "https://vault.azure.net/").aud,
        "https://vault.azure.net/"
    );
    assert_eq!(slash.field("resource"), "https://vault.azure.net/");
}

#[tokio::test]
async fn imds_rejects_malformed_requests_like_imds() {
    let fake = fake(ImdsConfig::default()).await;
    let url = fake.token_url();
    let good = query(&vault_query(&[]));
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "no Metadata header",
            good.clone(),
            vec![],
            400,
            "Required metadata header not specified",
        ),
        (
            "Metadata: True",
            good.clone(),
            vec![("Metadata", "True")],
            400,
            "Required metadata header not specified",
        ),
        (
            "Metadata: false",
            good.clone(),
            vec![("Metadata", "false")],
            400,
            "Required metadata header not specified",
        ),
        (
            "X-Forwarded-For",
            good.clone(),
            vec![("Metadata", "true"), ("X-Forwarded-For", "10.0.0.1")],
            400,
            "X-Forwarded-For",
        ),
        (
            "no api-version",
            query(&[("resource", VAULT)]),
            vec![("Metadata", "true")],
            400,
            "api-version",
        ),
        (
            "old api-version",
            query(&[("api-version", "2017-12-01"), ("resource", VAULT)]),
            vec![("Metadata", "true")],
            400,
            "api-version",
        ),
        (
            "malformed api-version",
            query(&[("api-version", "2018-2-1"), ("resource", VAULT)]),
            vec![("Metadata", "true")],
            400,
            "api-version",
        ),
        (
            "impossible date",
            query(&[("api-version", "2019-02-30"), ("resource", VAULT)]),
            vec![("Metadata", "true")],
            400,
            "api-version",
        ),
        (
            "no resource",
            query(&[("api-version", "2018-02-01")]),
            vec![("Metadata", "true")],
            400,
            "resource",
        ),
        (
            "empty resource",
            query(&[("api-version", "2018-02-01"), ("resource", "")]),
            vec![("Metadata", "true")],
            400,
            "resource",
        ),
        (
            "duplicate parameter",
            format!("{good}&resource=https%3A%2F%2Fstorage.azure.com%2F"),
            vec![("Metadata", "true")],
            400,
            "more than once",
        ),
        (
            "two selectors",
            query(&vault_query(&[
                ("client_id", s::USER_CLIENT_ID),
                ("object_id", s::USER_OBJECT_ID),
            ])),
            vec![("Metadata", "true")],
            400,
            "Only one of",
        ),
        (
            "bypass_cache=false",
            query(&vault_query(&[("bypass_cache", "false")])),
            vec![("Metadata", "true")],
            400,
            "bypass_cache",
        ),
    ];
    for (name, q, headers, status, description) in cases {
        let answer = call("GET", &url, &q, &headers).await;
        assert_eq!(answer.status, status, "{name}: {}", answer.body);
        assert_eq!(answer.field("error"), "invalid_request", "{name}");
        assert!(
            answer.field("error_description").contains(description),
            "{name}: {}",
            answer.body
        );
    }
    let post = call("POST", &url, &good, &[("Metadata", "true")]).await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET");
    assert_eq!(post.field("error"), "method_not_allowed");
    let elsewhere = call(
        "GET",
        &format!("{}/metadata/instance", fake.base_url()),
        "api-version=2021-02-01",
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(elsewhere.status, 404);
    // Every one was recorded with the status sent, in order.
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.len(), 15);
    assert!(statuses[..13].iter().all(|s| *s == 400));
    assert_eq!(&statuses[13..], &[405, 404]);
    assert_eq!(fake.token_requests(), 14);
}

#[tokio::test]
async fn imds_selects_identities_like_imds() {
    let fake = fake(ImdsConfig::default()).await;
    let lower_res_id = s::USER_RESOURCE_ID.to_lowercase();
    for selector in [
        ("client_id", s::USER_CLIENT_ID),
        ("client_id", &s::USER_CLIENT_ID.to_uppercase()),
        ("object_id", s::USER_OBJECT_ID),
        ("msi_res_id", s::USER_RESOURCE_ID),
        ("mi_res_id", &lower_res_id),
    ] {
        let answer = imds_get(&fake, &vault_query(&[selector])).await;
        assert_eq!(answer.status, 200, "{selector:?}: {}", answer.body);
        assert_eq!(answer.field("client_id"), s::USER_CLIENT_ID);
        let claims = claims_of(&answer, VAULT);
        assert_eq!(claims.appid, s::USER_CLIENT_ID);
        assert_eq!(claims.oid, s::USER_OBJECT_ID);
        assert_eq!(claims.xms_mirid, s::USER_RESOURCE_ID);
    }
    for selector in [
        ("client_id", s::SYSTEM_CLIENT_ID),
        ("object_id", "00000000-0000-0000-0000-000000000000"),
        ("client_id", ""),
        ("msi_res_id", "/subscriptions/x/resourceGroups/y/providers/Microsoft.ManagedIdentity/userAssignedIdentities/other"),
    ] {
        let answer = imds_get(&fake, &vault_query(&[selector])).await;
        assert_eq!(answer.status, 400, "{selector:?}");
        assert_eq!(
            answer.json(),
            serde_json::json!({"error":"invalid_request","error_description":"Identity not found"})
        );
    }

    let second = UserAssigned {
        principal: Principal {
            client_id: "0d7a3c9e-5b41-4f6e-9c2d-8e1f0a3b4c5d".into(),
            object_id: "1e8b4daf-6c52-4a7f-8d3e-9f2a1b4c5d6e".into(),
            mirid: "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/two".into(),
        },
        resource_id: "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/two".into(),
    };
    let several = fake_with(IdentitySet {
        system: None,
        user_assigned: vec![s::user_assigned(), second.clone()],
    })
    .await;
    let answer = imds_get(&several, &vault_query(&[])).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.field("error_description"), MULTIPLE_USER_ASSIGNED);
    let answer = imds_get(
        &several,
        &vault_query(&[("client_id", &second.principal.client_id)]),
    )
    .await;
    assert_eq!(claims_of(&answer, VAULT).oid, second.principal.object_id);

    let only_user = fake_with(IdentitySet {
        system: None,
        user_assigned: vec![second.clone()],
    })
    .await;
    let answer = imds_get(&only_user, &vault_query(&[])).await;
    assert_eq!(answer.field("client_id"), second.principal.client_id);

    let none = fake_with(IdentitySet::default()).await;
    let answer = imds_get(&none, &vault_query(&[])).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.field("error_description"), "Identity not found");
}

async fn fake_with(identities: IdentitySet) -> ImdsFake {
    fake(ImdsConfig {
        identities,
        ..ImdsConfig::default()
    })
    .await
}

#[tokio::test]
async fn unknown_resources_get_entra_invalid_resource() {
    let fake = fake(ImdsConfig {
        known_resources: Some(vec![VAULT.into(), "https://storage.azure.com/".into()]),
        ..ImdsConfig::default()
    })
    .await;
    for resource in [
        VAULT,
        "https://vault.azure.net/",
        "https://storage.azure.com/",
    ] {
        let answer = imds_get(
            &fake,
            &[("api-version", "2018-02-01"), ("resource", resource)],
        )
        .await;
        assert_eq!(answer.status, 200, "{resource}");
        assert_eq!(claims_of(&answer, resource).aud, resource);
    }
    let answer = imds_get(
        &fake,
        &[
            ("api-version", "2018-02-01"),
            ("resource", "https://evil.example"),
        ],
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.field("error"), "invalid_resource");
    let description = answer.field("error_description");
    assert!(description.starts_with("AADSTS500011: The resource principal named https://evil.example was not found in the tenant named dc822496-97fa-4380-991a-c8b4ba5d4f73."), "{description}");
}

#[tokio::test]
async fn tokens_are_cached_per_identity_and_resource() {
    let fake = fake(ImdsConfig::default()).await;
    let first = imds_get(&fake, &vault_query(&[])).await;
    let again = imds_get(&fake, &vault_query(&[])).await;
    assert_eq!(first.field("access_token"), again.field("access_token"));
    assert_eq!(first.field("expires_on"), again.field("expires_on"));
    let user = imds_get(&fake, &vault_query(&[("client_id", s::USER_CLIENT_ID)])).await;
    assert_ne!(first.field("access_token"), user.field("access_token"));
    let bypass = imds_get(&fake, &vault_query(&[("bypass_cache", "true")])).await;
    assert_ne!(first.field("access_token"), bypass.field("access_token"));
    fake.clear_token_cache();
    let fresh = imds_get(&fake, &vault_query(&[])).await;
    assert_ne!(bypass.field("access_token"), fresh.field("access_token"));
    fake.set_token_caching(false);
    let uncached = imds_get(&fake, &vault_query(&[])).await;
    let uncached_again = imds_get(&fake, &vault_query(&[])).await;
    assert_ne!(fresh.field("access_token"), uncached.field("access_token"));
    assert_ne!(
        uncached.field("access_token"),
        uncached_again.field("access_token")
    );
    fake.set_token_caching(true);
    let cached = imds_get(&fake, &vault_query(&[])).await;
    let cached_again = imds_get(&fake, &vault_query(&[])).await;
    assert_eq!(
        cached.field("access_token"),
        cached_again.field("access_token")
    );
}

#[tokio::test]
async fn scripted_answers_come_first_in_order() {
    let fake = fake(ImdsConfig::default()).await;
    fake.script([
        ScriptedResponse::status(410),
        ScriptedResponse::throttled(3),
        ScriptedResponse::status(503),
        ScriptedResponse::body(200, "this is not json"),
        ScriptedResponse::status(200),
    ]);
    let gone = imds_get(&fake, &vault_query(&[])).await;
    assert_eq!(gone.status, 410);
    assert_eq!(gone.headers["server"], IMDS_SERVER_HEADER);
    assert_eq!(gone.field("error"), "service_unavailable");
    let throttled = imds_get(&fake, &vault_query(&[])).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.headers["retry-after"], "3");
    assert_eq!(throttled.field("error"), "too_many_requests");
    // Scripted answers do not depend on the request being valid.
    let unavailable = call("GET", &fake.token_url(), "", &[]).await;
    assert_eq!(unavailable.status, 503);
    assert!(unavailable.headers.get("retry-after").is_none());
    let garbage = imds_get(&fake, &vault_query(&[])).await;
    assert_eq!(
        (garbage.status, garbage.body.as_str()),
        (200, "this is not json")
    );
    // A bodiless 2xx means "answer normally", and so does an empty script.
    for _ in 0..2 {
        let normal = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(normal.status, 200);
        claims_of(&normal, VAULT);
    }
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [410, 429, 503, 200, 200, 200]);
    assert_eq!(fake.token_requests(), 6);
    assert_eq!(fake.throttled(), 0, "scripted 429s are not the limiter's");
}

#[tokio::test]
async fn requests_are_recorded_with_secrets_redacted() {
    let secret = "4ec1a0b6-70d3-4c68-a1c9-3f3d0c5b8e21";
    let fake = fake(ImdsConfig {
        flavor: Flavor::AppService {
            header_secret: secret.into(),
        },
        ..ImdsConfig::default()
    })
    .await;
    let q = query(&[("api-version", "2019-08-01"), ("resource", VAULT)]);
    call(
        "GET",
        &fake.token_url(),
        &q,
        &[
            ("X-IDENTITY-HEADER", secret),
            ("X-Forwarded-For", "10.1.1.1"),
        ],
    )
    .await;
    call(
        "GET",
        &fake.token_url(),
        &q,
        &[("x-identity-header", "guess")],
    )
    .await;
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/msi/token");
    assert_eq!(requests[0].query_value("resource"), Some(VAULT));
    assert_eq!(
        requests[0].header("X-IDENTITY-HEADER"),
        Some(REDACTED_MATCHING)
    );
    assert_eq!(requests[0].header("x-forwarded-for"), Some("10.1.1.1"));
    assert_eq!(requests[0].status, 200);
    assert_eq!(
        requests[1].header("x-identity-header"),
        Some(REDACTED_WRONG)
    );
    assert_eq!(requests[1].status, 401);
    let debug = format!("{requests:?} {:?}", fake.flavor());
    assert!(!debug.contains(secret), "{debug}");
}

#[tokio::test]
async fn app_service_flavor_speaks_2019_08_01() {
    let secret = "8a1f2c3d-4e5f-4a6b-9c7d-0e1f2a3b4c5d";
    let fake = fake(ImdsConfig {
        flavor: Flavor::AppService {
            header_secret: secret.into(),
        },
        ..ImdsConfig::default()
    })
    .await;
    assert_eq!(fake.token_url(), format!("{}/msi/token", fake.base_url()));
    let auth = [("X-IDENTITY-HEADER", secret)];
    let q = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("api-version", "2019-08-01"), ("resource", VAULT)];
        pairs.extend_from_slice(extra);
        query(&pairs)
    };
    let answer = call("GET", &fake.token_url(), &q(&[]), &auth).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json().as_object().unwrap().len(),
        5,
        "{}",
        answer.body
    );
    let order = [
        "access_token",
        "expires_on",
        "resource",
        "token_type",
        "client_id",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|f| answer.body.find(&format!("\"{f}\":\"")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", answer.body);
    assert_eq!(answer.field("client_id"), s::SYSTEM_CLIENT_ID);
    assert_eq!(claims_of(&answer, VAULT).oid, s::SYSTEM_OBJECT_ID);
    assert!(answer.headers.get("server").is_none());
    // The uppercase path the platform also uses.
    let upper = call(
        "GET",
        &format!("{}/MSI/token", fake.base_url()),
        &q(&[]),
        &auth,
    )
    .await;
    assert_eq!(upper.status, 200);

    for selector in [
        ("client_id", s::USER_CLIENT_ID),
        ("principal_id", s::USER_OBJECT_ID),
        ("object_id", s::USER_OBJECT_ID),
        ("mi_res_id", s::USER_RESOURCE_ID),
    ] {
        let answer = call("GET", &fake.token_url(), &q(&[selector]), &auth).await;
        assert_eq!(answer.status, 200, "{selector:?}: {}", answer.body);
        assert_eq!(
            claims_of(&answer, VAULT).oid,
            s::USER_OBJECT_ID,
            "{selector:?}"
        );
    }
    let unknown = call(
        "GET",
        &fake.token_url(),
        &q(&[("client_id", "0d7a3c9e-5b41-4f6e-9c2d-8e1f0a3b4c5d")]),
        &auth,
    )
    .await;
    assert_eq!(unknown.status, 400);
    let body = unknown.json();
    assert_eq!(body["statusCode"], 400);
    assert_eq!(
        body["message"],
        "Unable to load the proper Managed Identity."
    );
    assert!(uuid::Uuid::parse_str(body["correlationId"].as_str().unwrap()).is_ok());

    let missing = call("GET", &fake.token_url(), &q(&[]), &[("Metadata", "true")]).await;
    assert_eq!(missing.status, 400);
    let wrong = call(
        "GET",
        &fake.token_url(),
        &q(&[]),
        &[("X-IDENTITY-HEADER", "nope")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["statusCode"], 401);
    let old = call(
        "GET",
        &fake.token_url(),
        &query(&[("api-version", "2017-09-01"), ("resource", VAULT)]),
        &auth,
    )
    .await;
    assert_eq!(old.status, 400);
    let two = call(
        "GET",
        &fake.token_url(),
        &q(&[
            ("client_id", s::USER_CLIENT_ID),
            ("principal_id", s::USER_OBJECT_ID),
        ]),
        &auth,
    )
    .await;
    assert_eq!(two.status, 400);

    let no_system = fake_app_service_without_system(secret).await;
    let answer = call("GET", &no_system.token_url(), &q(&[]), &auth).await;
    assert_eq!(answer.status, 400);
    assert_eq!(
        answer.json()["message"],
        "Unable to load the proper Managed Identity."
    );
}

async fn fake_app_service_without_system(secret: &str) -> ImdsFake {
    fake(ImdsConfig {
        identities: IdentitySet {
            system: None,
            user_assigned: vec![s::user_assigned()],
        },
        flavor: Flavor::AppService {
            header_secret: secret.into(),
        },
        ..ImdsConfig::default()
    })
    .await
}

#[tokio::test]
async fn legacy_msi_flavor_answers_imds_json_with_refresh_token() {
    let fake = fake(ImdsConfig {
        flavor: Flavor::LegacyMsi,
        ..ImdsConfig::default()
    })
    .await;
    assert_eq!(
        fake.token_url(),
        format!("{}/oauth2/token", fake.base_url())
    );
    let answer = call(
        "GET",
        &fake.token_url(),
        &query(&[("resource", VAULT)]),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.field("refresh_token"), "");
    for field in [
        "expires_in",
        "expires_on",
        "not_before",
        "resource",
        "token_type",
    ] {
        answer.field(field);
    }
    assert_eq!(claims_of(&answer, VAULT).oid, s::SYSTEM_OBJECT_ID);
    let user = call(
        "GET",
        &fake.token_url(),
        &query(&[("resource", VAULT), ("object_id", s::USER_OBJECT_ID)]),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(claims_of(&user, VAULT).oid, s::USER_OBJECT_ID);
    let no_header = call(
        "GET",
        &fake.token_url(),
        &query(&[("resource", VAULT)]),
        &[],
    )
    .await;
    assert_eq!(no_header.status, 400);
    assert_eq!(no_header.field("error"), "bad_request_102");
    assert_eq!(
        no_header.field("error_description"),
        "Required metadata header not specified"
    );
    let imds_path = call(
        "GET",
        &format!("{}{IMDS_TOKEN_PATH}", fake.base_url()),
        &query(&[("resource", VAULT)]),
        &[("Metadata", "true")],
    )
    .await;
    assert_eq!(imds_path.status, 404);
}

/// Drives the router in-process, so tokio's paused clock governs the
/// rate limiter's window and the latency.
async fn oneshot(shared: &Arc<Shared>) -> u16 {
    let request = Request::builder()
        .uri(format!(
            "{IMDS_TOKEN_PATH}?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
        ))
        .header("Metadata", "true")
        .body(Body::empty())
        .unwrap();
    router(shared.clone())
        .oneshot(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn limited_shared() -> (Arc<Shared>, ImdsFakeProbe) {
    let shared = Arc::new(Shared::new(authority(), ImdsConfig::default()));
    shared.lock().limits = Some(RateLimits::IMDS);
    (shared.clone(), ImdsFakeProbe(shared))
}

/// The handle's accessors, for a router driven without a server.
struct ImdsFakeProbe(Arc<Shared>);

impl ImdsFakeProbe {
    fn throttled(&self) -> usize {
        self.0.lock().throttled
    }
    fn statuses(&self) -> Vec<u16> {
        self.0.log.snapshot().iter().map(|r| r.status).collect()
    }
}

#[tokio::test(start_paused = true)]
async fn more_than_20_per_second_are_throttled() {
    let (shared, probe) = limited_shared();
    for _ in 0..20 {
        assert_eq!(oneshot(&shared).await, 200);
    }
    assert_eq!(oneshot(&shared).await, 429);
    assert_eq!(probe.throttled(), 1);
    tokio::time::advance(RATE_WINDOW - Duration::from_millis(1)).await;
    assert_eq!(oneshot(&shared).await, 429, "still within the window");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        oneshot(&shared).await,
        200,
        "the first requests left the window"
    );
    assert_eq!(probe.throttled(), 2);
    let statuses = probe.statuses();
    assert_eq!(statuses.len(), 23);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2);
}

#[tokio::test(start_paused = true)]
async fn more_than_5_in_flight_are_throttled() {
    let (shared, probe) = limited_shared();
    shared.lock().latency = Duration::from_millis(200);
    let statuses = futures::future::join_all((0..7).map(|_| oneshot(&shared))).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(probe.throttled(), 2);
    // A throttled request answers at once, so the 6th is gone before
    // the 7th arrives: 5 held plus 1 being refused.
    assert_eq!(shared.lock().max_concurrent_seen, 6);
    assert_eq!(shared.lock().in_flight, 0);
    // Once they finished, there is room again.
    assert_eq!(oneshot(&shared).await, 200);
}

#[tokio::test]
async fn limits_and_latency_over_real_http() {
    let fake = fake(ImdsConfig::default()).await;
    // No room at all: every request is the limiter's.
    fake.set_rate_limits(Some(RateLimits {
        per_second: 1000,
        concurrent: 0,
    }));
    for _ in 0..2 {
        let answer = imds_get(&fake, &vault_query(&[])).await;
        assert_eq!(answer.status, 429);
        assert_eq!(answer.field("error"), "too_many_requests");
    }
    assert_eq!(fake.throttled(), 2);
    assert_eq!(fake.max_concurrent_seen(), 1);
    fake.set_rate_limits(None);
    fake.set_latency(Duration::from_millis(100));
    let started = std::time::Instant::now();
    assert_eq!(imds_get(&fake, &vault_query(&[])).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(fake.throttled(), 2);
}

#[test]
fn api_versions() {
    for ok in [
        "2018-02-01",
        "2019-08-01",
        "2021-12-13",
        "2023-07-01",
        "2030-01-31",
    ] {
        assert!(is_supported_imds_api_version(ok), "{ok}");
    }
    for bad in [
        "2017-12-01",
        "2018-01-31",
        "2018-02-1",
        "20180201",
        "2019-13-01",
        "2019-02-29",
        "abcd-ef-gh",
        "",
        "2018-02-01 ",
    ] {
        assert!(!is_supported_imds_api_version(bad), "{bad}");
    }
}
