//! GetToken / WatchToken through the socket against the fake IMDS: caching,
//! single-flight, identity selection, exact audiences, the retry policy,
//! error mapping, refresh-ahead and static stability.

use std::time::Duration;

use futures::StreamExt;
use identity_gateway_client::{Error, Identity};
use identity_gateway_emulator::{
    imds::{ImdsConfig, ScriptedResponse},
    sample,
};
use identity_gateway_identity::CacheEvent;
use tonic::Code;

use crate::common::{next_event, TestEnv};

const VAULT: &str = "https://vault.azure.net";

#[tokio::test]
async fn repeated_requests_are_served_from_one_upstream_call() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let first = gw.client.get_token(VAULT).await.unwrap();
    for _ in 0..5 {
        let again = gw.client.get_token(VAULT).await.unwrap();
        assert_eq!(again.secret(), first.secret());
    }
    assert_eq!(env.imds.token_requests(), 1);
    let claims = env.verify(first.secret(), VAULT);
    assert_eq!(claims.oid, sample::SYSTEM_OBJECT_ID);
    assert_eq!(first.resource, VAULT);
    assert_eq!(first.token_type, "Bearer");
    let exp = first
        .expires_on
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(exp, claims.exp, "expires_on is the token's exp");
}

#[tokio::test]
async fn two_hundred_concurrent_cold_callers_make_one_upstream_call() {
    let env = TestEnv::new().await;
    env.imds.set_latency(Duration::from_millis(300));
    let gw = env.start(env.config()).await;
    let calls = (0..200).map(|_| {
        let client = gw.client.clone();
        tokio::spawn(async move { client.get_token(VAULT).await })
    });
    let tokens: Vec<_> = futures::future::join_all(calls).await;
    let first = tokens[0]
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap()
        .secret()
        .to_string();
    for token in &tokens {
        assert_eq!(token.as_ref().unwrap().as_ref().unwrap().secret(), first);
    }
    assert_eq!(env.imds.token_requests(), 1);
}

#[tokio::test]
async fn user_assigned_selectors_reach_imds_as_the_right_parameter() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let selectors = [
        (
            Identity::ClientId(sample::USER_CLIENT_ID.into()),
            "client_id",
            sample::USER_CLIENT_ID,
        ),
        (
            Identity::ObjectId(sample::USER_OBJECT_ID.into()),
            "object_id",
            sample::USER_OBJECT_ID,
        ),
        (
            Identity::ResourceId(sample::USER_RESOURCE_ID.into()),
            "msi_res_id",
            sample::USER_RESOURCE_ID,
        ),
    ];
    for (i, (identity, param, value)) in selectors.into_iter().enumerate() {
        let token = gw.client.get_token_for(VAULT, identity).await.unwrap();
        let claims = env.verify(token.secret(), VAULT);
        assert_eq!(claims.oid, sample::USER_OBJECT_ID);
        assert_eq!(claims.appid, sample::USER_CLIENT_ID);
        // IMDS writes the segment as lower-case `resourcegroups`.
        assert!(
            claims
                .xms_mirid
                .eq_ignore_ascii_case(sample::USER_RESOURCE_ID),
            "{}",
            claims.xms_mirid
        );
        let request = &env.imds.requests()[i];
        assert!(
            request.query.iter().any(|(k, v)| k == param && v == value),
            "{param} missing from {:?}",
            request.query
        );
        assert!(request
            .query
            .iter()
            .any(|(k, v)| k == "resource" && v == VAULT));
        assert!(request.query.iter().any(|(k, _)| k == "api-version"));
        assert!(request
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("metadata") && v == "true"));
    }
}

#[tokio::test]
async fn trailing_slash_resources_are_distinct_audiences() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let bare = gw
        .client
        .get_token("https://management.azure.com")
        .await
        .unwrap();
    let slash = gw
        .client
        .get_token("https://management.azure.com/")
        .await
        .unwrap();
    assert_ne!(bare.secret(), slash.secret());
    env.verify(bare.secret(), "https://management.azure.com");
    env.verify(slash.secret(), "https://management.azure.com/");
    assert_eq!(slash.resource, "https://management.azure.com/");
    assert_eq!(env.imds.token_requests(), 2);
}

#[tokio::test]
async fn gone_then_ok_recovers_after_backoff() {
    let env = TestEnv::new().await;
    env.imds
        .script([ScriptedResponse::status(410), ScriptedResponse::status(410)]);
    let (gw, clock) = env.start_manual(env.config()).await;
    let token = gw.client.get_token(VAULT).await.unwrap();
    env.verify(token.secret(), VAULT);
    assert_eq!(env.imds.token_requests(), 3);
    let backoffs = clock.backoffs();
    assert_eq!(backoffs.len(), 2, "{backoffs:?}");
    assert!(backoffs[1] > backoffs[0], "exponential: {backoffs:?}");
}

