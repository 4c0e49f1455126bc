//! Log output: stderr for a console (ANSI colours only when stderr is a
//! terminal, so redirected logs and journald stay plain) and, for the Windows
//! service, daily-rotated files under `%ProgramData%\identity-gateway\logs`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

fn filter(spec: &str) -> EnvFilter {
    EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Logs to stderr with the `--log` filter.
pub fn init_stderr(spec: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(filter(spec))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Daily files `identity-gateway.YYYY-MM-DD.log` in `dir`, the last
/// [`KEPT_LOG_FILES`] kept; plain text.
#[cfg(windows)]
pub fn init_files(spec: &str, dir: &std::path::Path) -> Result<(), String> {
    use tracing_appender::rolling::{Builder, Rotation};
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix("identity-gateway")
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(dir)
        .map_err(|e| format!("cannot write logs in {}: {e}", dir.display()))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter(spec))
        .with_writer(appender)
        .with_ansi(false)
        .try_init()
        .map_err(|e| format!("cannot set up logging: {e}"))
}

/// Rotated log files kept by the Windows service.
pub const KEPT_LOG_FILES: usize = 14;
