//! ReadBlob, GetServiceSas and GetResourceGroup through the socket: against
//! Azurite (the real Storage peer: it checks bearer tokens, user delegation
//! keys and SAS signatures) and against the ARM fake.

#[path = "support/azurite.rs"]
mod azurite;

use std::time::Duration;

use azurite::Azurite;
use identity_gateway::config::Config;
use identity_gateway_client::{proto, Identity};
use identity_gateway_emulator::{
    arm::{self, ArmFake, Fault, ResourceGroup, AZURITE_ACCOUNT},
    sample,
};
use tonic::Code;

use crate::common::{read_blob, TestEnv, TestGateway};

const STORAGE: &str = "https://storage.azure.com/";
const X_MS_VERSION: &str = "2025-11-05";

/// A plain HTTPS client (no gateway, no token) that trusts the test CA.
fn plain_client(env: &TestEnv) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(env.ca.ca_pem().as_bytes()).unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

/// Creates `container` in Azurite with a Storage token from the gateway.
async fn create_container(env: &TestEnv, gw: &TestGateway, azurite: &Azurite, container: &str) {
    let token = gw.client.get_token(STORAGE).await.unwrap();
    let created = plain_client(env)
        .put(format!(
            "{}/{container}?restype=container",
            azurite.endpoint()
        ))
        .bearer_auth(token.secret())
        .header("x-ms-version", X_MS_VERSION)
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success() || created.status().as_u16() == 409,
        "create container: {}",
        created.status()
    );
}

