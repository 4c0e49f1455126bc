//! Who passes a fake's authorization check (RBAC role assignment, access
//! policy or ACL), by the verified token's `oid`. ARM keeps its own
//! action-and-scope grants; this is the flat allow-list the data-plane
//! fakes use.

use std::collections::BTreeSet;

/// Which principals (token `oid`s) a fake lets through its RBAC or ACL check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Any caller with a valid token.
    Everyone,
    /// Only these object ids.
    Only(BTreeSet<String>),
}

impl Grant {
    /// Only the given object ids.
    pub fn only<I, S>(oids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Grant::Only(oids.into_iter().map(|s| s.into().to_lowercase()).collect())
    }

    pub fn allows(&self, oid: &str) -> bool {
        match self {
            Grant::Everyone => true,
            Grant::Only(oids) => oids.contains(&oid.to_lowercase()),
        }
    }
}
