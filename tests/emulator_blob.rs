//! `--emulator`'s Blob Storage and ARM fakes through the gateway socket:
//! ReadBlob of the sample blobs with the identity's token, SAS tokens from
//! GetServiceSas (user delegation and ARM listServiceSas) used by a plain
//! HTTPS client, and the fake's refusals. Azurite stays the real Storage peer
//! in `storage.rs`; here the in-process fake is the peer, with the URLs the
//! banner prints.

use identity_gateway::emulator_mode::{self, RunningEmulator};
use identity_gateway_client::{proto, Identity};
use identity_gateway_emulator::{
    blob::{self, Authorization},
    sample,
};
use tonic::Code;

use crate::common::{read_blob, TestEnv, TestGateway};

const X_MS_VERSION: &str = "2025-11-05";

/// A gateway in emulator mode (its own authority, CA and fakes), reached
/// through the harness's socket and client.
async fn start() -> (TestEnv, RunningEmulator, TestGateway) {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let emulator = emulator_mode::start(&config.socket)
        .await
        .expect("emulator");
    emulator.configure(&mut config);
    let gw = env.start(config).await;
    (env, emulator, gw)
}

/// A plain HTTPS client (no gateway, no token) trusting the emulator's CA.
fn plain_client(emulator: &RunningEmulator) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(emulator.ca_pem().as_bytes()).expect("CA PEM"),
        )
        .no_proxy()
        .build()
        .expect("client")
}

fn sample_blob_url(emulator: &RunningEmulator, blob: &str) -> String {
    emulator
        .blob
        .blob_url(blob::SAMPLE_ACCOUNT, blob::SAMPLE_CONTAINER, blob)
}

fn sas_request(
    emulator: &RunningEmulator,
    method: proto::SasMethod,
    blob: &str,
    permissions: &str,
) -> proto::GetServiceSasRequest {
    proto::GetServiceSasRequest {
        method: method as i32,
        account: blob::SAMPLE_ACCOUNT.into(),
        container: blob::SAMPLE_CONTAINER.into(),
        blob: blob.into(),
        permissions: permissions.into(),
        blob_endpoint: emulator.blob.base_url(),
        subscription_id: sample::SUBSCRIPTION_ID.into(),
        resource_group: sample::RESOURCE_GROUP.into(),
        ..Default::default()
    }
}

/// The XML error code of a Storage answer (header and body must agree).
async fn storage_error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("x-ms-error-code")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.text().await.unwrap();
    assert!(
        body.contains(&format!("<Code>{header}</Code>")),
        "{header}: {body}"
    );
    (status, header)
}

#[tokio::test]
async fn read_blob_serves_the_sample_blobs_with_their_properties() {
    let (_env, emulator, gw) = start().await;
    let url = sample_blob_url(&emulator, blob::SAMPLE_BLOB);
    let (props, chunks) = read_blob(&gw.client, &url, None, 0, 0).await.unwrap();
    let stored = emulator
        .blob
        .blob(
            blob::SAMPLE_ACCOUNT,
            blob::SAMPLE_CONTAINER,
            blob::SAMPLE_BLOB,
        )
        .expect("sample blob");
    assert_eq!(chunks.concat(), blob::SAMPLE_BLOB_CONTENT.as_bytes());
    assert_eq!(props.size, blob::SAMPLE_BLOB_CONTENT.len() as u64);
    assert_eq!(props.content_type, "text/plain");
    assert_eq!(props.etag, stored.etag);
    let modified = props.last_modified.expect("last_modified");
    let stored_secs = stored
        .last_modified
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert_eq!(modified.seconds, stored_secs);

    // The 1 MiB blob streams in many chunks of at most 64 KiB.
    let big = sample_blob_url(&emulator, blob::SAMPLE_BINARY_BLOB);
    let (props, chunks) = read_blob(&gw.client, &big, None, 0, 0).await.unwrap();
    assert_eq!(props.size, blob::SAMPLE_BINARY_SIZE as u64);
    assert_eq!(props.content_type, "application/octet-stream");
    assert!(chunks.len() >= 16, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 64 * 1024));
    assert_eq!(chunks.concat(), blob::sample_binary());

    // A range: the size is still the whole blob's.
    let (props, chunks) = read_blob(&gw.client, &big, None, 1000, 70_000)
        .await
        .unwrap();
    assert_eq!(props.size, blob::SAMPLE_BINARY_SIZE as u64);
    assert_eq!(chunks.concat(), blob::sample_binary()[1000..71_000]);

    let requests = emulator.blob.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.method, "GET");
        assert_eq!(request.authorization, Authorization::Bearer);
        assert_eq!(
            request.principal_oid.as_deref(),
            Some(sample::SYSTEM_OBJECT_ID)
        );
        assert_eq!(request.x_ms_version.as_deref(), Some(X_MS_VERSION));
    }
    assert_eq!(requests[2].range.as_deref(), Some("bytes=1000-70999"));
    assert_eq!(requests[2].status, 206);
}

