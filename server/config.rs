//! Gateway configuration: command-line flags, `IDENTITY_GATEWAY_*` environment
//! variables and an optional TOML file, in that order of precedence.
//!
//! This module owns parsing and defaults only; it opens no sockets and makes no
//! calls. Durations in the file are whole seconds (`*_secs`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::Parser;
use serde::Deserialize;
use url::Url;

use identity_gateway_azure::config::{KeyVaultConfig, SasConfig, SqlConfig};
use identity_gateway_core::http::UpstreamConfig;
use identity_gateway_identity::{IdentityConfig, SourceKind};

use crate::logging::LogFormat;

/// Default socket path for a system install.
pub const DEFAULT_SOCKET: &str = "/run/identity-gateway/gateway.sock";
/// Default socket path with `--emulator`, so a newcomer needs no root.
pub const EMULATOR_SOCKET: &str = "./identity-gateway.sock";
/// identity-gateway: brokers this VM's Azure managed identity to local
/// processes over gRPC on a Unix socket (or a named pipe on Windows).
///
/// Every flag can also be set with an environment variable
/// IDENTITY_GATEWAY_<FLAG> (e.g. IDENTITY_GATEWAY_SOCKET), and in the TOML file
/// given by --config. Flags win over environment variables, which win over the file.
#[derive(Debug, Parser, Default)]
#[command(name = "identity-gateway", version)]
pub struct Cli {
    /// Unix socket to serve gRPC on. The socket is created 0660 in a 0750
    /// directory. [default: /run/identity-gateway/gateway.sock, or
    /// ./identity-gateway.sock with --emulator]
    #[arg(
        long,
        global = true,
        env = "IDENTITY_GATEWAY_SOCKET",
        value_name = "PATH"
    )]
    pub socket: Option<PathBuf>,

    /// Group that owns the socket, so its members may call the gateway. On
    /// Windows: the group (name or SID) granted read/write on the pipe
    /// [default: Authenticated Users].
    #[arg(long, env = "IDENTITY_GATEWAY_SOCKET_GROUP", value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Also serve gRPC on this TCP address. Only loopback addresses are
    /// accepted (e.g. 127.0.0.1:7777): the gateway hands out tokens.
    #[arg(long, env = "IDENTITY_GATEWAY_TCP", value_name = "ADDR")]
    pub tcp: Option<SocketAddr>,

    /// Windows only: named pipe to serve on, instead of the Unix socket.
    /// [default: \\.\pipe\identity-gateway]
    #[arg(
        long,
        global = true,
        env = "IDENTITY_GATEWAY_PIPE",
        value_name = "NAME"
    )]
    pub pipe: Option<String>,

    /// Base URL of IMDS, for tests and unusual hosts.
    /// [default: http://169.254.169.254]
    #[arg(long, env = "IDENTITY_GATEWAY_IMDS_ENDPOINT", value_name = "URL")]
    pub imds_endpoint: Option<Url>,

    /// Where tokens come from: imds, app-service, legacy-msi, or auto (App
    /// Service when IDENTITY_ENDPOINT and IDENTITY_HEADER are set, else IMDS).
    /// [default: auto]
    #[arg(long, env = "IDENTITY_GATEWAY_SOURCE", value_name = "SOURCE")]
    pub source: Option<SourceKind>,

    /// TOML configuration file (see deploy/config.example.toml).
    #[arg(
        long,
        global = true,
        env = "IDENTITY_GATEWAY_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Run against the built-in emulator (fake IMDS, Key Vault, Storage, ADLS,
    /// ARM and SQL on loopback) so no Azure account is needed. A flag only:
    /// no file or environment variable can turn fake mode on, and production
    /// builds (without the `emulator` cargo feature) refuse it.
    #[arg(long, hide = cfg!(not(feature = "emulator")))]
    pub emulator: bool,

    /// Log filter, e.g. "info" or "identity_gateway=debug". [default: info]
    #[arg(long, env = "IDENTITY_GATEWAY_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Log line format on stderr: text, or json (one object per line).
    /// Colour codes only when stderr is a terminal. [default: text]
    #[arg(long, env = "IDENTITY_GATEWAY_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Also serve the App Service managed-identity protocol on this loopback
    /// address (e.g. 127.0.0.1:42356), so unmodified Azure SDKs can use the
    /// gateway: set IDENTITY_ENDPOINT=http://ADDR/msi/token and IDENTITY_HEADER
    /// to the contents of the header file (see [identity_endpoint] header_file).
    #[arg(long, env = "IDENTITY_GATEWAY_IDENTITY_ENDPOINT", value_name = "ADDR")]
    pub identity_endpoint: Option<SocketAddr>,

    /// App Service identity endpoint (normally from the platform's IDENTITY_ENDPOINT).
    #[arg(long, env = "IDENTITY_ENDPOINT", hide = true)]
    pub app_service_endpoint: Option<Url>,

    /// App Service identity header secret (normally from IDENTITY_HEADER).
    #[arg(long, env = "IDENTITY_HEADER", hide = true, hide_env_values = true)]
    pub app_service_header: Option<String>,

    /// Serve Prometheus metrics (GET /metrics) on this loopback address
    /// (e.g. 127.0.0.1:9464) or Unix socket (unix:/run/identity-gateway/metrics.sock).
    /// [default: off]
    #[arg(
        long,
        env = "IDENTITY_GATEWAY_METRICS_LISTEN",
        value_name = "ADDR|unix:PATH"
    )]
    pub metrics_listen: Option<MetricsListen>,

    /// A command instead of serving (serving is the default).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `identity-gateway <COMMAND>`: tools for operators, run against the
