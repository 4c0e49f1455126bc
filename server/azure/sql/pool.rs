//! Connection pools, one per (server, port, database, identity, caller).
//!
//! - Session state never crosses callers. A pooled connection keeps what
//!   its last user left in the session (`#temp` tables, `SET` options such
//!   as `IMPLICIT_TRANSACTIONS` or `ROWCOUNT`, an open transaction,
//!   `sp_set_session_context`). Drivers clear it with the TDS
//!   RESETCONNECTION status bit on the next request, but tiberius 0.13 sets
//!   packet status itself and exposes no way to ask for it (and under TLS
//!   the gateway cannot rewrite the header). So the pool is keyed by the
//!   caller as well ([`SessionOwner`]: the uid on the Unix socket, the
//!   user SID on the Windows pipe): a session is only reused by the caller
//!   that left the state there, exactly as in a pool inside that caller's
//!   own process. Connections of unattributed callers (no uid, no readable
//!   token) are never pooled.
//!
//! - A pool holds at most `sql.pool_size` connections; callers beyond that
//!   wait (within their deadline) for one to come back.
//! - New connections log in with the token cache's current token for the SQL
//!   audience. A login refused because the server considers the token
//!   expired is retried once with a newly fetched token.
//! - Idle connections are dropped after `sql.idle_timeout_secs`, and once the
//!   token they logged in with has expired (the server may end such
//!   sessions), so later queries log in afresh.
//! - A connection goes back to the pool only when its last response was read
//!   to the end ([`Lease::release`]); dropping a [`Lease`] discards it.

use std::{
    collections::HashMap,
    fmt,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{
    client::{self, ConnectError, ConnectSettings, Connection, Refusal},
    identity_name, SessionOwner, SqlMetrics, SqlTarget,
};
use crate::{
    config::SqlConfig,
    error::GatewayError,
    token::{AccessToken, IdentitySelector},
    Service, Upstream,
};

/// A connection older than its token is not handed out again within this
/// margin of the token's expiry.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    host: String,
    port: u16,
    database: String,
    identity: IdentitySelector,
    /// Sessions are never shared between callers; `None` (unattributed
    /// callers) shares slots, never a session.
    caller: Option<SessionOwner>,
}

struct Idle {
    conn: Connection,
    token_expires: SystemTime,
    since: Instant,
}

struct Pool {
    idle: Mutex<Vec<Idle>>,
    permits: Arc<Semaphore>,
}

/// A snapshot of the pools' sizes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSizes {
    /// Pools (one per server, database and identity).
    pub pools: usize,
    /// Connections idle, ready for the next query.
    pub idle: usize,
    /// Connections lent to a running query (or being opened for one).
    pub in_use: usize,
}

/// Every pool of the gateway, and the SQL metrics.
pub struct SqlPools {
    upstream: Upstream,
    config: SqlConfig,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    metrics: Arc<SqlMetrics>,
    /// Turns to read a result on a thread of its own ([`MAX_READERS`]).
    readers: Arc<Semaphore>,
}

/// Results read at the same time, each on a blocking-pool thread (see
/// `stream::query`); further queries wait for a turn. Far above what a VM's
/// callers run at once, and well below the blocking pool's 512 threads, so
/// a flood of queries cannot starve the pool's other users (DNS lookups).
pub(super) const MAX_READERS: usize = 64;

impl fmt::Debug for SqlPools {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pools = self.pools.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("SqlPools")
            .field("pools", &pools)
            .field("metrics", &self.metrics)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded data stays consistent (no await, no panic while held).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection lent out of a pool with its slot. Dropping it discards the
/// connection (its up is unknown); [`release`](Self::release) returns it.
pub(crate) struct Lease {
    conn: Option<Connection>,
    pool: Arc<Pool>,
    token_expires: SystemTime,
    /// Came from the idle list (it may have died while idle).
    pub reused: bool,
    /// False for unattributed callers: the connection is closed after use.
    poolable: bool,
    metrics: Arc<SqlMetrics>,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("reused", &self.reused)
            .finish()
    }
}