#[tokio::test]
async fn read_blob_reports_the_fakes_refusals() {
    let (_env, emulator, gw) = start().await;
    let missing = read_blob(
        &gw.client,
        &sample_blob_url(&emulator, "absent.txt"),
        None,
        0,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().contains("BlobNotFound"),
        "{}",
        missing.message()
    );

    // app-identity has no Storage data role in the sample.
    let denied = read_blob(
        &gw.client,
        &sample_blob_url(&emulator, blob::SAMPLE_BLOB),
        Some(Identity::ClientId(sample::USER_CLIENT_ID.into())),
        0,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("AuthorizationPermissionMismatch"),
        "{}",
        denied.message()
    );
    let last = emulator.blob.requests().pop().unwrap();
    assert_eq!(last.principal_oid.as_deref(), Some(sample::USER_OBJECT_ID));
    assert_eq!(last.status, 403);
}

#[tokio::test]
async fn user_delegation_sas_lets_a_plain_client_read_but_not_write() {
    let (_env, emulator, gw) = start().await;
    let http = plain_client(&emulator);
    let read_only = gw
        .client
        .rpc()
        .get_service_sas(sas_request(
            &emulator,
            proto::SasMethod::UserDelegation,
            blob::SAMPLE_BLOB,
            "r",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read_only.signed_resource, "b");
    assert_eq!(read_only.signed_permissions, "r");
    assert!(
        read_only.url.starts_with(&format!(
            "{}?",
            sample_blob_url(&emulator, blob::SAMPLE_BLOB)
        )),
        "{}",
        read_only.url
    );
    assert!(read_only.sas_token.contains("skoid="));

    let answer = http.get(&read_only.url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.text().await.unwrap(), blob::SAMPLE_BLOB_CONTENT);

    let put = http
        .put(&read_only.url)
        .header("x-ms-version", X_MS_VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .body("overwritten")
        .send()
        .await
        .unwrap();
    assert_eq!(
        storage_error_code(put).await,
        (403, "AuthorizationPermissionMismatch".into())
    );
    let tampered = read_only.url.replace("sp=r", "sp=rw");
    let refused = http.get(&tampered).send().await.unwrap();
    assert_eq!(
        storage_error_code(refused).await,
        (403, "AuthenticationFailed".into())
    );
    assert_eq!(
        emulator
            .blob
            .blob(
                blob::SAMPLE_ACCOUNT,
                blob::SAMPLE_CONTAINER,
                blob::SAMPLE_BLOB
            )
            .unwrap()
            .content,
        blob::SAMPLE_BLOB_CONTENT
    );

    // With create and write it uploads.
    let writable = gw
        .client
        .rpc()
        .get_service_sas(sas_request(
            &emulator,
            proto::SasMethod::UserDelegation,
            "uploads/report one.txt",
            "wcr",
        ))
        .await
        .unwrap()
        .into_inner();
    let uploaded = http
        .put(&writable.url)
        .header("x-ms-version", X_MS_VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .header("content-type", "text/plain")
        .body("uploaded with a SAS")
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status().as_u16(), 201);
    let stored = emulator
        .blob
        .blob(
            blob::SAMPLE_ACCOUNT,
            blob::SAMPLE_CONTAINER,
            "uploads/report one.txt",
        )
        .expect("uploaded blob");
    assert_eq!(stored.content.as_ref(), b"uploaded with a SAS");

    let requests = emulator.blob.requests();
    let key_request = &requests[0];
    assert_eq!(key_request.method, "POST");
    assert_eq!(
        key_request.query.as_deref(),
        Some("restype=service&comp=userdelegationkey")
    );
    assert_eq!(key_request.authorization, Authorization::Bearer);
    assert_eq!(
        key_request.principal_oid.as_deref(),
        Some(sample::SYSTEM_OBJECT_ID)
    );
    let sas_read = &requests[1];
    assert_eq!(sas_read.authorization, Authorization::UserDelegationSas);
    assert_eq!(
        sas_read.principal_oid.as_deref(),
        Some(sample::SYSTEM_OBJECT_ID)
    );
    assert_eq!(sas_read.query_value("sig").as_deref(), Some("REDACTED"));
}

#[tokio::test]
async fn arm_service_sas_verifies_at_the_blob_fake() {
    let (_env, emulator, gw) = start().await;
    let sas = gw
        .client
        .rpc()
        .get_service_sas(sas_request(
            &emulator,
            proto::SasMethod::ArmListServiceSas,
            blob::SAMPLE_BINARY_BLOB,
            "r",
        ))
        .await
        .unwrap()
        .into_inner();
    let answer = plain_client(&emulator).get(&sas.url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer.bytes().await.unwrap().as_ref(),
        blob::sample_binary().as_slice()
    );
    let arm_calls = emulator.arm.requests();
    assert_eq!(arm_calls.len(), 1);
    assert_eq!(arm_calls[0].status, 200);
    assert_eq!(
        emulator.blob.requests()[0].authorization,
        Authorization::ServiceSas
    );

    // The banner's GetResourceGroup line works too.
    let group = gw
        .client
        .rpc()
        .get_resource_group(proto::GetResourceGroupRequest {
            subscription_id: sample::SUBSCRIPTION_ID.into(),
            name: sample::RESOURCE_GROUP.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.name, sample::RESOURCE_GROUP);
}

#[tokio::test]
async fn blob_fake_refuses_a_token_for_another_audience() {
    let (_env, emulator, gw) = start().await;
    let http = plain_client(&emulator);
    let url = sample_blob_url(&emulator, blob::SAMPLE_BLOB);
    let vault = gw
        .client
        .get_token("https://vault.azure.net")
        .await
        .unwrap();
    let refused = http
        .get(&url)
        .bearer_auth(vault.secret())
        .header("x-ms-version", X_MS_VERSION)
        .send()
        .await
        .unwrap();
    let challenge = refused.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!(
            "Bearer authorization_uri=https://login.microsoftonline.com/{}/oauth2/authorize resource_id=https://storage.azure.com",
            sample::TENANT_ID
        )
    );
    assert_eq!(
        storage_error_code(refused).await,
        (401, "InvalidAuthenticationInfo".into())
    );

    let storage = gw
        .client
        .get_token("https://storage.azure.com/")
        .await
        .unwrap();
    let accepted = http
        .get(&url)
        .bearer_auth(storage.secret())
        .header("x-ms-version", X_MS_VERSION)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status().as_u16(), 200);
    let requests = emulator.blob.requests();
    assert_eq!(requests[0].principal_oid, None);
    assert_eq!(
        requests[1].principal_oid.as_deref(),
        Some(sample::SYSTEM_OBJECT_ID)
    );
}