/// configuration the daemon would use (same flags, variables and file).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Asks the running gateway's grpc.health.v1 service over its socket (its
    /// pipe on Windows);
    /// exits 0 when it answers SERVING, 1 otherwise (for container probes
    /// and scripts). Takes the socket from --socket, IDENTITY_GATEWAY_SOCKET
    /// or the config file; on Windows the pipe from --pipe (or --socket
    /// \\.\pipe\NAME), IDENTITY_GATEWAY_PIPE or the config file.
    Healthcheck(crate::healthcheck::HealthcheckArgs),
    /// Checks, in order, what the gateway needs (identity source, a token,
    /// the identity's ids, configured upstreams, the socket, the policy) and
    /// prints a report with a fix for each failure. Exits 1 if any check
    /// failed.
    Diagnose(crate::diagnose::DiagnoseArgs),
}

/// The resolved configuration the gateway runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub socket: PathBuf,
    pub socket_group: Option<String>,
    pub tcp: Option<SocketAddr>,
    pub pipe: Option<String>,
    /// Windows: more users or groups (names or SIDs) that may open the pipe,
    /// besides `socket_group`.
    pub pipe_access: Vec<String>,
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    pub identity: IdentityConfig,
    pub upstream: UpstreamConfig,
    pub keyvault: KeyVaultConfig,
    pub sas: SasConfig,
    pub sql: SqlConfig,
    pub identity_endpoint: IdentityEndpointConfig,
    /// Who may ask for what (see `identity_gateway_service::policy`); no
    /// rules: IMDS-equivalent. Reloaded from the file on SIGHUP
    /// (Windows: PARAMCHANGE, Ctrl-Break).
    pub policy: identity_gateway_service::policy::PolicyConfig,
    pub metrics: MetricsConfig,
    /// What one caller and one connection may ask of the gateway.
    pub limits: identity_gateway_service::LimitsConfig,
    /// The `--config` file this was read from (what a reload re-reads).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// `[metrics]`: the opt-in Prometheus endpoint.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `"127.0.0.1:9464"` (loopback only) or `"unix:/run/identity-gateway/metrics.sock"`
    /// (created 0660 with the socket group). Unset: no metrics listener.
    pub listen: Option<MetricsListen>,
}

/// Where the metrics endpoint listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MetricsListen {
    /// Loopback TCP.
    Tcp(SocketAddr),
    /// A Unix socket of its own.
    Unix(PathBuf),
}

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(
                    "unix: needs a socket path, e.g. unix:/run/identity-gateway/metrics.sock"
                        .into(),
                );
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse::<SocketAddr>()
            .map(Self::Tcp)
            .map_err(|_| format!("'{s}' is neither an address (127.0.0.1:9464) nor unix:PATH"))
    }
}

