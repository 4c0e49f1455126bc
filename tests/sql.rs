//! QuerySql through the socket against the fake TDS server over TLS: typed
//! result sets, bound parameters, errors with their SQL numbers, token
//! audience and expiry at login, pooling, cancellation and backpressure.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use identity_gateway::config::Config;
use identity_gateway_client::proto::{
    query_sql_response::Event, sql_value::Kind, QuerySqlRequest, SqlQueryDone, SqlResultSetColumns,
    SqlRow, SqlValue,
};
use identity_gateway_emulator::{sample, DatabaseUsers, SqlFake, SqlFakeConfig};
use tonic::{Code, Status, Streaming};

use crate::common::{TestEnv, TestGateway};

const SQL_AUDIENCE: &str = "https://database.windows.net/";

async fn start_fake(env: &TestEnv, config: SqlFakeConfig) -> SqlFake {
    let fake = SqlFake::start(env.authority.clone(), &env.ca, config)
        .await
        .expect("start fake SQL server");
    identity_gateway_emulator::tds::seed_sample(&fake).expect("seed sample data");
    fake
}

/// An environment with the sample database and a gateway on the real clock.
async fn setup() -> (TestEnv, SqlFake, TestGateway) {
    let env = TestEnv::new().await;
    let sql = start_fake(&env, SqlFakeConfig::default()).await;
    let gw = env.start(env.config()).await;
    (env, sql, gw)
}

fn request(sql: &SqlFake, query: &str, parameters: Vec<Kind>) -> QuerySqlRequest {
    QuerySqlRequest {
        server: format!("{}:{}", sql.host(), sql.port()),
        database: sql.database().into(),
        query: query.into(),
        parameters: parameters
            .into_iter()
            .map(|k| SqlValue { kind: Some(k) })
            .collect(),
        ..Default::default()
    }
}

/// Everything a query streamed back.
#[derive(Debug, Default)]
struct Collected {
    columns: Vec<SqlResultSetColumns>,
    /// (result set, rows) per batch, in order.
    batches: Vec<(u32, Vec<SqlRow>)>,
    done: Option<SqlQueryDone>,
}

impl Collected {
    fn rows(&self, result_set: u32) -> Vec<Vec<Option<Kind>>> {
        self.batches
            .iter()
            .filter(|(set, _)| *set == result_set)
            .flat_map(|(_, rows)| rows.iter())
            .map(|row| row.values.iter().map(|v| v.kind.clone()).collect())
            .collect()
    }
}

async fn drain(
    mut stream: Streaming<identity_gateway_client::proto::QuerySqlResponse>,
) -> Result<Collected, Status> {
    let mut out = Collected::default();
    while let Some(message) = stream.message().await? {
        match message.event {
            Some(Event::Columns(c)) => out.columns.push(c),
            Some(Event::Rows(r)) => out.batches.push((r.result_set, r.rows)),
            Some(Event::Done(d)) => out.done = Some(d),
            None => panic!("an empty QuerySqlResponse"),
        }
    }
    Ok(out)
}

async fn run(gw: &TestGateway, request: QuerySqlRequest) -> Result<Collected, Status> {
    drain(open(gw, request).await?).await
}

/// The response stream of a query, as the generated client gives it.
async fn open(
    gw: &TestGateway,
    request: QuerySqlRequest,
) -> Result<Streaming<identity_gateway_client::proto::QuerySqlResponse>, Status> {
    Ok(gw.client.rpc().query_sql(request).await?.into_inner())
}

fn null() -> Option<Kind> {
    Some(Kind::Null(0))
}

