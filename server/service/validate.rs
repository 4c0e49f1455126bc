//! Validation of what callers name, shared by every operation: identity
//! selectors and token audiences. One place per kind of input.

use identity_gateway_core::{GatewayError, IdentitySelector};

/// The identity a caller names, as it arrived (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IdentityRef {
    /// Nothing named: the system-assigned identity (or IMDS's default).
    #[default]
    Default,
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

impl std::fmt::Display for IdentityRef {
    /// As the caller named it, for the audit line (not yet validated).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("system"),
            Self::ClientId(id) => write!(f, "client_id={}", id.escape_debug()),
            Self::ObjectId(id) => write!(f, "object_id={}", id.escape_debug()),
            Self::ResourceId(id) => write!(f, "resource_id={}", id.escape_debug()),
        }
    }
}

/// The identity a request selects; unset means system-assigned.
pub fn identity(identity: IdentityRef) -> Result<IdentitySelector, GatewayError> {
    match identity {
        IdentityRef::Default => Ok(IdentitySelector::SystemAssigned),
        IdentityRef::ClientId(id) => {
            Ok(IdentitySelector::ClientId(guid("identity.client_id", id)?))
        }
        IdentityRef::ObjectId(id) => {
            Ok(IdentitySelector::ObjectId(guid("identity.object_id", id)?))
        }
        IdentityRef::ResourceId(id) => {
            let trimmed = id.trim();
            let segments: Vec<&str> = trimmed.split('/').collect();
            let well_formed = segments.len() == 9
                && segments[0].is_empty()
                && segments[1].eq_ignore_ascii_case("subscriptions")
                && segments[3].eq_ignore_ascii_case("resourcegroups")
                && segments[5].eq_ignore_ascii_case("providers")
                && segments[6].eq_ignore_ascii_case("Microsoft.ManagedIdentity")
                && segments[7].eq_ignore_ascii_case("userAssignedIdentities")
                && segments
                    .iter()
                    .skip(1)
                    .all(|s| !s.is_empty() && s.len() <= 128)
                && trimmed
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/-_.()".contains(c));
            if !well_formed {
                return Err(GatewayError::invalid(
                    "identity.resource_id",
                    "expected /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>",
                ));
            }
            Ok(IdentitySelector::ResourceId(trimmed.to_string()))
        }
    }
}

fn guid(field: &str, value: String) -> Result<String, GatewayError> {
    let v = value.trim();
    let shape_ok = v.len() == 36
        && v.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if shape_ok {
        Ok(v.to_string())
    } else {
        Err(GatewayError::invalid(
            field,
            "expected a GUID like 00000000-0000-0000-0000-000000000000",
        ))
    }
}

/// The token audience of GetToken/WatchToken: non-empty, printable, a URI or
/// an application id; passed on verbatim.
pub fn resource(resource: &str) -> Result<&str, GatewayError> {
    if resource.is_empty() {
        return Err(GatewayError::invalid(
            "resource",
            "is required (e.g. https://vault.azure.net)",
        ));
    }
    if resource.len() > 2048 {
        return Err(GatewayError::invalid(
            "resource",
            "is longer than 2048 characters",
        ));
    }
    // One pass over the bytes for every real audience (printable ASCII):
    // ASCII control characters and whitespace are <= 0x20, and DEL and
    // anything non-ASCII are >= 0x7f; only then are the characters judged.
    let bad = resource.bytes().any(|b| b <= b' ' || b >= 0x7f)
        && resource
            .chars()
            .any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(GatewayError::invalid(
            "resource",
            "must not contain spaces or control characters",
        ));
    }
    if resource.ends_with("/.default") {
        return Err(GatewayError::invalid(
            "resource",
            format!(
                "'{resource}' is a v2 scope; managed identities take the resource: drop '/.default' ('{}')",
                resource.trim_end_matches("/.default")
            ),
        ));
    }
    Ok(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_validated() {
        let sel = identity;
        assert!(sel(IdentityRef::ClientId(
            "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into()
        ))
        .is_ok());
        assert!(sel(IdentityRef::ClientId("nope&resource=evil".into())).is_err());
        assert!(sel(IdentityRef::ResourceId(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1".into()
        ))
        .is_ok());
        assert!(sel(IdentityRef::ResourceId("/subscriptions/s".into())).is_err());
        assert_eq!(
            identity(IdentityRef::Default).unwrap(),
            IdentitySelector::SystemAssigned
        );
    }

    #[test]
    fn resources_are_checked_but_kept_verbatim() {
        assert_eq!(
            resource("https://vault.azure.net/").unwrap(),
            "https://vault.azure.net/"
        );
        assert!(resource("").is_err());
        assert!(resource("https://vault.azure.net/.default").is_err());
        assert!(resource("https://x\n").is_err());
        // The ASCII fast path and the Unicode path refuse the same things.
        for bad in [
            "https://x y",
            "https://x\t",
            "https://x\u{7f}",
            "https://x\u{a0}y",
            "https://x\u{2028}",
        ] {
            assert!(resource(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            resource("https://bücher.example").unwrap(),
            "https://bücher.example"
        );
    }
}

/// Properties of request validation (bounded runs: 512 cases).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn an_accepted_resource_is_passed_on_verbatim_and_well_formed(raw in "\\PC{0,40}|[ -~]{0,40}|https://[a-z.]{1,20}/?(\\.default)?") {
            match resource(&raw) {
                Ok(accepted) => {
                    prop_assert_eq!(accepted, raw.as_str());
                    prop_assert!(!raw.is_empty() && raw.len() <= 2048);
                    prop_assert!(!raw.chars().any(|c| c.is_control() || c.is_whitespace()));
                    prop_assert!(!raw.ends_with("/.default"));
                }
                Err(GatewayError::InvalidArgument { field, .. }) => prop_assert_eq!(field, "resource"),
                Err(other) => prop_assert!(false, "{}: {:?}", raw, other),
            }
        }

        #[test]
        fn long_resources_are_refused(extra in 1usize..64) {
            let raw = "a".repeat(2048 + extra);
            prop_assert!(resource(&raw).is_err());
        }

        #[test]
        fn identity_selectors_accept_only_guids_and_arm_ids(raw in "[0-9a-fA-F-]{30,40}|\\PC{0,40}") {
            for make in [IdentityRef::ClientId, IdentityRef::ObjectId] {
                if let Ok(selector) = identity(make(raw.clone())) {
                    let value = selector.to_string();
                    prop_assert!(value.contains(raw.trim()), "{} -> {}", raw, value);
                    let guid = raw.trim();
                    prop_assert_eq!(guid.len(), 36);
                    prop_assert!(guid.chars().enumerate().all(|(i, c)| match i {
                        8 | 13 | 18 | 23 => c == '-',
                        _ => c.is_ascii_hexdigit(),
                    }), "{}", guid);
                }
            }
        }
    }
}
