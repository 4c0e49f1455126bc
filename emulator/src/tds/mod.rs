//! A fake Azure SQL server speaking TDS 7.4 the way tiberius 0.13 expects it
//! (wire contracts §8): PRELOGIN with FEDAUTHREQUIRED, TLS inside PRELOGIN
//! packets with the emulator's test certificate, LOGIN7 whose FEDAUTH token
//! is verified (RS256 signature, audience `https://database.windows.net/`
//! exactly, expiry) against the emulator's [`TokenAuthority`], then SQL
//! batches and `sp_executesql` executed against an embedded SQLite database.
//!
//! # Layout
//! - `packet`: the 8-byte header, whole messages in, packets out.
//! - `prelogin`: the option table both ways.
//! - `tls`: TLS records wrapped in PRELOGIN packets during the handshake.
//! - `login`: LOGIN7 and its FEDAUTH feature extension.
//! - `tokens`: ENVCHANGE, LOGINACK, COLMETADATA, ROW/NBCROW, DONE, ERROR, ...
//! - `types`: SQL types of result columns and values, dates and times.
//! - `rpc`: SQL batch and RPC request decoding.
//! - `engine`: SQLite execution and result streaming, ATTENTION.
//! - `server`: the accept loop and the per-connection session.
//!
//! Login failures answer error 18456 the way Azure SQL does; a principal
//! with no database user gets exactly `Login failed for user
//! '<token-identified principal>'.`, while token problems add a reason
//! (`Token is expired.`, `The token's audience is not valid for this
//! server.`, `The token could not be validated.`) so callers can tell them
//! apart.

mod engine;
mod login;
mod packet;
mod prelogin;
mod rpc;
mod server;
#[cfg(test)]
mod tests;
mod tls;
mod tokens;
mod types;

use std::{
    collections::HashSet,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, SystemTime},
};

use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use crate::{tls::TestCa, TokenAuthority};

/// How the fake negotiates encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Answer ENCRYPT_REQ and run TLS with the test certificate (Azure SQL).
    #[default]
    Required,
    /// Answer ENCRYPT_NOT_SUP: plain TDS, for debugging with a capture tool.
    /// Clients must use `EncryptionLevel::NotSupported`.
    Plaintext,
}

/// Which token principals (object ids) have a user in the database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DatabaseUsers {
    /// Every principal with a valid token.
    #[default]
    Any,
    /// Only these object ids (compared case-insensitively). Others get
    /// `Login failed for user '<token-identified principal>'.`, as if
    /// `CREATE USER [name] FROM EXTERNAL PROVIDER` had not been run.
    Only(HashSet<String>),
}

impl DatabaseUsers {
    /// Only the given object ids.
    pub fn only<I: IntoIterator<Item = S>, S: AsRef<str>>(oids: I) -> Self {
        Self::Only(
            oids.into_iter()
                .map(|o| o.as_ref().to_ascii_lowercase())
                .collect(),
        )
    }
}

/// Settings of a [`SqlFake`].
#[derive(Debug, Clone)]
pub struct SqlFakeConfig {
    pub encryption: Encryption,
    /// The token audience the server accepts, exactly.
    pub audience: String,
    /// The one database of this server.
    pub database: String,
    /// Server name in messages (like `myserver` of `myserver.database.windows.net`).
    pub server_name: String,
    pub users: DatabaseUsers,
    /// Tables whose use answers error 229 (permission denied).
    pub forbidden_tables: Vec<String>,
}

impl Default for SqlFakeConfig {
    fn default() -> Self {
        Self {
            encryption: Encryption::Required,
            audience: "https://database.windows.net/".into(),
            database: "appdb".into(),
            server_name: "fake-sql".into(),
            users: DatabaseUsers::Any,
            forbidden_tables: Vec::new(),
        }
    }
}

/// One login attempt as the fake saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    /// The token's `uti` (unique token id), once the token verified.
    pub token_id: Option<String>,
    /// The token's `oid`, once the token verified.
    pub oid: Option<String>,
    pub appid: Option<String>,
    /// The token's `aud` (also recorded for a wrong audience).
    pub audience: Option<String>,
    /// The database the client asked for.
    pub database: String,
    pub accepted: bool,
    /// The error number and message sent when refused.
    pub error: Option<(i32, String)>,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections: AtomicU64,
    pub open: AtomicU64,
    pub attentions: AtomicU64,
    pub rows_sent: AtomicU64,
    pub requests: AtomicU64,
}

/// What every connection of one fake shares.
pub(crate) struct Shared {
    authority: Arc<TokenAuthority>,
    audience: String,
    encryption: Encryption,
    settings: Arc<engine::EngineSettings>,
    users: RwLock<DatabaseUsers>,
    clock_skew_secs: AtomicI64,
    /// Where successful logins are sent instead (ENVCHANGE routing).
    redirect: Mutex<Option<(String, u16)>>,
    /// `uti`s of tokens this server treats as expired.
    expired_tokens: Mutex<HashSet<String>>,
    logins: Mutex<Vec<LoginRecord>>,
    stats: Arc<Stats>,
    db_path: PathBuf,
}