impl TryFrom<String> for MetricsListen {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// The App Service-compatible identity endpoint for unmodified Azure SDKs
/// (`server/identity_endpoint.rs`); off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityEndpointConfig {
    /// Loopback address to serve on, e.g. `127.0.0.1:42356` (port 0 picks one).
    pub listen: Option<SocketAddr>,
    /// Where the `X-IDENTITY-HEADER` secret is written (mode 0600, replaced at
    /// every start, removed at stop). Default: `identity-header` next to the socket.
    pub header_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            socket_group: None,
            tcp: None,
            pipe: None,
            pipe_access: Vec::new(),
            log: "info".into(),
            log_format: LogFormat::Text,
            identity: IdentityConfig::default(),
            upstream: UpstreamConfig::default(),
            keyvault: KeyVaultConfig::default(),
            sas: SasConfig::default(),
            sql: SqlConfig::default(),
            identity_endpoint: IdentityEndpointConfig::default(),
            policy: identity_gateway_service::policy::PolicyConfig::default(),
            metrics: MetricsConfig::default(),
            limits: identity_gateway_service::LimitsConfig::default(),
            config_file: None,
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
    /// `--emulator` given to a build without the `emulator` feature.
    #[error("this build has no emulator (production build); build with `cargo run -- --emulator`, whose default features include it")]
    NoEmulator,
}

