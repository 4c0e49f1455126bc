//! The fake driven by a real client: tiberius 0.13 over TLS with an access
//! token, as the gateway uses it.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::TryStreamExt;
use tiberius::{numeric::Numeric, AuthMethod, Client, Config, EncryptionLevel, Uuid};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::*;
use crate::{sample, tls::TestCa, TokenAuthority};

const SQL: &str = "https://database.windows.net/";

struct Env {
    authority: Arc<TokenAuthority>,
    ca: TestCa,
    fake: SqlFake,
}

async fn env(config: SqlFakeConfig) -> Env {
    let authority = Arc::new(TokenAuthority::generate(sample::TENANT_ID));
    let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
    let fake = SqlFake::start(Arc::clone(&authority), &ca, config)
        .await
        .unwrap();
    seed_sample(&fake).unwrap();
    Env {
        authority,
        ca,
        fake,
    }
}

impl Env {
    fn token(&self, audience: &str) -> String {
        self.token_at(audience, SystemTime::now(), Duration::from_secs(3600))
    }

    fn token_at(&self, audience: &str, now: SystemTime, lifetime: Duration) -> String {
        self.authority
            .mint(&sample::system_principal(), audience, now, lifetime)
            .0
    }

    async fn connect(
        &self,
        token: &str,
        database: &str,
    ) -> tiberius::Result<Client<Compat<TcpStream>>> {
        let mut config = Config::new();
        config.host("localhost");
        config.port(self.fake.port());
        config.database(database);
        config.authentication(AuthMethod::aad_token(token));
        if self.fake.shared.encryption == Encryption::Plaintext {
            config.encryption(EncryptionLevel::NotSupported);
        } else {
            config.encryption(EncryptionLevel::Required);
            config.trust_cert_ca_bundle(self.ca.ca_pem().as_bytes().to_vec());
        }
        let tcp = TcpStream::connect(self.fake.addr()).await?;
        tcp.set_nodelay(true)?;
        Client::connect(config, tcp.compat_write()).await
    }

    async fn client(&self) -> Client<Compat<TcpStream>> {
        self.client_result().await.unwrap()
    }

    async fn client_result(&self) -> tiberius::Result<Client<Compat<TcpStream>>> {
        self.connect(&self.token(SQL), "appdb").await
    }
}

fn server_error(result: tiberius::Result<impl std::fmt::Debug>) -> (u32, String) {
    match result {
        Err(tiberius::error::Error::Server(e)) => (e.code(), e.message().to_string()),
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn tiberius_logs_in_over_tls_and_reads_typed_rows() {
    let env = env(SqlFakeConfig::default()).await;
    let mut client = env.client().await;
    let rows = client
        .simple_query(
            "SELECT id, name, price, in_stock, weight_kg, sku, released, updated_at, thumbnail \
             FROM dbo.products ORDER BY id",
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let widget = &rows[0];
    assert_eq!(widget.get::<i32, _>("id"), Some(1));
    assert_eq!(widget.get::<&str, _>("name"), Some("Widget"));
    assert_eq!(
        widget.get::<Numeric, _>("price"),
        Some(Numeric::new_with_scale(1999, 2))
    );
    assert_eq!(widget.get::<bool, _>("in_stock"), Some(true));
    assert_eq!(widget.get::<f64, _>("weight_kg"), Some(0.25));
    assert_eq!(
        widget.get::<Uuid, _>("sku"),
        Some(Uuid::parse_str("6F9619FF-8B86-D011-B42D-00C04FC964FF").unwrap())
    );
    let Ok(tiberius::ColumnData::Date(Some(released))) = widget.get_column_data("released") else {
        panic!("released is not a DATE")
    };
    assert_eq!(
        released.days() as i64,
        types::days_from_civil(2021, 3, 14) - types::days_from_civil(1, 1, 1)
    );
    let Ok(tiberius::ColumnData::DateTime2(Some(updated))) = widget.get_column_data("updated_at")
    else {
        panic!("updated_at is not a DATETIME2")
    };
    assert_eq!(updated.time().scale(), 3);
    assert_eq!(
        updated.time().increments(),
        (12 * 3600 + 30 * 60) * 1000 + 125
    );
    assert_eq!(
        widget.get::<&[u8], _>("thumbnail"),
        Some(&[0x89, 0x50, 0x4E, 0x47][..])
    );
    // Row 2 has one NULL (inline ROW), row 3 several (NBCROW).
    assert_eq!(rows[1].get::<&[u8], _>("thumbnail"), None);
    assert_eq!(rows[1].get::<bool, _>("in_stock"), Some(false));
    let gizmo = &rows[2];
    assert_eq!(gizmo.get::<&str, _>("name"), Some("Gizmo"));
    assert_eq!(gizmo.get::<Numeric, _>("price"), None);
    assert_eq!(gizmo.get::<Uuid, _>("sku"), None);
    assert_eq!(gizmo.get::<bool, _>("in_stock"), Some(true));

    let logins = env.fake.logins();
    assert_eq!(logins.len(), 1);
    assert!(logins[0].accepted);
    assert_eq!(logins[0].oid.as_deref(), Some(sample::SYSTEM_OBJECT_ID));
    assert_eq!(logins[0].audience.as_deref(), Some(SQL));
    assert_eq!(logins[0].database, "appdb");
}

#[tokio::test]
async fn parameters_bind_as_data_and_results_come_in_sets() {
    let env = env(SqlFakeConfig::default()).await;
    let mut client = env.client().await;
    let hostile = "'; DROP TABLE products; --";
    let rows = client
        .query(
            "SELECT name FROM products WHERE id = @P1 OR name = @P2 ORDER BY id",
            &[&2i32, &hostile],
        )
        .await
        .unwrap()
        .into_first_result()
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<&str, _>(0), Some("Gadget"));
    assert_eq!(
        env.fake
            .query_scalar("SELECT count(*) FROM products")
            .unwrap()
            .as_deref(),
        Some("3")
    );

    let sets = client
        .simple_query("SELECT 1 AS a; SELECT 'x' AS b UNION ALL SELECT 'y'")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0][0].get::<i64, _>("a"), Some(1));
    assert_eq!(sets[1].len(), 2);

    let result = client
        .execute(
            "INSERT INTO products (id, name, in_stock) VALUES (@P1, @P2, 1); UPDATE products SET in_stock = 0",
            &[&10i32, &"Doohickey"],
        )
        .await
        .unwrap();
    assert_eq!(result.rows_affected(), &[1, 4]);
}

