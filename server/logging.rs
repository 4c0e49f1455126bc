//! The log filter the binary installs: the operator's `log` setting, plus
//! what must never be logged whatever it says; and where logs go: stderr
//! for a console (ANSI colours only when stderr is a terminal, so
//! redirected logs and journald stay plain) or, for the Windows service,
//! daily-rotated files under `%ProgramData%\identity-gateway\logs`.
//!
//! tiberius logs every SQL Server ERROR token at ERROR level
//! (`tiberius::tds::stream::token`). Those messages are the caller's SQL
//! errors, which quote the caller's data (a duplicate key's value, a
//! conversion's input); the caller gets them in its status, and the audit
//! line records the outcome. They are turned off unless the filter names
//! that target explicitly (for debugging against a test server).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

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

/// Logs to stderr with the `log` filter.
pub fn init_stderr(log: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(env_filter(log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Rotated log files kept by the Windows service.
pub const KEPT_LOG_FILES: usize = 14;

/// Daily files `identity-gateway.YYYY-MM-DD.log` in `dir`, the last
/// [`KEPT_LOG_FILES`] kept; plain text.
#[cfg(windows)]
pub fn init_files(log: &str, dir: &std::path::Path) -> Result<(), String> {
    use tracing_appender::rolling::{Builder, Rotation};
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix("identity-gateway")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(dir)
        .map_err(|e| format!("cannot write logs in {}: {e}", dir.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(env_filter(log))
        .with_writer(appender)
        .with_ansi(false)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
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
}
