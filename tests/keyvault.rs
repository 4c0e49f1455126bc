//! GetSecret through the socket against the Key Vault fake: values and
//! metadata, versions, identities, not found, RBAC / access-policy /
//! disabled refusals, audiences the vault rejects, the exfiltration guard,
//! input validation, throttling and the secret cache.

use std::sync::Arc;

use identity_gateway_client::{
    proto::{get_secret_request::Vault, Cloud, GetSecretRequest, GetSecretResponse},
    Identity,
};
use identity_gateway_emulator::{
    faults::{Fault, Grant},
    keyvault::{AccessModel, KeyVaultFake, SecretSpec, VaultSettings, KEY_VAULT_AUDIENCE},
    sample,
};
use tonic::Code;

use crate::common::{TestEnv, TestGateway};

async fn sample_vault(env: &TestEnv) -> KeyVaultFake {
    KeyVaultFake::sample(Arc::clone(&env.authority), &env.ca)
        .await
        .expect("start the Key Vault fake")
}

fn by_url(vault: &KeyVaultFake, name: &str) -> GetSecretRequest {
    GetSecretRequest {
        vault: Some(Vault::VaultUrl(vault.vault_url())),
        name: name.into(),
        ..Default::default()
    }
}

async fn get(
    gw: &TestGateway,
    request: GetSecretRequest,
) -> Result<GetSecretResponse, tonic::Status> {
    gw.client
        .rpc()
        .get_secret(request)
        .await
        .map(|r| r.into_inner())
}

/// The secret requests the vault answered (not counting anything else).
fn statuses(vault: &KeyVaultFake) -> Vec<u16> {
    vault.requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn a_secret_comes_back_with_its_value_and_metadata() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let gw = env.start(env.config()).await;

    let secret = get(&gw, by_url(&vault, "db-connection")).await.unwrap();
    assert_eq!(
        secret.value,
        "Server=tcp:emulator.database.windows.net,1433;Database=appdb;"
    );
    assert_eq!(secret.name, "db-connection");
    assert_eq!(secret.version.len(), 32);
    assert_eq!(
        secret.id,
        format!(
            "{}/secrets/db-connection/{}",
            vault.vault_url(),
            secret.version
        )
    );
    assert_eq!(secret.content_type, "text/plain");
    assert!(secret.enabled && !secret.managed);
    assert_eq!(secret.tags.get("env").map(String::as_str), Some("emulator"));
    assert_eq!(secret.tags.len(), 2);
    let created = secret.created.expect("created");
    assert!(created.seconds > 1_700_000_000);
    assert!(secret.updated.is_some());
    assert!(secret.not_before.is_none() && secret.expires.is_none());

    // The right token went to the vault: Key Vault's audience, the VM's identity.
    let seen = vault.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].audience.as_deref(), Some(KEY_VAULT_AUDIENCE));
    assert_eq!(seen[0].oid.as_deref(), Some(sample::SYSTEM_OBJECT_ID));
    assert_eq!(seen[0].path, "/secrets/db-connection");

    // The client library's helper reaches the same RPC.
    let helper = gw
        .client
        .get_secret(&vault.vault_url(), "app-password")
        .await
        .unwrap();
    assert_eq!(helper.value, "correct-horse-battery-staple");
}