#[tokio::test]
async fn sql_errors_carry_sql_server_numbers() {
    let env = env(SqlFakeConfig::default()).await;
    let mut client = env.client().await;
    let (code, message) = server_error(client.simple_query("SELECT * FROM nowhere").await);
    assert_eq!(
        (code, message.as_str()),
        (208, "Invalid object name 'nowhere'.")
    );
    let (code, _) = server_error(client.simple_query("SELEC 1").await);
    assert_eq!(code, 102);
    let (code, message) = server_error(client.simple_query("SELECT * FROM dbo.salaries").await);
    assert_eq!(code, 229);
    assert!(
        message.contains("SELECT permission was denied on the object 'salaries'"),
        "{message}"
    );
    let (code, _) = server_error(client.query("SELECT @P2", &[&1i32]).await);
    assert_eq!(code, 137);
    // The connection still works after errors.
    let one = client
        .simple_query("SELECT 1")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.get::<i64, _>(0), Some(1));
}

#[tokio::test]
async fn temp_tables_belong_to_their_session() {
    let env = env(SqlFakeConfig::default()).await;
    let mut a = env.client().await;
    let mut b = env.client().await;
    a.execute("CREATE TABLE #mine (v nvarchar(50))", &[])
        .await
        .unwrap();
    a.execute("INSERT INTO #mine VALUES (@P1)", &[&"a's data"])
        .await
        .unwrap();
    let row = a
        .query("SELECT v FROM #mine", &[])
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<&str, _>(0), Some("a's data"));
    let (code, message) = server_error(b.simple_query("SELECT v FROM #mine").await);
    assert_eq!(
        (code, message.as_str()),
        (208, "Invalid object name '#mine'.")
    );
    // Gone with the session.
    drop(a);
    let mut c = env.client().await;
    assert_eq!(
        server_error(c.simple_query("SELECT v FROM #mine").await).0,
        208
    );
}

