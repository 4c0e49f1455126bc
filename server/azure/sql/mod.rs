//! Azure SQL with the managed identity's token, through tiberius.
//!
//! - [`client`]: one connection: TCP, TLS, LOGIN7 with the token, and what a
//!   failed login means.
//! - [`pool`]: a pool per (server, port, database, identity, caller) — the
//!   caller being a [`SessionOwner`], uid or Windows user SID; fresh tokens
//!   for new logins, one retry when the server calls the token expired.
//! - [`stream`]: running a query as `sp_executesql` with bound `@Pn`
//!   parameters and streaming its result sets in batches through a bounded
//!   channel, stopping the server (ATTENTION) when the caller goes away.
//! - [`value`]: parameters and cells to and from tiberius.
//! - [`rows`]: a batch of result rows, stored flat.
//!
//! This module knows TDS and tiberius; it knows nothing about gRPC.

mod client;
mod pool;
mod rows;
mod stream;
mod value;

use std::{
    fmt,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

pub use pool::{PoolSizes, SqlPools};
pub use rows::{SqlCell, SqlRow, SqlRows};
pub use stream::{query, SqlEventStream};
pub use value::SqlValue;

use tokio_util::sync::CancellationToken;

use crate::{error::GatewayError, token::AccessToken, token::IdentitySelector, Cloud};

/// The caller a pooled SQL session belongs to: a Unix caller's uid, or a
/// named-pipe caller's user SID. Unlike the admission counters (which hash
/// the SID and tolerate a collision as a shared budget), this keeps the
/// whole SID: a collision here would hand one account another's session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionOwner(Owner);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Owner {
    Uid(u32),
    Sid(Box<str>),
}

impl SessionOwner {
    /// A Unix caller, by uid.
    pub fn uid(uid: u32) -> Self {
        Self(Owner::Uid(uid))
    }

    /// A Windows account, by user SID. Windows writes SIDs in upper case;
    /// any other case is another spelling of the same account.
    pub fn sid(user_sid: &str) -> Self {
        Self(Owner::Sid(user_sid.to_ascii_uppercase().into_boxed_str()))
    }
}

/// Where a query goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlTarget {
    pub host: String,
    pub port: u16,
    pub database: String,
    /// Whose token audience applies (from the host's suffix).
    pub cloud: Cloud,
    /// TLS (always for Azure hosts; `sql.require_tls = false` may turn it off
    /// for explicitly allowed hosts only).
    pub tls: bool,
}

/// One query to run.
#[derive(Debug, Clone)]
pub struct SqlQuery {
    pub target: SqlTarget,
    pub identity: IdentitySelector,
    /// Whose sessions this query may reuse. Pooled connections carry
    /// session state (`#temp` tables, `SET` options, open implicit
    /// transactions, session context), and tiberius offers no way to send
    /// TDS RESETCONNECTION on reuse, so the pools are per caller: a
    /// connection is only ever reused by the uid, or Windows account, that
    /// used it before. `None` (an unattributed caller): the connection is
    /// never pooled.
    pub caller: Option<SessionOwner>,
    /// T-SQL; parameters are `@P1..@Pn`.
    pub text: String,
    pub params: Vec<SqlValue>,
    /// Stop after this many rows in total (0: no limit).
    pub max_rows: u64,
    /// Longest wait for the server (first result, and each later read).
    pub timeout: Duration,
    /// Cancelled when the gateway shuts down: the query is stopped (the
    /// server gets ATTENTION) and the caller told so, rather than the drain
    /// waiting for a long result to end.
    pub shutdown: CancellationToken,
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlColumn {
    pub name: String,
    /// SQL type name, e.g. `int`, `nvarchar`, `datetime2`.
    pub type_name: String,
    /// tiberius does not expose the column's NULL flag, so this is always
    /// true ("may be NULL").
    pub nullable: bool,
}

/// What a query stream yields, in order: for each result set its columns
/// then batches of rows, and finally `Done`.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlEvent {
    Columns {
        result_set: u32,
        columns: Vec<SqlColumn>,
    },
    Rows {
        result_set: u32,
        rows: SqlRows,
    },
    Done {
        rows_per_result_set: Vec<u64>,
        rows_affected: Vec<u64>,
        truncated: bool,
    },
}

/// Counters and gauges of the SQL path (for tests, benchmarks and logs).
#[derive(Default)]
pub struct SqlMetrics {
    /// Login attempts (retries included).
    pub logins: AtomicU64,
    /// Connections opened (successful logins).
    pub opened: AtomicU64,
    /// Connections handed out again from a pool.
    pub reused: AtomicU64,
    /// Idle connections dropped for age or for their token's expiry.
    pub retired: AtomicU64,
    /// Connections dropped instead of returned (cancelled, failed, timed out).
    pub discarded: AtomicU64,
    /// Logins retried with a new token after "Token is expired".
    pub login_retries: AtomicU64,
    /// ATTENTION signals sent to stop a running query.
    pub attentions: AtomicU64,
    /// Row batches produced and not yet taken by the caller's stream.
    pub batches_buffered: AtomicI64,
    /// The highest `batches_buffered` seen.
    pub batches_buffered_max: AtomicI64,
}

