//! QuerySql: validates the request (server host and port against the
//! exfiltration guard, database, query text, typed parameters, row cap,
//! timeout), runs it through `azure::sql` and streams the result sets back
//! as column metadata, row batches and a final done message.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{audit, request, ResponseStream};
use crate::{
    azure::{
        sql::{self, SqlEvent, SqlQuery, SqlTarget, SqlValue},
        Service,
    },
    error::GatewayError,
    gateway::GatewayState,
    policy::Target,
    proto::{
        query_sql_response::Event, sql_value::Kind, QuerySqlRequest, QuerySqlResponse, SqlColumn,
        SqlQueryDone, SqlResultSetColumns, SqlRow, SqlRowBatch,
    },
};

/// SQL Server's limit is 2100 parameters per call; `@stmt` and `@params` take two.
const MAX_PARAMETERS: usize = 2098;
/// Longest query timeout accepted.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_PORT: u16 = 1433;

pub(super) async fn query_sql(
    state: &Arc<GatewayState>,
    request: Request<QuerySqlRequest>,
) -> Result<Response<ResponseStream<QuerySqlResponse>>, Status> {
    let caller = request::caller(&request);
    let peer = request::peer(&request);
    let budget = request::budget(&request);
    let deadline = budget.map(|b| Instant::now() + b.min(MAX_TIMEOUT));
    let message = request.into_inner();
    let mut target_name = message.server.clone();
    let outcome = async {
        let query = validate(state, message)?;
        target_name = format!(
            "{}:{}/{}",
            query.target.host, query.target.port, query.target.database
        );
        state
            .policy
            .check(peer, &query.identity, Target::SqlServer(&query.target.host))?;
        let events = sql::query(Arc::clone(state), query, deadline).await?;
        let stream: ResponseStream<QuerySqlResponse> =
            Box::pin(events.map(|event| event.map(to_proto).map_err(Status::from)));
        Ok(Response::new(stream))
    }
    .await;
    audit::record(&caller, "QuerySql", &target_name, &outcome);
    outcome
}

