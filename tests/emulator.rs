//! `--emulator`'s wiring, and the identity fakes' selection and refusal
//! answers as callers see them through the gateway (every App Service
//! selector, unknown identities, several user-assigned identities, unknown
//! resources). `sources.rs` covers the sources' basic paths.

use identity_gateway::{config::Config, emulator_mode};
use identity_gateway_client::{Error, Identity};
use identity_gateway_emulator::{
    imds::{Flavor, IdentitySet, ImdsConfig, ImdsFake, UserAssigned, REDACTED_MATCHING},
    sample, Principal,
};
use identity_gateway_identity::SourceKind;

use crate::common::TestEnv;

const VAULT: &str = "https://vault.azure.net";
const SECRET: &str = "2f0c6b1e-93a4-4c7d-b8e5-7a1d3c9f0e42";

async fn flavored_fake(env: &TestEnv, flavor: Flavor) -> ImdsFake {
    ImdsFake::start(
        env.authority.clone(),
        ImdsConfig {
            flavor,
            ..ImdsConfig::default()
        },
    )
    .await
    .expect("start identity fake")
}

fn app_service_config(env: &TestEnv, fake: &ImdsFake, header: &str) -> Config {
    let mut config = env.config();
    config.identity.source = SourceKind::AppService;
    config.identity.app_service_endpoint = Some(fake.token_url().parse().expect("URL"));
    config.identity.app_service_header = Some(header.into());
    config
}

#[tokio::test]
async fn app_service_source_sends_the_secret_and_every_selector() {
    let env = TestEnv::new().await;
    let fake = flavored_fake(
        &env,
        Flavor::AppService {
            header_secret: SECRET.into(),
        },
    )
    .await;
    let gw = env.start(app_service_config(&env, &fake, SECRET)).await;

    let system = gw.client.get_token(VAULT).await.unwrap();
    assert_eq!(
        env.verify(system.secret(), VAULT).oid,
        sample::SYSTEM_OBJECT_ID
    );
    let selectors = [
        (
            Identity::ClientId(sample::USER_CLIENT_ID.into()),
            "client_id",
            sample::USER_CLIENT_ID,
        ),
        (
            Identity::ObjectId(sample::USER_OBJECT_ID.into()),
            "principal_id",
            sample::USER_OBJECT_ID,
        ),
        (
            Identity::ResourceId(sample::USER_RESOURCE_ID.into()),
            "mi_res_id",
            sample::USER_RESOURCE_ID,
        ),
    ];
    for (identity, _, _) in selectors.clone() {
        let token = gw.client.get_token_for(VAULT, identity).await.unwrap();
        let claims = env.verify(token.secret(), VAULT);
        assert_eq!(claims.oid, sample::USER_OBJECT_ID);
        assert_eq!(claims.xms_mirid, sample::USER_RESOURCE_ID);
    }

    let requests = fake.requests();
    assert_eq!(requests.len(), 4);
    for request in &requests {
        assert_eq!(request.path, "/msi/token");
        assert_eq!(request.status, 200);
        assert_eq!(request.query_value("api-version"), Some("2019-08-01"));
        assert_eq!(request.query_value("resource"), Some(VAULT));
        assert_eq!(request.header("x-identity-header"), Some(REDACTED_MATCHING));
    }
    for (i, (_, param, value)) in selectors.iter().enumerate() {
        assert_eq!(requests[i + 1].query_value(param), Some(*value), "{param}");
    }
    assert_eq!(env.imds.token_requests(), 0, "IMDS was not asked");
}

#[tokio::test]
async fn app_service_unknown_identity_is_identity_unavailable() {
    let env = TestEnv::new().await;
    let fake = flavored_fake(
        &env,
        Flavor::AppService {
            header_secret: SECRET.into(),
        },
    )
    .await;
    let gw = env.start(app_service_config(&env, &fake, SECRET)).await;
    let err = gw
        .client
        .get_token_for(
            VAULT,
            Identity::ClientId("0d7a3c9e-5b41-4f6e-9c2d-8e1f0a3b4c5d".into()),
        )
        .await
        .unwrap_err();
    let Error::IdentityUnavailable(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("Unable to load the proper Managed Identity"),
        "{message}"
    );
    assert_eq!(fake.token_requests(), 1, "400 is final");
}

