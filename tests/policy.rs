//! The caller policy through real sockets, as real other users (the test
//! binary re-runs itself under `setpriv`; see `common::as_uid`): every RPC
//! allowed and denied per caller, `"*"` and kinds a rule does not name, SAS
//! caps, reload keeping granted open streams and ending revoked ones, an
//! invalid reload keeping the old policy, the trailing-dot account, SQL
//! session state not crossing callers with a pool of one, anonymous and attributed loopback callers, the
//! identity endpoint's callers and header file, and a socket-group member
//! reaching the socket in the directory the gateway created.

use std::time::Duration;

use futures::StreamExt;
use identity_gateway::{
    config::Config,
    emulator_mode::{self, RunningEmulator},
    Options,
};
use identity_gateway_client::{proto, Identity};
use identity_gateway_emulator::{blob, imds::ImdsConfig, sample};
use identity_gateway_service::PolicyConfig;
use tonic::Code;

use crate::common::{
    as_uid::{self, Call, Outcome, User},
    TestEnv, TestGateway,
};

const VAULT: &str = "https://vault.azure.net";
const STORAGE: &str = "https://storage.azure.com/";
/// The socket group of these tests (no such group needs to exist: numeric).
const GROUP: u32 = 4242;

fn policy(text: &str) -> PolicyConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("policy TOML: {e}\n{text}"))
}

/// A gateway on the emulator's fakes, its socket in a directory the gateway
/// creates (`<tmp>/run`) for the socket group.
async fn start(
    env: &TestEnv,
    policy_text: &str,
    tweak: impl FnOnce(&mut Config),
    options: Options,
) -> (RunningEmulator, TestGateway) {
    as_uid::open_dir(env.dir.path());
    let mut config = env.config();
    config.socket = env.dir.path().join("run/gw.sock");
    config.socket_group = Some(GROUP.to_string());
    config.policy = policy(policy_text);
    // The CA beside a socket path in the existing temp dir: `run/` is the
    // gateway's to create (with the socket group), after this.
    let emulator = emulator_mode::start(&env.dir.path().join("gw.sock"))
        .await
        .expect("emulator");
    emulator.configure(&mut config);
    tweak(&mut config);
    let gw = TestEnv::start_app(config, options).await;
    (emulator, gw)
}

fn socket(gw: &TestGateway) -> String {
    gw.socket.to_str().unwrap().to_string()
}

fn get_token(resource: &str) -> Call {
    Call::GetToken {
        resource: resource.into(),
        client_id: None,
    }
}

fn sql(emulator: &RunningEmulator, database: &str, query: &str) -> Call {
    Call::QuerySql {
        server: emulator.sql.server(),
        database: database.into(),
        query: query.into(),
    }
}

fn sas(emulator: &RunningEmulator, method: proto::SasMethod, permissions: &str, secs: i64) -> Call {
    Call::GetServiceSas {
        method: method as i32,
        account: blob::SAMPLE_ACCOUNT.into(),
        container: blob::SAMPLE_CONTAINER.into(),
        blob: blob::SAMPLE_BLOB.into(),
        permissions: permissions.into(),
        expires_in_secs: secs,
        blob_endpoint: emulator.blob.base_url(),
        subscription_id: sample::SUBSCRIPTION_ID.into(),
        resource_group: sample::RESOURCE_GROUP.into(),
    }
}

fn list(emulator: &RunningEmulator, path: &str) -> Call {
    Call::ListDataLake {
        account_url: emulator.datalake_gen2.account_url(),
        generation: proto::DataLakeGeneration::Gen2 as i32,
        filesystem: "data".into(),
        path: path.into(),
    }
}