/// Turns the request into a [`SqlQuery`], naming the field at fault.
fn validate(state: &GatewayState, message: QuerySqlRequest) -> Result<SqlQuery, GatewayError> {
    let config = &state.config.sql;
    let (host, port) = server_and_port(&message.server, message.port)?;
    state
        .hosts
        .check_host(Service::Sql, "server", &host, Some(port), "tds")?;
    let database = message.database;
    if database.is_empty() {
        return Err(GatewayError::invalid("database", "is required"));
    }
    if database.chars().count() > 128 || database.chars().any(char::is_control) {
        return Err(GatewayError::invalid(
            "database",
            "must be at most 128 characters without control characters",
        ));
    }
    let text = message.query;
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
    if message.parameters.len() > MAX_PARAMETERS {
        return Err(GatewayError::invalid(
            "parameters",
            format!("at most {MAX_PARAMETERS} parameters are allowed"),
        ));
    }
    let params = message
        .parameters
        .into_iter()
        .enumerate()
        .map(|(i, p)| from_proto(p.kind, &format!("parameters[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let max_rows = match (message.max_rows, config.max_rows) {
        (0, configured) => configured,
        (asked, 0) => asked,
        (asked, configured) => asked.min(configured),
    };
    let timeout = match message.timeout {
        None => Duration::from_secs(config.query_timeout_secs),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            return Err(GatewayError::invalid("timeout", "must not be negative"))
        }
        Some(d) if d.seconds == 0 && d.nanos == 0 => Duration::from_secs(config.query_timeout_secs),
        Some(d) => Duration::new(d.seconds as u64, d.nanos as u32).min(MAX_TIMEOUT),
    };
    let identity = request::identity(message.identity)?;
    Ok(SqlQuery {
        target: SqlTarget {
            cloud: sql::cloud_of(&host),
            tls: sql::is_azure_host(&host) || config.require_tls,
            host,
            port,
            database,
        },
        identity,
        text,
        params,
        max_rows,
        timeout,
    })
}

/// `host`, `host:port`, `host,port` or `tcp:host,port` (connection-string
/// style) plus the `port` field; they must agree when both are given.
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
    Ok((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

fn from_proto(kind: Option<Kind>, field: &str) -> Result<SqlValue, GatewayError> {
    Ok(match kind {
        None => {
            return Err(GatewayError::invalid(
                field,
                "has no value (set `null` for SQL NULL)",
            ))
        }
        Some(Kind::Null(_)) => SqlValue::Null,
        Some(Kind::Bool(b)) => SqlValue::Bool(b),
        Some(Kind::Int(i)) => SqlValue::Int(i),
        Some(Kind::Float(f)) => SqlValue::Float(f),
        Some(Kind::Decimal(d)) => SqlValue::Decimal(d),
        Some(Kind::String(s)) => SqlValue::String(s),
        Some(Kind::Bytes(b)) => SqlValue::Bytes(b),
        Some(Kind::Guid(g)) => SqlValue::Guid(g),
        Some(Kind::Timestamp(t)) => {
            let nanos = u32::try_from(t.nanos)
                .ok()
                .filter(|n| *n < 1_000_000_000)
                .ok_or_else(|| GatewayError::invalid(field, "timestamp nanos must be in 0..1e9"))?;
            SqlValue::Timestamp {
                seconds: t.seconds,
                nanos,
            }
        }
        Some(Kind::Date(d)) => SqlValue::Date(d),
        Some(Kind::Time(t)) => SqlValue::Time(t),
    })
}

fn value_to_proto(value: SqlValue) -> crate::proto::SqlValue {
    let kind = match value {
        SqlValue::Null => Kind::Null(prost_types::NullValue::NullValue as i32),
        SqlValue::Bool(b) => Kind::Bool(b),
        SqlValue::Int(i) => Kind::Int(i),
        SqlValue::Float(f) => Kind::Float(f),
        SqlValue::Decimal(d) => Kind::Decimal(d),
        SqlValue::String(s) => Kind::String(s),
        SqlValue::Bytes(b) => Kind::Bytes(b),
        SqlValue::Guid(g) => Kind::Guid(g),
        SqlValue::Timestamp { seconds, nanos } => Kind::Timestamp(prost_types::Timestamp {
            seconds,
            nanos: nanos as i32,
        }),
        SqlValue::Date(d) => Kind::Date(d),
        SqlValue::Time(t) => Kind::Time(t),
    };
    crate::proto::SqlValue { kind: Some(kind) }
}

fn to_proto(event: SqlEvent) -> QuerySqlResponse {
    let event = match event {
        SqlEvent::Columns {
            result_set,
            columns,
        } => Event::Columns(SqlResultSetColumns {
            result_set,
            columns: columns
                .into_iter()
                .map(|c| SqlColumn {
                    name: c.name,
                    r#type: c.type_name,
                    nullable: c.nullable,
                })
                .collect(),
        }),
        SqlEvent::Rows { result_set, rows } => Event::Rows(SqlRowBatch {
            result_set,
            rows: rows
                .into_iter()
                .map(|values| SqlRow {
                    values: values.into_iter().map(value_to_proto).collect(),
                })
                .collect(),
        }),
        SqlEvent::Done {
            rows_per_result_set,
            rows_affected,
            truncated,
        } => Event::Done(SqlQueryDone {
            rows_per_result_set,
            rows_affected,
            truncated,
        }),
    };
    QuerySqlResponse { event: Some(event) }
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

    #[test]
    fn parameters_without_a_value_are_refused() {
        let err = from_proto(None, "parameters[1]").unwrap_err();
        assert!(
            matches!(err, GatewayError::InvalidArgument { field, .. } if field == "parameters[1]")
        );
        assert_eq!(
            from_proto(Some(Kind::Null(0)), "p").unwrap(),
            SqlValue::Null
        );
        let bad_nanos = Some(Kind::Timestamp(prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        }));
        assert!(from_proto(bad_nanos, "p").is_err());
    }

    #[test]
    fn events_map_to_proto() {
        let response = to_proto(SqlEvent::Rows {
            result_set: 1,
            rows: vec![vec![SqlValue::Null, SqlValue::Int(3)]],
        });
        let Some(Event::Rows(batch)) = response.event else {
            panic!("not rows")
        };
        assert_eq!(batch.result_set, 1);
        assert_eq!(batch.rows[0].values[0].kind, Some(Kind::Null(0)));
        assert_eq!(batch.rows[0].values[1].kind, Some(Kind::Int(3)));
    }
}
