//! Caller policy: who may ask for what. Callers are identified by the Unix
//! socket's peer credentials (uid, gid) or, on the Windows pipe, by their
//! token's user and group SIDs; TCP callers have neither and match only
//! rules that name no uid, gid or account.
//!
//! With no rules the gateway behaves like IMDS: any local process may use any
//! identity. With rules, the first rule whose `uids`/`gids`/`accounts` match
//! the caller decides; a caller no rule matches is refused. In a rule, an
//! empty list means "any".

use std::sync::Arc;

use serde::Deserialize;

use identity_gateway_core::{GatewayError, IdentitySelector};

use crate::context::WindowsAccount;

/// `[[policy.rules]]` entries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub rules: Vec<Rule>,
}

/// One rule. Every list left empty allows anything of its kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    /// Caller uids this rule applies to.
    pub uids: Vec<u32>,
    /// Caller gids this rule applies to (the process's primary gid).
    pub gids: Vec<u32>,
    /// Windows pipe callers this rule applies to: users or groups, as SIDs
    /// or account names (`CONTOSO\web`, `BUILTIN\Users`; the gateway
    /// resolves names to SIDs at startup). A caller matches when its user or
    /// one of its enabled groups is listed. Unix callers never match.
    pub accounts: Vec<String>,
    /// Identities: "system", or a user-assigned client id, object id or resource id.
    pub identities: Vec<String>,
    /// Token audiences (GetToken/WatchToken), compared exactly.
    pub resources: Vec<String>,
    /// Key Vault hosts, e.g. "myvault.vault.azure.net".
    pub vaults: Vec<String>,
    /// Storage / Data Lake account names.
    pub storage_accounts: Vec<String>,
    /// SQL server hosts.
    pub sql_servers: Vec<String>,
    /// ARM subscription ids.
    pub subscriptions: Vec<String>,
}

/// The caller as the transport saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A Windows pipe caller's account.
    pub windows: Option<Arc<WindowsAccount>>,
}