/// Every RPC once, the way rule "app" allows it.
fn every_rpc(emulator: &RunningEmulator) -> Vec<(&'static str, Call)> {
    vec![
        ("GetToken", get_token(VAULT)),
        (
            "WatchToken",
            Call::WatchToken {
                resource: VAULT.into(),
            },
        ),
        (
            "GetSecret",
            Call::GetSecret {
                vault_url: emulator.keyvault.vault_url(),
                name: "app-password".into(),
            },
        ),
        (
            "ReadBlob",
            Call::ReadBlob {
                url: emulator.blob.blob_url(
                    blob::SAMPLE_ACCOUNT,
                    blob::SAMPLE_CONTAINER,
                    blob::SAMPLE_BLOB,
                ),
            },
        ),
        (
            "GetServiceSas",
            sas(emulator, proto::SasMethod::UserDelegation, "r", 600),
        ),
        ("ListDataLake", list(emulator, "raw")),
        (
            "QuerySql",
            sql(emulator, "appdb", "SELECT name FROM products"),
        ),
        (
            "GetResourceGroup",
            Call::GetResourceGroup {
                subscription_id: sample::SUBSCRIPTION_ID.into(),
                name: sample::RESOURCE_GROUP.into(),
            },
        ),
    ]
}

fn app_policy() -> String {
    format!(
        r#"
        [[rules]]
        name = "app"
        uids = [1001]
        identities = ["system"]
        resources = ["{VAULT}"]
        vaults = ["localhost"]
        secrets = ["app-*"]
        storage_accounts = ["{account}", "localhost"]
        datalake_paths = ["data/raw"]
        sql_servers = ["localhost"]
        sql_databases = ["appdb"]
        subscriptions = ["{sub}"]
        sas_permissions = "rl"
        sas_max_lifetime_secs = 3600
        sas_methods = ["user_delegation"]

        [[rules]]
        name = "reader"
        uids = [1002]
        identities = ["*"]
        storage_accounts = ["*"]
        datalake_paths = ["*"]
        "#,
        account = blob::SAMPLE_ACCOUNT,
        sub = sample::SUBSCRIPTION_ID,
    )
}

fn assert_denied(outcome: &Outcome, what: &str, needles: &[&str]) {
    assert_eq!(outcome.code, "PermissionDenied", "{what}: {outcome:?}");
    for needle in needles {
        assert!(
            outcome.message.contains(needle),
            "{what}: '{needle}' missing from {}",
            outcome.message
        );
    }
}