impl Config {
    /// Resolves the configuration: flags and environment (already merged by
    /// clap, flags first) over the TOML file over the defaults.
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        if cli.emulator && !cfg!(feature = "emulator") {
            return Err(ConfigError::NoEmulator);
        }
        let mut config = match &cli.config {
            Some(path) => Self {
                config_file: Some(path.clone()),
                ..Self::from_file(path)?
            },
            None => Self::default(),
        };
        config.apply_cli(cli);
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file (unknown keys are an error, so typos surface).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    fn apply_cli(&mut self, cli: Cli) {
        match cli.socket {
            Some(socket) => self.socket = socket,
            None if cli.emulator && self.socket == Path::new(DEFAULT_SOCKET) => {
                self.socket = PathBuf::from(EMULATOR_SOCKET)
            }
            None => {}
        }
        if cli.socket_group.is_some() {
            self.socket_group = cli.socket_group;
        }
        if cli.tcp.is_some() {
            self.tcp = cli.tcp;
        }
        if cli.pipe.is_some() {
            self.pipe = cli.pipe;
        }
        if let Some(url) = cli.imds_endpoint {
            self.identity.imds_endpoint = url;
        }
        if let Some(source) = cli.source {
            self.identity.source = source;
        }
        if let Some(log) = cli.log {
            self.log = log;
        }
        if let Some(format) = cli.log_format {
            self.log_format = format;
        }
        if cli.identity_endpoint.is_some() {
            self.identity_endpoint.listen = cli.identity_endpoint;
        }
        if cli.app_service_endpoint.is_some() {
            self.identity.app_service_endpoint = cli.app_service_endpoint;
        }
        if cli.app_service_header.is_some() {
            self.identity.app_service_header = cli.app_service_header;
        }
        if cli.metrics_listen.is_some() {
            self.metrics.listen = cli.metrics_listen;
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(tcp) = self.tcp {
            if !tcp.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "--tcp {tcp}: only loopback addresses are allowed (the gateway hands out tokens)"
                )));
            }
        }
        if let Some(MetricsListen::Tcp(addr)) = &self.metrics.listen {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "metrics listen {addr}: only loopback addresses are allowed \
                     (put a local Prometheus agent or a Unix socket in front)"
                )));
            }
        }
        if let Some(addr) = self.identity_endpoint.listen {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "identity endpoint {addr}: only loopback addresses are allowed (it hands out tokens)"
                )));
            }
            // IDENTITY_ENDPOINT exported machine-wide for the apps must not make
            // the gateway its own token source.
            let own = self
                .identity
                .app_service_endpoint
                .as_ref()
                .is_some_and(|url| {
                    url.port_or_known_default() == Some(addr.port())
                        && url.host_str().is_some_and(|h| {
                            h == "localhost"
                                || h.trim_matches(['[', ']'])
                                    .parse::<std::net::IpAddr>()
                                    .is_ok_and(|ip| ip.is_loopback())
                        })
                });
            if own
                && self.identity.source != SourceKind::Imds
                && self.identity.source != SourceKind::LegacyMsi
            {
                return Err(ConfigError::Invalid(format!(
                    "IDENTITY_ENDPOINT points at this gateway's own identity endpoint ({addr}); \
                     unset it in the gateway's environment or pass --source imds"
                )));
            }
        }
        if self.identity.max_concurrent == 0 || self.identity.max_per_second == 0 {
            return Err(ConfigError::Invalid(
                "identity.max_concurrent and identity.max_per_second must be at least 1".into(),
            ));
        }
        for url in [
            &self.identity.imds_endpoint,
            &self.identity.legacy_msi_endpoint,
        ] {
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(ConfigError::Invalid(format!(
                    "identity endpoint {url}: scheme must be http or https"
                )));
            }
        }
        if self.sql.max_query_bytes >= self.limits.max_request_bytes {
            return Err(ConfigError::Invalid(format!(
                "sql.max_query_bytes ({}) must be less than limits.max_request_bytes ({}): \
                 a query that long could never arrive",
                self.sql.max_query_bytes, self.limits.max_request_bytes
            )));
        }
        identity_gateway_service::CallerPolicy::compile(
            &self.policy,
            crate::windows::account::policy_accounts(),
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.sql.batch_rows == 0 {
            return Err(ConfigError::Invalid(
                "sql.batch_rows must be at least 1".into(),
            ));
        }
        if self.sql.pool_size == 0 || self.sql.stream_buffer_batches == 0 {
            return Err(ConfigError::Invalid(
                "sql.pool_size and sql.stream_buffer_batches must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_values_are_overridden_by_flags() {
        let mut config =
            Config::from_toml("socket = \"/tmp/file.sock\"\n[identity]\nmax_per_second = 7\n")
                .unwrap();
        config.apply_cli(Cli {
            socket: Some("/tmp/flag.sock".into()),
            ..Cli::default()
        });
        assert_eq!(config.socket, PathBuf::from("/tmp/flag.sock"));
        assert_eq!(config.identity.max_per_second, 7);
        assert_eq!(config.identity.max_concurrent, 5);
    }

    #[test]
    fn no_file_key_turns_fake_mode_on() {
        let err = Config::from_toml("emulator = true\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `emulator`"),
            "{err}"
        );
    }

    #[test]
    fn emulator_defaults_to_a_local_socket() {
        let mut config = Config::default();
        config.apply_cli(Cli {
            emulator: true,
            ..Cli::default()
        });
        assert_eq!(config.socket, PathBuf::from(EMULATOR_SOCKET));
    }

    #[test]
    fn the_shipped_example_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
        let config = Config::from_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.identity.max_per_second, 20);
    }

    #[test]
    fn the_readmes_policy_example_is_valid() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let example = readme
            .split("```toml\n")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .find(|block| block.contains("[policy]"))
            .expect("a policy example in the README");
        let config = Config::from_toml(example).unwrap();
        config.validate().unwrap();
        assert_eq!(config.policy.rules.len(), 3);
        let shipped = Config::from_file(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml"),
        )
        .unwrap();
        assert!(!shipped.policy.allow_anonymous_loopback);
    }

    #[test]
    fn an_invalid_policy_is_a_configuration_error() {
        let config = Config::from_toml("[[policy.rules]]\nidentities = [\"system\"]\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("rule #1: names no callers"), "{err}");
    }

    #[test]
    fn the_shipped_windows_config_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/windows/config.toml");
        let config = Config::from_file(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.pipe.as_deref(), Some(r"\\.\pipe\identity-gateway"));
        assert!(config.pipe_access.is_empty());
    }

    #[test]
    fn the_gateway_is_never_its_own_token_source() {
        let mut config = Config::default();
        config.identity_endpoint.listen = Some("127.0.0.1:42356".parse().unwrap());
        config.identity.app_service_endpoint =
            Some("http://127.0.0.1:42356/msi/token".parse().unwrap());
        config.identity.app_service_header = Some("h".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("own identity endpoint"), "{err}");
        config.identity.source = SourceKind::Imds;
        assert!(config.validate().is_ok());
    }

    #[test]
    fn metrics_listen_takes_an_address_or_a_unix_socket() {
        let config =
            Config::from_toml("[metrics]\nlisten = \"unix:/run/ig/metrics.sock\"\n").unwrap();
        assert_eq!(
            config.metrics.listen,
            Some(MetricsListen::Unix("/run/ig/metrics.sock".into()))
        );
        let config = Config::from_toml("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            config.metrics.listen,
            Some(MetricsListen::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
        assert!(Config::from_toml("[metrics]\nlisten = \"nowhere\"\n").is_err());
        let public = Config::from_toml("[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap();
        let err = public.validate().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }

    #[test]
    fn unknown_keys_and_public_tcp_are_rejected() {
        assert!(Config::from_toml("sockett = \"x\"").is_err());
        let config = Config {
            tcp: Some("0.0.0.0:7777".parse().unwrap()),
            ..Config::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
    }
}
