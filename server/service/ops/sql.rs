//! QuerySql: a parameterized query on Azure SQL with the selected
//! identity's token, rows streamed back in batches with backpressure.
//! Parameters are bound, never spliced into the SQL text.

use std::time::{Duration, Instant};

use identity_gateway_azure::sql::{self, SqlEventStream, SqlQuery, SqlTarget, SqlValue};
use identity_gateway_core::{GatewayError, Service};

use crate::{
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

const MAX_PARAMETERS: usize = 2098;
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_PORT: u16 = 1433;

/// A query.
#[derive(Debug, Clone, Default)]
pub struct SqlRequest {
    /// `host`, `host:port`, `host,port` or `tcp:host,port`.
    pub server: String,
    /// 0: from `server`, else 1433.
    pub port: u32,
    pub database: String,
    pub query: String,
    pub parameters: Vec<SqlValue>,
    /// 0: `sql.max_rows`.
    pub max_rows: u64,
    /// None: `sql.query_timeout_secs`.
    pub timeout: Option<Duration>,
    pub identity: IdentityRef,
}

impl Gateway {
    /// QuerySql: the event stream of the query (columns, row batches, done).
    pub async fn query_sql(
        &self,
        ctx: &CallContext,
        request: SqlRequest,
    ) -> Result<SqlEventStream, GatewayError> {
        let deadline = ctx.budget.map(|b| Instant::now() + b.min(MAX_TIMEOUT));
        let mut target = request.server.clone();
        let identity = request.identity.clone();
        let outcome = async {
            let query = self.sql_query(request, ctx)?;
            target = format!(
                "{}:{}/{}",
                query.target.host, query.target.port, query.target.database
            );
            self.authorize(
                &ctx.policy_caller(),
                &query.identity,
                Target::Sql {
                    server: &query.target.host,
                    database: &query.target.database,
                },
            )?;
            sql::query(std::sync::Arc::clone(&self.sql), query, deadline).await
        }
        .await;
        self.audit
            .record(&self.metrics, ctx, "QuerySql", &target, &identity, &outcome);
        outcome
    }

    fn sql_query(&self, request: SqlRequest, ctx: &CallContext) -> Result<SqlQuery, GatewayError> {
        let config = self.sql.config();
        let (host, port) = server_and_port(&request.server, request.port)?;
        self.upstream
            .hosts
            .check_host(Service::Sql, "server", &host, Some(port), "tds")?;
        let database = request.database;
        if database.is_empty() {
            return Err(GatewayError::invalid("database", "is required"));
        }
        if database.chars().count() > 128 || database.chars().any(char::is_control) {
            return Err(GatewayError::invalid(
                "database",
                "must be at most 128 characters without control characters",
            ));
        }
        let text = request.query;
        if text.trim().is_empty() {
            return Err(GatewayError::invalid("query", "is required"));
        }
        if text.len() > config.max_query_bytes {
            return Err(GatewayError::invalid(
                "query",
                format!(
                    "is {} bytes, more than the {}-byte limit (sql.max_query_bytes)",
                    text.len(),
                    config.max_query_bytes
                ),
            ));
        }
        if text.contains('\0') {
            return Err(GatewayError::invalid(
                "query",
                "must not contain NUL characters",
            ));
        }
        if request.parameters.len() > MAX_PARAMETERS {
            return Err(GatewayError::invalid(
                "parameters",
                format!("at most {MAX_PARAMETERS} parameters are allowed"),
            ));
        }
        let max_rows = match (request.max_rows, config.max_rows) {
            (0, configured) => configured,
            (asked, 0) => asked,
            (asked, configured) => asked.min(configured),
        };
        let timeout = match request.timeout {
            None => Duration::from_secs(config.query_timeout_secs),
            Some(d) if d.is_zero() => Duration::from_secs(config.query_timeout_secs),
            Some(d) => d.min(MAX_TIMEOUT),
        };
        let identity = validate::identity(request.identity)?;
        Ok(SqlQuery {
            target: SqlTarget {
                cloud: sql::cloud_of(&host),
                tls: sql::is_azure_host(&host) || config.require_tls,
                host,
                port,
                database,
            },
            identity,
            // Pooled sessions are never shared between callers (see
            // `SqlQuery::caller`): keyed by uid or user SID; unattributed
            // callers get none.
            caller: ctx.peer.session_owner(),
            text,
            params: request.parameters,
            max_rows,
            timeout,
            shutdown: self.shutdown.clone(),
        })
    }
}

fn server_and_port(server: &str, port_field: u32) -> Result<(String, u16), GatewayError> {
    let trimmed = server.trim();
    let trimmed = trimmed.strip_prefix("tcp:").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(GatewayError::invalid(
            "server",
            "is required (e.g. myserver.database.windows.net)",
        ));
    }
    let (host, inline) = match trimmed.rsplit_once([',', ':']) {
        Some((host, port)) => {
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    GatewayError::invalid("server", format!("'{port}' is not a TCP port"))
                })?;
            (host, Some(port))
        }
        None => (trimmed, None),
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !host.starts_with(['.', '-'])
        && !host.ends_with('-');
    if !valid_host {
        return Err(GatewayError::invalid(
            "server",
            format!("'{host}' is not a host name (expected e.g. myserver.database.windows.net, no scheme)"),
        ));
    }
    let field = match port_field {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| GatewayError::invalid("port", format!("{p} is not a TCP port")))?,
        ),
    };
    let port = match (inline, field) {
        (Some(a), Some(b)) if a != b => {
            return Err(GatewayError::invalid(
                "port",
                format!("{b} differs from the port {a} given in server"),
            ))
        }
        (a, b) => a.or(b).unwrap_or(DEFAULT_PORT),
    };
    Ok((identity_gateway_core::normalize_host(host), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_ports_are_parsed_and_checked() {
        assert_eq!(
            server_and_port("My.Database.Windows.Net", 0).unwrap(),
            ("my.database.windows.net".into(), 1433)
        );
        assert_eq!(
            server_and_port("tcp:s.database.windows.net,1444", 0).unwrap(),
            ("s.database.windows.net".into(), 1444)
        );
        assert_eq!(
            server_and_port("localhost:5000", 5000).unwrap(),
            ("localhost".into(), 5000)
        );
        for (server, port, field) in [
            ("", 0, "server"),
            ("https://s.database.windows.net", 0, "server"),
            ("s.database.windows.net:99999", 0, "server"),
            ("s database", 0, "server"),
            ("s.database.windows.net:1433", 1444, "port"),
            ("s.database.windows.net", 70000, "port"),
        ] {
            let err = server_and_port(server, port).unwrap_err();
            assert!(
                matches!(&err, GatewayError::InvalidArgument { field: f, .. } if f == field),
                "{server}/{port}: {err}"
            );
        }
    }
}