#[tokio::test]
async fn every_rpc_is_allowed_or_denied_per_caller_as_real_users() {
    if !as_uid::available() {
        return;
    }
    let env = TestEnv::new().await;
    let (emulator, gw) = start(&env, &app_policy(), |_| {}, Options::default()).await;
    let dir = env.dir.path();
    let target = socket(&gw);
    let app = User::new(1001, 1001, &[GROUP]);
    let reader = User::new(1002, 1002, &[GROUP]);
    let stranger = User::new(1003, 1003, &[GROUP]);
    let outsider = User::new(1004, 1004, &[]);

    // The directory the gateway created belongs to the socket group.
    {
        use std::os::unix::fs::MetadataExt;
        let run = std::fs::metadata(gw.socket.parent().unwrap()).unwrap();
        assert_eq!((run.mode() & 0o7777, run.gid()), (0o750, GROUP));
    }

    // Rule "app": every RPC as it names it.
    let calls = every_rpc(&emulator);
    let names: Vec<&str> = calls.iter().map(|(n, _)| *n).collect();
    let outcomes = as_uid::run(
        dir,
        &app,
        &target,
        calls.into_iter().map(|(_, c)| c).collect(),
    )
    .await;
    for (name, outcome) in names.iter().zip(&outcomes) {
        assert!(outcome.ok(), "uid 1001 {name}: {outcome:?}");
    }
    assert_eq!(outcomes[2].value, "correct-horse-battery-staple");
    assert_eq!(outcomes[4].value, "r");
    assert!(outcomes[6].value.contains("Widget"), "{:?}", outcomes[6]);

    // ... and nothing it does not name.
    let denied = vec![
        (
            get_token(STORAGE),
            vec!["rule 'app'", "uid 1001", "resources"],
        ),
        (
            Call::GetToken {
                resource: VAULT.into(),
                client_id: Some(sample::USER_CLIENT_ID.into()),
            },
            vec!["identities: system"],
        ),
        (
            Call::GetSecret {
                vault_url: emulator.keyvault.vault_url(),
                name: "db-connection".into(),
            },
            vec!["secret 'db-connection'", "secrets: app-*"],
        ),
        (
            Call::ReadBlob {
                url: emulator.blob.blob_url("otheraccount", "c", "b"),
            },
            vec!["storage account 'otheraccount'"],
        ),
        (
            sas(&emulator, proto::SasMethod::UserDelegation, "rw", 600),
            vec!["SAS permission 'w'", "sas_permissions: rl"],
        ),
        (
            sas(&emulator, proto::SasMethod::UserDelegation, "r", 7200),
            vec!["sas_max_lifetime_secs: 3600"],
        ),
        (
            sas(&emulator, proto::SasMethod::ArmListServiceSas, "r", 600),
            vec!["sas_methods: user_delegation"],
        ),
        (
            list(&emulator, "curated"),
            vec!["Data Lake path '/data/curated'"],
        ),
        (
            sql(&emulator, "master", "SELECT 1"),
            vec!["SQL database 'master'"],
        ),
        (
            Call::GetResourceGroup {
                subscription_id: "00000000-0000-0000-0000-000000000000".into(),
                name: "rg".into(),
            },
            vec!["subscription '00000000-0000-0000-0000-000000000000'"],
        ),
    ];
    let (calls, needles): (Vec<_>, Vec<_>) = denied.into_iter().unzip();
    let outcomes = as_uid::run(dir, &app, &target, calls).await;
    for (outcome, needles) in outcomes.iter().zip(&needles) {
        assert_denied(outcome, "uid 1001", needles);
    }

    // Rule "reader": "*" grants whole kinds; the kinds it does not name are denied.
    let outcomes = as_uid::run(
        dir,
        &reader,
        &target,
        every_rpc(&emulator).into_iter().map(|(_, c)| c).collect(),
    )
    .await;
    for (name, outcome) in names.iter().zip(&outcomes) {
        match *name {
            "ReadBlob" | "ListDataLake" => assert!(outcome.ok(), "uid 1002 {name}: {outcome:?}"),
            "GetServiceSas" => assert_denied(outcome, name, &["rule 'reader'", "sas_permissions"]),
            "GetToken" | "WatchToken" => assert_denied(outcome, name, &["resources: nothing"]),
            "GetSecret" => assert_denied(outcome, name, &["vaults: nothing"]),
            "QuerySql" => assert_denied(outcome, name, &["sql_servers: nothing"]),
            "GetResourceGroup" => assert_denied(outcome, name, &["subscriptions: nothing"]),
            other => panic!("{other}"),
        }
    }

    // No rule for uid 1003; uid 1004 is not in the socket group at all.
    let outcomes = as_uid::run(dir, &stranger, &target, vec![get_token(VAULT)]).await;
    assert_denied(&outcomes[0], "uid 1003", &["no rule applies to uid 1003"]);
    let outcomes = as_uid::run(dir, &outsider, &target, vec![get_token(VAULT)]).await;
    assert_eq!(outcomes[0].code, "Connect", "{:?}", outcomes[0]);
    assert!(
        outcomes[0]
            .message
            .to_lowercase()
            .contains("permission denied"),
        "{:?}",
        outcomes[0]
    );
}

