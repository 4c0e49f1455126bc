//! The other token sources behind the same cache: the App Service identity
//! endpoint (IDENTITY_ENDPOINT + X-IDENTITY-HEADER, api-version 2019-08-01)
//! and the legacy MSI VM extension (/oauth2/token, no api-version).

use identity_gateway_client::{Error, Identity};
use identity_gateway_emulator::{
    imds::{Flavor, ImdsConfig},
    sample,
};
use identity_gateway_identity::SourceKind;

use crate::common::TestEnv;

const VAULT: &str = "https://vault.azure.net";
const HEADER: &str = "d6a2fbd8-6c3d-4c1e-9a7b-1f0e0c9b8a77";

async fn app_service_env() -> TestEnv {
    TestEnv::with_imds(ImdsConfig {
        flavor: Flavor::AppService {
            header_secret: HEADER.into(),
        },
        ..ImdsConfig::default()
    })
    .await
}

#[tokio::test]
async fn app_service_source_sends_the_header_and_selectors_it_understands() {
    let env = app_service_env().await;
    let mut config = env.config();
    config.identity.source = SourceKind::Auto;
    config.identity.app_service_endpoint = Some(env.imds.token_url().parse().unwrap());
    config.identity.app_service_header = Some(HEADER.into());
    let gw = env.start(config).await;

    let token = gw.client.get_token(VAULT).await.unwrap();
    let claims = env.verify(token.secret(), VAULT);
    assert_eq!(claims.oid, sample::SYSTEM_OBJECT_ID);
    let user = gw
        .client
        .get_token_for(VAULT, Identity::ObjectId(sample::USER_OBJECT_ID.into()))
        .await
        .unwrap();
    assert_eq!(env.verify(user.secret(), VAULT).oid, sample::USER_OBJECT_ID);

    let requests = env.imds.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].query_value("api-version"), Some("2019-08-01"));
    assert!(requests[0].header("x-identity-header").is_some());
    assert_eq!(
        requests[1].query_value("principal_id"),
        Some(sample::USER_OBJECT_ID)
    );
}

#[tokio::test]
async fn app_service_with_a_wrong_header_is_refused_plainly() {
    let env = app_service_env().await;
    let mut config = env.config();
    config.identity.source = SourceKind::AppService;
    config.identity.app_service_endpoint = Some(env.imds.token_url().parse().unwrap());
    config.identity.app_service_header = Some("not-the-secret".into());
    let gw = env.start(config).await;
    let err = gw.client.get_token(VAULT).await.unwrap_err();
    assert!(
        matches!(err, Error::PermissionDenied(_) | Error::InvalidArgument(_)),
        "{err:?}"
    );
    assert!(!err.to_string().contains(HEADER));
    assert_eq!(env.imds.token_requests(), 1, "final, not retried");
}

#[tokio::test]
async fn legacy_msi_extension_serves_tokens_but_not_resource_id_selection() {
    let env = TestEnv::with_imds(ImdsConfig {
        flavor: Flavor::LegacyMsi,
        ..ImdsConfig::default()
    })
    .await;
    let mut config = env.config();
    config.identity.source = SourceKind::LegacyMsi;
    config.identity.legacy_msi_endpoint = env.imds.token_url().parse().unwrap();
    let gw = env.start(config).await;

    let token = gw.client.get_token(VAULT).await.unwrap();
    env.verify(token.secret(), VAULT);
    let request = &env.imds.requests()[0];
    assert_eq!(request.path, "/oauth2/token");
    assert_eq!(request.query_value("api-version"), None);
    assert_eq!(request.header("metadata"), Some("true"));

    let err = gw
        .client
        .get_token_for(VAULT, Identity::ResourceId(sample::USER_RESOURCE_ID.into()))
        .await
        .unwrap_err();
    let Error::InvalidArgument(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("identity.resource_id"), "{message}");
    assert_eq!(env.imds.token_requests(), 1);
}