/// Waits (bounded) for a condition another task brings about.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn typed_columns_and_nulls_come_back_over_tls() {
    let (_env, sql, gw) = setup().await;
    let result = run(
        &gw,
        request(
            &sql,
            "SELECT id, name, price, in_stock, weight_kg, sku, released, updated_at, thumbnail \
             FROM dbo.products ORDER BY id",
            vec![],
        ),
    )
    .await
    .unwrap();
    let types: Vec<(&str, &str)> = result.columns[0]
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.r#type.as_str()))
        .collect();
    assert_eq!(
        types,
        [
            ("id", "int"),
            ("name", "nvarchar"),
            ("price", "decimal"),
            ("in_stock", "bit"),
            ("weight_kg", "float"),
            ("sku", "uniqueidentifier"),
            ("released", "date"),
            ("updated_at", "datetime2"),
            ("thumbnail", "varbinary"),
        ]
    );
    let rows = result.rows(0);
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        vec![
            Some(Kind::Int(1)),
            Some(Kind::String("Widget".into())),
            Some(Kind::Decimal("19.99".into())),
            Some(Kind::Bool(true)),
            Some(Kind::Float(0.25)),
            Some(Kind::Guid("6F9619FF-8B86-D011-B42D-00C04FC964FF".into())),
            Some(Kind::Date("2021-03-14".into())),
            // 2024-05-01 12:30:00.125 UTC
            Some(Kind::Timestamp(prost_types::Timestamp {
                seconds: 1_714_566_600,
                nanos: 125_000_000
            })),
            Some(Kind::Bytes(vec![0x89, 0x50, 0x4E, 0x47])),
        ]
    );
    assert_eq!(rows[1][8], null(), "one NULL (inline in a ROW)");
    assert_eq!(
        rows[2],
        vec![
            Some(Kind::Int(3)),
            Some(Kind::String("Gizmo".into())),
            null(),
            Some(Kind::Bool(true)),
            null(),
            null(),
            null(),
            null(),
            null(),
        ],
        "many NULLs (an NBCROW)"
    );
    let done = result.done.unwrap();
    assert_eq!(done.rows_per_result_set, [3]);
    assert!(!done.truncated);

    // The fake saw one login, with the VM's token for Azure SQL's audience.
    let logins = sql.logins();
    assert_eq!(logins.len(), 1);
    assert!(logins[0].accepted);
    assert_eq!(logins[0].oid.as_deref(), Some(sample::SYSTEM_OBJECT_ID));
    assert_eq!(logins[0].audience.as_deref(), Some(SQL_AUDIENCE));
}