impl SqlMetrics {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for SqlMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlMetrics")
            .field("logins", &Self::get(&self.logins))
            .field("opened", &Self::get(&self.opened))
            .field("reused", &Self::get(&self.reused))
            .field("discarded", &Self::get(&self.discarded))
            .field("login_retries", &Self::get(&self.login_retries))
            .field("attentions", &Self::get(&self.attentions))
            .field(
                "batches_buffered_max",
                &self.batches_buffered_max.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// The cloud whose SQL audience a host needs.
pub fn cloud_of(host: &str) -> Cloud {
    let host = host.to_ascii_lowercase();
    if host.ends_with(".database.usgovcloudapi.net") {
        Cloud::UsGovernment
    } else if host.ends_with(".database.chinacloudapi.cn") {
        Cloud::China
    } else {
        Cloud::Public
    }
}

/// True for hosts of an Azure SQL suffix (TLS can never be turned off there).
pub fn is_azure_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    crate::Service::Sql
        .host_suffixes()
        .iter()
        .any(|suffix| host.ends_with(suffix))
}

/// The name `CREATE USER [...] FROM EXTERNAL PROVIDER` needs: the
/// user-assigned identity's resource name, or the VM (host resource) a
/// system-assigned token names in `xms_mirid`.
fn identity_name(identity: &IdentitySelector, token: &AccessToken) -> String {
    if let IdentitySelector::ResourceId(id) = identity {
        if let Some(name) = id.rsplit('/').next().filter(|n| !n.is_empty()) {
            return name.to_string();
        }
    }
    token_claim(token.secret(), "xms_mirid")
        .and_then(|mirid| mirid.rsplit('/').next().map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "<identity name>".into())
}

/// A string claim of a JWT's payload (not verified: for messages only).
fn token_claim(jwt: &str, claim: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    json.get(claim)?.as_str().map(str::to_string)
}

/// Maps a SQL Server error number to the caller's error, keeping the
/// server's number and message.
pub(crate) fn server_error(number: u32, message: &str, context: &str) -> GatewayError {
    let text = format!("{context}: SQL error {number}: {message}");
    match number {
        // Object, procedure or database not found.
        208 | 2812 | 4060 | 911 | 15151 => GatewayError::NotFound(text),
        // Permission denied on an object, schema, database or server.
        229 | 230 | 262 | 297 | 300 | 916 | 15247 | 40615 => GatewayError::PermissionDenied(text),
        // Throttling and resource governance.
        10928 | 10929 | 40501 | 40544 | 40549 | 40550 | 40551 | 40552 | 40553 => {
            GatewayError::Throttled(text)
        }
        // Transient: deadlock victim, database unavailable or failing over.
        1205 | 40197 | 40613 | 49918 | 49919 | 49920 | 4221 => GatewayError::Unavailable(text),
        _ => GatewayError::invalid("query", text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_owners_are_uids_or_whole_sids_ignoring_case() {
        assert_eq!(
            SessionOwner::sid("s-1-5-21-1-2-3-1001"),
            SessionOwner::sid("S-1-5-21-1-2-3-1001")
        );
        assert_ne!(
            SessionOwner::sid("S-1-5-21-1-2-3-1001"),
            SessionOwner::sid("S-1-5-21-1-2-3-1002")
        );
        assert_ne!(SessionOwner::uid(1000), SessionOwner::sid("1000"));
    }

    #[test]
    fn server_errors_map_to_status_kinds() {
        assert!(
            matches!(server_error(208, "x", "c"), GatewayError::NotFound(m) if m.contains("SQL error 208: x"))
        );
        assert!(matches!(
            server_error(229, "x", "c"),
            GatewayError::PermissionDenied(_)
        ));
        assert!(matches!(
            server_error(102, "x", "c"),
            GatewayError::InvalidArgument { .. }
        ));
        assert!(matches!(
            server_error(40501, "x", "c"),
            GatewayError::Throttled(_)
        ));
        assert!(matches!(
            server_error(1205, "x", "c"),
            GatewayError::Unavailable(_)
        ));
    }

    #[test]
    fn hosts_decide_cloud_and_tls() {
        assert_eq!(
            cloud_of("a.database.usgovcloudapi.net"),
            Cloud::UsGovernment
        );
        assert_eq!(cloud_of("a.database.windows.net"), Cloud::Public);
        assert_eq!(cloud_of("localhost"), Cloud::Public);
        assert!(is_azure_host("My.Database.Windows.Net"));
        assert!(!is_azure_host("localhost"));
    }

    #[test]
    fn identity_names_for_create_user() {
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            br#"{"xms_mirid":"/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"}"#,
        );
        let token = AccessToken {
            token: format!("h.{payload}.s").into(),
            token_type: "Bearer".into(),
            expires_on: std::time::SystemTime::UNIX_EPOCH,
            resource: "r".into(),
        };
        assert_eq!(
            identity_name(&IdentitySelector::SystemAssigned, &token),
            "vm1"
        );
        assert_eq!(
            identity_name(
                &IdentitySelector::ResourceId("/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/app-id".into()),
                &token
            ),
            "app-id"
        );
        let opaque = AccessToken {
            token: "opaque".to_string().into(),
            ..token
        };
        assert_eq!(
            identity_name(&IdentitySelector::SystemAssigned, &opaque),
            "<identity name>"
        );
    }
}