#[tokio::test]
async fn sql_session_state_never_reaches_another_caller_with_a_pool_of_one() {
    if !as_uid::available() {
        return;
    }
    let env = TestEnv::new().await;
    let rules = r#"
        [[rules]]
        uids = [1001, 1002]
        identities = ["system"]
        sql_servers = ["localhost"]
        sql_databases = ["appdb"]
    "#;
    let (emulator, gw) = start(&env, rules, |c| c.sql.pool_size = 1, Options::default()).await;
    emulator.sql.execute("CREATE TABLE ledger (n int)").unwrap();
    let dir = env.dir.path();
    let target = socket(&gw);
    let a = User::new(1001, 1001, &[GROUP]);
    let b = User::new(1002, 1002, &[GROUP]);

    // A leaves a temp table with its data and implicit transactions on.
    let outcomes = as_uid::run(
        dir,
        &a,
        &target,
        vec![
            sql(
                &emulator,
                "appdb",
                "CREATE TABLE #secret (v nvarchar(50)); INSERT INTO #secret VALUES ('a-data')",
            ),
            sql(&emulator, "appdb", "SELECT v FROM #secret"),
            sql(&emulator, "appdb", "SET IMPLICIT_TRANSACTIONS ON"),
        ],
    )
    .await;
    assert!(outcomes.iter().all(Outcome::ok), "{outcomes:?}");
    assert!(outcomes[1].value.contains("a-data"), "A sees its own table");

    // B, with the same identity, server and database and one pooled
    // connection per pool, sees none of it.
    let outcomes = as_uid::run(
        dir,
        &b,
        &target,
        vec![
            sql(&emulator, "appdb", "SELECT v FROM #secret"),
            sql(&emulator, "appdb", "INSERT INTO ledger VALUES (1)"),
        ],
    )
    .await;
    assert!(
        !outcomes[0].ok() && !outcomes[0].value.contains("a-data"),
        "B must not read A's temp table: {:?}",
        outcomes[0]
    );
    assert!(
        outcomes[0]
            .message
            .contains("Invalid object name '#secret'"),
        "{:?}",
        outcomes[0]
    );
    assert!(outcomes[1].ok(), "{:?}", outcomes[1]);
    assert_eq!(
        emulator
            .sql
            .query_scalar("SELECT COUNT(*) FROM ledger")
            .unwrap()
            .as_deref(),
        Some("1"),
        "B's INSERT is committed, not held in A's implicit transaction"
    );

    // A's own session is still A's (the pool is per caller, not no pool).
    let outcomes = as_uid::run(
        dir,
        &a,
        &target,
        vec![sql(&emulator, "appdb", "SELECT v FROM #secret")],
    )
    .await;
    assert!(outcomes[0].value.contains("a-data"), "{:?}", outcomes[0]);
}

