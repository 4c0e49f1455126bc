//! Caller policy: who may ask for what.
//!
//! # Who is calling
//! Callers are named by their Unix uid (and primary gid): the Unix socket's
//! peer credentials, or for loopback TCP and the identity endpoint the owner
//! of the connecting socket as the kernel's TCP table lists it. On Windows,
//! named-pipe callers are named by their account: the user SID and enabled
//! group SIDs of the client's token ([`WindowsAccount`]), which rules match
//! with `accounts`. A caller the gateway could not attribute (a pipe client
//! whose token could not be read included) is *anonymous*; anonymous
//! loopback callers are refused unless `allow_anonymous_loopback` says
//! otherwise. When a socket group is configured, attributed loopback
//! callers outside it are refused too: loopback TCP admits the same users as
//! the socket.
//!
//! `uids` and `gids` match Unix callers only, `accounts` pipe callers only.
//! `accounts` entries are SID strings (`S-1-5-32-545`) or account names
//! (`BUILTIN\Users`, `CONTOSO\app`, `.\svc-app`), resolved to SIDs once,
//! when the policy is loaded (at startup and on reload), through an
//! [`AccountResolver`]: `LookupAccountNameW` on Windows. A name that does not
//! resolve makes the policy invalid. Elsewhere names are refused and SID
//! strings are kept but match nobody (see
//! [`SidStringsOnly`](crate::account::SidStringsOnly)). A rule
//! applies to a pipe caller whose user SID or any enabled group SID is one
//! of its `accounts`; `["*"]` applies to every attributed pipe caller.
//!
//! # What they may do
//! With no rules the gateway behaves like IMDS: every caller that reaches
//! it may use every identity for everything (and the startup line says so).
//!
//! With rules, the **first** rule that applies to the caller (its `uids`,
//! `gids` or `anonymous`) decides, and it grants **only what it names**:
//! each RPC needs every kind of target it touches to be listed in that rule
//! (or the list to be `["*"]`); a kind the rule does not name is denied. A
//! caller no rule applies to is refused. Denials name the rule (or that
//! none applied) and the missing grant.
//!
//! | RPC | the rule must name | token the gateway fetches itself (covered, needs no `resources`) |
//! |---|---|---|
//! | GetToken, WatchToken, identity endpoint | `identities`, `resources` | — |
//! | GetSecret | `identities`, `vaults`, `secrets` | Key Vault (`https://vault.azure.net` or the cloud's) |
//! | ReadBlob | `identities`, `storage_accounts` | Storage (`https://storage.azure.com/`) |
//! | ListDataLake | `identities`, `storage_accounts`, `datalake_paths` | Storage (Gen2) or `https://datalake.azure.net/` (Gen1) |
//! | GetServiceSas | `identities`, `storage_accounts`, `sas_permissions` (+ `subscriptions` for ARM) | Storage (user delegation) or ARM (`listServiceSas`) |
//! | QuerySql | `identities`, `sql_servers`, `sql_databases` | Azure SQL (`https://database.windows.net/` or the cloud's) |
//! | GetResourceGroup | `identities`, `subscriptions` | ARM (`https://management.azure.com/` or the cloud's) |
//!
//! Naming a vault does not grant a Key Vault token to the caller (that is
//! `resources`), and granting a token audience does not grant any RPC.

use std::{collections::HashSet, fmt, net::SocketAddr, time::Duration};

use identity_gateway_azure::sas::SasMethod;
use identity_gateway_core::{normalize_host, GatewayError, IdentitySelector};
use serde::Deserialize;

use crate::{
    account::{AccountResolver, WindowsAccount},
    context::Transport,
};

/// The `[policy]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Let loopback callers (TCP, identity endpoint) that could not be
    /// attributed to a local user through. Off: they are refused.
    pub allow_anonymous_loopback: bool,
    /// `[[policy.rules]]`, in order; the first that applies decides.
    pub rules: Vec<RuleConfig>,
}

/// A uid or gid in a rule, or `"*"` (any attributed caller).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum IdEntry {
    Id(u32),
    Word(String),
}

/// One `[[policy.rules]]` entry, as written. Lists name what the rule
/// grants; an empty or missing list grants nothing of its kind; `["*"]`
/// grants all of it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Shown in denials and logs (else `#<position>`).
    pub name: Option<String>,
    /// Caller uids the rule applies to (`"*"`: any attributed caller).
    pub uids: Vec<IdEntry>,
    /// Caller primary gids the rule applies to (`"*"`: any attributed caller).
    pub gids: Vec<IdEntry>,
    /// Windows accounts (users or groups) the rule applies to on the named
    /// pipe: SID strings or account names, resolved at load (`"*"`: any
    /// attributed pipe caller).
    pub accounts: Vec<String>,
    /// Applies to callers the gateway could not attribute to a user.
    pub anonymous: bool,
    /// `"system"`, a user-assigned identity's client id, object id or resource id.
    pub identities: Vec<String>,
    /// Token audiences for GetToken/WatchToken/identity endpoint, exactly.
    pub resources: Vec<String>,
    /// Key Vault hosts, e.g. `myvault.vault.azure.net`.
    pub vaults: Vec<String>,
    /// Secret name globs (`*`, `?`), e.g. `app-*`.
    pub secrets: Vec<String>,
    /// Storage / Data Lake account names.
    pub storage_accounts: Vec<String>,
    /// Data Lake directory prefixes, `filesystem/dir` (Gen2) or `dir` (Gen1).
    pub datalake_paths: Vec<String>,
    /// SQL server hosts.
    pub sql_servers: Vec<String>,
    /// SQL database names.
    pub sql_databases: Vec<String>,
    /// ARM subscription ids (GetResourceGroup, ARM listServiceSas).
    pub subscriptions: Vec<String>,
    /// Most a SAS may grant, e.g. `"rl"` (`"*"`: whatever the method allows).
    /// Unset: the rule grants no SAS.
    pub sas_permissions: Option<String>,
    /// Longest SAS lifetime (unset: `sas.max_expiry_secs`).
    pub sas_max_lifetime_secs: Option<u64>,
    /// `"user_delegation"`, `"arm_list_service_sas"` (unset: both; ARM also
    /// needs the subscription in `subscriptions`).
    pub sas_methods: Option<Vec<String>>,
}

