//! ARM fake tests: authentication codes and challenges, api-versions, RBAC,
//! resource groups, listServiceSas signatures and scripted throttling.

use super::*;
use crate::authority::Principal;
use axum::body::Body;
use std::time::{Duration, SystemTime};
use tower::ServiceExt;

const OID: &str = "6a8f3c2e-1111-4222-8333-944455556666";
const OTHER_OID: &str = "0b0b0b0b-2222-4333-8444-955566667777";

fn principal(oid: &str) -> Principal {
    Principal {
        client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
        object_id: oid.into(),
        mirid: "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
            .into(),
    }
}

struct Harness {
    shared: Arc<Shared>,
    authority: Arc<TokenAuthority>,
}

impl Harness {
    fn new() -> Self {
        let authority = Arc::new(TokenAuthority::generate(
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
        ));
        let shared = Arc::new(Shared {
            authority: Arc::clone(&authority),
            data: Mutex::new(Data::default()),
            faults: FaultScript::default(),
            log: RequestLog::default(),
        });
        let h = Self { shared, authority };
        {
            let mut data = h.shared.data();
            let sub = data
                .subscriptions
                .entry(SAMPLE_SUBSCRIPTION_ID.into())
                .or_default();
            sub.groups.insert(
                SAMPLE_RESOURCE_GROUP.into(),
                ResourceGroup::new(SAMPLE_RESOURCE_GROUP, "eastus").tag("env", "test"),
            );
            sub.accounts.insert(
                (SAMPLE_RESOURCE_GROUP.into(), AZURITE_ACCOUNT.into()),
                StorageAccount {
                    name: AZURITE_ACCOUNT.into(),
                    keys: [
                        BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap(),
                        BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap(),
                    ],
                },
            );
            data.grants.push(Grant {
                object_id: OID.into(),
                action: "*".into(),
                scope: format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}"),
            });
        }
        h
    }

    fn token(&self, oid: &str, audience: &str) -> String {
        self.authority
            .mint(
                &principal(oid),
                audience,
                SystemTime::now(),
                Duration::from_secs(3600),
            )
            .0
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, serde_json::Value) {
        let mut request = axum::http::Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = router(Arc::clone(&self.shared))
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn rg_path(name: &str) -> String {
    format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourcegroups/{name}?api-version=2021-04-01")
}

#[tokio::test]
async fn resource_group_is_served_case_insensitively() {
    let h = Harness::new();
    let token = h.token(OID, "https://management.azure.com/");
    let path = format!(
        "/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/EMULATOR-RG?api-version=2021-04-01"
    );
    let (status, headers, body) = h.call(Method::GET, &path, Some(&token), "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "emulator-rg");
    assert_eq!(body["location"], "eastus");
    assert_eq!(body["tags"]["env"], "test");
    assert_eq!(body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(
        body["id"],
        format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/emulator-rg")
    );
    assert!(headers.contains_key("x-ms-request-id"));
    let recorded = h.shared.log.snapshot();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].path,
        format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/EMULATOR-RG")
    );
    assert_eq!(recorded[0].query.as_deref(), Some("api-version=2021-04-01"));
    assert_eq!(recorded[0].token_oid.as_deref(), Some(OID));
    assert_eq!(recorded[0].status, 200);
}

#[tokio::test]
async fn missing_group_subscription_and_api_version() {
    let h = Harness::new();
    let token = h.token(OID, "https://management.azure.com/");
    let (status, _, body) = h
        .call(Method::GET, &rg_path("nope"), Some(&token), "")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceGroupNotFound");
    assert_eq!(
        body["error"]["message"],
        "Resource group 'nope' could not be found."
    );

    let path = format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourcegroups/emulator-rg");
    let (status, _, body) = h.call(Method::GET, &path, Some(&token), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");

    let (status, _, body) = h
        .call(
            Method::GET,
            &format!("{path}?api-version=latest"),
            Some(&token),
            "",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "InvalidApiVersionParameter");
}

#[tokio::test]
async fn tokens_are_checked_like_arm() {
    let h = Harness::new();
    let (status, headers, body) = h.call(Method::GET, &rg_path("emulator-rg"), None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "AuthenticationFailed");
    let challenge = headers[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(
        challenge.starts_with(
            "Bearer authorization_uri=\"https://login.windows.net/\", error=\"invalid_token\""
        ),
        "{challenge}"
    );

    let storage = h.token(OID, "https://storage.azure.com/");
    let (status, _, body) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&storage), "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'https://storage.azure.com/'"));

    let (expired, _) = h.authority.mint(
        &principal(OID),
        "https://management.azure.com/",
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(3600),
    );
    let (status, _, body) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&expired), "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "ExpiredAuthenticationToken");

    let foreign = TokenAuthority::generate("72f988bf-86f1-41af-91ab-2d7cd011db47")
        .mint(
            &principal(OID),
            "https://management.azure.com/",
            SystemTime::now(),
            Duration::from_secs(3600),
        )
        .0;
    let (status, _, body) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&foreign), "")
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");

    // Both documented audiences work.
    let legacy = h.token(OID, "https://management.core.windows.net/");
    let (status, _, _) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&legacy), "")
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn rbac_is_by_object_id_with_arms_message() {
    let h = Harness::new();
    let token = h.token(OTHER_OID, "https://management.azure.com/");
    let (status, _, body) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&token), "")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "AuthorizationFailed");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("with object id '{OTHER_OID}'")),
        "{message}"
    );
    assert!(message.contains(ACTION_READ_RESOURCE_GROUP), "{message}");
    assert!(
        message.contains(&format!(
            "over scope '/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/emulator-rg'"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn scripted_throttling_comes_first() {
    let h = Harness::new();
    h.shared.faults.push([Fault::throttled(7)]);
    let token = h.token(OID, "https://management.azure.com/");
    let (status, headers, body) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&token), "")
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "7");
    assert_eq!(body["error"]["code"], "TooManyRequests");
    let (status, _, _) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&token), "")
        .await;
    assert_eq!(status, StatusCode::OK);
}