#[tokio::test]
async fn throttled_with_retry_after_waits_at_least_that_long() {
    let env = TestEnv::new().await;
    env.imds.script([ScriptedResponse::throttled(7)]);
    let (gw, clock) = env.start_manual(env.config()).await;
    gw.client.get_token(VAULT).await.unwrap();
    assert_eq!(env.imds.token_requests(), 2);
    assert!(
        clock
            .backoffs()
            .iter()
            .any(|d| *d >= Duration::from_secs(7)),
        "Retry-After honoured: {:?}",
        clock.backoffs()
    );
}

#[tokio::test]
async fn persistent_server_errors_give_unavailable_after_bounded_retries() {
    let env = TestEnv::new().await;
    env.imds
        .script((0..10).map(|_| ScriptedResponse::status(503)));
    let (gw, _clock) = env.start_manual(env.config()).await;
    let err = gw.client.get_token(VAULT).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert_eq!(env.imds.token_requests(), 6, "1 try + 5 retries");
}

#[tokio::test]
async fn bad_request_is_final_and_not_retried() {
    let env = TestEnv::new().await;
    let (gw, clock) = env.start_manual(env.config()).await;
    let err = gw
        .client
        .get_token_for(
            VAULT,
            Identity::ClientId("00000000-0000-4000-8000-00000000dead".into()),
        )
        .await
        .unwrap_err();
    let Error::IdentityUnavailable(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("Identity not found"), "{message}");
    assert!(message.contains("may not be enabled"), "{message}");
    assert!(
        message.contains("00000000-0000-4000-8000-00000000dead"),
        "{message}"
    );
    assert_eq!(env.imds.token_requests(), 1);
    assert!(clock.backoffs().is_empty());
}