/// A policy that cannot be used, with the rule and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy: {0}")]
pub struct PolicyError(String);

/// The caller as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A named-pipe caller's account (borrowed from the call's peer).
    pub account: Option<&'a WindowsAccount>,
    pub transport: Transport,
    /// The loopback address it came from (TCP, identity endpoint).
    pub addr: Option<SocketAddr>,
    /// An attributed loopback caller who is not a member of the configured
    /// socket group.
    pub outside_socket_group: bool,
}

impl<'a> Caller<'a> {
    /// A Unix-socket caller with these credentials (tests, tools).
    pub fn unix(uid: u32, gid: u32) -> Self {
        Self {
            uid: Some(uid),
            gid: Some(gid),
            account: None,
            transport: Transport::UnixSocket,
            addr: None,
            outside_socket_group: false,
        }
    }

    /// A named-pipe caller with this account (tests, tools).
    pub fn pipe(account: &'a WindowsAccount) -> Self {
        Self {
            account: Some(account),
            ..Self::anonymous(Transport::NamedPipe)
        }
    }

    /// A caller the gateway could not attribute.
    pub fn anonymous(transport: Transport) -> Self {
        Self {
            uid: None,
            gid: None,
            account: None,
            transport,
            addr: None,
            outside_socket_group: false,
        }
    }

    fn is_loopback(&self) -> bool {
        matches!(self.transport, Transport::Tcp | Transport::IdentityEndpoint)
    }
}

impl fmt::Display for Caller<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(account) = self.account {
            return write!(f, "account {}", account.user_sid);
        }
        match (self.uid, self.gid) {
            (Some(uid), Some(gid)) => write!(f, "uid {uid} (gid {gid})"),
            (Some(uid), None) => write!(f, "uid {uid}"),
            _ => match self.addr {
                Some(addr) => write!(f, "the unattributed caller at {addr}"),
                None => f.write_str("an unattributed caller"),
            },
        }
    }
}