fn sas_path(account: &str, casing: &str) -> String {
    format!(
        "/subscriptions/{SAMPLE_SUBSCRIPTION_ID}/resourceGroups/emulator-rg/providers/Microsoft.Storage/storageAccounts/{account}/{casing}?api-version=2023-05-01"
    )
}

#[tokio::test]
async fn list_service_sas_signs_with_the_account_key() {
    let h = Harness::new();
    let token = h.token(OID, "https://management.azure.com/");
    let body = json!({
        "canonicalizedResource": "/blob/devstoreaccount1/music/song.mp3",
        "signedResource": "b",
        "signedPermission": "rw",
        "signedProtocol": "https",
        "signedExpiry": "2030-05-24T11:32:48.8457197Z",
        "signedStart": "2030-05-24T10:00:00Z",
        "signedIp": "10.0.0.1-10.0.0.9"
    })
    .to_string();
    for casing in ["listServiceSas", "ListServiceSas"] {
        let (status, _, answer) = h
            .call(
                Method::POST,
                &sas_path("devstoreaccount1", casing),
                Some(&token),
                &body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let sas = answer["serviceSasToken"].as_str().unwrap();
        assert!(!sas.starts_with('?'));
        let pairs: HashMap<String, String> = url::form_urlencoded::parse(sas.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(pairs["sv"], SAS_VERSION);
        assert_eq!(pairs["sr"], "b");
        assert_eq!(pairs["sp"], "rw");
        assert_eq!(pairs["se"], "2030-05-24T11:32:48Z");
        assert_eq!(pairs["st"], "2030-05-24T10:00:00Z");
        assert_eq!(pairs["sip"], "10.0.0.1-10.0.0.9");
        assert_eq!(pairs["spr"], "https");
        // Recompute the signature from the documented 16-line layout.
        let sts = format!(
            "rw\n2030-05-24T10:00:00Z\n2030-05-24T11:32:48Z\n/blob/devstoreaccount1/music/song.mp3\n\n10.0.0.1-10.0.0.9\nhttps\n{SAS_VERSION}\nb\n\n\n\n\n\n\n"
        );
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&BASE64.decode(AZURITE_ACCOUNT_KEY).unwrap()).unwrap();
        mac.update(sts.as_bytes());
        assert_eq!(pairs["sig"], BASE64.encode(mac.finalize().into_bytes()));
        assert!(sas.contains("se=2030-05-24T11%3A32%3A48Z"), "{sas}");
    }
}

#[tokio::test]
async fn list_service_sas_checks_rbac_body_and_account() {
    let h = Harness::new();
    let token = h.token(OID, "https://management.azure.com/");
    let good = json!({"canonicalizedResource": "/blob/devstoreaccount1/c", "signedResource": "c",
                      "signedPermission": "rl", "signedExpiry": "2030-01-01T00:00:00Z"});
    let (status, _, body) = h
        .call(
            Method::POST,
            &sas_path("missing", "listServiceSas"),
            Some(&token),
            &good.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ResourceNotFound");

    let (status, _, body) = h
        .call(
            Method::POST,
            &sas_path("devstoreaccount1", "listServiceSas"),
            Some(&token),
            "{",
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "InvalidRequestContent");

    let wrong_account = json!({"canonicalizedResource": "/blob/other/c", "signedResource": "c",
                               "signedPermission": "r", "signedExpiry": "2030-01-01T00:00:00Z"});
    let (status, _, body) = h
        .call(
            Method::POST,
            &sas_path("devstoreaccount1", "listServiceSas"),
            Some(&token),
            &wrong_account.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "InvalidValuesForRequestParameters");

    let reader_only = h.token(OTHER_OID, "https://management.azure.com/");
    h.shared.data().grants.push(Grant {
        object_id: OTHER_OID.into(),
        action: ACTION_READ_RESOURCE_GROUP.into(),
        scope: format!("/subscriptions/{SAMPLE_SUBSCRIPTION_ID}").to_ascii_lowercase(),
    });
    let (status, _, body) = h
        .call(
            Method::POST,
            &sas_path("devstoreaccount1", "listServiceSas"),
            Some(&reader_only),
            &good.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(ACTION_LIST_SERVICE_SAS));
    let (status, _, _) = h
        .call(Method::GET, &rg_path("emulator-rg"), Some(&reader_only), "")
        .await;
    assert_eq!(status, StatusCode::OK);
}
