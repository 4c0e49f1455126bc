//! The process's log output: the `tracing` subscriber (`--log-format text`
//! or `json`, on stderr) and the one startup line that says what the gateway
//! runs with.
//!
//! Colour codes only go to a terminal: under systemd, in a container or into
//! a file, stderr is not one, so journald and log shippers get plain text.
//! This module formats; it decides nothing about what the gateway does.

use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (colour only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, fields at the top level (for journald
    /// exporters, Fluent Bit, Azure Monitor agents).
    Json,
}

/// Installs the global subscriber: `filter` is an `EnvFilter` directive
/// ("info", "identity_gateway=debug,warn"); an invalid one falls back to
/// "info" and says so.
pub fn init(filter: &str, format: LogFormat) {
    let (filter, bad_filter) = match EnvFilter::try_new(directives(filter)) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(format!("{filter:?}: {e}"))),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour_wanted()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    if let Some(why) = bad_filter {
        tracing::warn!(filter = %why, "invalid log filter; logging at info");
    }
}

/// tiberius logs every error a SQL server returns at ERROR
/// (`tiberius::tds::stream::token`), so a caller's bad query or missing
/// permission would read as a gateway failure; the caller gets the error as
/// its status and the audit line records it. Silenced unless the operator's
/// filter names tiberius itself.
const QUIET_SQL_SERVER_ERRORS: &str = "tiberius::tds::stream::token=off";

fn directives(filter: &str) -> String {
    if filter.contains("tiberius") {
        filter.to_string()
    } else {
        format!("{filter},{QUIET_SQL_SERVER_ERRORS}")
    }
}

/// Colour only for a person at a terminal, and never with `NO_COLOR` set
/// (https://no-color.org).
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes the startup line: every transport the gateway serves on, the token
/// source, the caller policy and the limits in force, so an operator reading
/// the journal knows what this instance does without reading its config.
pub fn log_startup(config: &Config, source: &str, identity_endpoint: Option<&str>) {
    tracing::info!(
        transports = %transports(config, identity_endpoint),
        source,
        policy = %policy(config),
        limits = %limits(config),
        "identity-gateway serving"
    );
}

fn transports(config: &Config, identity_endpoint: Option<&str>) -> String {
    let mut out = Vec::new();
    if cfg!(unix) {
        let group = config.socket_group.as_deref().map_or_else(
            || "the gateway's group".to_string(),
            |g| format!("group {g}"),
        );
        out.push(format!(
            "unix socket {} (0660, {group})",
            config.socket.display()
        ));
    } else {
        let pipe = config
            .pipe
            .as_deref()
            .unwrap_or(r"\\.\pipe\identity-gateway");
        out.push(format!("named pipe {pipe}"));
    }
    if let Some(tcp) = config.tcp {
        out.push(format!("tcp {tcp}"));
    }
    if let Some(url) = identity_endpoint {
        out.push(format!("identity endpoint {url}"));
    }
    out.join(", ")
}

fn policy(config: &Config) -> String {
    match config.policy.rules.len() {
        0 => "none: any local process that can open the socket may use any identity (as with IMDS)"
            .to_string(),
        n => format!(
            "{n} rule{}: the first rule matching the caller decides; callers no rule matches are refused",
            if n == 1 { "" } else { "s" }
        ),
    }
}

fn limits(config: &Config) -> String {
    let id = &config.identity;
    let up = &config.upstream;
    let sql = &config.sql;
    let max_rows = match sql.max_rows {
        0 => "no row cap".to_string(),
        n => format!("max {n} rows"),
    };
    format!(
        "token source: {} concurrent, {}/s, {} s per request, {} retries; \
         upstream: connect {} s, request {} s, bodies <= {} bytes; \
         sql: pool {} per database, {max_rows}, query timeout {} s",
        id.max_concurrent,
        id.max_per_second,
        id.request_timeout_secs,
        id.max_retries,
        up.connect_timeout_secs,
        up.request_timeout_secs,
        up.max_body_bytes,
        sql.pool_size,
        sql.query_timeout_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_startup_summary_names_transports_policy_and_limits() {
        let mut config = Config {
            tcp: Some("127.0.0.1:7777".parse().unwrap()),
            socket_group: Some("identity-gateway".into()),
            ..Config::default()
        };
        let t = transports(&config, Some("http://127.0.0.1:42356/msi/token"));
        assert!(
            t.contains("/run/identity-gateway/gateway.sock (0660, group identity-gateway)"),
            "{t}"
        );
        assert!(t.contains("tcp 127.0.0.1:7777"), "{t}");
        assert!(
            t.contains("identity endpoint http://127.0.0.1:42356"),
            "{t}"
        );
        assert!(policy(&config).contains("as with IMDS"));
        config.policy = toml::from_str("[[rules]]\nuids = [1000]\n").unwrap();
        assert!(
            policy(&config).starts_with("1 rule:"),
            "{}",
            policy(&config)
        );
        let l = limits(&config);
        assert!(l.contains("5 concurrent, 20/s"), "{l}");
        assert!(l.contains("no row cap"), "{l}");
    }

    #[test]
    fn sql_server_errors_are_not_gateway_errors_unless_asked_for() {
        assert_eq!(directives("info"), "info,tiberius::tds::stream::token=off");
        assert_eq!(directives("warn,tiberius=debug"), "warn,tiberius=debug");
        EnvFilter::try_new(directives("info,identity_gateway=debug")).unwrap();
    }

    #[test]
    fn log_format_parses_from_toml() {
        #[derive(Deserialize)]
        struct F {
            f: LogFormat,
        }
        let f: F = toml::from_str("f = \"json\"").unwrap();
        assert_eq!(f.f, LogFormat::Json);
        assert!(toml::from_str::<F>("f = \"xml\"").is_err());
    }
}