/// What a request wants to touch, with everything the policy judges.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// GetToken / WatchToken / the identity endpoint: the audience, verbatim.
    Token { resource: &'a str },
    /// GetSecret.
    Secret { vault: &'a str, name: &'a str },
    /// ReadBlob.
    Blob { account: &'a str },
    /// ListDataLake: the directory as `filesystem/dir/...` (Gen2) or `dir/...` (Gen1).
    DataLake { account: &'a str, path: &'a str },
    /// GetServiceSas, as planned (canonical permissions, lifetime).
    Sas {
        account: &'a str,
        method: SasMethod,
        permissions: &'a str,
        lifetime: Duration,
        /// ARM listServiceSas only.
        subscription: Option<&'a str>,
    },
    /// QuerySql.
    Sql { server: &'a str, database: &'a str },
    /// GetResourceGroup.
    ResourceGroup { subscription: &'a str },
}

/// A list a rule grants from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant<T> {
    /// `["*"]`.
    Any,
    /// Exactly these (empty: nothing).
    Only(Vec<T>),
}

impl<T> Grant<T> {
    fn allows(&self, matches: impl Fn(&T) -> bool) -> bool {
        match self {
            Grant::Any => true,
            Grant::Only(list) => list.iter().any(matches),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Grant<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::Any => f.write_str("\"*\""),
            Grant::Only(list) if list.is_empty() => f.write_str("nothing"),
            Grant::Only(list) => {
                for (i, item) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

/// A compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    label: String,
    uids: Grant<u32>,
    gids: Grant<u32>,
    /// Upper-case SID strings.
    accounts: Grant<String>,
    anonymous: bool,
    identities: Grant<String>,
    resources: Grant<String>,
    vaults: Grant<String>,
    secrets: Grant<String>,
    storage_accounts: Grant<String>,
    datalake_paths: Grant<DataLakePath>,
    sql_servers: Grant<String>,
    sql_databases: Grant<String>,
    subscriptions: Grant<String>,
    /// None: no SAS. Some(None): any permissions.
    sas_permissions: Option<Option<String>>,
    sas_max_lifetime: Option<Duration>,
    sas_methods: Option<Vec<SasMethod>>,
}

/// A Data Lake directory prefix, as path components.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DataLakePath(Vec<String>);

impl DataLakePath {
    fn parse(raw: &str) -> Self {
        Self(
            raw.split('/')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    fn contains(&self, path: &DataLakePath) -> bool {
        path.0.len() >= self.0.len() && self.0.iter().zip(&path.0).all(|(a, b)| a == b)
    }
}

impl fmt::Display for DataLakePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0.join("/"))
    }
}

/// The compiled policy.
#[derive(Debug, Clone, Default)]
pub struct CallerPolicy {
    allow_anonymous_loopback: bool,
    rules: Vec<Rule>,
}

impl CallerPolicy {
    /// Checks and compiles `config`, turning the account names of rules
    /// into SIDs with `accounts`; any mistake is an error naming the rule.
    pub fn compile(
        config: &PolicyConfig,
        accounts: &dyn AccountResolver,
    ) -> Result<Self, PolicyError> {
        let mut names = HashSet::new();
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let compiled = Rule::compile(i + 1, rule, accounts)?;
                if let Some(name) = &rule.name {
                    if !names.insert(name.clone()) {
                        return Err(PolicyError(format!(
                            "two rules are named '{name}'; names must be unique"
                        )));
                    }
                }
                Ok(compiled)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allow_anonymous_loopback: config.allow_anonymous_loopback,
            rules,
        })
    }

    /// How many rules there are (0: IMDS-equivalent).
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// One line for the startup and reload logs.
    pub fn summary(&self) -> String {
        let anonymous = if self.allow_anonymous_loopback {
            "unattributed loopback callers allowed"
        } else {
            "unattributed loopback callers refused"
        };
        if self.rules.is_empty() {
            return format!(
                "no caller policy rules: every caller that reaches the gateway may use every identity for everything (IMDS-equivalent); {anonymous}"
            );
        }
        let labels: Vec<&str> = self.rules.iter().map(|r| r.label.as_str()).collect();
        let n = self.rules.len();
        format!(
            "{n} caller policy rule{} ({}); each grants only what it names; {anonymous}",
            if n == 1 { "" } else { "s" },
            labels.join(", ")
        )
    }

    /// Allows or refuses `caller` using `identity` on `target`.
    pub fn check(
        &self,
        caller: &Caller<'_>,
        identity: &IdentitySelector,
        target: Target<'_>,
    ) -> Result<(), GatewayError> {
        if caller.uid.is_none() && caller.is_loopback() && !self.allow_anonymous_loopback {
            return Err(denied(format!(
                "{caller} could not be attributed to a local user, and policy.allow_anonymous_loopback is off; \
                 call over the Unix socket, or allow anonymous loopback callers in the policy"
            )));
        }
        if caller.outside_socket_group && caller.is_loopback() {
            return Err(denied(format!(
                "{caller} is not a member of the socket group, so it may not call over loopback either \
                 (loopback admits the users the Unix socket admits)"
            )));
        }
        if self.rules.is_empty() {
            return Ok(());
        }
        let Some(rule) = self.rules.iter().find(|r| r.applies_to(caller)) else {
            return Err(denied(format!(
                "no rule applies to {caller}; callers no rule names are refused"
            )));
        };
        rule.check(caller, identity, target)
    }
}

fn denied(message: String) -> GatewayError {
    GatewayError::PermissionDenied(format!("gateway policy: {message}"))
}

impl Rule {
    fn compile(
        position: usize,
        raw: &RuleConfig,
        resolver: &dyn AccountResolver,
    ) -> Result<Self, PolicyError> {
        let label = match &raw.name {
            Some(name) if name.trim().is_empty() => {
                return Err(PolicyError(format!("rule #{position} has an empty name")))
            }
            Some(name) => format!("'{name}'"),
            None => format!("#{position}"),
        };
        let err = |what: String| PolicyError(format!("rule {label}: {what}"));
        let ids = |field: &str, list: &[IdEntry]| -> Result<Grant<u32>, PolicyError> {
            let mut out = Vec::new();
            for entry in list {
                match entry {
                    IdEntry::Id(id) => out.push(*id),
                    IdEntry::Word(w) if w == "*" => return Ok(Grant::Any),
                    IdEntry::Word(w) => {
                        return Err(err(format!(
                            "{field} entry '{w}' is neither a number nor \"*\""
                        )))
                    }
                }
            }
            Ok(Grant::Only(out))
        };
        let uids = ids("uids", &raw.uids)?;
        let gids = ids("gids", &raw.gids)?;
        if uids == Grant::Only(vec![])
            && gids == Grant::Only(vec![])
            && raw.accounts.is_empty()
            && !raw.anonymous
        {
            return Err(err(
                "names no callers; set uids, gids, accounts (any may be [\"*\"]) or anonymous = true"
                    .into(),
            ));
        }
        let strings = |field: &str,
                       list: &[String],
                       normalize: &dyn Fn(&str) -> Result<String, String>|
         -> Result<Grant<String>, PolicyError> {
            let mut out = Vec::new();
            for entry in list {
                if entry == "*" {
                    if list.len() > 1 {
                        return Err(err(format!(
                            "{field}: \"*\" already grants everything; list nothing else with it"
                        )));
                    }
                    return Ok(Grant::Any);
                }
                if entry.trim().is_empty() {
                    return Err(err(format!("{field} has an empty entry")));
                }
                out.push(normalize(entry).map_err(|why| err(format!("{field}: {why}")))?);
            }
            Ok(Grant::Only(out))
        };
        let lower = |s: &str| Ok(s.trim().to_ascii_lowercase());
        let host = |s: &str| {
            let h = normalize_host(s);
            if h.contains(['/', ':', ' ']) {
                Err(format!(
                    "'{s}' is not a host name (no scheme, port or path)"
                ))
            } else {
                Ok(h)
            }
        };
        let verbatim = |s: &str| Ok(s.to_string());
        let account = |s: &str| resolver.resolve(s.trim());
        let identity = |s: &str| {
            let t = s.trim();
            let guid = t.len() == 36
                && t.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            if t.eq_ignore_ascii_case("system") || guid || t.starts_with("/subscriptions/") {
                Ok(t.to_ascii_lowercase())
            } else {
                Err(format!(
                    "'{s}' is not \"system\", a client or object id (GUID) or a resource id"
                ))
            }
        };
        let glob = |s: &str| Ok(s.trim().to_ascii_lowercase());
        let datalake_paths = match strings("datalake_paths", &raw.datalake_paths, &verbatim)? {
            Grant::Any => Grant::Any,
            Grant::Only(list) => Grant::Only(list.iter().map(|p| DataLakePath::parse(p)).collect()),
        };
        let sas_permissions = match raw.sas_permissions.as_deref() {
            None => None,
            Some("*") => Some(None),
            Some(p) => {
                const LETTERS: &str = "racwdxyltfmeopi";
                if p.is_empty() {
                    return Err(err(
                        "sas_permissions is empty; leave it out to grant no SAS".into(),
                    ));
                }
                if let Some(bad) = p.chars().find(|c| !LETTERS.contains(*c)) {
                    return Err(err(format!(
                        "sas_permissions: '{bad}' is not a SAS permission (one of '{LETTERS}', or \"*\")"
                    )));
                }
                Some(Some(p.to_string()))
            }
        };
        let sas_methods = match &raw.sas_methods {
            None => None,
            Some(list) if list.iter().any(|m| m == "*") => None,
            Some(list) => Some(
                list.iter()
                    .map(|m| match m.as_str() {
                        "user_delegation" => Ok(SasMethod::UserDelegation),
                        "arm_list_service_sas" => Ok(SasMethod::ArmListServiceSas),
                        other => Err(err(format!(
                            "sas_methods: '{other}' is not \"user_delegation\" or \"arm_list_service_sas\""
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        if raw.sas_max_lifetime_secs == Some(0) {
            return Err(err(
                "sas_max_lifetime_secs must be at least 1 (leave sas_permissions out to grant no SAS)"
                    .into(),
            ));
        }
        Ok(Self {
            uids,
            gids,
            accounts: strings("accounts", &raw.accounts, &account)?,
            anonymous: raw.anonymous,
            identities: strings("identities", &raw.identities, &identity)?,
            resources: strings("resources", &raw.resources, &verbatim)?,
            vaults: strings("vaults", &raw.vaults, &host)?,
            secrets: strings("secrets", &raw.secrets, &glob)?,
            storage_accounts: strings("storage_accounts", &raw.storage_accounts, &lower)?,
            datalake_paths,
            sql_servers: strings("sql_servers", &raw.sql_servers, &host)?,
            sql_databases: strings("sql_databases", &raw.sql_databases, &lower)?,
            subscriptions: strings("subscriptions", &raw.subscriptions, &lower)?,
            sas_permissions,
            sas_max_lifetime: raw.sas_max_lifetime_secs.map(Duration::from_secs),
            sas_methods,
            label,
        })
    }

    fn applies_to(&self, caller: &Caller<'_>) -> bool {
        if let Some(account) = caller.account {
            return self.accounts.allows(|sid| account.has_sid(sid));
        }
        match (caller.uid, caller.gid) {
            (None, _) => self.anonymous,
            (Some(uid), gid) => {
                self.uids.allows(|u| *u == uid)
                    || gid.is_some_and(|g| self.gids.allows(|x| *x == g))
            }
        }
    }

    fn check(
        &self,
        caller: &Caller<'_>,
        identity: &IdentitySelector,
        target: Target<'_>,
    ) -> Result<(), GatewayError> {
        let missing = |what: String, field: &str, grant: &dyn fmt::Display| {
            denied(format!(
                "rule {} (the first that applies to {caller}) does not grant {what}; its {field}: {grant}",
                self.label
            ))
        };
        if !self
            .identities
            .allows(|entry| identity_matches(entry, identity))
        {
            return Err(missing(
                format!("the {identity}"),
                "identities",
                &self.identities,
            ));
        }
        match target {
            Target::Token { resource } => {
                if !self.resources.allows(|r| r == resource) {
                    return Err(missing(
                        format!("tokens for resource '{resource}'"),
                        "resources",
                        &self.resources,
                    ));
                }
            }
            Target::Secret { vault, name } => {
                let vault = normalize_host(vault);
                if !self.vaults.allows(|v| *v == vault) {
                    return Err(missing(
                        format!("key vault '{vault}'"),
                        "vaults",
                        &self.vaults,
                    ));
                }
                let lower = name.to_ascii_lowercase();
                if !self.secrets.allows(|g| glob_matches(g, &lower)) {
                    return Err(missing(
                        format!("secret '{name}'"),
                        "secrets",
                        &self.secrets,
                    ));
                }
            }
            Target::Blob { account } => self.account(account, &missing)?,
            Target::DataLake { account, path } => {
                self.account(account, &missing)?;
                let wanted = DataLakePath::parse(path);
                if !self
                    .datalake_paths
                    .allows(|prefix| prefix.contains(&wanted))
                {
                    return Err(missing(
                        format!("Data Lake path '{wanted}'"),
                        "datalake_paths",
                        &self.datalake_paths,
                    ));
                }
            }
            Target::Sas {
                account,
                method,
                permissions,
                lifetime,
                subscription,
            } => {
                self.account(account, &missing)?;
                let Some(cap) = &self.sas_permissions else {
                    return Err(missing(
                        "SAS tokens".into(),
                        "sas_permissions",
                        &"unset (no SAS)",
                    ));
                };
                if let Some(cap) = cap {
                    if let Some(extra) = permissions.chars().find(|c| !cap.contains(*c)) {
                        return Err(missing(
                            format!("SAS permission '{extra}' (asked: '{permissions}')"),
                            "sas_permissions",
                            cap,
                        ));
                    }
                }
                if let Some(max) = self.sas_max_lifetime {
                    if lifetime > max {
                        return Err(missing(
                            format!("a SAS living {}s", lifetime.as_secs()),
                            "sas_max_lifetime_secs",
                            &max.as_secs(),
                        ));
                    }
                }
                if let Some(methods) = &self.sas_methods {
                    if !methods.contains(&method) {
                        let names: Vec<&str> = methods.iter().map(|m| method_name(*m)).collect();
                        return Err(missing(
                            format!("the {} SAS method", method_name(method)),
                            "sas_methods",
                            &names.join(", "),
                        ));
                    }
                }
                if let Some(subscription) = subscription {
                    self.subscription(subscription, &missing)?;
                }
            }
            Target::Sql { server, database } => {
                let server = normalize_host(server);
                if !self.sql_servers.allows(|s| *s == server) {
                    return Err(missing(
                        format!("SQL server '{server}'"),
                        "sql_servers",
                        &self.sql_servers,
                    ));
                }
                let lower = database.to_ascii_lowercase();
                if !self.sql_databases.allows(|d| *d == lower) {
                    return Err(missing(
                        format!("SQL database '{database}'"),
                        "sql_databases",
                        &self.sql_databases,
                    ));
                }
            }
            Target::ResourceGroup { subscription } => self.subscription(subscription, &missing)?,
        }
        Ok(())
    }

    fn account(
        &self,
        account: &str,
        missing: &dyn Fn(String, &str, &dyn fmt::Display) -> GatewayError,
    ) -> Result<(), GatewayError> {
        let lower = account.to_ascii_lowercase();
        if self.storage_accounts.allows(|a| *a == lower) {
            Ok(())
        } else {
            Err(missing(
                format!("storage account '{account}'"),
                "storage_accounts",
                &self.storage_accounts,
            ))
        }
    }

    fn subscription(
        &self,
        subscription: &str,
        missing: &dyn Fn(String, &str, &dyn fmt::Display) -> GatewayError,
    ) -> Result<(), GatewayError> {
        let lower = subscription.to_ascii_lowercase();
        if self.subscriptions.allows(|s| *s == lower) {
            Ok(())
        } else {
            Err(missing(
                format!("subscription '{subscription}'"),
                "subscriptions",
                &self.subscriptions,
            ))
        }
    }
}

fn method_name(method: SasMethod) -> &'static str {
    match method {
        SasMethod::UserDelegation => "user_delegation",
        SasMethod::ArmListServiceSas => "arm_list_service_sas",
    }
}

fn identity_matches(entry: &str, identity: &IdentitySelector) -> bool {
    match identity {
        IdentitySelector::SystemAssigned => entry == "system",
        IdentitySelector::ClientId(id)
        | IdentitySelector::ObjectId(id)
        | IdentitySelector::ResourceId(id) => entry.eq_ignore_ascii_case(id),
    }
}

/// `*` matches any run of characters, `?` one; both sides lower-case.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::SidStringsOnly;

    fn policy(toml_text: &str) -> CallerPolicy {
        let config: PolicyConfig = toml::from_str(toml_text).unwrap();
        CallerPolicy::compile(&config, &SidStringsOnly).unwrap()
    }

    fn compile_error(toml_text: &str) -> String {
        let config: PolicyConfig = toml::from_str(toml_text).unwrap();
        CallerPolicy::compile(&config, &SidStringsOnly)
            .unwrap_err()
            .to_string()
    }

    const ALICE: Caller<'static> = Caller {
        uid: Some(1000),
        gid: Some(1000),
        account: None,
        transport: Transport::UnixSocket,
        addr: None,
        outside_socket_group: false,
    };
    const BOB: Caller<'static> = Caller {
        uid: Some(1001),
        gid: Some(1001),
        ..ALICE
    };
    const SYS: IdentitySelector = IdentitySelector::SystemAssigned;
    const USER: &str = "a5842c85-1131-4c68-b205-cabb41b6c022";

    fn denial(result: Result<(), GatewayError>) -> String {
        match result {
            Err(GatewayError::PermissionDenied(m)) => m,
            other => panic!("expected a denial, got {other:?}"),
        }
    }

    #[test]
    fn no_rules_allows_attributed_callers_everything() {
        let p = CallerPolicy::default();
        assert_eq!(p.rule_count(), 0);
        assert!(p.summary().contains("IMDS-equivalent"), "{}", p.summary());
        assert!(p
            .check(&ALICE, &SYS, Target::Token { resource: "x" })
            .is_ok());
    }

    #[test]
    fn a_rule_grants_only_what_it_names() {
        // The issue's example: one vault named must not open storage, ARM,
        // SQL, blobs or SAS, nor a user-assigned identity.
        let p = policy(
            r#"
            [[rules]]
            uids = [0]
            identities = ["system"]
            vaults = ["localhost"]
            secrets = ["*"]
            "#,
        );
        let root = Caller::unix(0, 0);
        assert!(p
            .check(
                &root,
                &SYS,
                Target::Secret {
                    vault: "localhost",
                    name: "a"
                }
            )
            .is_ok());
        for (target, field) in [
            (
                Target::Token {
                    resource: "https://storage.azure.com/",
                },
                "resources",
            ),
            (
                Target::Token {
                    resource: "https://management.azure.com/",
                },
                "resources",
            ),
            (Target::Blob { account: "appacct" }, "storage_accounts"),
            (
                Target::DataLake {
                    account: "a",
                    path: "fs",
                },
                "storage_accounts",
            ),
            (
                Target::Sql {
                    server: "s.database.windows.net",
                    database: "db",
                },
                "sql_servers",
            ),
            (Target::ResourceGroup { subscription: "s" }, "subscriptions"),
            (
                Target::Sas {
                    account: "appacct",
                    method: SasMethod::UserDelegation,
                    permissions: "racwdxytmeopi",
                    lifetime: Duration::from_secs(7 * 86400),
                    subscription: None,
                },
                "storage_accounts",
            ),
        ] {
            let message = denial(p.check(&root, &SYS, target));
            assert!(message.contains("rule #1"), "{message}");
            assert!(message.contains(field), "{target:?}: {message}");
        }
        let user = IdentitySelector::ClientId(USER.into());
        let message = denial(p.check(
            &root,
            &user,
            Target::Secret {
                vault: "localhost",
                name: "a",
            },
        ));
        assert!(message.contains("identities: system"), "{message}");
    }

    #[test]
    fn first_applying_rule_decides_and_denials_name_it() {
        let p = policy(
            r#"
            [[rules]]
            name = "web"
            uids = [1000]
            identities = ["system"]
            resources = ["https://vault.azure.net"]
            [[rules]]
            gids = [2000]
            identities = ["*"]
            vaults = ["*"]
            secrets = ["*"]
            "#,
        );
        assert!(p
            .check(
                &ALICE,
                &SYS,
                Target::Token {
                    resource: "https://vault.azure.net"
                }
            )
            .is_ok());
        let message = denial(p.check(
            &ALICE,
            &SYS,
            Target::Token {
                resource: "https://vault.azure.net/",
            },
        ));
        assert!(
            message.contains("rule 'web' (the first that applies to uid 1000 (gid 1000))")
                && message.contains("resource 'https://vault.azure.net/'")
                && message.contains("its resources: https://vault.azure.net"),
            "{message}"
        );
        // Alice is in gid 2000 too, but rule 'web' came first.
        let alice_staff = Caller {
            gid: Some(2000),
            ..ALICE
        };
        assert!(p
            .check(
                &alice_staff,
                &SYS,
                Target::Secret {
                    vault: "v.vault.azure.net",
                    name: "x"
                }
            )
            .is_err());
        let message = denial(p.check(
            &BOB,
            &SYS,
            Target::Token {
                resource: "https://vault.azure.net",
            },
        ));
        assert!(message.contains("no rule applies to uid 1001"), "{message}");
        let staff = Caller {
            uid: Some(5),
            gid: Some(2000),
            ..ALICE
        };
        let user = IdentitySelector::ClientId(USER.into());
        assert!(p
            .check(
                &staff,
                &user,
                Target::Secret {
                    vault: "any.vault.azure.net",
                    name: "x"
                }
            )
            .is_ok());
    }

    #[test]
    fn star_grants_a_whole_kind_and_unnamed_kinds_are_denied() {
        let p = policy(
            r#"
            [[rules]]
            uids = ["*"]
            identities = ["*"]
            storage_accounts = ["*"]
            datalake_paths = ["data/raw"]
            sql_servers = ["S.Database.Windows.Net."]
            sql_databases = ["AppDb"]
            "#,
        );
        let user = IdentitySelector::ResourceId("/subscriptions/x/y".into());
        assert!(p
            .check(
                &BOB,
                &user,
                Target::Blob {
                    account: "Anything"
                }
            )
            .is_ok());
        for path in ["data/raw", "/data/raw/2024/", "data/raw/x"] {
            assert!(
                p.check(&BOB, &user, Target::DataLake { account: "a", path })
                    .is_ok(),
                "{path}"
            );
        }
        for path in ["data", "data/rawer", "other/raw"] {
            let message = denial(p.check(&BOB, &user, Target::DataLake { account: "a", path }));
            assert!(message.contains("datalake_paths: /data/raw"), "{message}");
        }
        assert!(p
            .check(
                &BOB,
                &user,
                Target::Sql {
                    server: "s.database.windows.net",
                    database: "APPDB"
                }
            )
            .is_ok());
        let message = denial(p.check(
            &BOB,
            &user,
            Target::Sql {
                server: "s.database.windows.net",
                database: "master",
            },
        ));
        assert!(message.contains("sql_databases: appdb"), "{message}");
        // Kinds the rule does not name.
        for target in [
            Target::Token { resource: "r" },
            Target::ResourceGroup { subscription: "s" },
            Target::Secret {
                vault: "v.vault.azure.net",
                name: "n",
            },
        ] {
            assert!(p.check(&BOB, &user, target).is_err(), "{target:?}");
        }
        // Storage accounts named do not grant SAS.
        let message = denial(p.check(
            &BOB,
            &user,
            Target::Sas {
                account: "a",
                method: SasMethod::UserDelegation,
                permissions: "r",
                lifetime: Duration::from_secs(60),
                subscription: None,
            },
        ));
        assert!(message.contains("sas_permissions"), "{message}");
    }

    #[test]
    fn sas_caps_permissions_lifetime_and_method() {
        let p = policy(
            r#"
            [[rules]]
            uids = [1000]
            identities = ["system"]
            storage_accounts = ["appacct"]
            sas_permissions = "rl"
            sas_max_lifetime_secs = 3600
            sas_methods = ["user_delegation"]
            "#,
        );
        let sas = |permissions, secs, method| Target::Sas {
            account: "appacct",
            method,
            permissions,
            lifetime: Duration::from_secs(secs),
            subscription: None,
        };
        let ud = SasMethod::UserDelegation;
        assert!(p.check(&ALICE, &SYS, sas("rl", 3600, ud)).is_ok());
        assert!(p.check(&ALICE, &SYS, sas("r", 60, ud)).is_ok());
        let message = denial(p.check(&ALICE, &SYS, sas("rw", 60, ud)));
        assert!(
            message.contains("SAS permission 'w'") && message.contains("sas_permissions: rl"),
            "{message}"
        );
        let message = denial(p.check(&ALICE, &SYS, sas("r", 3601, ud)));
        assert!(message.contains("sas_max_lifetime_secs: 3600"), "{message}");
        let message = denial(p.check(&ALICE, &SYS, sas("r", 60, SasMethod::ArmListServiceSas)));
        assert!(
            message.contains("sas_methods: user_delegation"),
            "{message}"
        );
    }

    #[test]
    fn anonymous_and_outside_group_loopback_callers() {
        let tcp = Caller::anonymous(Transport::Tcp);
        let none = CallerPolicy::default();
        let message = denial(none.check(&tcp, &SYS, Target::Token { resource: "r" }));
        assert!(message.contains("allow_anonymous_loopback"), "{message}");
        let outsider = Caller {
            transport: Transport::Tcp,
            outside_socket_group: true,
            ..BOB
        };
        let message = denial(none.check(&outsider, &SYS, Target::Token { resource: "r" }));
        assert!(message.contains("socket group"), "{message}");

        let open = policy("allow_anonymous_loopback = true\n");
        assert!(open
            .check(&tcp, &SYS, Target::Token { resource: "r" })
            .is_ok());
        let ruled = policy(
            r#"
            allow_anonymous_loopback = true
            [[rules]]
            uids = ["*"]
            identities = ["*"]
            resources = ["*"]
            [[rules]]
            name = "anon"
            anonymous = true
            identities = ["system"]
            resources = ["https://vault.azure.net"]
            "#,
        );
        assert!(ruled
            .check(
                &tcp,
                &SYS,
                Target::Token {
                    resource: "https://vault.azure.net"
                }
            )
            .is_ok());
        let message = denial(ruled.check(&tcp, &SYS, Target::Token { resource: "r" }));
        assert!(message.contains("rule 'anon'"), "{message}");
    }

    #[test]
    fn mistakes_are_refused_naming_the_rule() {
        assert!(
            compile_error("[[rules]]\nidentities = [\"system\"]\n").contains("names no callers")
        );
        assert!(
            compile_error("[[rules]]\nname = \"x\"\nuids = [\"root\"]\n")
                .contains("rule 'x': uids entry 'root'")
        );
        assert!(
            compile_error("[[rules]]\nuids = [1]\nidentities = [\"sytem\"]\n")
                .contains("rule #1: identities: 'sytem'")
        );
        assert!(
            compile_error("[[rules]]\nuids = [1]\nsas_permissions = \"rz\"\n")
                .contains("'z' is not a SAS permission")
        );
        assert!(
            compile_error("[[rules]]\nuids = [1]\nsas_methods = [\"account_key\"]\n")
                .contains("sas_methods")
        );
        assert!(
            compile_error("[[rules]]\nuids = [1]\nvaults = [\"https://v.vault.azure.net\"]\n")
                .contains("not a host name")
        );
        assert!(
            compile_error("[[rules]]\nuids = [1]\nresources = [\"*\", \"x\"]\n")
                .contains("\"*\" already grants everything")
        );
        assert!(compile_error(
            "[[rules]]\nname = \"a\"\nuids = [1]\n[[rules]]\nname = \"a\"\nuids = [2]\n"
        )
        .contains("two rules are named 'a'"));
        assert!(toml::from_str::<PolicyConfig>("[[rules]]\nuid = [1]\n").is_err());
    }

    /// Resolves the names a test policy writes, as `LookupAccountNameW` would.
    #[derive(Debug)]
    struct FakeAccounts;

    impl AccountResolver for FakeAccounts {
        fn resolve(&self, entry: &str) -> Result<String, String> {
            match entry.to_ascii_lowercase().as_str() {
                "contoso\\app" => Ok("S-1-5-21-7-8-9-1105".into()),
                "builtin\\users" => Ok("S-1-5-32-545".into()),
                _ => SidStringsOnly.resolve(entry).map_err(|_| {
                    format!("unknown account '{entry}': No mapping between account names and security IDs was done")
                }),
            }
        }
    }

    fn windows_policy(toml_text: &str) -> Result<CallerPolicy, String> {
        let config: PolicyConfig = toml::from_str(toml_text).unwrap();
        CallerPolicy::compile(&config, &FakeAccounts).map_err(|e| e.to_string())
    }

    fn account(user: &str, groups: &[&str]) -> WindowsAccount {
        WindowsAccount {
            user_sid: user.into(),
            group_sids: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    const APP: &str = "S-1-5-21-7-8-9-1105";
    const OTHER: &str = "S-1-5-21-7-8-9-1200";
    const USERS: &str = "S-1-5-32-545";

    #[test]
    fn accounts_match_pipe_callers_by_user_or_group_sid() {
        let p = windows_policy(
            r#"
            [[rules]]
            name = "app"
            accounts = ["CONTOSO\\app"]
            identities = ["system"]
            resources = ["https://vault.azure.net"]
            [[rules]]
            name = "admins"
            accounts = ["s-1-5-32-544"]
            identities = ["*"]
            resources = ["*"]
            [[rules]]
            name = "users"
            accounts = ["BUILTIN\\Users"]
            identities = ["system"]
            resources = ["https://storage.azure.com/"]
            "#,
        )
        .unwrap();
        let vault = Target::Token {
            resource: "https://vault.azure.net",
        };
        let storage = Target::Token {
            resource: "https://storage.azure.com/",
        };
        // By user SID (the name resolved at load).
        let app = account(APP, &[USERS]);
        assert!(p.check(&Caller::pipe(&app), &SYS, vault).is_ok());
        // The first applying rule decides, though a later one would grant.
        let message = denial(p.check(&Caller::pipe(&app), &SYS, storage));
        assert!(
            message.contains("rule 'app' (the first that applies to account S-1-5-21-7-8-9-1105)")
                && message.contains("its resources: https://vault.azure.net"),
            "{message}"
        );
        // By an enabled group, and SIDs compare ignoring case.
        let admin = account("S-1-5-21-7-8-9-500", &["S-1-5-32-544"]);
        assert!(p.check(&Caller::pipe(&admin), &SYS, storage).is_ok());
        let lower = account("s-1-5-21-7-8-9-1105", &[]);
        assert!(p.check(&Caller::pipe(&lower), &SYS, vault).is_ok());
        // No match in the first rules: the next rule that applies.
        let user = account(OTHER, &[USERS]);
        assert!(p.check(&Caller::pipe(&user), &SYS, storage).is_ok());
        let message = denial(p.check(&Caller::pipe(&user), &SYS, vault));
        assert!(message.contains("rule 'users'"), "{message}");
        // No rule at all: refused, naming the account.
        let stranger = account(OTHER, &["S-1-5-11"]);
        let message = denial(p.check(&Caller::pipe(&stranger), &SYS, storage));
        assert!(
            message.contains("no rule applies to account S-1-5-21-7-8-9-1200"),
            "{message}"
        );
    }

    #[test]
    fn accounts_and_unix_ids_never_match_the_other_transport() {
        let p = windows_policy(
            r#"
            [[rules]]
            name = "unix"
            uids = ["*"]
            gids = ["*"]
            identities = ["*"]
            resources = ["*"]
            [[rules]]
            name = "windows"
            accounts = ["*"]
            identities = ["system"]
            resources = ["https://vault.azure.net"]
            "#,
        )
        .unwrap();
        let token = Target::Token { resource: "r" };
        assert!(p.check(&ALICE, &SYS, token).is_ok());
        // "*" applies to every attributed pipe caller, and only to them.
        let anyone = account(OTHER, &[]);
        let message = denial(p.check(&Caller::pipe(&anyone), &SYS, token));
        assert!(message.contains("rule 'windows'"), "{message}");
        assert!(p
            .check(
                &Caller::pipe(&anyone),
                &SYS,
                Target::Token {
                    resource: "https://vault.azure.net"
                }
            )
            .is_ok());
        let only_windows = windows_policy(
            "[[rules]]\naccounts = [\"*\"]\nidentities = [\"*\"]\nresources = [\"*\"]\n",
        )
        .unwrap();
        let message = denial(only_windows.check(&ALICE, &SYS, token));
        assert!(message.contains("no rule applies to uid 1000"), "{message}");
    }

    #[test]
    fn a_pipe_caller_whose_token_was_not_read_is_anonymous() {
        let p = windows_policy(
            r#"
            [[rules]]
            accounts = ["*"]
            identities = ["*"]
            resources = ["*"]
            [[rules]]
            name = "anon"
            anonymous = true
            identities = ["system"]
            resources = ["https://vault.azure.net"]
            "#,
        )
        .unwrap();
        let unread = Caller::anonymous(Transport::NamedPipe);
        let message = denial(p.check(&unread, &SYS, Target::Token { resource: "r" }));
        assert!(
            message.contains("rule 'anon' (the first that applies to an unattributed caller)"),
            "{message}"
        );
        let strict = windows_policy(
            "[[rules]]\naccounts = [\"*\"]\nidentities = [\"*\"]\nresources = [\"*\"]\n",
        )
        .unwrap();
        let message = denial(strict.check(&unread, &SYS, Target::Token { resource: "r" }));
        assert!(message.contains("no rule applies"), "{message}");
        // With no rules at all, like every other caller: IMDS-equivalent.
        assert!(CallerPolicy::default()
            .check(&unread, &SYS, Target::Token { resource: "r" })
            .is_ok());
    }

    #[test]
    fn account_entries_are_checked_at_load() {
        let e = windows_policy("[[rules]]\nname = \"web\"\naccounts = [\"CONTOSO\\\\nobody\"]\n")
            .unwrap_err();
        assert!(
            e.contains("rule 'web': accounts: unknown account 'CONTOSO\\nobody'"),
            "{e}"
        );
        let e = windows_policy("[[rules]]\naccounts = [\"S-1-5-x\"]\n").unwrap_err();
        assert!(e.contains("rule #1: accounts:"), "{e}");
        let e = windows_policy("[[rules]]\naccounts = [\"*\", \"S-1-5-18\"]\n").unwrap_err();
        assert!(e.contains("\"*\" already grants everything"), "{e}");
        let e = windows_policy("[[rules]]\naccounts = [\" \"]\n").unwrap_err();
        assert!(e.contains("accounts has an empty entry"), "{e}");
        // A rule naming only accounts names callers.
        assert!(windows_policy("[[rules]]\naccounts = [\"S-1-5-18\"]\n").is_ok());
        // Off Windows: names are refused, SID strings kept.
        let e = compile_error("[[rules]]\nname = \"svc\"\naccounts = [\".\\\\svc-app\"]\n");
        assert!(
            e.contains("rule 'svc': accounts: '.\\svc-app' is a Windows account name")
                && e.contains("only on Windows"),
            "{e}"
        );
        let p = policy(
            "[[rules]]\naccounts = [\"S-1-5-18\"]\nidentities = [\"*\"]\nresources = [\"*\"]\n",
        );
        let system = account("s-1-5-18", &[]);
        assert!(p
            .check(
                &Caller::pipe(&system),
                &SYS,
                Target::Token { resource: "r" }
            )
            .is_ok());
        assert!(p
            .check(&ALICE, &SYS, Target::Token { resource: "r" })
            .is_err());
    }

    #[test]
    fn hosts_in_rules_and_requests_share_one_normalisation() {
        let p = policy(
            r#"
            [[rules]]
            uids = [1000]
            identities = ["system"]
            vaults = ["MyVault.Vault.Azure.Net."]
            secrets = ["app-*", "db-?"]
            "#,
        );
        let secret = |vault, name| Target::Secret { vault, name };
        for (vault, name) in [
            ("myvault.vault.azure.net", "app-key"),
            ("myvault.vault.azure.net.", "APP-"),
            ("MYVAULT.vault.azure.net", "db-1"),
        ] {
            assert!(
                p.check(&ALICE, &SYS, secret(vault, name)).is_ok(),
                "{vault} {name}"
            );
        }
        for (vault, name) in [
            ("other.vault.azure.net", "app-key"),
            ("myvault.vault.azure.net", "db-10"),
            ("myvault.vault.azure.net", "xapp-key"),
        ] {
            assert!(
                p.check(&ALICE, &SYS, secret(vault, name)).is_err(),
                "{vault} {name}"
            );
        }
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("a*c", "abbbc"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("*-prod", "db-prod"));
        assert!(!glob_matches("*-prod", "db-prod2"));
    }
}