#[tokio::test]
async fn an_older_version_and_other_certificate_backed_secrets() {
    let env = TestEnv::new().await;
    let vault = KeyVaultFake::start(
        Arc::clone(&env.authority),
        &env.ca,
        VaultSettings::new("versions"),
    )
    .await
    .unwrap();
    let v1 = vault.set_secret("rotated", SecretSpec::new("first"));
    vault.set_secret("rotated", SecretSpec::new("second"));
    vault.set_secret(
        "tls-cert",
        SecretSpec::new("MIIK...")
            .content_type("application/x-pkcs12")
            .certificate_backed()
            .not_before(1_700_000_000)
            .expires(1_900_000_000),
    );
    let gw = env.start(env.config()).await;

    let old = get(
        &gw,
        GetSecretRequest {
            version: v1.to_uppercase(),
            ..by_url(&vault, "ROTATED")
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (old.value.as_str(), old.version.as_str()),
        ("first", v1.as_str())
    );
    let latest = get(&gw, by_url(&vault, "rotated")).await.unwrap();
    assert_eq!(latest.value, "second");

    let cert = get(&gw, by_url(&vault, "tls-cert")).await.unwrap();
    assert!(cert.managed);
    assert_eq!(cert.content_type, "application/x-pkcs12");
    assert_eq!(cert.not_before.unwrap().seconds, 1_700_000_000);
    assert_eq!(cert.expires.unwrap().seconds, 1_900_000_000);
}

#[tokio::test]
async fn a_user_assigned_identity_reads_what_only_it_may_read() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    vault.set_grant(Grant::only([sample::USER_OBJECT_ID]));
    let gw = env.start(env.config()).await;

    let as_user = GetSecretRequest {
        identity: Identity::ClientId(sample::USER_CLIENT_ID.into()).to_proto(),
        ..by_url(&vault, "app-password")
    };
    assert_eq!(
        get(&gw, as_user).await.unwrap().value,
        "correct-horse-battery-staple"
    );
    let err = get(&gw, by_url(&vault, "app-password")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let oids: Vec<Option<String>> = vault.requests().into_iter().map(|r| r.oid).collect();
    assert_eq!(
        oids,
        [
            Some(sample::USER_OBJECT_ID.to_string()),
            Some(sample::SYSTEM_OBJECT_ID.to_string())
        ]
    );
}

#[tokio::test]
async fn a_missing_secret_is_not_found() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let gw = env.start(env.config()).await;
    let err = get(&gw, by_url(&vault, "no-such-secret"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("no-such-secret"),
        "{}",
        err.message()
    );
    let err = get(
        &gw,
        GetSecretRequest {
            version: "0123456789abcdef0123456789abcdef".into(),
            ..by_url(&vault, "app-password")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(statuses(&vault), [404, 404]);
}

#[tokio::test]
async fn refusals_say_rbac_access_policy_or_disabled() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let gw = env.start(env.config()).await;

    let disabled = get(&gw, by_url(&vault, "retired-api-key"))
        .await
        .unwrap_err();
    assert_eq!(disabled.code(), Code::PermissionDenied);
    assert!(
        disabled.message().contains("disabled"),
        "{}",
        disabled.message()
    );

    vault.set_grant(Grant::only(["00000000-0000-0000-0000-000000000001"]));
    let rbac = get(&gw, by_url(&vault, "app-password")).await.unwrap_err();
    assert_eq!(rbac.code(), Code::PermissionDenied);
    assert!(rbac.message().contains("Azure RBAC"), "{}", rbac.message());
    assert!(
        rbac.message().contains(sample::SYSTEM_OBJECT_ID),
        "Azure's reason names the caller"
    );

    vault.set_access_model(AccessModel::AccessPolicy);
    let policy = get(&gw, by_url(&vault, "app-password")).await.unwrap_err();
    assert_eq!(policy.code(), Code::PermissionDenied);
    assert!(
        policy.message().contains("access policy"),
        "{}",
        policy.message()
    );
    assert_eq!(statuses(&vault), [403, 403, 403]);
}

#[tokio::test]
async fn a_vault_wanting_another_audience_rejects_the_token_and_the_cloud_field_fixes_it() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    // A US Government vault behind a private name: it wants that cloud's audience.
    vault.set_audience("https://vault.usgovcloudapi.net");
    let gw = env.start(env.config()).await;

    let err = get(&gw, by_url(&vault, "app-password")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("401"), "{}", err.message());
    let seen = vault.requests();
    assert_eq!(
        seen.len(),
        1,
        "the challenge is not followed to a non-parent audience"
    );
    assert_eq!(
        (seen[0].status, seen[0].audience.as_deref()),
        (401, Some(KEY_VAULT_AUDIENCE))
    );
    let asked: Vec<String> = env
        .imds
        .requests()
        .iter()
        .filter_map(|r| r.query_value("resource").map(str::to_string))
        .collect();
    assert_eq!(asked, [KEY_VAULT_AUDIENCE]);

    let gov = get(
        &gw,
        GetSecretRequest {
            cloud: Cloud::AzureUsGovernment.into(),
            ..by_url(&vault, "app-password")
        },
    )
    .await
    .unwrap();
    assert_eq!(gov.value, "correct-horse-battery-staple");
    assert_eq!(
        vault.requests()[1].audience.as_deref(),
        Some("https://vault.usgovcloudapi.net")
    );
}

#[tokio::test]
async fn hostile_vault_hosts_are_refused_before_any_token_is_fetched() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    for hostile in [
        "https://evil.example",
        "https://myvault.vault.azure.net.evil.example",
        "https://myvault.vault.azure.net@evil.example",
        "https://evil.example/?x=.vault.azure.net",
        "ftp://myvault.vault.azure.net",
    ] {
        let err = get(
            &gw,
            GetSecretRequest {
                vault: Some(Vault::VaultUrl(hostile.into())),
                name: "s".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{hostile}");
        assert!(
            err.message().contains("vault_url"),
            "{hostile}: {}",
            err.message()
        );
    }
    assert_eq!(env.imds.token_requests(), 0, "no token was fetched");
}

#[tokio::test]
async fn bad_names_versions_and_vaults_are_rejected_naming_the_field() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let gw = env.start(env.config()).await;
    let long = "a".repeat(128);
    let cases = [
        (by_url(&vault, "bad_name"), "name"),
        (by_url(&vault, ""), "name"),
        (by_url(&vault, &long), "name"),
        (by_url(&vault, "db/../x"), "name"),
        (
            GetSecretRequest {
                version: "latest".into(),
                ..by_url(&vault, "app-password")
            },
            "version",
        ),
        (
            GetSecretRequest {
                vault: Some(Vault::VaultName("my--vault".into())),
                name: "s".into(),
                ..Default::default()
            },
            "vault_name",
        ),
        (
            GetSecretRequest {
                name: "s".into(),
                ..Default::default()
            },
            "vault",
        ),
        (
            GetSecretRequest {
                cloud: 42,
                ..by_url(&vault, "app-password")
            },
            "cloud",
        ),
    ];
    for (request, field) in cases {
        let err = get(&gw, request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("invalid {field}:")),
            "{field}: {}",
            err.message()
        );
    }
    assert!(vault.requests().is_empty());
    assert_eq!(env.imds.token_requests(), 0);
}