#[tokio::test]
async fn implicit_transactions_hold_writes_until_commit_or_the_session_ends() {
    let env = env(SqlFakeConfig::default()).await;
    env.fake.execute("CREATE TABLE ledger (n int)").unwrap();
    let count = || {
        env.fake
            .query_scalar("SELECT COUNT(*) FROM ledger")
            .unwrap()
    };
    let mut client = env.client().await;
    client
        .simple_query("SET IMPLICIT_TRANSACTIONS ON")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    let done = client
        .execute("INSERT INTO ledger VALUES (@P1)", &[&1i32])
        .await
        .unwrap();
    assert_eq!(done.total(), 1, "the caller sees success");
    assert_eq!(count().as_deref(), Some("0"), "not committed");
    client.simple_query("COMMIT TRAN").await.unwrap();
    assert_eq!(count().as_deref(), Some("1"));
    client
        .execute("INSERT INTO ledger VALUES (@P1)", &[&2i32])
        .await
        .unwrap();
    drop(client);
    // The session ended with the transaction open: the write is lost.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count().as_deref(), Some("1"));
    // OFF again: autocommit.
    let mut other = env.client().await;
    other
        .simple_query("SET IMPLICIT_TRANSACTIONS OFF; SET NOCOUNT ON")
        .await
        .unwrap()
        .into_results()
        .await
        .unwrap();
    other
        .execute("INSERT INTO ledger VALUES (3)", &[])
        .await
        .unwrap();
    assert_eq!(count().as_deref(), Some("2"));
}

#[tokio::test]
async fn refused_logins_say_why() {
    let env = env(SqlFakeConfig::default()).await;
    let (code, message) = server_error(
        env.connect(&env.token("https://vault.azure.net"), "appdb")
            .await,
    );
    assert_eq!(code, 18456);
    assert!(message.contains("audience"), "{message}");

    let expired = env.token_at(
        SQL,
        SystemTime::now() - Duration::from_secs(7200),
        Duration::from_secs(3600),
    );
    let (code, message) = server_error(env.connect(&expired, "appdb").await);
    assert_eq!(
        (code, message.as_str()),
        (
            18456,
            "Login failed for user '<token-identified principal>'. Token is expired."
        )
    );

    let (code, message) = server_error(env.connect(&env.token(SQL), "otherdb").await);
    assert_eq!(code, 4060, "{message}");

    env.fake.set_users(DatabaseUsers::only([
        "00000000-0000-0000-0000-000000000001",
    ]));
    let (code, message) = server_error(env.connect(&env.token(SQL), "appdb").await);
    assert_eq!(
        (code, message.as_str()),
        (
            18456,
            "Login failed for user '<token-identified principal>'."
        )
    );
    env.fake
        .set_users(DatabaseUsers::only([sample::SYSTEM_OBJECT_ID]));
    env.connect(&env.token(SQL), "appdb").await.unwrap();

    // A token the server's clock sees as expired.
    let token = env.token(SQL);
    env.fake.set_clock_skew(7200);
    let (_, message) = server_error(env.connect(&token, "appdb").await);
    assert!(message.ends_with("Token is expired."), "{message}");

    let logins = env.fake.logins();
    assert_eq!(logins.len(), 6);
    assert_eq!(
        logins[0].audience.as_deref(),
        Some("https://vault.azure.net")
    );
    assert_eq!(logins.iter().filter(|l| l.accepted).count(), 1);
}

#[tokio::test]
async fn attention_stops_a_big_stream_and_the_connection_is_reusable() {
    let env = env(SqlFakeConfig::default()).await;
    let mut client = env.client().await;
    {
        let mut stream = client
            .simple_query("SELECT n, printf('%0100d', n) AS pad FROM numbers LIMIT 1000000")
            .await
            .unwrap()
            .into_row_stream();
        for _ in 0..10 {
            stream.try_next().await.unwrap().unwrap();
        }
    }
    client.cancel_query().await.unwrap();
    assert_eq!(env.fake.attentions(), 1);
    assert!(
        env.fake.rows_sent() < 1_000_000,
        "{} rows sent",
        env.fake.rows_sent()
    );
    let row = client
        .simple_query("SELECT 42")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<i64, _>(0), Some(42));
}

#[tokio::test]
async fn plaintext_mode_for_debugging() {
    let env = env(SqlFakeConfig {
        encryption: Encryption::Plaintext,
        ..SqlFakeConfig::default()
    })
    .await;
    let mut client = env.client().await;
    let row = client
        .simple_query("SELECT DB_NAME(), SUSER_SNAME()")
        .await
        .unwrap()
        .into_row()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.get::<&str, _>(0), Some("appdb"));
    assert_eq!(
        row.get::<&str, _>(1),
        Some(format!("{}@{}", sample::VM_NAME, sample::TENANT_ID).as_str())
    );
}

#[tokio::test]
async fn a_redirected_login_names_the_new_address() {
    let env = env(SqlFakeConfig::default()).await;
    env.fake.set_redirect(Some(("localhost", 4321)));
    match env.client_result().await {
        Err(tiberius::error::Error::Routing { host, port }) => {
            assert_eq!((host.as_str(), port), ("localhost", 4321))
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
}
