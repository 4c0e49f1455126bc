//! `identity-gateway diagnose`: checks, in order, what the gateway needs on
//! this machine and prints a report with a fix for each failure (or JSON
//! with `--json`):
//!
//! 1. the identity source (IMDS) accepts connections;
//! 2. it issues a token for ARM (one request, no retries);
//! 3. whose identity that is: client id, object id and tenant, from the
//!    token's claims, decoded *without* verifying the signature (the gateway
//!    is not the token's audience; the claims are only shown);
//! 4. the configured upstreams accept connections (`upstream.arm_endpoint`,
//!    `host:port` entries of `upstream.allowed_hosts`, the vaults, storage
//!    accounts and SQL servers policy rules name, and every `--check URL`);
//! 5. the socket's directory and file have safe permissions, and whether a
//!    gateway answers on it;
//! 6. the caller policy loaded.
//!
//! It sends nothing but those connection attempts and one token request,
//! and never prints the token.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use base64::Engine;
use identity_gateway_core::{http, Cloud, IdentitySelector, Service};
use identity_gateway_identity::{
    reachability::{probe, probe_address},
    retry::{final_error, FetchError, Tried},
    TokenSource,
};
use serde::Serialize;

use crate::config::Config;

/// `diagnose`'s own options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DiagnoseArgs {
    /// Print the report as JSON (one object: `ok` and the `checks`).
    #[arg(long)]
    pub json: bool,
    /// Check this user-assigned identity (its client id) instead of the
    /// system-assigned one.
    #[arg(long, value_name = "CLIENT_ID")]
    pub client_id: Option<String>,
    /// Also check that this upstream accepts connections (a URL such as
    /// https://myvault.vault.azure.net, or host:port); repeatable.
    #[arg(long = "check", value_name = "URL")]
    pub check: Vec<String>,
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    /// Works, but worth knowing (e.g. no policy, no gateway running yet).
    Warn,
    Fail,
    /// Not run: an earlier check it depends on failed.
    Skip,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do about a failure or warning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(checks: Vec<Check>) -> Self {
        Self {
            ok: !checks.iter().any(|c| c.outcome == Outcome::Fail),
            checks,
        }
    }

    /// A report of a configuration that could not be loaded.
    pub fn bad_config(error: &str) -> Self {
        Self::new(vec![Check::new("configuration", Outcome::Fail, error).fix(
            "fix the file or flag named above (see deploy/config.example.toml for every key)",
        )])
    }

    /// The readable form.
    pub fn to_text(&self) -> String {
        let mut out = String::from("identity-gateway diagnose\n");
        for check in &self.checks {
            let mark = match check.outcome {
                Outcome::Ok => "[ ok ]",
                Outcome::Warn => "[warn]",
                Outcome::Fail => "[FAIL]",
                Outcome::Skip => "[skip]",
            };
            out.push_str(&format!("{mark} {}: {}\n", check.name, check.detail));
            if let Some(fix) = &check.fix {
                out.push_str(&format!("       fix: {fix}\n"));
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Fail)
            .count();
        out.push_str(&match failed {
            0 => "result: all checks passed\n".to_string(),
            1 => "result: 1 check failed\n".to_string(),
            n => format!("result: {n} checks failed\n"),
        });
        out
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{\"ok\":false}".into())
    }
}

const ENABLE_IDENTITY: &str = "enable the VM's system-assigned managed identity (portal: the VM's \
     Identity blade, System assigned: On; CLI: `az vm identity assign -g <group> -n <vm>`), or \
     assign a user-assigned identity to the VM (`az vm identity assign -g <group> -n <vm> \
     --identities <identity resource id>`) and pass its --client-id";

/// Runs every check in order.
pub async fn run(config: &Config, args: &DiagnoseArgs) -> Report {
    let mut checks = Vec::new();
    let token = identity_checks(config, args, &mut checks).await;
    claims_check(token.as_deref(), &mut checks);
    upstream_checks(config, args, &mut checks).await;
    checks.push(socket_check(&config.socket, config.socket_group.as_deref()).await);
    checks.push(policy_check(config));
    Report::new(checks)
}