#[tokio::test]
async fn loopback_callers_are_attributed_or_refused() {
    if !as_uid::available() {
        return;
    }
    let free_addr = || {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    let addr = free_addr();
    let url = format!("http://{addr}");
    let rules = format!(
        r#"
        [[rules]]
        uids = [1001]
        identities = ["system"]
        resources = ["{VAULT}"]
        "#
    );
    let env = TestEnv::new().await;
    let (_emulator, gw) = start(
        &env,
        &rules,
        |c| {
            c.tcp = Some(addr);
            c.socket_group = None;
        },
        Options::default(),
    )
    .await;
    let dir = env.dir.path();
    // Attributed by the TCP table: uid 1001 is allowed, uid 1002 is named
    // in the denial (so it was attributed too, not anonymous).
    let ok = as_uid::run(
        dir,
        &User::new(1001, 1001, &[]),
        &url,
        vec![get_token(VAULT)],
    )
    .await;
    assert!(ok[0].ok(), "{:?}", ok[0]);
    let denied = as_uid::run(
        dir,
        &User::new(1002, 1002, &[]),
        &url,
        vec![get_token(VAULT)],
    )
    .await;
    assert_denied(
        &denied[0],
        "uid 1002 over TCP",
        &["no rule applies to uid 1002"],
    );
    gw.shutdown().await;

    // A caller the gateway cannot attribute (no TCP table to read) is
    // refused, unless the policy allows anonymous loopback callers.
    let blind = tempfile::tempdir().unwrap();
    for (allow, expect_ok) in [(false, false), (true, true)] {
        let addr = free_addr();
        let url = format!("http://{addr}");
        let env = TestEnv::new().await;
        let text = format!("allow_anonymous_loopback = {allow}\n");
        let (_emulator, gw) = start(
            &env,
            &text,
            |c| {
                c.tcp = Some(addr);
                c.socket_group = None;
            },
            Options {
                proc_root: Some(blind.path().to_path_buf()),
                ..Options::default()
            },
        )
        .await;
        let outcome = &as_uid::run(
            env.dir.path(),
            &User::new(1001, 1001, &[]),
            &url,
            vec![get_token(VAULT)],
        )
        .await[0];
        if expect_ok {
            assert!(outcome.ok(), "{outcome:?}");
        } else {
            assert_denied(
                outcome,
                "anonymous",
                &["could not be attributed", "allow_anonymous_loopback"],
            );
        }
        gw.shutdown().await;
    }

    // With a socket group, loopback admits whom the socket admits: a
    // process outside the group is refused over TCP even with no rules; a
    // member and root are not.
    let addr = free_addr();
    let url = format!("http://{addr}");
    let env = TestEnv::new().await;
    let (_emulator, gw) = start(&env, "", |c| c.tcp = Some(addr), Options::default()).await;
    let outcome = &as_uid::run(
        env.dir.path(),
        &User::new(1003, 1003, &[]),
        &url,
        vec![get_token(VAULT)],
    )
    .await[0];
    assert_denied(outcome, "outside the group", &["uid 1003", "socket group"]);
    let outcome = &as_uid::run(
        env.dir.path(),
        &User::new(1004, 1004, &[GROUP]),
        &url,
        vec![get_token(VAULT)],
    )
    .await[0];
    assert!(outcome.ok(), "a member of the socket group: {outcome:?}");
    let root = identity_gateway_client::GatewayClient::connect(&url)
        .await
        .unwrap();
    root.get_token(VAULT).await.unwrap();
    gw.shutdown().await;
}

#[tokio::test]
async fn identity_endpoint_callers_are_attributed_and_the_header_file_is_the_groups() {
    if !as_uid::available() {
        return;
    }
    let env = TestEnv::new().await;
    let rules = format!(
        r#"
        [[rules]]
        name = "sdk-app"
        uids = [1001]
        identities = ["system"]
        resources = ["{VAULT}"]
        "#
    );
    let (_emulator, gw) = start(
        &env,
        &rules,
        |c| c.identity_endpoint.listen = Some("127.0.0.1:0".parse().unwrap()),
        Options::default(),
    )
    .await;
    let endpoint = gw.identity_endpoint.clone().expect("identity endpoint");
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&endpoint.header_file).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o640, GROUP));
    }
    let call = |resource: &str| Call::IdentityEndpoint {
        url: endpoint.url.clone(),
        resource: resource.into(),
        header_file: endpoint.header_file.clone(),
    };
    let dir = env.dir.path();
    let outcomes = as_uid::run(
        dir,
        &User::new(1001, 1001, &[GROUP]),
        "",
        vec![call(VAULT), call(STORAGE)],
    )
    .await;
    assert_eq!(outcomes[0].code, "200", "{:?}", outcomes[0]);
    assert_eq!(outcomes[0].value, VAULT);
    assert_eq!(outcomes[1].code, "403", "{:?}", outcomes[1]);
    assert!(
        outcomes[1].message.contains("rule 'sdk-app'") && outcomes[1].message.contains("uid 1001"),
        "{:?}",
        outcomes[1]
    );
    let outcomes = as_uid::run(dir, &User::new(1002, 1002, &[GROUP]), "", vec![call(VAULT)]).await;
    assert_eq!(outcomes[0].code, "403", "{:?}", outcomes[0]);
    assert!(
        outcomes[0].message.contains("uid 1002"),
        "{:?}",
        outcomes[0]
    );
    // Outside the group, the header cannot even be read.
    let outcomes = as_uid::run(dir, &User::new(1003, 1003, &[]), "", vec![call(VAULT)]).await;
    assert_eq!(outcomes[0].code, "ReadHeaderFile", "{:?}", outcomes[0]);
}