impl Lease {
    pub(crate) fn conn(&mut self) -> Option<&mut Connection> {
        self.conn.as_mut()
    }

    /// Returns a connection whose responses were all read back to the pool.
    pub(crate) fn release(mut self) {
        if !self.poolable {
            // Dropping closes the session and everything it held.
            drop(self.conn.take());
            return;
        }
        if let Some(conn) = self.conn.take() {
            lock(&self.pool.idle).push(Idle {
                conn,
                token_expires: self.token_expires,
                since: Instant::now(),
            });
        }
    }

    /// Takes the connection out, for a last exchange before it is dropped
    /// (sending ATTENTION). The slot stays taken until the lease is dropped.
    pub(crate) fn take(&mut self) -> Option<Connection> {
        if self.conn.is_some() {
            self.metrics.discarded.fetch_add(1, Ordering::Relaxed);
        }
        self.conn.take()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.conn.take().is_some() {
            self.metrics.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SqlPools {
    /// Pools for every (server, database, identity), logging in through
    /// `upstream`'s token provider with `[sql]` settings.
    pub fn new(upstream: Upstream, config: SqlConfig) -> Self {
        Self {
            upstream,
            config,
            pools: Mutex::default(),
            metrics: Arc::default(),
            readers: Arc::new(Semaphore::new(MAX_READERS)),
        }
    }

    /// A turn to read a query's result; waits while [`MAX_READERS`] results
    /// are being read, giving up at `deadline`.
    pub(crate) async fn reader_turn(
        &self,
        deadline: Option<Instant>,
    ) -> Result<OwnedSemaphorePermit, GatewayError> {
        acquire_by(&self.readers, deadline, || {
            format!("{MAX_READERS} SQL results were being read until the caller's deadline")
        })
        .await
    }

    /// The `[sql]` settings the pools run with.
    pub fn config(&self) -> &SqlConfig {
        &self.config
    }

    /// Counters and gauges of the SQL path.
    pub fn metrics(&self) -> &SqlMetrics {
        &self.metrics
    }

    pub(crate) fn metrics_handle(&self) -> Arc<SqlMetrics> {
        Arc::clone(&self.metrics)
    }

    /// How many pools there are and how many connections they hold, idle
    /// and lent out (for the pool-size gauges).
    pub fn pool_sizes(&self) -> PoolSizes {
        let pools = lock(&self.pools);
        let size = self.config.pool_size.max(1) as usize;
        PoolSizes {
            pools: pools.len(),
            idle: pools.values().map(|p| lock(&p.idle).len()).sum(),
            in_use: pools
                .values()
                .map(|p| size.saturating_sub(p.permits.available_permits()))
                .sum(),
        }
    }

    /// Connections currently idle in all pools.
    pub fn idle_connections(&self) -> usize {
        lock(&self.pools)
            .values()
            .map(|p| lock(&p.idle).len())
            .sum()
    }

    /// A connection to `target` logged in as `identity`: an idle one when the
    /// pool has one, else a new login. Gives up at `deadline`.
    pub(crate) async fn lease(
        &self,
        target: &SqlTarget,
        identity: &IdentitySelector,
        caller: Option<&SessionOwner>,
        deadline: Option<Instant>,
    ) -> Result<Lease, GatewayError> {
        self.lease_with(target, identity, caller, deadline, false)
            .await
    }

    /// Like [`lease`](Self::lease), but drops the pool's idle connections
    /// and logs in anew (after a pooled connection turned out dead).
    pub(crate) async fn lease_fresh(
        &self,
        target: &SqlTarget,
        identity: &IdentitySelector,
        caller: Option<&SessionOwner>,
        deadline: Option<Instant>,
    ) -> Result<Lease, GatewayError> {
        self.lease_with(target, identity, caller, deadline, true)
            .await
    }

    async fn lease_with(
        &self,
        target: &SqlTarget,
        identity: &IdentitySelector,
        caller: Option<&SessionOwner>,
        deadline: Option<Instant>,
        fresh: bool,
    ) -> Result<Lease, GatewayError> {
        let config = &self.config;
        // Unattributed callers share the slots of one key (no owner) but
        // never an idle connection: theirs are not pooled.
        let poolable = caller.is_some();
        let key = PoolKey {
            host: target.host.to_ascii_lowercase(),
            port: target.port,
            database: target.database.clone(),
            identity: identity.clone(),
            caller: caller.cloned(),
        };
        let pool = Arc::clone(lock(&self.pools).entry(key).or_insert_with(|| {
            Arc::new(Pool {
                idle: Mutex::default(),
                permits: Arc::new(Semaphore::new(config.pool_size.max(1) as usize)),
            })
        }));
        let permit = acquire_by(&pool.permits, deadline, || {
            format!(
                "all {} connections to {}:{} were busy until the caller's deadline",
                config.pool_size, target.host, target.port
            )
        })
        .await?;

        let idle_timeout = Duration::from_secs(config.idle_timeout_secs);
        let now = self.upstream.clock.wall();
        if fresh {
            let dropped = std::mem::take(&mut *lock(&pool.idle));
            self.metrics
                .retired
                .fetch_add(dropped.len() as u64, Ordering::Relaxed);
        }
        loop {
            let Some(idle) = lock(&pool.idle).pop() else {
                break;
            };
            let token_ok = now + TOKEN_MARGIN < idle.token_expires;
            if token_ok && idle.since.elapsed() < idle_timeout {
                self.metrics.reused.fetch_add(1, Ordering::Relaxed);
                return Ok(Lease {
                    conn: Some(idle.conn),
                    pool,
                    token_expires: idle.token_expires,
                    reused: true,
                    poolable,
                    metrics: Arc::clone(&self.metrics),
                    _permit: permit,
                });
            }
            self.metrics.retired.fetch_add(1, Ordering::Relaxed);
        }

        let (conn, token_expires) = self.login(target, identity, deadline).await?;
        Ok(Lease {
            conn: Some(conn),
            pool,
            token_expires,
            reused: false,
            poolable,
            metrics: Arc::clone(&self.metrics),
            _permit: permit,
        })
    }

    /// A fresh login; retries once with a new token when the server says the
    /// token expired, and follows one Azure SQL redirect.
    async fn login(
        &self,
        target: &SqlTarget,
        identity: &IdentitySelector,
        deadline: Option<Instant>,
    ) -> Result<(Connection, SystemTime), GatewayError> {
        let audience = Service::Sql.audience(target.cloud);
        let budget = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let up = &self.upstream;
        let mut token = up.tokens.token(identity, audience, budget()).await?;
        let settings = ConnectSettings {
            connect_timeout: Duration::from_secs(up.config.connect_timeout_secs),
            login_timeout: Duration::from_secs(self.config.login_timeout_secs),
            ca_files: up.config.ca_files.clone(),
        };
        let tls = target.tls;
        let mut current = target.clone();
        let mut retried = false;
        let mut redirected = false;
        loop {
            self.metrics.logins.fetch_add(1, Ordering::Relaxed);
            let attempt = client::connect(&current, token.secret(), tls, &settings);
            let result = match deadline {
                None => attempt.await,
                Some(at) => tokio::time::timeout_at(at.into(), attempt)
                    .await
                    .map_err(|_| {
                        GatewayError::DeadlineExceeded(format!(
                            "no login to {}:{} within the caller's deadline",
                            current.host, current.port
                        ))
                    })?,
            };
            match result {
                Ok(conn) => {
                    self.metrics.opened.fetch_add(1, Ordering::Relaxed);
                    return Ok((conn, token.expires_on));
                }
                Err(ConnectError::LoginRefused {
                    reason: Refusal::Expired,
                    ..
                }) if !retried => {
                    retried = true;
                    if let Some(fresh) = self
                        .fresh_token(identity, audience, &token, budget())
                        .await?
                    {
                        self.metrics.login_retries.fetch_add(1, Ordering::Relaxed);
                        token = fresh;
                        continue;
                    }
                    return Err(expired_error(&current, identity));
                }
                Err(ConnectError::Routed { host, port }) if !redirected => {
                    redirected = true;
                    // The redirect target must pass the same guard as the request.
                    up
                        .hosts
                        .check_host(Service::Sql, "server", &host, Some(port), "tds")
                        .map_err(|_| {
                            GatewayError::PermissionDenied(format!(
                                "{}:{} redirected the login to {host}:{port}, which is neither an Azure SQL host \
                                 nor in upstream.allowed_hosts; not following (the token stays here)",
                                current.host, current.port
                            ))
                        })?;
                    current.host = identity_gateway_core::normalize_host(&host);
                    current.port = port;
                }
                Err(e) => return Err(login_error(e, &current, identity, &token)),
            }
        }
    }

    /// Drops `rejected` from the token cache and fetches again; `None` when
    /// the identity endpoint hands out the same token.
    async fn fresh_token(
        &self,
        identity: &IdentitySelector,
        audience: &str,
        rejected: &AccessToken,
        budget: Option<Duration>,
    ) -> Result<Option<Arc<AccessToken>>, GatewayError> {
        let tokens = &self.upstream.tokens;
        tokens.invalidate(identity, audience, rejected);
        let fresh = tokens.token(identity, audience, budget).await?;
        Ok((*fresh != *rejected).then_some(fresh))
    }
}

fn expired_error(target: &SqlTarget, identity: &IdentitySelector) -> GatewayError {
    GatewayError::PermissionDenied(format!(
        "Azure SQL {}:{} refused the {identity}'s token as expired, and the identity endpoint has no newer one; \
         check the VM's clock",
        target.host, target.port
    ))
}

/// Maps a failed login to the caller's error, saying what to do.
fn login_error(
    e: ConnectError,
    target: &SqlTarget,
    identity: &IdentitySelector,
    token: &AccessToken,
) -> GatewayError {
    let server = format!("{}:{}", target.host, target.port);
    match e {
        ConnectError::Unreachable(why) => {
            GatewayError::Unavailable(format!("Azure SQL server {server} is unreachable: {why}"))
        }
        ConnectError::Timeout => {
            GatewayError::Unavailable(format!("Azure SQL server {server} did not complete the login in time"))
        }
        ConnectError::Tls(why) => GatewayError::Unavailable(format!(
            "TLS with Azure SQL server {server} failed: {why} (trusted roots: the system's plus upstream.ca_files)"
        )),
        ConnectError::LoginRefused {
            reason: Refusal::NoUser,
            message,
        } => GatewayError::IdentityUnavailable(format!(
            "Azure SQL {server} refused the login of the {identity} (error 18456: {message}). \
             The identity has no user in database '{db}': as an Entra admin of the server, run \
             CREATE USER [{name}] FROM EXTERNAL PROVIDER; in '{db}', then grant it a role \
             (e.g. ALTER ROLE db_datareader ADD MEMBER [{name}];)",
            db = target.database,
            name = identity_name(identity, token),
        )),
        ConnectError::LoginRefused { message, .. } => GatewayError::PermissionDenied(format!(
            "Azure SQL {server} refused the {identity}'s token (error 18456: {message})"
        )),
        ConnectError::NoDatabase(message) => GatewayError::NotFound(format!(
            "Azure SQL {server}: database '{}' does not exist or the identity cannot open it (error 4060: {message})",
            target.database
        )),
        ConnectError::Routed { host, port } => GatewayError::Upstream(format!(
            "Azure SQL {server} redirected the login twice (last to {host}:{port})"
        )),
        ConnectError::Server { number, message } => {
            super::server_error(number, &message, &format!("Azure SQL {server} refused the login"))
        }
        ConnectError::Protocol(why) => {
            GatewayError::Upstream(format!("Azure SQL {server} answered something unexpected: {why}"))
        }
    }
}

/// A permit of `permits`, waiting at most until `deadline`; past it, the
/// caller's deadline error says what was `busy`.
async fn acquire_by(
    permits: &Arc<Semaphore>,
    deadline: Option<Instant>,
    busy: impl FnOnce() -> String,
) -> Result<OwnedSemaphorePermit, GatewayError> {
    let acquire = Arc::clone(permits).acquire_owned();
    match deadline {
        None => acquire.await,
        Some(at) => tokio::time::timeout_at(at.into(), acquire)
            .await
            .map_err(|_| GatewayError::DeadlineExceeded(busy()))?,
    }
    .map_err(|_| GatewayError::Unavailable("the SQL pool is closed".into()))
}

#[cfg(test)]
mod tests {
    use identity_gateway_core::{clock::ManualClock, http::UpstreamConfig, Cloud};
    use identity_gateway_emulator::{
        tds::Encryption, tls::TestCa, SqlFake, SqlFakeConfig, TokenAuthority,
    };

    use super::*;
    use crate::testing;

    #[tokio::test]
    async fn sessions_are_reused_by_their_owner_only() {
        let authority = Arc::new(TokenAuthority::generate(
            "dc822496-97fa-4380-991a-c8b4ba5d4f73",
        ));
        let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
        let fake = SqlFake::start(
            Arc::clone(&authority),
            &ca,
            SqlFakeConfig {
                encryption: Encryption::Plaintext,
                ..SqlFakeConfig::default()
            },
        )
        .await
        .unwrap();
        let clock = ManualClock::new();
        let tokens = testing::MintingTokens::new(authority);
        let up = testing::upstream(UpstreamConfig::default(), &clock, tokens);
        let pools = SqlPools::new(up, SqlConfig::default());
        let target = SqlTarget {
            host: "127.0.0.1".into(),
            port: fake.port(),
            database: fake.database().into(),
            cloud: Cloud::Public,
            tls: false,
        };
        let identity = IdentitySelector::SystemAssigned;
        let lease = |owner: Option<SessionOwner>| {
            let (pools, target, identity) = (&pools, &target, &identity);
            async move {
                pools
                    .lease(target, identity, owner.as_ref(), None)
                    .await
                    .unwrap()
            }
        };
        let alice = || Some(SessionOwner::sid("S-1-5-21-1-2-3-1001"));
        let bob = || Some(SessionOwner::sid("S-1-5-21-1-2-3-1002"));

        let first = lease(alice()).await;
        assert!(!first.reused);
        first.release();
        let other = lease(bob()).await;
        assert!(!other.reused, "another account never gets alice's session");
        other.release();
        let again = lease(Some(SessionOwner::sid("s-1-5-21-1-2-3-1001"))).await;
        assert!(again.reused, "alice gets her own session back");
        again.release();
        let by_uid = lease(Some(SessionOwner::uid(1001))).await;
        assert!(!by_uid.reused);
        by_uid.release();
        // Unattributed callers are never pooled.
        lease(None).await.release();
        assert!(!lease(None).await.reused);
        assert_eq!(fake.logins().len(), 5);
    }
}

#[cfg(test)]
mod reader_tests {
    use identity_gateway_core::{clock::ManualClock, http::UpstreamConfig};
    use identity_gateway_emulator::TokenAuthority;

    use super::*;
    use crate::testing;

    #[tokio::test]
    async fn results_are_read_a_bounded_number_at_a_time() {
        let authority = Arc::new(TokenAuthority::generate(
            "dc822496-97fa-4380-991a-c8b4ba5d4f73",
        ));
        let clock = ManualClock::new();
        let up = testing::upstream(
            UpstreamConfig::default(),
            &clock,
            testing::MintingTokens::new(authority),
        );
        let pools = SqlPools::new(up, SqlConfig::default());
        let mut turns = Vec::new();
        for _ in 0..MAX_READERS {
            turns.push(pools.reader_turn(None).await.unwrap());
        }
        let soon = Instant::now() + Duration::from_millis(50);
        let err = pools.reader_turn(Some(soon)).await.unwrap_err();
        assert!(
            matches!(&err, GatewayError::DeadlineExceeded(m) if m.contains("64 SQL results")),
            "{err:?}"
        );
        // A finished reader hands its turn on.
        turns.pop();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(pools.reader_turn(Some(later)).await.is_ok());
    }
}