/// Checks 1 and 2; returns the ARM token when one came.
async fn identity_checks(
    config: &Config,
    args: &DiagnoseArgs,
    checks: &mut Vec<Check>,
) -> Option<String> {
    let source = match TokenSource::from_config(&config.identity) {
        Ok(source) => source,
        Err(e) => {
            checks.push(
                Check::new("identity source", Outcome::Fail, e.to_string()).fix(
                    "set identity.source (auto, imds, app-service, legacy-msi) and its endpoint",
                ),
            );
            checks.push(Check::new(
                "token for ARM",
                Outcome::Skip,
                "no identity source",
            ));
            return None;
        }
    };
    let name = format!("{} reachable", source.name());
    let endpoint = source.endpoint();
    let connect_timeout = config.identity.connect_timeout();
    let address = url::Url::parse(&endpoint)
        .ok()
        .as_ref()
        .and_then(probe_address);
    let reachable = match &address {
        Some(address) => probe(address, connect_timeout).await,
        None => false,
    };
    if reachable {
        checks.push(Check::new(
            name,
            Outcome::Ok,
            format!("{endpoint} accepts connections"),
        ));
    } else {
        let fix = match source {
            TokenSource::Imds(_) => format!(
                "is this an Azure VM with a managed identity enabled? IMDS ({}) answers only on \
                 Azure VMs and scale sets. On a VM: {ENABLE_IDENTITY}. If it is firewalled or \
                 proxied: allow 169.254.169.254:80 directly (no proxy). Off Azure (a laptop, \
                 CI), run `identity-gateway --emulator` instead",
                config.identity.imds_endpoint
            ),
            TokenSource::AppService(_) => {
                "check IDENTITY_ENDPOINT (App Service / Functions set it when a managed identity \
                 is enabled on the app)"
                    .to_string()
            }
            TokenSource::LegacyMsi(_) => {
                "the legacy MSI VM extension is not running; prefer IMDS (--source imds)"
                    .to_string()
            }
        };
        checks.push(
            Check::new(
                name,
                Outcome::Fail,
                format!(
                    "{endpoint} did not accept a connection within {}s",
                    connect_timeout.as_secs()
                ),
            )
            .fix(fix),
        );
        checks.push(Check::new(
            "token for ARM",
            Outcome::Skip,
            "the identity source is unreachable",
        ));
        return None;
    }

    let selector = match &args.client_id {
        Some(id) => IdentitySelector::ClientId(id.clone()),
        None => IdentitySelector::SystemAssigned,
    };
    let resource = Service::ResourceManager.audience(Cloud::Public);
    let name = "token for ARM";
    let client = match http::build_client_with(&config.upstream, connect_timeout) {
        Ok(client) => client,
        Err(e) => {
            checks.push(
                Check::new(name, Outcome::Fail, error_chain(&e)).fix("check upstream.ca_files"),
            );
            return None;
        }
    };
    let started = std::time::Instant::now();
    let fetched = tokio::time::timeout(
        config.identity.request_timeout(),
        source.fetch(&client, &selector, resource, SystemTime::now()),
    )
    .await
    .unwrap_or_else(|_| {
        Err(FetchError::Transport {
            connect: false,
            timed_out: true,
            message: format!("no answer within {:?}", config.identity.request_timeout()),
        })
    });
    match fetched {
        Ok(token) => {
            let left = token
                .expires_on
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            checks.push(Check::new(
                name,
                Outcome::Ok,
                format!(
                    "{} issued a token for {resource} ({selector}), valid for {} min",
                    source.name(),
                    left.as_secs() / 60
                ),
            ));
            use secrecy::ExposeSecret;
            Some(token.token.expose_secret().to_string())
        }
        Err(error) => {
            let fix = match &error {
                FetchError::Status { status: 400, .. } => ENABLE_IDENTITY.to_string(),
                FetchError::Status {
                    status: 401 | 403, ..
                } => "the identity source refused the request; with App Service check IDENTITY_HEADER".to_string(),
                FetchError::Status { status: 429, .. } => {
                    "IMDS is throttling this VM (20 requests/s, 5 at once): something else on the VM is calling it hard; route it through the gateway".to_string()
                }
                FetchError::Transport { .. } => {
                    "the source accepted a connection but did not answer; retry, and check the VM's health".to_string()
                }
                _ => "retry; if it persists, the identity source is unhealthy".to_string(),
            };
            // One attempt: diagnose reports, it does not retry.
            let tried = Tried {
                attempts: 1,
                elapsed: started.elapsed(),
            };
            let message = final_error(error, tried, source.name(), &endpoint, &selector, resource)
                .to_string();
            checks.push(Check::new(name, Outcome::Fail, message).fix(fix));
            None
        }
    }
}

/// The claims that identify the identity, from a JWT's payload.
#[derive(Debug, Default, serde::Deserialize)]
struct Claims {
    appid: Option<String>,
    oid: Option<String>,
    tid: Option<String>,
    xms_mirid: Option<String>,
}