#[tokio::test]
async fn typed_parameters_are_bound_and_an_injection_attempt_stays_data() {
    let (_env, sql, gw) = setup().await;
    // Every parameter kind matched against the typed columns of row 1.
    let matched = run(
        &gw,
        request(
            &sql,
            "SELECT id FROM products WHERE sku = @P1 AND released = @P2 AND price = @P3 \
             AND in_stock = @P4 AND updated_at = @P5 AND thumbnail = @P6 AND weight_kg = @P7 \
             AND name = @P8 AND id = @P9",
            vec![
                Kind::Guid("6f9619ff-8b86-d011-b42d-00c04fc964ff".into()),
                Kind::Date("2021-03-14".into()),
                Kind::Decimal("19.99".into()),
                Kind::Bool(true),
                Kind::Timestamp(prost_types::Timestamp {
                    seconds: 1_714_566_600,
                    nanos: 125_000_000,
                }),
                Kind::Bytes(vec![0x89, 0x50, 0x4E, 0x47]),
                Kind::Float(0.25),
                Kind::String("Widget".into()),
                Kind::Int(1),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(matched.rows(0), vec![vec![Some(Kind::Int(1))]]);

    let hostile = "'; DROP TABLE products; --";
    let inserted = run(
        &gw,
        request(
            &sql,
            "INSERT INTO products (id, name, in_stock, price) VALUES (@P1, @P2, @P3, @P4)",
            vec![
                Kind::Int(4),
                Kind::String(hostile.into()),
                Kind::Bool(false),
                Kind::Null(0),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(inserted.done.unwrap().rows_affected, [1]);
    let found = run(
        &gw,
        request(
            &sql,
            "SELECT name, price FROM products WHERE name = @P1",
            vec![Kind::String(hostile.into())],
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        found.rows(0),
        vec![vec![Some(Kind::String(hostile.into())), null()]]
    );
    assert_eq!(
        sql.query_scalar("SELECT count(*) FROM products")
            .unwrap()
            .as_deref(),
        Some("4"),
        "the table is still there, with the hostile string as a row"
    );
}

#[tokio::test]
async fn several_result_sets_and_row_counts() {
    let (_env, sql, gw) = setup().await;
    let result = run(
        &gw,
        request(
            &sql,
            "SELECT id FROM products ORDER BY id; \
             UPDATE products SET in_stock = 0 WHERE id > @P1; \
             SELECT name, in_stock FROM products WHERE id = @P1",
            vec![Kind::Int(1)],
        ),
    )
    .await
    .unwrap();
    assert_eq!(result.columns.len(), 2);
    assert_eq!(result.columns[0].result_set, 0);
    assert_eq!(result.columns[1].result_set, 1);
    assert_eq!(result.columns[1].columns[0].name, "name");
    assert_eq!(result.rows(0).len(), 3);
    assert_eq!(
        result.rows(1),
        vec![vec![
            Some(Kind::String("Widget".into())),
            Some(Kind::Bool(true))
        ]]
    );
    let done = result.done.unwrap();
    assert_eq!(done.rows_per_result_set, [3, 1]);
    assert_eq!(done.rows_affected, [2]);
}

#[tokio::test]
async fn server_errors_keep_their_numbers_and_the_pool_survives_them() {
    let (_env, sql, gw) = setup().await;
    let missing = run(&gw, request(&sql, "SELECT * FROM dbo.nowhere", vec![]))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    assert!(
        missing
            .message()
            .contains("SQL error 208: Invalid object name 'nowhere'."),
        "{}",
        missing.message()
    );
    let syntax = run(&gw, request(&sql, "SELEC 1", vec![]))
        .await
        .unwrap_err();
    assert_eq!(syntax.code(), Code::InvalidArgument);
    assert!(
        syntax.message().contains("SQL error 102"),
        "{}",
        syntax.message()
    );
    let denied = run(&gw, request(&sql, "SELECT * FROM dbo.salaries", vec![]))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("SQL error 229"),
        "{}",
        denied.message()
    );

    let ok = run(&gw, request(&sql, "SELECT 1 AS one", vec![]))
        .await
        .unwrap();
    assert_eq!(ok.rows(0), vec![vec![Some(Kind::Int(1))]]);
    let metrics = gw.gateway.sql().metrics();
    assert_eq!(
        metrics.opened.load(Ordering::Relaxed),
        1,
        "one connection served all four"
    );
    assert_eq!(sql.connections(), 1);
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused_at_login() {
    let env = TestEnv::new().await;
    // A server expecting the US Government audience refuses the public cloud's token.
    let sql = start_fake(
        &env,
        SqlFakeConfig {
            audience: "https://database.usgovcloudapi.net/".into(),
            ..SqlFakeConfig::default()
        },
    )
    .await;
    let gw = env.start(env.config()).await;
    let status = run(&gw, request(&sql, "SELECT 1", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("refused"), "{}", status.message());
    assert!(status.message().contains("18456"), "{}", status.message());
    assert!(!status.message().contains("eyJ"), "no token in messages");
    let logins = sql.logins();
    assert_eq!(logins.len(), 1);
    assert!(!logins[0].accepted);
    assert_eq!(logins[0].audience.as_deref(), Some(SQL_AUDIENCE));
}

#[tokio::test]
async fn an_identity_without_a_database_user_is_told_to_create_one() {
    let (_env, sql, gw) = setup().await;
    sql.set_users(DatabaseUsers::only([sample::USER_OBJECT_ID]));
    let status = run(&gw, request(&sql, "SELECT 1", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains(&format!(
            "CREATE USER [{}] FROM EXTERNAL PROVIDER",
            sample::VM_NAME
        )),
        "{}",
        status.message()
    );
    // The user-assigned identity has a user: its query works.
    let mut req = request(&sql, "SELECT SUSER_SNAME()", vec![]);
    req.identity = Some(identity_gateway_client::proto::Identity {
        selector: Some(
            identity_gateway_client::proto::identity::Selector::ClientId(
                sample::USER_CLIENT_ID.into(),
            ),
        ),
    });
    let result = run(&gw, req).await.unwrap();
    assert_eq!(
        result.rows(0),
        vec![vec![Some(Kind::String(format!(
            "{}@{}",
            sample::USER_IDENTITY_NAME,
            sample::TENANT_ID
        )))]]
    );
}

#[tokio::test]
async fn a_login_refused_as_expired_is_retried_once_with_a_new_token() {
    let (env, sql, gw) = setup().await;
    let cached = gw.client.get_token(SQL_AUDIENCE).await.unwrap();
    assert!(sql.expire_token(cached.secret()));
    env.imds.clear_token_cache();

    let result = run(&gw, request(&sql, "SELECT 7", vec![])).await.unwrap();
    assert_eq!(result.rows(0), vec![vec![Some(Kind::Int(7))]]);
    let logins = sql.logins();
    assert_eq!(logins.len(), 2);
    let (refused, accepted) = (&logins[0], &logins[1]);
    assert_eq!(
        refused.error.as_ref().map(|e| e.1.as_str()),
        Some("Login failed for user '<token-identified principal>'. Token is expired.")
    );
    assert!(accepted.accepted);
    assert_ne!(refused.token_id, accepted.token_id, "a new token was used");
    assert_eq!(
        gw.gateway
            .sql()
            .metrics()
            .login_retries
            .load(Ordering::Relaxed),
        1
    );
    // The new token replaced the refused one in the cache.
    let now = gw.client.get_token(SQL_AUDIENCE).await.unwrap();
    assert_ne!(now.secret(), cached.secret());
}

#[tokio::test]
async fn an_expired_token_the_identity_endpoint_still_serves_is_not_retried_forever() {
    let (_env, sql, gw) = setup().await;
    let cached = gw.client.get_token(SQL_AUDIENCE).await.unwrap();
    assert!(sql.expire_token(cached.secret()));
    // IMDS keeps handing out the same token: one refusal, no loop.
    let status = run(&gw, request(&sql, "SELECT 7", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("expired"), "{}", status.message());
    assert_eq!(sql.logins().len(), 1);
}

#[tokio::test]
async fn pooled_connections_are_not_reused_past_their_token_and_new_logins_get_a_fresh_one() {
    let env = TestEnv::new().await;
    let sql = start_fake(&env, SqlFakeConfig::default()).await;
    let (gw, clock) = env.start_manual(env.config()).await;
    run(&gw, request(&sql, "SELECT 1", vec![])).await.unwrap();
    run(&gw, request(&sql, "SELECT 2", vec![])).await.unwrap();
    assert_eq!(
        sql.connections(),
        1,
        "the second query reused the pooled connection"
    );

    // The gateway's clock reaches the token's last 15 seconds; IMDS has a new one.
    let first = sql.logins()[0].clone();
    let token = gw.client.get_token(SQL_AUDIENCE).await.unwrap();
    let left = token
        .expires_on
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    env.imds.clear_token_cache();
    clock.advance(left - Duration::from_secs(15));

    let result = run(&gw, request(&sql, "SELECT 3", vec![])).await.unwrap();
    assert_eq!(result.rows(0), vec![vec![Some(Kind::Int(3))]]);
    let logins = sql.logins();
    assert_eq!(logins.len(), 2, "a new login");
    assert!(logins[1].accepted);
    assert_ne!(logins[1].token_id, first.token_id, "with a fresh token");
    assert!(gw.gateway.sql().metrics().retired.load(Ordering::Relaxed) >= 1);
}

#[tokio::test]
async fn a_client_cancelling_mid_stream_stops_the_server_and_leaves_the_pool_healthy() {
    let (_env, sql, gw) = setup().await;
    let big = "SELECT n, printf('%0100d', n) AS pad FROM numbers LIMIT 1000000";
    let mut stream = open(&gw, request(&sql, big, vec![])).await.unwrap();
    let mut rows = 0;
    while rows < 1000 {
        if let Some(Event::Rows(batch)) = stream.message().await.unwrap().unwrap().event {
            rows += batch.rows.len();
        }
    }
    drop(stream);

    let metrics = gw.gateway.sql().metrics();
    wait_until("the cancelled query's connection to be discarded", || {
        metrics.discarded.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(metrics.attentions.load(Ordering::Relaxed), 1);
    wait_until("the server to receive ATTENTION", || sql.attentions() == 1).await;
    assert!(
        sql.rows_sent() < 1_000_000,
        "the server stopped early ({} rows)",
        sql.rows_sent()
    );

    let next = run(&gw, request(&sql, "SELECT count(*) FROM products", vec![]))
        .await
        .unwrap();
    assert_eq!(next.rows(0), vec![vec![Some(Kind::Int(3))]]);
    assert_eq!(
        metrics.opened.load(Ordering::Relaxed),
        2,
        "a new connection replaced it"
    );
    wait_until("the cancelled connection to close", || {
        sql.open_connections() == 1
    })
    .await;
}

#[tokio::test]
async fn max_rows_cuts_the_stream_and_keeps_the_connection() {
    let (_env, sql, gw) = setup().await;
    let mut req = request(&sql, "SELECT n FROM numbers LIMIT 100000", vec![]);
    req.max_rows = 10;
    let result = run(&gw, req).await.unwrap();
    assert_eq!(result.rows(0).len(), 10);
    let done = result.done.unwrap();
    assert!(done.truncated);
    assert_eq!(done.rows_per_result_set, [10]);
    // ATTENTION stopped the rest; the same connection answers the next query.
    run(&gw, request(&sql, "SELECT 1", vec![])).await.unwrap();
    let metrics = gw.gateway.sql().metrics();
    assert_eq!(sql.attentions(), 1);
    assert_eq!(metrics.opened.load(Ordering::Relaxed), 1);
    assert_eq!(sql.connections(), 1);
}

#[tokio::test]
async fn a_query_that_outlives_its_timeout_is_stopped() {
    let (_env, sql, gw) = setup().await;
    // Never produces a row: counts an endless sequence.
    let mut req = request(
        &sql,
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
        vec![],
    );
    req.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 300_000_000,
    });
    let status = run(&gw, req).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    wait_until("the server to acknowledge ATTENTION", || {
        sql.attentions() == 1
    })
    .await;
    run(&gw, request(&sql, "SELECT 1", vec![])).await.unwrap();
}

/// A million rows to a client that keeps pausing: each pause lets the
/// gateway run ahead until its channel is full, and the gauge of batches
/// produced but not yet taken never exceeds the channel's capacity plus the
/// one batch waiting to enter it and the one just taken (the reader runs on
/// its own thread: it can fill the freed place before the taker's count
/// drops), so memory stays bounded however large the result. (Peak RSS for the same stream is measured by `bench/sql_stream`.)
#[tokio::test]
async fn a_slow_reader_never_makes_the_gateway_buffer_more_than_a_few_batches() {
    const ROWS: u64 = 1_000_000;
    const BATCH: usize = 512;
    let env = TestEnv::new().await;
    let sql = start_fake(&env, SqlFakeConfig::default()).await;
    let mut config: Config = env.config();
    config.sql.batch_rows = BATCH;
    let capacity = config.sql.stream_buffer_batches as i64;
    let gw = env.start(config).await;
    let query = format!("SELECT n, printf('%050d', n) AS pad FROM numbers LIMIT {ROWS}");
    let mut stream = open(&gw, request(&sql, &query, vec![])).await.unwrap();
    let metrics = gw.gateway.sql().metrics();

    let mut received = 0u64;
    let mut batches = 0u64;
    let mut pauses = 0;
    let mut done = None;
    while let Some(message) = stream.message().await.unwrap() {
        match message.event {
            Some(Event::Rows(batch)) => {
                assert!(batch.rows.len() <= BATCH);
                // Rows arrive in order, none lost or repeated.
                assert_eq!(
                    batch.rows[0].values[0].kind,
                    Some(Kind::Int(received as i64 + 1))
                );
                received += batch.rows.len() as u64;
                batches += 1;
            }
            Some(Event::Done(d)) => done = Some(d),
            _ => {}
        }
        if batches % 100 == 1 && done.is_none() {
            // Pause: the gateway fills its buffer (unless the server is done).
            wait_until("the stream buffer to fill", || {
                metrics.batches_buffered.load(Ordering::Relaxed) >= capacity
                    || sql.rows_sent() == ROWS
            })
            .await;
            pauses += 1;
            let now = metrics.batches_buffered.load(Ordering::Relaxed);
            assert!(
                now <= capacity + 2,
                "{now} batches buffered (capacity {capacity})"
            );
        }
    }
    assert!(pauses >= 4);
    assert_eq!(received, ROWS);
    assert_eq!(done.unwrap().rows_per_result_set, [ROWS]);
    let max = metrics.batches_buffered_max.load(Ordering::Relaxed);
    assert!(
        (capacity..=capacity + 2).contains(&max),
        "up to {max} batches were buffered (capacity {capacity})"
    );
    assert_eq!(metrics.batches_buffered.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn requests_are_validated_before_any_token_is_fetched() {
    let (env, sql, gw) = setup().await;
    let cases: Vec<(QuerySqlRequest, &str)> = vec![
        (
            QuerySqlRequest {
                server: "evil.example".into(),
                ..request(&sql, "SELECT 1", vec![])
            },
            "server",
        ),
        (
            QuerySqlRequest {
                server: "https://x.database.windows.net".into(),
                ..request(&sql, "SELECT 1", vec![])
            },
            "server",
        ),
        (request(&sql, "   ", vec![]), "query"),
        (
            QuerySqlRequest {
                database: String::new(),
                ..request(&sql, "SELECT 1", vec![])
            },
            "database",
        ),
        (
            request(&sql, "SELECT @P1", vec![Kind::Guid("not-a-guid".into())]),
            "parameters[0]",
        ),
        (
            QuerySqlRequest {
                parameters: vec![SqlValue { kind: None }],
                ..request(&sql, "SELECT @P1", vec![])
            },
            "parameters[0]",
        ),
        (
            QuerySqlRequest {
                query: "x".repeat(40 * 1024),
                ..request(&sql, "", vec![])
            },
            "query",
        ),
    ];
    for (req, field) in cases {
        let status = run(&gw, req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(
            status.message().starts_with(&format!("invalid {field}:")),
            "{field}: {}",
            status.message()
        );
    }
    // Past [limits] max_request_bytes the message is refused from its
    // length prefix, before it is read.
    let status = run(
        &gw,
        QuerySqlRequest {
            query: "x".repeat(2 * 1024 * 1024),
            ..request(&sql, "", vec![])
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("65536"), "{}", status.message());
    assert_eq!(
        env.imds.token_requests(),
        0,
        "no token was fetched for a refused request"
    );
    assert!(sql.logins().is_empty());
}

#[tokio::test]
async fn unknown_databases_and_unreachable_servers() {
    let (_env, sql, gw) = setup().await;
    let status = run(
        &gw,
        QuerySqlRequest {
            database: "otherdb".into(),
            ..request(&sql, "SELECT 1", vec![])
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("4060"), "{}", status.message());

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let status = run(
        &gw,
        QuerySqlRequest {
            server: format!("localhost:{closed}"),
            ..request(&sql, "SELECT 1", vec![])
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn an_azure_sql_redirect_is_followed_to_an_allowed_host() {
    let env = TestEnv::new().await;
    let front = start_fake(&env, SqlFakeConfig::default()).await;
    let node = start_fake(&env, SqlFakeConfig::default()).await;
    node.execute("UPDATE products SET name = 'Widget (node)' WHERE id = 1")
        .unwrap();
    front.set_redirect(Some(("localhost", node.port())));
    let gw = env.start(env.config()).await;
    let result = run(
        &gw,
        request(&front, "SELECT name FROM products WHERE id = 1", vec![]),
    )
    .await
    .unwrap();
    assert_eq!(
        result.rows(0),
        vec![vec![Some(Kind::String("Widget (node)".into()))]]
    );
    assert_eq!(front.logins().len(), 1);
    assert_eq!(node.logins().len(), 1);

    // A redirect to a host outside the guard is not followed.
    front.set_redirect(Some(("sql.evil.example", node.port())));
    let mut other_db = request(&front, "SELECT 1", vec![]);
    other_db.identity = Some(identity_gateway_client::proto::Identity {
        selector: Some(
            identity_gateway_client::proto::identity::Selector::ClientId(
                sample::USER_CLIENT_ID.into(),
            ),
        ),
    });
    let status = run(&gw, other_db).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("not following"),
        "{}",
        status.message()
    );
    assert_eq!(node.logins().len(), 1);
}

#[tokio::test]
async fn plain_tds_only_when_the_operator_turns_tls_off_for_an_allowed_host() {
    let env = TestEnv::new().await;
    let sql = start_fake(
        &env,
        SqlFakeConfig {
            encryption: identity_gateway_emulator::tds::Encryption::Plaintext,
            ..SqlFakeConfig::default()
        },
    )
    .await;
    let gw = env.start(env.config()).await;
    let status = run(&gw, request(&sql, "SELECT 1", vec![]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("TLS"), "{}", status.message());
    assert!(sql.logins().is_empty(), "no token left the gateway");

    let mut config = env.config();
    config.sql.require_tls = false;
    config.socket = env.dir.path().join("plain.sock");
    let gw = env.start(config).await;
    let result = run(&gw, request(&sql, "SELECT 5", vec![])).await.unwrap();
    assert_eq!(result.rows(0), vec![vec![Some(Kind::Int(5))]]);
}

/// `GatewayClient::query_sql` reads row batches in place; over a real
/// gateway it must see exactly what the generated types decode: every
/// column type, NULLs, several result sets and batches.
#[tokio::test]
async fn the_rust_clients_in_place_batches_match_the_generated_types() {
    use identity_gateway_client::{SqlEvent, Value};

    let env = TestEnv::new().await;
    let sql = start_fake(&env, SqlFakeConfig::default()).await;
    let mut config: Config = env.config();
    config.sql.batch_rows = 500;
    let gw = env.start(config).await;
    let query =
        "SELECT id, name, price, in_stock, weight_kg, sku, released, updated_at, thumbnail \
                 FROM dbo.products ORDER BY id; \
                 SELECT n, printf('%05d', n) AS pad FROM numbers LIMIT 1300";
    let expected = run(&gw, request(&sql, query, vec![])).await.unwrap();
    assert!(
        expected.batches.len() >= 4,
        "{} batches",
        expected.batches.len()
    );

    let mut stream = gw
        .client
        .query_sql(request(&sql, query, vec![]))
        .await
        .unwrap();
    let mut got = Collected::default();
    let mut cells = 0;
    while let Some(event) = stream.next_event().await.unwrap() {
        match event {
            SqlEvent::Columns(c) => got.columns.push(c),
            SqlEvent::Rows(batch) => {
                for row in batch.rows() {
                    cells += row.values().count();
                    assert!(!row.values().any(|v| v == Value::Unknown));
                }
                let proto = batch.to_proto();
                got.batches.push((proto.result_set, proto.rows));
            }
            SqlEvent::Done(d) => got.done = Some(d),
        }
    }
    assert_eq!(got.columns, expected.columns);
    assert_eq!(got.batches, expected.batches);
    assert_eq!(got.done, expected.done);
    let products = expected.rows(0);
    assert_eq!(cells, products.len() * 9 + 1300 * 2);

    // A SQL error ends the stream with the gateway's status, as an Error.
    let mut failing = gw
        .client
        .query_sql(request(&sql, "SELECT * FROM dbo.nowhere", vec![]))
        .await
        .unwrap();
    let err = loop {
        match failing.next_event().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without the SQL error"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, identity_gateway_client::Error::NotFound(m) if m.contains("SQL error 208")),
        "{err:?}"
    );
}

/// Rows that take the server a while each reach the caller as the server
/// sends them, not once a batch of `batch_rows` is full (or the result ends).
#[tokio::test]
async fn a_slow_querys_rows_arrive_as_the_server_sends_them() {
    let (_env, sql, gw) = setup().await;
    // Each row: a recursive count of 1M steps (a few hundred ms in SQLite)
    // and an 80 KB value, which the fake ships as soon as the row is written.
    let query = "SELECT o.n, printf('%040000d', o.n) AS pad, \
                 (WITH RECURSIVE s(k) AS (SELECT o.n UNION ALL SELECT k + 1 FROM s \
                 WHERE k < o.n + 1000000) SELECT count(*) FROM s) AS steps \
                 FROM numbers o LIMIT 3";
    let mut stream = open(&gw, request(&sql, query, vec![])).await.unwrap();
    let mut batches = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(Event::Rows(batch)) = message.event {
            batches.push(batch.rows.len());
            assert_eq!(
                batch.rows[0].values[2].kind,
                Some(Kind::Int(1_000_001)),
                "{batches:?}"
            );
        }
    }
    // Held back until the end, the three rows would come as one batch. As
    // they come, they are three batches, or two when a loaded machine kept
    // the gateway from reading between two rows.
    assert_eq!(batches.iter().sum::<usize>(), 3, "{batches:?}");
    assert!(batches.len() >= 2, "the rows were held back: {batches:?}");
}

/// A long result does not hold the gateway's shutdown back: the query is
/// stopped (ATTENTION), the caller gets UNAVAILABLE saying why, and the
/// drain ends well before its 20 s timeout.
#[tokio::test]
async fn shutdown_stops_a_streaming_query_and_tells_the_caller() {
    let (_env, sql, gw) = setup().await;
    let query = "SELECT n, printf('%050d', n) AS pad FROM numbers LIMIT 100000000";
    let mut stream = open(&gw, request(&sql, query, vec![])).await.unwrap();
    // Rows are flowing; keep reading them while the gateway stops.
    while !matches!(
        stream.message().await.unwrap().and_then(|m| m.event),
        Some(Event::Rows(_))
    ) {}
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    });
    let start = Instant::now();
    gw.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the stream ends")
        .unwrap()
        .expect("an error status, not a clean end");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("shutting down"), "{status:?}");
    wait_until("the server to receive ATTENTION", || sql.attentions() >= 1).await;
    assert!(sql.rows_sent() < 100_000_000);
}