#[tokio::test]
async fn throttling_is_retried_then_gives_resource_exhausted() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let (gw, clock) = env.start_manual(env.config()).await;

    vault.faults().push([Fault::throttle(2)]);
    let secret = get(&gw, by_url(&vault, "app-password")).await.unwrap();
    assert_eq!(secret.value, "correct-horse-battery-staple");
    assert_eq!(statuses(&vault), [429, 200]);
    assert!(
        clock
            .backoffs()
            .contains(&std::time::Duration::from_secs(2)),
        "waited what Retry-After said: {:?}",
        clock.backoffs()
    );

    vault.faults().push((0..10).map(|_| Fault::throttle(1)));
    let err = get(&gw, by_url(&vault, "app-password")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // Three retries: four attempts in all.
    assert_eq!(statuses(&vault)[2..], [429, 429, 429, 429]);
}

#[tokio::test]
async fn the_secret_cache_serves_repeats_per_identity_and_can_be_bypassed() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let mut config = env.config();
    config.keyvault.secret_cache_ttl_secs = 60;
    let gw = env.start(config).await;

    let first = get(&gw, by_url(&vault, "app-password")).await.unwrap();
    vault.set_secret("app-password", SecretSpec::new("rotated"));
    let cached = get(&gw, by_url(&vault, "APP-PASSWORD")).await.unwrap();
    assert_eq!(cached.value, first.value);
    assert_eq!(vault.requests().len(), 1, "served from the cache");

    let fresh = get(
        &gw,
        GetSecretRequest {
            bypass_cache: true,
            ..by_url(&vault, "app-password")
        },
    )
    .await
    .unwrap();
    assert_eq!(fresh.value, "rotated");
    let other = get(
        &gw,
        GetSecretRequest {
            identity: Identity::ClientId(sample::USER_CLIENT_ID.into()).to_proto(),
            ..by_url(&vault, "app-password")
        },
    )
    .await
    .unwrap();
    assert_eq!(other.value, "rotated");
    assert_eq!(
        vault.requests().len(),
        3,
        "another identity is not served from the cache"
    );
}

#[tokio::test]
async fn without_a_cache_every_call_reaches_the_vault() {
    let env = TestEnv::new().await;
    let vault = sample_vault(&env).await;
    let gw = env.start(env.config()).await;
    for _ in 0..3 {
        get(&gw, by_url(&vault, "app-password")).await.unwrap();
    }
    assert_eq!(vault.requests().len(), 3);
    assert_eq!(env.imds.token_requests(), 1, "one token, cached");
}