/// Check 3: who the token is for.
fn claims_check(token: Option<&str>, checks: &mut Vec<Check>) {
    let name = "identity";
    let Some(token) = token else {
        checks.push(Check::new(name, Outcome::Skip, "no token to read"));
        return;
    };
    match decode_claims(token) {
        Some(claims) => {
            let mut detail = format!(
                "client_id={} object_id={} tenant={}",
                claims.appid.as_deref().unwrap_or("?"),
                claims.oid.as_deref().unwrap_or("?"),
                claims.tid.as_deref().unwrap_or("?"),
            );
            if let Some(id) = &claims.xms_mirid {
                detail.push_str(&format!(" resource_id={id}"));
            }
            detail.push_str(" (claims decoded without verifying the token's signature)");
            checks.push(Check::new(name, Outcome::Ok, detail));
        }
        None => checks.push(
            Check::new(
                name,
                Outcome::Warn,
                "the token is not a JWT whose claims can be read",
            )
            .fix("nothing to do for the gateway; the ids cannot be shown"),
        ),
    }
}

/// The payload of a JWT, unverified.
fn decode_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Check 4: each configured upstream accepts connections.
async fn upstream_checks(config: &Config, args: &DiagnoseArgs, checks: &mut Vec<Check>) {
    let mut targets: Vec<String> = Vec::new();
    if let Some(arm) = &config.upstream.arm_endpoint {
        targets.push(arm.to_string());
    }
    for host in &config.upstream.allowed_hosts {
        if !host.contains('*') && host.contains(':') {
            targets.push(host.clone());
        }
    }
    for rule in &config.policy.rules {
        for host in rule.vaults.iter().filter(|h| !h.contains('*')) {
            targets.push(format!("https://{host}"));
        }
        for account in rule.storage_accounts.iter().filter(|a| !a.contains('*')) {
            targets.push(format!("https://{account}.blob.core.windows.net"));
        }
        for host in rule.sql_servers.iter().filter(|h| !h.contains('*')) {
            targets.push(format!("{host}:1433"));
        }
    }
    targets.extend(args.check.iter().cloned());
    targets.dedup();
    if targets.is_empty() {
        checks.push(Check::new(
            "upstreams",
            Outcome::Skip,
            "none configured; pass --check https://<vault>.vault.azure.net (repeatable) to test one",
        ));
        return;
    }
    let timeout = Duration::from_secs(config.upstream.connect_timeout_secs.max(1));
    for target in targets {
        let name = format!("upstream {target}");
        let address = url::Url::parse(&target)
            .ok()
            .filter(|u| u.has_host())
            .as_ref()
            .and_then(probe_address)
            .or_else(|| {
                let (host, port) = target.rsplit_once(':')?;
                Some((host.to_string(), port.parse().ok()?))
            });
        let Some(address) = address else {
            checks.push(
                Check::new(name, Outcome::Fail, "not a URL or host:port")
                    .fix("write it as https://host or host:port"),
            );
            continue;
        };
        if probe(&address, timeout).await {
            checks.push(Check::new(
                name,
                Outcome::Ok,
                format!("{}:{} accepts connections", address.0, address.1),
            ));
        } else {
            checks.push(
                Check::new(
                    name,
                    Outcome::Fail,
                    format!(
                        "{}:{} did not accept a connection within {}s",
                        address.0,
                        address.1,
                        timeout.as_secs()
                    ),
                )
                .fix(
                    "check DNS and the network path: private endpoints need their private DNS \
                     zone, and firewalls must allow the VM (Key Vault and Storage networking \
                     blades; SQL server firewall rules)",
                ),
            );
        }
    }
}