/// What a request wants to touch.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Token(&'a str),
    Vault(&'a str),
    StorageAccount(&'a str),
    SqlServer(&'a str),
    Subscription(&'a str),
}

/// The compiled policy.
#[derive(Debug, Clone, Default)]
pub struct CallerPolicy {
    rules: Vec<Rule>,
}

impl CallerPolicy {
    pub fn new(config: &PolicyConfig) -> Self {
        Self {
            rules: config.rules.clone(),
        }
    }

    /// Allows or refuses `caller` using `identity` on `target`.
    pub fn check(
        &self,
        caller: Caller,
        identity: &IdentitySelector,
        target: Target<'_>,
    ) -> Result<(), GatewayError> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let who = match (caller.uid, caller.gid, &caller.windows) {
            (Some(uid), Some(gid), _) => format!("uid {uid} (gid {gid})"),
            (_, _, Some(account)) => match &account.user_sid {
                Some(sid) => format!("account {sid}"),
                None => "this pipe caller".to_string(),
            },
            _ => "this caller".to_string(),
        };
        let Some(rule) = self.rules.iter().find(|r| r.applies_to(&caller)) else {
            return Err(GatewayError::PermissionDenied(format!(
                "gateway policy: no rule allows {who} to use the gateway"
            )));
        };
        if !allowed(&rule.identities, |i| identity_matches(i, identity)) {
            return Err(GatewayError::PermissionDenied(format!(
                "gateway policy: {who} may not use the {identity}"
            )));
        }
        let (list, kind, value) = match target {
            Target::Token(r) => (&rule.resources, "token resource", r),
            Target::Vault(v) => (&rule.vaults, "key vault", v),
            Target::StorageAccount(a) => (&rule.storage_accounts, "storage account", a),
            Target::SqlServer(s) => (&rule.sql_servers, "SQL server", s),
            Target::Subscription(s) => (&rule.subscriptions, "subscription", s),
        };
        let exact = matches!(target, Target::Token(_));
        if !allowed(list, |entry| {
            if exact {
                entry == value
            } else {
                entry.eq_ignore_ascii_case(value)
            }
        }) {
            return Err(GatewayError::PermissionDenied(format!(
                "gateway policy: {who} may not use {kind} '{value}'"
            )));
        }
        Ok(())
    }
}

impl Rule {
    fn applies_to(&self, caller: &Caller) -> bool {
        let uid_ok = self.uids.is_empty() || caller.uid.is_some_and(|u| self.uids.contains(&u));
        let gid_ok = self.gids.is_empty() || caller.gid.is_some_and(|g| self.gids.contains(&g));
        let account_ok = self.accounts.is_empty()
            || caller
                .windows
                .as_deref()
                .is_some_and(|account| self.accounts.iter().any(|sid| account.has_sid(sid)));
        uid_ok && gid_ok && account_ok
    }
}

fn allowed(list: &[String], matches: impl Fn(&str) -> bool) -> bool {
    list.is_empty() || list.iter().any(|entry| matches(entry))
}

fn identity_matches(entry: &str, identity: &IdentitySelector) -> bool {
    match identity {
        IdentitySelector::SystemAssigned => entry == "system",
        IdentitySelector::ClientId(id)
        | IdentitySelector::ObjectId(id)
        | IdentitySelector::ResourceId(id) => entry.eq_ignore_ascii_case(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_rules: &str) -> CallerPolicy {
        let config: PolicyConfig = toml::from_str(toml_rules).unwrap();
        CallerPolicy::new(&config)
    }

    const ALICE: Caller = Caller {
        uid: Some(1000),
        gid: Some(1000),
        windows: None,
    };
    const BOB: Caller = Caller {
        uid: Some(1001),
        gid: Some(1001),
        windows: None,
    };

    #[test]
    fn no_rules_allows_everything() {
        let p = CallerPolicy::default();
        assert!(p
            .check(
                Caller::default(),
                &IdentitySelector::SystemAssigned,
                Target::Token("x")
            )
            .is_ok());
    }

    #[test]
    fn first_matching_rule_decides_and_unmatched_callers_are_refused() {
        let p = policy(
            r#"
            [[rules]]
            uids = [1000]
            identities = ["system"]
            resources = ["https://vault.azure.net"]
            [[rules]]
            gids = [2000]
            "#,
        );
        let sys = IdentitySelector::SystemAssigned;
        assert!(p
            .check(ALICE, &sys, Target::Token("https://vault.azure.net"))
            .is_ok());
        let err = p
            .check(ALICE, &sys, Target::Token("https://vault.azure.net/"))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("token resource 'https://vault.azure.net/'"),
            "{err}"
        );
        let user = IdentitySelector::ClientId("c".into());
        assert!(p
            .check(ALICE, &user, Target::Token("https://vault.azure.net"))
            .is_err());
        let err = p
            .check(BOB, &sys, Target::Token("https://vault.azure.net"))
            .unwrap_err();
        assert!(err.to_string().contains("no rule allows uid 1001"), "{err}");
        let staff = Caller {
            uid: Some(5),
            gid: Some(2000),
            windows: None,
        };
        assert!(p
            .check(staff, &user, Target::Vault("any.vault.azure.net"))
            .is_ok());
    }

    #[test]
    fn account_rules_match_a_pipe_callers_user_or_enabled_groups() {
        let p = policy(
            r#"
            [[rules]]
            accounts = ["S-1-5-21-1-2-3-2001"]
            resources = ["https://vault.azure.net"]
            "#,
        );
        let pipe_caller = |user: &str, groups: &[&str]| Caller {
            windows: Some(Arc::new(WindowsAccount {
                user_sid: Some(user.into()),
                group_sids: groups.iter().map(|g| g.to_string()).collect(),
            })),
            ..Caller::default()
        };
        let sys = IdentitySelector::SystemAssigned;
        let vault = Target::Token("https://vault.azure.net");
        assert!(p
            .check(
                pipe_caller("S-1-5-21-1-2-3-1001", &["S-1-5-21-1-2-3-2001"]),
                &sys,
                vault
            )
            .is_ok());
        assert!(p
            .check(pipe_caller("S-1-5-21-1-2-3-2001", &[]), &sys, vault)
            .is_ok());
        let err = p
            .check(
                pipe_caller("S-1-5-21-1-2-3-1002", &["S-1-5-11"]),
                &sys,
                vault,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("no rule allows account S-1-5-21-1-2-3-1002"),
            "{err}"
        );
        assert!(
            p.check(ALICE, &sys, vault).is_err(),
            "Unix callers never match"
        );
    }
}