#[tokio::test]
async fn reload_keeps_watch_streams_and_an_invalid_file_keeps_the_old_policy() {
    let env = TestEnv::new().await;
    let file = env.dir.path().join("gateway.toml");
    let write = |resources: &str| write_own_rule(&file, resources);
    write(&format!("\"{VAULT}\""));
    let mut config = env.config();
    config.policy = Config::from_file(&file).unwrap().policy;
    config.config_file = Some(file.clone());
    let gw = env.start(config).await;

    let mut watch = Box::pin(
        gw.client
            .watch_token(VAULT, Identity::SystemAssigned)
            .await
            .unwrap(),
    );
    watch.next().await.unwrap().unwrap();
    let err = gw.client.get_token(STORAGE).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A new policy: storage too.
    write(&format!("\"{VAULT}\", \"{STORAGE}\""));
    gw.reloader.reload().unwrap();
    gw.client.get_token(STORAGE).await.unwrap();

    // An invalid file: refused with the reason, the policy in force stays.
    std::fs::write(
        &file,
        "[[policy.rules]]\nname = \"me\"\nidentities = [\"system\"]\n",
    )
    .unwrap();
    let err = gw.reloader.reload().unwrap_err().to_string();
    assert!(err.contains("rule 'me': names no callers"), "{err}");
    std::fs::write(&file, "[[policy.rules]\n").unwrap();
    let err = gw.reloader.reload().unwrap_err().to_string();
    assert!(err.contains("gateway.toml"), "{err}");
    gw.client.get_token(STORAGE).await.unwrap();

    // The watch stream opened before both reloads is still open.
    let next = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(
        next.is_err(),
        "the watch stream neither ended nor failed: {next:?}"
    );
    assert_eq!(gw.gateway.policy().rule_count(), 1);
}

#[tokio::test]
async fn a_reload_that_revokes_a_grant_ends_open_watch_streams_at_once() {
    let lines = crate::common::audit_capture();
    let env = TestEnv::with_imds(ImdsConfig {
        token_lifetime: Duration::from_secs(3600),
        ..ImdsConfig::default()
    })
    .await;
    let file = env.dir.path().join("gateway.toml");
    let write = |resources: &str| write_own_rule(&file, resources);
    write(&format!("\"{VAULT}\", \"{STORAGE}\""));
    let mut config = env.config();
    config.policy = Config::from_file(&file).unwrap().policy;
    config.config_file = Some(file.clone());
    let (gw, clock) = env.start_manual(config).await;
    let open = |resource: &'static str| {
        let client = gw.client.clone();
        async move {
            Box::pin(
                client
                    .watch_token(resource, Identity::SystemAssigned)
                    .await
                    .unwrap(),
            )
        }
    };
    let (mut vault, mut storage) = (open(VAULT).await, open(STORAGE).await);
    vault.next().await.unwrap().unwrap();
    let first = storage.next().await.unwrap().unwrap();
    let quiet = Duration::from_millis(300);

    // A reload that keeps both grants ends neither stream, and both still
    // get their refreshed tokens (judged again at the refresh).
    write(&format!("\"{STORAGE}\", \"{VAULT}\""));
    gw.reloader.reload().unwrap();
    for watch in [&mut vault, &mut storage] {
        let next = tokio::time::timeout(quiet, watch.next()).await;
        assert!(next.is_err(), "a granting reload ended a stream: {next:?}");
    }
    // 1 h tokens refresh 5 min (minus up to 30 s jitter) before expiry.
    clock.advance(Duration::from_secs(3600 - 330 - 1));
    tokio::task::yield_now().await;
    clock.advance(Duration::from_secs(31));
    for (watch, audience) in [(&mut vault, VAULT), (&mut storage, STORAGE)] {
        let refreshed = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the refreshed token")
            .expect("the stream is open")
            .expect("still granted");
        env.verify(refreshed.secret(), audience);
    }

    // Storage revoked: that stream ends at once, not at its next refresh,
    // with the rule and the caller; the vault stream stays.
    write(&format!("\"{VAULT}\""));
    gw.reloader.reload().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), storage.next())
        .await
        .expect("the revoked stream ends promptly")
        .expect("a last message")
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let message = err.to_string();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    assert!(
        message.contains("rule 'me'")
            && message.contains(&format!("uid {me}"))
            && message.contains(STORAGE),
        "{message}"
    );
    assert!(!message.contains(first.secret()), "{message}");
    assert!(storage.next().await.is_none(), "nothing after the denial");
    let next = tokio::time::timeout(quiet, vault.next()).await;
    assert!(next.is_err(), "the granted stream ended: {next:?}");

    // Audited like any other denial: one line, no token in it.
    let text = lines();
    let audited: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("detail=\"open stream ended\"") && l.contains(STORAGE))
        .collect();
    assert_eq!(audited.len(), 1, "{text}");
    assert!(
        audited[0].contains("rpc=\"WatchToken\"") || audited[0].contains("rpc=WatchToken"),
        "{}",
        audited[0]
    );
    assert!(audited[0].contains("PermissionDenied"), "{}", audited[0]);
    assert!(!audited[0].contains(first.secret()), "{}", audited[0]);
    assert_eq!(
        gw.gateway.metrics().calls("WatchToken", "PermissionDenied"),
        0,
        "the open call was counted once, as OK"
    );
}

