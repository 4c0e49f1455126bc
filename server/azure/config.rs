//! The upstream services' sections of the configuration: `[keyvault]`,
//! `[sas]` and `[sql]`.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyVaultConfig {
    /// Cache secrets this long (0 = off, the default: Key Vault is the source
    /// of truth). Entries are per identity, vault, name and version; callers
    /// skip the cache with `bypass_cache`.
    pub secret_cache_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SasConfig {
    /// Longest SAS lifetime (GetServiceSas `expires_in`) the gateway will
    /// issue; longer requests get INVALID_ARGUMENT. User delegation SAS are
    /// also held to 7 days, the most a delegation key lives.
    pub max_expiry_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// Require TLS to SQL servers (always on for Azure; tests may relax it for
    /// allowed hosts only).
    pub require_tls: bool,
    /// Connections kept per (server, database, identity).
    pub pool_size: u32,
    /// Rows per streamed batch (at most).
    pub batch_rows: usize,
    /// Bytes of values per streamed batch (at most, but a row is never
    /// split): keeps each reply message far under gRPC's 4 MiB default.
    pub batch_bytes: usize,
    /// Default cap on rows per query (0 = no cap).
    pub max_rows: u64,
    /// Default query timeout: the longest wait for the server (for the first
    /// result and for each later read), within the caller's deadline.
    pub query_timeout_secs: u64,
    /// Largest query text accepted, in bytes.
    pub max_query_bytes: usize,
    /// Idle pooled connections are closed after this long.
    pub idle_timeout_secs: u64,
    /// Time allowed for TLS and LOGIN7 on a new connection.
    pub login_timeout_secs: u64,
    /// Row batches a query may have produced ahead of a slow caller; the
    /// server is made to wait beyond that (backpressure).
    pub stream_buffer_batches: usize,
}

impl Default for SasConfig {
    fn default() -> Self {
        Self {
            max_expiry_secs: 7 * 24 * 3600,
        }
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            require_tls: true,
            pool_size: 4,
            batch_rows: 2048,
            batch_bytes: 1024 * 1024,
            max_rows: 0,
            query_timeout_secs: 30,
            // Within [limits] max_request_bytes (64 KiB), with room for
            // the parameters.
            max_query_bytes: 32 * 1024,
            idle_timeout_secs: 300,
            login_timeout_secs: 15,
            stream_buffer_batches: 4,
        }
    }
}