#[tokio::test]
async fn unreachable_imds_is_unavailable_with_guidance() {
    let env = TestEnv::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut config = env.config();
    config.identity.imds_endpoint = format!("http://127.0.0.1:{port}").parse().unwrap();
    let gw = env.start(config).await;
    let mut request = tonic::Request::new(identity_gateway_client::proto::GetTokenRequest {
        resource: VAULT.into(),
        identity: None,
    });
    // Far below the 30+ s of backoff a retried refusal would take.
    request.set_timeout(Duration::from_secs(5));
    let status = gw.client.rpc().get_token(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("cannot reach IMDS"),
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("managed identity"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn caller_deadline_is_respected() {
    let env = TestEnv::new().await;
    env.imds.set_latency(Duration::from_secs(30));
    let gw = env.start(env.config()).await;
    let mut request = tonic::Request::new(identity_gateway_client::proto::GetTokenRequest {
        resource: VAULT.into(),
        identity: None,
    });
    // The gateway answers 100 ms before the caller's own timer would fire.
    request.set_timeout(Duration::from_secs(2));
    let status = gw.client.rpc().get_token(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("vault.azure.net"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn malformed_requests_name_the_field() {
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let cases = [
        ("", Identity::SystemAssigned, "resource"),
        (
            "https://vault.azure.net/.default",
            Identity::SystemAssigned,
            "resource",
        ),
        (
            "https://vault.azure.net\r\nX: y",
            Identity::SystemAssigned,
            "resource",
        ),
        (
            VAULT,
            Identity::ClientId("abc&resource=https://evil".into()),
            "identity.client_id",
        ),
        (
            VAULT,
            Identity::ResourceId("/subscriptions/x".into()),
            "identity.resource_id",
        ),
    ];
    for (resource, identity, field) in cases {
        let err = gw
            .client
            .get_token_for(resource, identity)
            .await
            .unwrap_err();
        let Error::InvalidArgument(message) = &err else {
            panic!("{err:?}")
        };
        assert!(message.contains(field), "{message} should name {field}");
    }
    assert_eq!(env.imds.token_requests(), 0, "nothing bad reached IMDS");
}

#[tokio::test]
async fn refresh_ahead_renews_before_expiry_and_watchers_get_the_new_token() {
    let env = TestEnv::with_imds(ImdsConfig {
        token_lifetime: Duration::from_secs(3600),
        ..ImdsConfig::default()
    })
    .await;
    let (gw, clock) = env.start_manual(env.config()).await;
    let mut events = gw.gateway.tokens().events();
    let mut watch = Box::pin(
        gw.client
            .watch_token(VAULT, Identity::SystemAssigned)
            .await
            .unwrap(),
    );
    let first = watch.next().await.unwrap().unwrap();
    env.verify(first.secret(), VAULT);
    assert_eq!(env.imds.token_requests(), 1);

    // 1 h tokens refresh 5 min (minus up to 30 s jitter) before expiry.
    clock.advance(Duration::from_secs(3600 - 330 - 1));
    tokio::task::yield_now().await;
    assert_eq!(env.imds.token_requests(), 1, "not refreshed too early");
    clock.advance(Duration::from_secs(31));
    let event = next_event(&mut events, |e| {
        matches!(
            e,
            CacheEvent::Fetched {
                background: true,
                ..
            }
        )
    })
    .await;
    assert_eq!(
        event,
        CacheEvent::Fetched {
            resource: VAULT.into(),
            background: true
        }
    );
    assert_eq!(env.imds.token_requests(), 2);
    let second = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("watcher told of the refresh")
        .unwrap()
        .unwrap();
    env.verify(second.secret(), VAULT);
    // Callers are served from the cache during and after the refresh.
    gw.client.get_token(VAULT).await.unwrap();
    assert_eq!(env.imds.token_requests(), 2);
}

#[tokio::test]
async fn failing_refresh_keeps_serving_the_cached_token_until_expiry() {
    let env = TestEnv::with_imds(ImdsConfig {
        token_lifetime: Duration::from_secs(3600),
        ..ImdsConfig::default()
    })
    .await;
    let (gw, clock) = env.start_manual(env.config()).await;
    let mut events = gw.gateway.tokens().events();
    let cached = gw.client.get_token(VAULT).await.unwrap();

    env.imds
        .script((0..6).map(|_| ScriptedResponse::status(500)));
    clock.advance(Duration::from_secs(3600 - 299));
    next_event(&mut events, |e| {
        matches!(e, CacheEvent::RefreshFailed { .. })
    })
    .await;
    assert!(gw.gateway.tokens().refresh_failures() >= 1);
    let during = gw.client.get_token(VAULT).await.unwrap();
    assert_eq!(
        during.secret(),
        cached.secret(),
        "cached token still served"
    );

    // Once IMDS is back, a later refresh attempt succeeds before expiry.
    clock.advance(Duration::from_secs(60));
    next_event(&mut events, |e| {
        matches!(
            e,
            CacheEvent::Fetched {
                background: true,
                ..
            }
        )
    })
    .await;
    let after = gw.client.get_token(VAULT).await.unwrap();
    env.verify(after.secret(), VAULT);
}

#[tokio::test]
async fn the_governor_keeps_the_gateway_under_imds_limits() {
    use identity_gateway_emulator::imds::RateLimits;
    let env = TestEnv::new().await;
    env.imds.set_rate_limits(Some(RateLimits::IMDS));
    env.imds.set_latency(Duration::from_millis(20));
    let gw = env.start(env.config()).await;
    let calls = (0..40).map(|i| {
        let client = gw.client.clone();
        tokio::spawn(async move {
            client
                .get_token(&format!("https://app-{i}.example.test"))
                .await
        })
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap().unwrap();
    }
    assert_eq!(
        env.imds.throttled(),
        0,
        "IMDS never had to throttle the gateway"
    );
    assert!(env.imds.max_concurrent_seen() <= 5);
    assert_eq!(env.imds.token_requests(), 40);
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let env = TestEnv::new().await;
    let gw = env.start(env.config()).await;
    let channel = identity_gateway_test_channel(&gw.target).await;

    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "identity_gateway.v1.IdentityGateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, 1, "SERVING");

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list")
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"identity_gateway.v1.IdentityGateway"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

/// A raw tonic channel to the gateway (for services client-rs does not wrap).
async fn identity_gateway_test_channel(target: &str) -> tonic::transport::Channel {
    let target = target.to_owned();
    tonic::transport::Endpoint::from_static("http://gateway.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let target = target.clone();
            async move {
                #[cfg(unix)]
                let io = tokio::net::UnixStream::connect(target).await?;
                #[cfg(windows)]
                let io = tokio::net::windows::named_pipe::ClientOptions::new().open(target)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        }))
        .await
        .unwrap()
}

#[cfg(unix)]
#[tokio::test]
async fn caller_policy_uses_the_sockets_peer_credentials() {
    use identity_gateway_service::policy::{IdEntry, RuleConfig};
    let env = TestEnv::new().await;
    let mut config = env.config();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    config.policy.rules = vec![RuleConfig {
        uids: vec![IdEntry::Id(me)],
        identities: vec!["system".into()],
        resources: vec![VAULT.into()],
        ..RuleConfig::default()
    }];
    let gw = env.start(config).await;
    gw.client.get_token(VAULT).await.unwrap();
    let err = gw
        .client
        .get_token("https://storage.azure.com/")
        .await
        .unwrap_err();
    let Error::PermissionDenied(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains(&format!("uid {me}")) && message.contains("storage.azure.com"),
        "{message}"
    );
    let err = gw
        .client
        .get_token_for(VAULT, Identity::ClientId(sample::USER_CLIENT_ID.into()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        env.imds.token_requests(),
        1,
        "refused calls never reach IMDS"
    );
}

#[tokio::test]
async fn loopback_tcp_listener_serves_the_same_cache() {
    let env = TestEnv::new().await;
    let mut config = env.config();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    config.tcp = Some(addr);
    let gw = env.start(config).await;
    let over_socket = gw.client.get_token(VAULT).await.unwrap();
    let tcp = identity_gateway_client::GatewayClient::connect(&format!("http://{addr}"))
        .await
        .unwrap();
    let over_tcp = tcp.get_token(VAULT).await.unwrap();
    assert_eq!(
        over_tcp.secret(),
        over_socket.secret(),
        "one cache behind both listeners"
    );
    assert_eq!(env.imds.token_requests(), 1);
}