#[tokio::test]
async fn a_trailing_dot_names_the_account_the_request_goes_to() {
    let env = TestEnv::new().await;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut config = env.config();
    config.policy = policy(&format!(
        "[[rules]]\nuids = [{me}]\nidentities = [\"system\"]\nstorage_accounts = [\"appacct\"]\n"
    ));
    let gw = env.start(config).await;
    for url in [
        "https://victim.blob.core.windows.net./appacct/x",
        "https://VICTIM.blob.core.windows.net/appacct/x",
    ] {
        let err = crate::common::read_blob(&gw.client, url, None, 0, 0)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{url}: {err}");
        assert!(
            err.message().contains("storage account 'victim'"),
            "{url}: {}",
            err.message()
        );
    }
}

#[tokio::test]
async fn audit_lines_name_the_identity_and_the_sas_granted() {
    let lines = crate::common::audit_capture();
    let env = TestEnv::new().await;
    let mut config = env.config();
    let emulator = emulator_mode::start(&config.socket)
        .await
        .expect("emulator");
    emulator.configure(&mut config);
    let gw = env.start(config).await;
    let mut rpc = gw.client.rpc();
    let request = proto::GetServiceSasRequest {
        method: proto::SasMethod::UserDelegation as i32,
        account: blob::SAMPLE_ACCOUNT.into(),
        container: blob::SAMPLE_CONTAINER.into(),
        blob: blob::SAMPLE_BLOB.into(),
        permissions: "r".into(),
        blob_endpoint: emulator.blob.base_url(),
        identity: Identity::SystemAssigned.to_proto(),
        ..Default::default()
    };
    let issued = rpc.get_service_sas(request).await.unwrap().into_inner();
    let _ = gw
        .client
        .get_token_for(VAULT, Identity::ClientId(sample::USER_CLIENT_ID.into()))
        .await
        .unwrap();
    let expiry = issued.expires_on.unwrap();
    let expiry = time::OffsetDateTime::from_unix_timestamp(expiry.seconds)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let text = lines();
    let sas_line = text
        .lines()
        .find(|l| l.contains("GetServiceSas") && l.contains(&expiry))
        .unwrap_or_else(|| panic!("no GetServiceSas audit line with expiry {expiry}:\n{text}"));
    assert!(
        sas_line.contains("identity=system") && sas_line.contains("sas_permissions=r "),
        "{sas_line}"
    );
    assert!(
        !sas_line.contains(&issued.sas_token),
        "never the SAS itself"
    );
    assert!(
        text.lines().any(|l| l.contains("GetToken")
            && l.contains(&format!("identity=client_id={}", sample::USER_CLIENT_ID))),
        "{text}"
    );
}

/// Writes a policy file with one rule, "me", granting this process's uid the
/// system identity for `resources` (a TOML list body, quoted).
fn write_own_rule(file: &std::path::Path, resources: &str) {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    std::fs::write(
        file,
        format!(
            "[[policy.rules]]\nname = \"me\"\nuids = [{me}]\nidentities = [\"system\"]\nresources = [{resources}]\n"
        ),
    )
    .unwrap()
}
