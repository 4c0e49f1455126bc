//! Windows accounts as the caller policy sees them, in portable code: a
//! named-pipe caller's [`WindowsAccount`] (user SID and enabled group SIDs,
//! read from its token once per connection by the Windows transport), the
//! syntax of a SID string ([`is_sid_string`]), and the seam through which
//! the policy turns the account names its rules write into SIDs
//! ([`AccountResolver`]).
//!
//! This module owns no Windows calls: the gateway's `windows` module reads
//! tokens and looks names up (`LookupAccountNameW`) and hands the results
//! here, so the policy's matching is tested on every platform.

use std::fmt;

/// A pipe client's account, read from its token once per connection and
/// shared (`Arc`) by every call on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsAccount {
    /// The token's user SID, `S-1-...`.
    pub user_sid: String,
    /// The token's enabled group SIDs (deny-only groups left out).
    pub group_sids: Vec<String>,
}

impl WindowsAccount {
    /// Is `sid` this account's user or one of its enabled groups?
    /// SIDs compare case-insensitively (`s-1-5-18` is `S-1-5-18`).
    pub fn has_sid(&self, sid: &str) -> bool {
        self.user_sid.eq_ignore_ascii_case(sid)
            || self.group_sids.iter().any(|g| g.eq_ignore_ascii_case(sid))
    }

    /// The groups, `,`-separated (for the per-connection audit line).
    pub fn groups(&self) -> Groups<'_> {
        Groups(&self.group_sids)
    }
}

/// [`WindowsAccount::groups`], formatted.
#[derive(Debug, Clone, Copy)]
pub struct Groups<'a>(&'a [String]);

impl fmt::Display for Groups<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, sid) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(sid)?;
        }
        Ok(())
    }
}

/// `S-1-<authority>-<sub>...`: revision 1, a numeric authority and 1 to 15
/// numeric sub-authorities, nothing else (so no SDDL syntax can hide in
/// one). The prefix may be written `s-1-`.
pub fn is_sid_string(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("S-1-")
        .or_else(|| text.strip_prefix("s-1-"))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    (2..=16).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Turns an `accounts` entry of a policy rule into a SID string, once, when
/// the policy is loaded. An error says why, for the policy error that names
/// the rule.
pub trait AccountResolver: fmt::Debug + Send + Sync {
    /// `entry` is a SID string or an account name (`DOMAIN\user`,
    /// `BUILTIN\Users`, `.\svc-app`, `NT AUTHORITY\NETWORK SERVICE`...).
    fn resolve(&self, entry: &str) -> Result<String, String>;
}

/// Where account names mean nothing (Unix): SID strings are checked for
/// syntax and kept (a policy file can be shared with Windows hosts; they
/// match no Unix caller), names are refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct SidStringsOnly;

impl AccountResolver for SidStringsOnly {
    fn resolve(&self, entry: &str) -> Result<String, String> {
        let entry = entry.trim();
        if is_sid_string(entry) {
            return Ok(entry.to_ascii_uppercase());
        }
        if entry.starts_with("S-") || entry.starts_with("s-") {
            return Err(format!(
                "'{entry}' is not a SID (expected S-1-<authority>-<sub-authority>...)"
            ));
        }
        Err(format!(
            "'{entry}' is a Windows account name; names are looked up only on Windows, \
             and Unix callers are matched by uids and gids (write the account's SID, S-1-..., \
             to share this policy with Windows hosts)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_syntax() {
        for good in [
            "S-1-5-18",
            "s-1-5-32-544",
            "S-1-5-21-3623811015-3361044348-30300820-1013",
        ] {
            assert!(is_sid_string(good), "{good}");
        }
        for bad in [
            "",
            "S-1-",
            "S-1-5",
            "S-1-5-x",
            "S-1-5--11",
            "S-2-5-18",
            "S-1-5-11)(A;;GA;;;WD",
            "BUILTIN\\Users",
        ] {
            assert!(!is_sid_string(bad), "{bad:?}");
        }
    }

    #[test]
    fn accounts_match_user_or_enabled_group_ignoring_case() {
        let account = WindowsAccount {
            user_sid: "S-1-5-21-1-2-3-1001".into(),
            group_sids: vec!["S-1-5-32-545".into(), "S-1-5-11".into()],
        };
        assert!(account.has_sid("s-1-5-21-1-2-3-1001"));
        assert!(account.has_sid("S-1-5-11"));
        assert!(!account.has_sid("S-1-5-32-544"));
        assert_eq!(account.groups().to_string(), "S-1-5-32-545,S-1-5-11");
    }

    #[test]
    fn off_windows_sids_are_kept_and_names_refused() {
        assert_eq!(
            SidStringsOnly.resolve(" s-1-5-32-545 ").unwrap(),
            "S-1-5-32-545"
        );
        let e = SidStringsOnly.resolve("BUILTIN\\Users").unwrap_err();
        assert!(e.contains("only on Windows"), "{e}");
        let e = SidStringsOnly.resolve("S-1-5-x").unwrap_err();
        assert!(e.contains("is not a SID"), "{e}");
    }
}