#[tokio::test]
async fn imds_identity_and_resource_errors_reach_the_caller() {
    let second = UserAssigned {
        principal: Principal {
            client_id: "0d7a3c9e-5b41-4f6e-9c2d-8e1f0a3b4c5d".into(),
            object_id: "1e8b4daf-6c52-4a7f-8d3e-9f2a1b4c5d6e".into(),
            mirid: "/subscriptions/bc11a95a-f59f-49b7-9000-1ee2ebe3dc79/resourceGroups/emulator-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/batch-identity".into(),
        },
        resource_id: "/subscriptions/bc11a95a-f59f-49b7-9000-1ee2ebe3dc79/resourceGroups/emulator-rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/batch-identity".into(),
    };
    let env = TestEnv::with_imds(ImdsConfig {
        identities: IdentitySet {
            system: None,
            user_assigned: vec![sample::user_assigned(), second],
        },
        known_resources: Some(vec![VAULT.into()]),
        ..ImdsConfig::default()
    })
    .await;
    let gw = env.start(env.config()).await;

    let err = gw.client.get_token(VAULT).await.unwrap_err();
    let Error::IdentityUnavailable(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("Multiple user assigned identities"),
        "{message}"
    );

    let user = Identity::ClientId(sample::USER_CLIENT_ID.into());
    let token = gw.client.get_token_for(VAULT, user.clone()).await.unwrap();
    assert_eq!(
        env.verify(token.secret(), VAULT).appid,
        sample::USER_CLIENT_ID
    );

    let err = gw
        .client
        .get_token_for("https://unknown.example.test", user)
        .await
        .unwrap_err();
    let Error::InvalidArgument(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("resource"), "{message}");
    assert!(message.contains("AADSTS500011"), "{message}");
    let statuses: Vec<u16> = env.imds.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 200, 400], "400s are final");
}

#[tokio::test]
async fn emulator_mode_serves_the_sample_identities() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let emulator = emulator_mode::start(&config.socket).await.unwrap();
    emulator.configure(&mut config);
    assert_eq!(config.identity.source, SourceKind::Imds);
    assert!(config
        .upstream
        .ca_files
        .iter()
        .any(|f| f == emulator.ca_file()));
    let gw = env.start(config).await;

    let authority = emulator.authority();
    let now = std::time::SystemTime::now();
    let system = gw.client.get_token(VAULT).await.unwrap();
    let claims = authority.verify(system.secret(), VAULT, now).unwrap();
    assert_eq!(claims.oid, sample::SYSTEM_OBJECT_ID);
    assert_eq!(claims.tid, sample::TENANT_ID);
    assert_eq!(claims.xms_mirid, sample::VM_RESOURCE_ID);
    let user = gw
        .client
        .get_token_for(
            "https://storage.azure.com/",
            Identity::ResourceId(sample::USER_RESOURCE_ID.into()),
        )
        .await
        .unwrap();
    let claims = authority
        .verify(user.secret(), "https://storage.azure.com/", now)
        .unwrap();
    assert_eq!(claims.oid, sample::USER_OBJECT_ID);

    assert_eq!(emulator.imds.token_requests(), 2);
    assert_eq!(
        env.imds.token_requests(),
        0,
        "the harness's IMDS was replaced"
    );
}

#[tokio::test]
async fn emulator_mode_serves_key_vault_and_data_lake_samples() {
    use identity_gateway_client::proto::{
        get_secret_request::Vault, DataLakeGeneration, GetSecretRequest, ListDataLakeRequest,
    };
    let env = TestEnv::new().await;
    let mut config = env.config();
    let emulator = emulator_mode::start(&config.socket).await.unwrap();
    emulator.configure(&mut config);
    let gw = env.start(config).await;
    let mut rpc = gw.client.rpc();

    let secret = rpc
        .get_secret(GetSecretRequest {
            vault: Some(Vault::VaultUrl(emulator.keyvault.vault_url())),
            name: "app-password".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(secret.value, "correct-horse-battery-staple");
    assert!(secret.enabled);

    for (url, generation, filesystem) in [
        (
            emulator.datalake_gen1.account_url(),
            DataLakeGeneration::Gen1,
            "",
        ),
        (
            emulator.datalake_gen2.account_url(),
            DataLakeGeneration::Gen2,
            "data",
        ),
    ] {
        let mut pages = rpc
            .list_data_lake(ListDataLakeRequest {
                account_url: url,
                generation: generation as i32,
                filesystem: filesystem.into(),
                path: "/".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first = pages.message().await.unwrap().expect("a first page");
        assert!(
            !first.entries.is_empty(),
            "{generation:?} root lists entries"
        );
    }
}