/// Check 5: the socket's directory and file.
async fn socket_check(socket: &Path, group: Option<&str>) -> Check {
    let name = format!("socket {}", socket.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        let dir: std::path::PathBuf = match socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_owned(),
            None => std::path::PathBuf::from("."),
        };
        let Ok(dir_meta) = std::fs::metadata(&dir) else {
            // The gateway creates a missing directory 0750 if it may.
            let parent = dir.parent().unwrap_or(Path::new("/"));
            return if writable(parent) {
                Check::new(
                    name,
                    Outcome::Warn,
                    format!(
                        "{} does not exist yet; the gateway creates it 0750 at start",
                        dir.display()
                    ),
                )
                .fix("start the gateway (systemctl start identity-gateway)")
            } else {
                Check::new(
                    name,
                    Outcome::Fail,
                    format!("{} does not exist and this user cannot create it", dir.display()),
                )
                .fix("create it (the systemd unit's RuntimeDirectory= does) or pick another --socket")
            };
        };
        let dir_mode = dir_meta.permissions().mode() & 0o7777;
        let own_uid = unsafe_geteuid();
        if dir_mode & 0o002 != 0 && dir_meta.uid() != own_uid && dir_mode & 0o1000 == 0 {
            return Check::new(
                name,
                Outcome::Fail,
                format!("{} is world-writable ({dir_mode:04o}) and not ours: anyone could replace the socket", dir.display()),
            )
            .fix("use a directory only the gateway's user may write, e.g. /run/identity-gateway (0750)");
        }
        match std::fs::symlink_metadata(socket) {
            Err(_) => Check::new(
                name,
                Outcome::Warn,
                format!(
                    "no socket yet (directory {} is {dir_mode:04o}); no gateway is running",
                    dir.display()
                ),
            )
            .fix("start the gateway (systemctl start identity-gateway)"),
            Ok(meta) if !meta.file_type().is_socket() => Check::new(
                name,
                Outcome::Fail,
                "exists and is not a socket; the gateway will refuse to replace it",
            )
            .fix("remove the file or pick another --socket"),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                let live = tokio::net::UnixStream::connect(socket).await.is_ok();
                let state = if live {
                    "a gateway answers on it"
                } else {
                    "nothing answers on it (stale socket of a stopped gateway)"
                };
                let detail = format!("mode {mode:04o}, gid {}; {state}", meta.gid());
                if mode & 0o007 != 0 {
                    Check::new(name, Outcome::Fail, detail)
                        .fix("the socket must not be open to others (0660); restart the gateway, which sets it")
                } else if let Some(group) = group.filter(|g| !group_matches(g, meta.gid())) {
                    Check::new(name, Outcome::Fail, detail).fix(format!(
                        "the socket does not belong to group '{group}': restart the gateway, and check the group exists"
                    ))
                } else if live {
                    Check::new(name, Outcome::Ok, detail)
                } else {
                    Check::new(name, Outcome::Warn, detail)
                        .fix("start the gateway (systemctl start identity-gateway)")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = group;
        Check::new(name, Outcome::Skip, "named pipes are not checked here")
    }
}

#[cfg(unix)]
fn unsafe_geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(unix)]
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path; access only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(unix)]
fn group_matches(group: &str, gid: u32) -> bool {
    if let Ok(n) = group.parse::<u32>() {
        return n == gid;
    }
    let Ok(name) = std::ffi::CString::new(group) else {
        return false;
    };
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer
    // into static storage or null; gr_gid is copied at once.
    let entry = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null pointer just returned by getgrnam.
    !entry.is_null() && unsafe { (*entry).gr_gid } == gid
}

/// Check 6: the caller policy compiles; what it says.
fn policy_check(config: &Config) -> Check {
    match identity_gateway_service::CallerPolicy::compile(&config.policy, crate::windows::account::policy_accounts()) {
        Err(e) => Check::new("policy", Outcome::Fail, error_chain(&e))
            .fix("fix the [policy] section the message names; the gateway refuses to start with it"),
        Ok(policy) if policy.rule_count() == 0 => Check::new("policy", Outcome::Warn, policy.summary())
            .fix("add [[policy.rules]] naming the uids/gids (Windows: accounts) and what each may ask for, if that matters here"),
        Ok(policy) => Check::new("policy", Outcome::Ok, policy.summary()),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_come_from_the_payload_without_verification() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"appid":"c1","oid":"o1","tid":"t1"}"#);
        let claims = decode_claims(&format!("e30.{payload}.sig")).unwrap();
        assert_eq!(claims.appid.as_deref(), Some("c1"));
        assert_eq!(claims.oid.as_deref(), Some("o1"));
        assert_eq!(claims.tid.as_deref(), Some("t1"));
        assert!(decode_claims("not-a-jwt").is_none());
    }

    #[test]
    fn a_failure_makes_the_report_fail() {
        let report = Report::new(vec![
            Check::new("a", Outcome::Ok, "fine"),
            Check::new("b", Outcome::Warn, "hm").fix("x"),
        ]);
        assert!(report.ok);
        let report = Report::bad_config("config file x: bad");
        assert!(!report.ok);
        assert!(report.to_text().contains("[FAIL] configuration"));
        assert!(report.to_text().contains("result: 1 check failed"));
    }
}