impl Shared {
    fn now(&self) -> SystemTime {
        let skew = self.clock_skew_secs.load(Ordering::Relaxed);
        if skew >= 0 {
            SystemTime::now() + Duration::from_secs(skew as u64)
        } else {
            SystemTime::now() - Duration::from_secs(skew.unsigned_abs())
        }
    }
}

/// A running fake Azure SQL server on 127.0.0.1; stops when dropped.
pub struct SqlFake {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    dir: PathBuf,
}

impl fmt::Debug for SqlFake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlFake")
            .field("addr", &self.addr)
            .field("database", &self.shared.settings.database)
            .finish_non_exhaustive()
    }
}

impl SqlFake {
    /// Starts the fake on 127.0.0.1 (a free port) with an empty database
    /// (plus the `numbers` view, 1..100 000 000, for big results).
    pub async fn start(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        config: SqlFakeConfig,
    ) -> std::io::Result<Self> {
        Self::start_on(authority, ca, config, 0).await
    }

    /// Like [`start`](Self::start), on `port` of 127.0.0.1; a taken port
    /// falls back to a free one ([`port`](Self::port) tells which).
    pub async fn start_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        config: SqlFakeConfig,
        port: u16,
    ) -> std::io::Result<Self> {
        let dir = unique_dir()?;
        let db_path = dir.join("fake.db");
        init_database(&db_path).map_err(std::io::Error::other)?;
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Err(e) if port != 0 && e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::warn!(port, "fake SQL port in use; using a free port instead");
                TcpListener::bind(("127.0.0.1", 0)).await?
            }
            result => result?,
        };
        let addr = listener.local_addr()?;
        let tls = match config.encryption {
            Encryption::Required => {
                let mut server_config = (*ca.server_config(&[])).clone();
                // Session tickets would follow the handshake inside PRELOGIN
                // framing the client no longer expects.
                server_config.send_tls13_tickets = 0;
                Some(TlsAcceptor::from(Arc::new(server_config)))
            }
            Encryption::Plaintext => None,
        };
        let shared = Arc::new(Shared {
            authority,
            audience: config.audience,
            encryption: config.encryption,
            settings: Arc::new(engine::EngineSettings {
                database: config.database,
                server_name: config.server_name,
                forbidden: RwLock::new(
                    config
                        .forbidden_tables
                        .iter()
                        .map(|t| t.to_ascii_lowercase())
                        .collect(),
                ),
            }),
            users: RwLock::new(config.users),
            clock_skew_secs: AtomicI64::new(0),
            redirect: Mutex::default(),
            expired_tokens: Mutex::default(),
            logins: Mutex::default(),
            stats: Arc::default(),
            db_path,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::accept_loop(
            listener,
            Arc::clone(&shared),
            tls,
            stopped,
        ));
        Ok(Self {
            addr,
            shared,
            stop,
            task,
            dir,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host name in the test certificate to connect with.
    pub fn host(&self) -> &'static str {
        "localhost"
    }

    pub fn database(&self) -> &str {
        &self.shared.settings.database
    }

    /// The audience tokens must carry.
    pub fn audience(&self) -> &str {
        &self.shared.audience
    }

    /// Runs SQL (SQLite dialect, `dbo.` accepted) directly against the
    /// database, to seed or inspect it.
    pub fn execute(&self, sql: &str) -> std::io::Result<()> {
        let conn = open_database(&self.shared.db_path).map_err(std::io::Error::other)?;
        conn.execute_batch(&engine::strip_dbo(sql))
            .map_err(std::io::Error::other)
    }

    /// Runs a query directly and returns the first column of the first row
    /// as text (for assertions on the database's state).
    pub fn query_scalar(&self, sql: &str) -> std::io::Result<Option<String>> {
        let conn = open_database(&self.shared.db_path).map_err(std::io::Error::other)?;
        conn.query_row(&engine::strip_dbo(sql), [], |row| {
            row.get_ref(0).map(|v| match v {
                rusqlite::types::ValueRef::Null => None,
                rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                rusqlite::types::ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                rusqlite::types::ValueRef::Blob(b) => Some(format!("{b:?}")),
            })
        })
        .map_err(std::io::Error::other)
    }

    /// Every login attempt so far, in order.
    pub fn logins(&self) -> Vec<LoginRecord> {
        self.shared
            .logins
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.stats.connections.load(Ordering::Relaxed)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> u64 {
        self.shared.stats.open.load(Ordering::Relaxed)
    }

    /// ATTENTION messages received so far.
    pub fn attentions(&self) -> u64 {
        self.shared.stats.attentions.load(Ordering::Relaxed)
    }

    /// Result rows encoded so far (all connections).
    pub fn rows_sent(&self) -> u64 {
        self.shared.stats.rows_sent.load(Ordering::Relaxed)
    }

    /// SQL batches and RPCs received so far.
    pub fn requests(&self) -> u64 {
        self.shared.stats.requests.load(Ordering::Relaxed)
    }

    /// Replaces who has a database user.
    pub fn set_users(&self, users: DatabaseUsers) {
        if let Ok(mut u) = self.shared.users.write() {
            *u = users;
        }
    }

    /// Marks a table forbidden (error 229) or allowed again.
    pub fn set_forbidden(&self, table: &str, forbidden: bool) {
        if let Ok(mut f) = self.shared.settings.forbidden.write() {
            if forbidden {
                f.insert(table.to_ascii_lowercase());
            } else {
                f.remove(&table.to_ascii_lowercase());
            }
        }
    }

    /// Makes the server answer "Token is expired." to logins presenting
    /// `token` from now on (as if its clock had passed the token's `exp`),
    /// while newer tokens still log in. Returns false when `token` is not a
    /// token of this server's authority.
    pub fn expire_token(&self, token: &str) -> bool {
        let Ok(claims) =
            self.shared
                .authority
                .verify(token, &self.shared.audience, SystemTime::now())
        else {
            return false;
        };
        self.shared
            .expired_tokens
            .lock()
            .map(|mut e| e.insert(claims.uti))
            .is_ok()
    }

    /// Answers successful logins with a redirect to `host:port` (Azure
    /// SQL's "Redirect" connection policy, used for clients inside Azure),
    /// or stops doing so with `None`.
    pub fn set_redirect(&self, to: Option<(&str, u16)>) {
        if let Ok(mut r) = self.shared.redirect.lock() {
            *r = to.map(|(host, port)| (host.to_string(), port));
        }
    }

    /// Moves the clock the server checks token expiry with (seconds,
    /// negative for the past), to simulate skew or a token that aged.
    pub fn set_clock_skew(&self, seconds: i64) {
        self.shared
            .clock_skew_secs
            .store(seconds, Ordering::Relaxed);
    }
}

impl Drop for SqlFake {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "identity-gateway-fake-sql-{}-{n}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn init_database(path: &Path) -> rusqlite::Result<()> {
    let conn = open_database(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // `generate_series` counts in place; the recursive CTE this replaced
    // pushed and popped every number through a queue table, most of the
    // fake's CPU on a big result.
    conn.execute_batch(
        "CREATE VIEW numbers AS SELECT value AS n FROM generate_series(1, 100000000);",
    )
}

/// A connection to the fake's database (created if missing), as every user
/// of it needs one: waiting up to 5 s for a lock held by another
/// connection, and with `generate_series`, which the `numbers` view reads.
fn open_database(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    prepare_connection(rusqlite::Connection::open(path)?)
}

/// What every connection to the fake's database gets: see [`open_database`].
pub(crate) fn prepare_connection(
    conn: rusqlite::Connection,
) -> rusqlite::Result<rusqlite::Connection> {
    conn.busy_timeout(Duration::from_secs(5))?;
    rusqlite::vtab::series::load_module(&conn)?;
    Ok(conn)
}

impl SqlFake {
    /// The server `--emulator` runs: default settings (TLS, database
    /// `appdb`, every token principal has a user) with [`seed_sample`]
    /// applied, on `port` of 127.0.0.1 (0 for a free port).
    pub async fn sample_on(
        authority: Arc<TokenAuthority>,
        ca: &TestCa,
        port: u16,
    ) -> std::io::Result<Self> {
        let fake = Self::start_on(authority, ca, SqlFakeConfig::default(), port).await?;
        seed_sample(&fake)?;
        Ok(fake)
    }

    /// `localhost:<port>`: the `server` to pass to QuerySql.
    pub fn server(&self) -> String {
        format!("{}:{}", self.host(), self.port())
    }
}

/// Seeds the sample data `--emulator` serves: a small `dbo.products` table
/// with typed columns (and a NULL or two), and a forbidden `dbo.salaries`
/// table answering error 229.
pub fn seed_sample(fake: &SqlFake) -> std::io::Result<()> {
    fake.execute(
        "CREATE TABLE dbo.products (
            id int NOT NULL PRIMARY KEY,
            name nvarchar(100) NOT NULL,
            price decimal(10,2),
            in_stock bit NOT NULL,
            weight_kg float,
            sku uniqueidentifier,
            released date,
            updated_at datetime2(3),
            thumbnail varbinary(64)
         );
         INSERT INTO dbo.products VALUES
            (1, 'Widget', '19.99', 1, 0.25, '6F9619FF-8B86-D011-B42D-00C04FC964FF', '2021-03-14', '2024-05-01 12:30:00.125', x'89504E47'),
            (2, 'Gadget', '149.00', 0, 1.5, 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '2022-11-01', '2024-06-15 08:00:00', NULL),
            (3, 'Gizmo', NULL, 1, NULL, NULL, NULL, NULL, NULL);
         CREATE TABLE dbo.salaries (employee nvarchar(100), amount decimal(12,2));
         INSERT INTO dbo.salaries VALUES ('Alice', '100000.00');",
    )?;
    fake.set_forbidden("salaries", true);
    Ok(())
}
