//! The process's log output: the `tracing` subscriber (`--log-format text`
//! or `json`, on stderr), its filter, and the one startup line that says
//! what the gateway runs with.
//!
//! Colour codes only go to a terminal: under systemd, in a container or into
//! a file, stderr is not one, so journald and log shippers get plain text.
//!
//! The filter is the operator's `log` setting plus what must never be logged
//! whatever it says: tiberius logs every SQL Server ERROR token at ERROR
//! level (`tiberius::tds::stream::token`). Those messages are the caller's
//! SQL errors, which quote the caller's data (a duplicate key's value, a
//! conversion's input); the caller gets them in its status, and the audit
//! line records the outcome. They are turned off unless the filter names
//! that target explicitly (for debugging against a test server).

use std::io::IsTerminal as _;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

/// Where tiberius logs server ERROR tokens.
pub const TIBERIUS_TOKENS: &str = "tiberius::tds::stream::token";

/// The filter for `log` (e.g. `info`, `identity_gateway=debug`); `info`
/// when it does not parse.
pub fn env_filter(log: &str) -> EnvFilter {
    let directives = if log.contains(TIBERIUS_TOKENS) {
        log.to_string()
    } else {
        format!("{log},{TIBERIUS_TOKENS}=off")
    };
    EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{TIBERIUS_TOKENS}=off")))
}

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
    let bad_filter = EnvFilter::try_new(filter)
        .err()
        .map(|e| format!("{filter:?}: {e}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(filter))
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

/// Colour only for a person at a terminal, and never with `NO_COLOR` set
/// (https://no-color.org).
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Rotated log files kept by the Windows service.
pub const KEPT_LOG_FILES: usize = 14;

/// The Windows service's log: daily files `identity-gateway.YYYY-MM-DD.log`
/// in `dir` (`%ProgramData%\identity-gateway\logs`), the last
/// [`KEPT_LOG_FILES`] kept, plain text (never ANSI), same filter as stderr.
#[cfg(windows)]
pub fn init_files(filter: &str, format: LogFormat, dir: &std::path::Path) -> Result<(), String> {
    use tracing_appender::rolling::{Builder, Rotation};
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix("identity-gateway")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(dir)
        .map_err(|e| format!("cannot write logs in {}: {e}", dir.display()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(filter))
        .with_writer(appender)
        .with_ansi(false);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| format!("cannot set up logging: {e}"))
}

/// Writes the startup line: every transport the gateway serves on, the token
/// source, the caller policy and the limits in force, so an operator reading
/// the journal knows what this instance does without reading its config.
pub fn log_startup(config: &Config, source: &str, policy: &str, identity_endpoint: Option<&str>) {
    tracing::info!(
        transports = %transports(config, identity_endpoint),
        source,
        policy,
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
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn logged(filter: &str) -> String {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(env_filter(filter))
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(target: "tiberius::tds::stream::token", message = "Violation of PRIMARY KEY: duplicate key value is (alice@example.com)", code = 2627);
            tracing::info!(target: "audit", rpc = "QuerySql", "still logged");
        });
        let text = out.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn sql_error_text_is_not_logged_at_error() {
        for filter in ["info", "debug", "trace", "info,tiberius=trace", "bogus=[["] {
            let text = logged(filter);
            assert!(!text.contains("alice@example.com"), "{filter}: {text}");
            assert!(text.contains("still logged"), "{filter}: {text}");
        }
        assert!(logged("info,tiberius::tds::stream::token=error").contains("alice@example.com"));
    }

    #[test]
    fn the_startup_summary_names_transports_and_limits() {
        let config = Config {
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
        let l = limits(&config);
        assert!(l.contains("5 concurrent, 20/s"), "{l}");
        assert!(l.contains("no row cap"), "{l}");
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