/// Creates `container` and uploads `blob` with a Storage token from the
/// gateway, like any app on the VM would.
async fn seed_blob(
    env: &TestEnv,
    gw: &TestGateway,
    azurite: &Azurite,
    container: &str,
    blob: &str,
    content: &[u8],
    content_type: &str,
) {
    create_container(env, gw, azurite, container).await;
    let token = gw.client.get_token(STORAGE).await.unwrap();
    let uploaded = plain_client(env)
        .put(format!("{}/{container}/{blob}", azurite.endpoint()))
        .bearer_auth(token.secret())
        .header("x-ms-version", X_MS_VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .header("content-type", content_type)
        .body(content.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201, "upload blob");
}

fn sas_request(
    method: proto::SasMethod,
    azurite: &Azurite,
    container: &str,
    blob: &str,
    permissions: &str,
) -> proto::GetServiceSasRequest {
    proto::GetServiceSasRequest {
        method: method as i32,
        account: AZURITE_ACCOUNT.into(),
        container: container.into(),
        blob: blob.into(),
        permissions: permissions.into(),
        expires_in: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        blob_endpoint: azurite.endpoint(),
        subscription_id: sample::SUBSCRIPTION_ID.into(),
        resource_group: sample::RESOURCE_GROUP.into(),
        ..Default::default()
    }
}

/// Proves a SAS for real: a plain client with no token uploads and downloads
/// with the read-write SAS, and cannot write with the read-only one.
async fn prove_sas_against_azurite(
    env: &TestEnv,
    gw: &TestGateway,
    azurite: &Azurite,
    method: proto::SasMethod,
) {
    let client = &gw.client;
    let container = "sas-proof";
    create_container(env, gw, azurite, container).await;
    let blob = "reports/2026/summary one.txt";
    let writable = client
        .rpc()
        .get_service_sas(sas_request(method, azurite, container, blob, "wcr"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(writable.signed_permissions, "rcw");
    assert_eq!(writable.signed_resource, "b");
    assert!(!writable.sas_token.starts_with('?'));
    assert!(writable.sas_token.contains("sig="));
    assert!(
        writable.url.starts_with(&format!(
            "{}/{container}/reports/2026/summary%20one.txt?",
            azurite.endpoint()
        )),
        "{}",
        writable.url
    );
    let expires = writable.expires_on.expect("expires_on").seconds;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((expires - now - 600).abs() <= 5, "expires in ~600 s");

    let http = plain_client(env);
    let uploaded = http
        .put(&writable.url)
        .header("x-ms-version", X_MS_VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .body("uploaded with a SAS")
        .send()
        .await
        .unwrap();
    let status = uploaded.status();
    assert_eq!(
        status.as_u16(),
        201,
        "upload with SAS: {}",
        uploaded.text().await.unwrap_or_default()
    );
    let downloaded = http
        .get(&writable.url)
        .header("x-ms-version", X_MS_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status().as_u16(), 200);
    assert_eq!(downloaded.text().await.unwrap(), "uploaded with a SAS");

    let read_only = client
        .rpc()
        .get_service_sas(sas_request(method, azurite, container, blob, "r"))
        .await
        .unwrap()
        .into_inner();
    let refused = http
        .put(&read_only.url)
        .header("x-ms-version", X_MS_VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .body("must not land")
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status().as_u16(),
        403,
        "a read-only SAS cannot write"
    );
    let still = http.get(&read_only.url).send().await.unwrap();
    assert_eq!(still.status().as_u16(), 200);
    assert_eq!(still.text().await.unwrap(), "uploaded with a SAS");

    // A tampered signature is refused: Azurite really checks it.
    let tampered = read_only.url.replace("sp=r", "sp=rw");
    let refused = http.get(&tampered).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 403, "tampered SAS");
}

#[tokio::test]
async fn read_blob_streams_with_the_gateways_bearer_token() {
    let env = TestEnv::new().await;
    let azurite = Azurite::start(&env.ca);
    let gw = env.start(env.config()).await;
    // 200 KiB + 17 bytes: several 64 KiB chunks and a short tail.
    let content: Vec<u8> = (0..200 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    seed_blob(
        &env,
        &gw,
        &azurite,
        "data",
        "dir/big.bin",
        &content,
        "application/x-test",
    )
    .await;
    let url = format!("{}/data/dir/big.bin", azurite.endpoint());

    let (props, chunks) = read_blob(&gw.client, &url, None, 0, 0).await.unwrap();
    assert_eq!(props.size, content.len() as u64);
    assert_eq!(props.content_type, "application/x-test");
    assert!(!props.etag.is_empty());
    assert!(props.last_modified.is_some());
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 64 * 1024));
    assert_eq!(chunks.concat(), content);

    // A range: size is still the whole blob's.
    let (props, chunks) = read_blob(&gw.client, &url, None, 1000, 70_000)
        .await
        .unwrap();
    assert_eq!(props.size, content.len() as u64);
    assert_eq!(chunks.concat(), content[1000..71_000]);

    // Azurite needs the token: without one the blob is not readable.
    let anonymous = plain_client(&env).get(&url).send().await.unwrap();
    assert!(!anonymous.status().is_success(), "{}", anonymous.status());
}

#[tokio::test]
async fn read_blob_maps_storage_errors() {
    let env = TestEnv::new().await;
    let azurite = Azurite::start(&env.ca);
    let gw = env.start(env.config()).await;
    seed_blob(
        &env,
        &gw,
        &azurite,
        "present",
        "small.txt",
        b"hello",
        "text/plain",
    )
    .await;

    let missing_blob = read_blob(
        &gw.client,
        &format!("{}/present/absent.txt", azurite.endpoint()),
        None,
        0,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(missing_blob.code(), Code::NotFound);
    assert!(
        missing_blob.message().contains("BlobNotFound"),
        "{}",
        missing_blob.message()
    );

    let missing_container = read_blob(
        &gw.client,
        &format!("{}/absent/x.txt", azurite.endpoint()),
        None,
        0,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(missing_container.code(), Code::NotFound);
    assert!(
        missing_container.message().contains("ContainerNotFound"),
        "{}",
        missing_container.message()
    );

    let past_end = read_blob(
        &gw.client,
        &format!("{}/present/small.txt", azurite.endpoint()),
        None,
        100,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(past_end.code(), Code::InvalidArgument);
    assert!(
        past_end.message().contains("offset"),
        "{}",
        past_end.message()
    );
}

#[tokio::test]
async fn user_delegation_sas_works_for_a_plain_http_client() {
    let env = TestEnv::new().await;
    let azurite = Azurite::start(&env.ca);
    let gw = env.start(env.config()).await;
    prove_sas_against_azurite(&env, &gw, &azurite, proto::SasMethod::UserDelegation).await;
    // The key came from Azurite with the identity's storage token; no ARM call.
    assert!(env
        .imds
        .requests()
        .iter()
        .all(|r| r.query_value("resource") != Some("https://management.azure.com/")));
}

#[tokio::test]
async fn container_sas_from_user_delegation_lists_and_reads() {
    let env = TestEnv::new().await;
    let azurite = Azurite::start(&env.ca);
    let gw = env.start(env.config()).await;
    seed_blob(&env, &gw, &azurite, "listing", "a.txt", b"A", "text/plain").await;
    let sas = gw
        .client
        .rpc()
        .get_service_sas(sas_request(
            proto::SasMethod::UserDelegation,
            &azurite,
            "listing",
            "",
            "lr",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sas.signed_resource, "c");
    assert_eq!(sas.signed_permissions, "rl");
    let http = plain_client(&env);
    let (base, query) = sas.url.split_once('?').unwrap();
    let listed = http
        .get(format!("{base}?restype=container&comp=list&{query}"))
        .header("x-ms-version", X_MS_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status().as_u16(), 200);
    assert!(listed.text().await.unwrap().contains("<Name>a.txt</Name>"));
    let read = http
        .get(format!("{base}/a.txt?{query}"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.text().await.unwrap(), "A");
}

async fn start_with_arm(
    env: &TestEnv,
    arm: &ArmFake,
    tweak: impl FnOnce(&mut Config),
) -> TestGateway {
    let mut config = env.config();
    config.upstream.arm_endpoint = Some(arm.base_url().parse().unwrap());
    tweak(&mut config);
    env.start(config).await
}

#[tokio::test]
async fn arm_list_service_sas_signed_with_azurites_key_works() {
    let env = TestEnv::new().await;
    let azurite = Azurite::start(&env.ca);
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    let gw = start_with_arm(&env, &arm, |_| {}).await;
    prove_sas_against_azurite(&env, &gw, &azurite, proto::SasMethod::ArmListServiceSas).await;

    let calls = arm.requests();
    assert!(!calls.is_empty());
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.path,
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Storage/storageAccounts/{AZURITE_ACCOUNT}/listServiceSas",
            sample::SUBSCRIPTION_ID,
            sample::RESOURCE_GROUP
        )
    );
    assert_eq!(call.query.as_deref(), Some("api-version=2023-05-01"));
    assert_eq!(call.token_oid.as_deref(), Some(sample::SYSTEM_OBJECT_ID));
    let body: serde_json::Value = serde_json::from_str(&call.body).unwrap();
    assert_eq!(
        body["canonicalizedResource"],
        format!("/blob/{AZURITE_ACCOUNT}/sas-proof/reports/2026/summary one.txt")
    );
    assert_eq!(body["signedResource"], "b");
    assert_eq!(body["signedPermission"], "rcw");
    assert_eq!(body["signedProtocol"], "https");
    assert!(body["signedExpiry"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn arm_list_service_sas_refused_by_rbac_is_permission_denied() {
    let env = TestEnv::new().await;
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    let gw = start_with_arm(&env, &arm, |c| {
        c.upstream.allowed_hosts.push("127.0.0.1:10000".into())
    })
    .await;
    let mut request = proto::GetServiceSasRequest {
        method: proto::SasMethod::ArmListServiceSas as i32,
        account: AZURITE_ACCOUNT.into(),
        container: "c01".into(),
        permissions: "r".into(),
        subscription_id: sample::SUBSCRIPTION_ID.into(),
        resource_group: sample::RESOURCE_GROUP.into(),
        blob_endpoint: format!("https://127.0.0.1:10000/{AZURITE_ACCOUNT}"),
        ..Default::default()
    };
    // app-identity may read groups but not list service SAS in the sample data.
    request.identity = Identity::ClientId(sample::USER_CLIENT_ID.into()).to_proto();
    let err = gw.client.rpc().get_service_sas(request).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("AuthorizationFailed"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains(sample::USER_OBJECT_ID),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("listServiceSas/action"),
        "{}",
        err.message()
    );
}

fn rg_request(subscription: &str, name: &str) -> proto::GetResourceGroupRequest {
    proto::GetResourceGroupRequest {
        subscription_id: subscription.into(),
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn get_resource_group_reads_the_group() {
    let env = TestEnv::new().await;
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    let gw = start_with_arm(&env, &arm, |_| {}).await;
    let group = gw
        .client
        .rpc()
        .get_resource_group(rg_request(sample::SUBSCRIPTION_ID, sample::RESOURCE_GROUP))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        group.id,
        format!(
            "/subscriptions/{}/resourceGroups/emulator-rg",
            sample::SUBSCRIPTION_ID
        )
    );
    assert_eq!(group.name, "emulator-rg");
    assert_eq!(group.r#type, "Microsoft.Resources/resourceGroups");
    assert_eq!(group.location, "eastus");
    assert_eq!(group.provisioning_state, "Succeeded");
    assert_eq!(group.managed_by, "");
    assert_eq!(group.tags.get("env").map(String::as_str), Some("emulator"));

    let managed = gw
        .client
        .rpc()
        .get_resource_group(rg_request(
            sample::SUBSCRIPTION_ID,
            arm::SAMPLE_MANAGED_RESOURCE_GROUP,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        managed.managed_by.contains("Microsoft.Databricks"),
        "{}",
        managed.managed_by
    );

    let calls = arm.requests();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].path,
        format!(
            "/subscriptions/{}/resourcegroups/emulator-rg",
            sample::SUBSCRIPTION_ID
        )
    );
    assert_eq!(calls[0].query.as_deref(), Some("api-version=2021-04-01"));
    assert_eq!(
        calls[0].token_oid.as_deref(),
        Some(sample::SYSTEM_OBJECT_ID)
    );
}

#[tokio::test]
async fn get_resource_group_not_found_and_forbidden() {
    let env = TestEnv::new().await;
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    let other_subscription = "0c7a3a4e-5a43-4f4a-8b7e-2f2c1d9e0a11";
    arm.add_resource_group(
        other_subscription,
        ResourceGroup::new("locked-rg", "westus"),
    );
    let gw = start_with_arm(&env, &arm, |_| {}).await;

    let missing = gw
        .client
        .rpc()
        .get_resource_group(rg_request(sample::SUBSCRIPTION_ID, "no-such-rg"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("ResourceGroupNotFound"),
        "{}",
        missing.message()
    );
    assert!(
        missing.message().contains("'no-such-rg'"),
        "{}",
        missing.message()
    );

    let forbidden = gw
        .client
        .rpc()
        .get_resource_group(rg_request(other_subscription, "locked-rg"))
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), Code::PermissionDenied);
    assert!(
        forbidden.message().contains("AuthorizationFailed"),
        "{}",
        forbidden.message()
    );
    assert!(
        forbidden.message().contains(sample::SYSTEM_OBJECT_ID),
        "{}",
        forbidden.message()
    );
}

#[tokio::test]
async fn arm_fake_rejects_tokens_for_other_audiences() {
    let env = TestEnv::new().await;
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    let gw = start_with_arm(&env, &arm, |_| {}).await;

    // Through the gateway: a US Government ARM token sent to this (public) ARM.
    let mut request = rg_request(sample::SUBSCRIPTION_ID, sample::RESOURCE_GROUP);
    request.cloud = proto::Cloud::AzureUsGovernment as i32;
    let err = gw
        .client
        .rpc()
        .get_resource_group(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("InvalidAuthenticationTokenAudience"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("eyJ"), "no token in messages");

    // Directly: a Storage token is refused with ARM's 401 and challenge.
    let storage = gw.client.get_token(STORAGE).await.unwrap();
    let answer = plain_client(&env)
        .get(format!(
            "{}/subscriptions/{}/resourcegroups/emulator-rg?api-version=2021-04-01",
            arm.base_url(),
            sample::SUBSCRIPTION_ID
        ))
        .bearer_auth(storage.secret())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 401);
    assert!(answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer authorization_uri="));
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationTokenAudience");
}

#[tokio::test]
async fn arm_throttling_is_retried_with_retry_after() {
    let env = TestEnv::new().await;
    let arm = ArmFake::sample(env.authority.clone(), &env.ca)
        .await
        .unwrap();
    arm.push_fault(Fault::throttled(2));
    let mut config = env.config();
    config.upstream.arm_endpoint = Some(arm.base_url().parse().unwrap());
    let (gw, clock) = env.start_manual(config).await;
    let group = gw
        .client
        .rpc()
        .get_resource_group(rg_request(sample::SUBSCRIPTION_ID, sample::RESOURCE_GROUP))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.name, "emulator-rg");
    let statuses: Vec<u16> = arm.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    assert!(
        clock.backoffs().contains(&Duration::from_secs(2)),
        "waited Retry-After: {:?}",
        clock.backoffs()
    );

    // Throttled every time: RESOURCE_EXHAUSTED after the retries.
    for _ in 0..10 {
        arm.push_fault(Fault::throttled(1));
    }
    arm.clear_requests();
    let err = gw
        .client
        .rpc()
        .get_resource_group(rg_request(sample::SUBSCRIPTION_ID, sample::RESOURCE_GROUP))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("TooManyRequests"),
        "{}",
        err.message()
    );
    assert_eq!(arm.requests().len(), 4, "first try + 3 retries");
}

#[tokio::test]
async fn hostile_hosts_are_refused_before_any_token_is_fetched() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    config.upstream.arm_endpoint = Some(
        "https://management.azure.com.evil.example/"
            .parse()
            .unwrap(),
    );
    let gw = env.start(config).await;
    let rpc = gw.client.rpc();

    let err = rpc
        .clone()
        .get_resource_group(rg_request(sample::SUBSCRIPTION_ID, sample::RESOURCE_GROUP))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("arm_endpoint"), "{}", err.message());

    for url in [
        "https://evil.example/container/blob",
        "https://acct.blob.core.windows.net.evil.example/container/blob",
        "https://acct.blob.core.windows.net@evil.example/container/blob",
        "http://acct.blob.core.windows.net/container/blob",
    ] {
        let err = read_blob(&gw.client, url, None, 0, 0).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert!(
            err.message().contains("blob_url"),
            "{url}: {}",
            err.message()
        );
    }

    let mut sas = proto::GetServiceSasRequest {
        account: "acct1".into(),
        container: "data".into(),
        permissions: "r".into(),
        blob_endpoint: "https://evil.example/acct1".into(),
        ..Default::default()
    };
    let err = rpc.clone().get_service_sas(sas.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("blob_endpoint"), "{}", err.message());
    sas.method = proto::SasMethod::ArmListServiceSas as i32;
    sas.blob_endpoint.clear();
    sas.subscription_id = sample::SUBSCRIPTION_ID.into();
    sas.resource_group = "rg".into();
    let err = rpc.clone().get_service_sas(sas).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("arm_endpoint"), "{}", err.message());

    assert_eq!(env.imds.token_requests(), 0, "no token was fetched");
}

#[tokio::test]
async fn bad_names_are_invalid_argument_naming_the_field() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let rpc = gw.client.rpc();

    for (subscription, name, field) in [
        ("not-a-guid", "rg", "subscription_id"),
        (sample::SUBSCRIPTION_ID, "", "name"),
        (sample::SUBSCRIPTION_ID, "a/b", "name"),
        (sample::SUBSCRIPTION_ID, "ends.", "name"),
        (sample::SUBSCRIPTION_ID, &"x".repeat(91), "name"),
    ] {
        let err = rpc
            .clone()
            .get_resource_group(rg_request(subscription, name))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }

    let good = proto::GetServiceSasRequest {
        account: "acct1".into(),
        container: "data".into(),
        blob: "file.txt".into(),
        permissions: "r".into(),
        ..Default::default()
    };
    let cases: Vec<(proto::GetServiceSasRequest, &str)> = vec![
        (
            proto::GetServiceSasRequest {
                account: "UPPER".into(),
                ..good.clone()
            },
            "account",
        ),
        (
            proto::GetServiceSasRequest {
                container: "a".into(),
                ..good.clone()
            },
            "container",
        ),
        (
            proto::GetServiceSasRequest {
                blob: "a//b".into(),
                ..good.clone()
            },
            "blob",
        ),
        (
            proto::GetServiceSasRequest {
                permissions: "rz".into(),
                ..good.clone()
            },
            "permissions",
        ),
        (
            proto::GetServiceSasRequest {
                permissions: "rl".into(),
                ..good.clone()
            },
            "permissions",
        ),
        (
            proto::GetServiceSasRequest {
                ip_range: "10.0.0.9-10.0.0.1".into(),
                ..good.clone()
            },
            "ip_range",
        ),
        (
            proto::GetServiceSasRequest {
                expires_in: Some(prost_types::Duration {
                    seconds: 8 * 24 * 3600,
                    nanos: 0,
                }),
                ..good.clone()
            },
            "expires_in",
        ),
        (
            proto::GetServiceSasRequest {
                method: proto::SasMethod::ArmListServiceSas as i32,
                ..good.clone()
            },
            "subscription_id",
        ),
    ];
    for (request, field) in cases {
        let err = rpc.clone().get_service_sas(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }

    let err = read_blob(
        &gw.client,
        "https://acct1.blob.core.windows.net/only-container",
        None,
        0,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = read_blob(
        &gw.client,
        "https://acct1.blob.core.windows.net/c/b?sig=abc",
        None,
        0,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!err.message().contains("abc"), "{}", err.message());

    assert_eq!(
        env.imds.token_requests(),
        0,
        "nothing reached the token source"
    );
}
