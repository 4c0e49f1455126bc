//! SAS verification: service SAS (account key) and user delegation SAS (a key
//! this fake issued), each string-to-sign written here from the documented
//! field order; permissions, resource, times, IP range and protocol.

#[allow(unused_imports)]
use super::*;

/// One line of a SAS string-to-sign.
#[derive(Debug, Clone, Copy)]
pub(super) enum Line {
    /// A query parameter's value, empty when absent.
    Param(&'static str),
    /// `/blob/<account>/<container>[/<blob>]`.
    Resource,
    /// The snapshot time or version id: always empty here (the fake serves
    /// base blobs only).
    Snapshot,
}

use Line::{Param as P, Resource as R, Snapshot as S};

/// Service SAS, 2018-11-09 .. 2020-10-02 (15 lines).
pub(super) const SERVICE_2018: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("si"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];
/// Service SAS, 2020-12-06 .. 2025-05-05 (16 lines: `ses` added).
pub(super) const SERVICE_2020: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("si"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("ses"),
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];
/// User delegation SAS, 2020-12-06 .. 2025-05-05 (24 lines).
pub(super) const DELEGATION_2020: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("skoid"),
    P("sktid"),
    P("skt"),
    P("ske"),
    P("sks"),
    P("skv"),
    P("saoid"),
    P("suoid"),
    P("scid"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("ses"),
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];
/// User delegation SAS, 2025-07-05 .. before 2026-04-06 (26 lines:
/// `skdutid` and `sduoid` after `scid`).
pub(super) const DELEGATION_2025: &[Line] = &[
    P("sp"),
    P("st"),
    P("se"),
    R,
    P("skoid"),
    P("sktid"),
    P("skt"),
    P("ske"),
    P("sks"),
    P("skv"),
    P("saoid"),
    P("suoid"),
    P("scid"),
    P("skdutid"),
    P("sduoid"),
    P("sip"),
    P("spr"),
    P("sv"),
    P("sr"),
    S,
    P("ses"),
    P("rscc"),
    P("rscd"),
    P("rsce"),
    P("rscl"),
    P("rsct"),
];

/// The string-to-sign layout of a SAS version, if the fake verifies it.
pub(super) fn layout(user_delegation: bool, sv: &str) -> Option<&'static [Line]> {
    match (user_delegation, sv) {
        (false, v) if ("2018-11-09".."2020-12-06").contains(&v) => Some(SERVICE_2018),
        (false, v) if ("2020-12-06"..="2025-05-05").contains(&v) => Some(SERVICE_2020),
        (true, v) if ("2020-12-06"..="2025-05-05").contains(&v) => Some(DELEGATION_2020),
        (true, v) if ("2025-07-05".."2026-04-06").contains(&v) => Some(DELEGATION_2025),
        _ => None,
    }
}

pub(super) fn string_to_sign(lines: &[Line], query: &Query, resource: &str) -> String {
    lines
        .iter()
        .map(|line| match line {
            Line::Param(name) => query.get(name).unwrap_or_default(),
            Line::Resource => resource,
            Line::Snapshot => "",
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a verified SAS allows.
pub(super) struct SasGrant {
    pub(super) permissions: String,
    /// Response header overrides (`rscc`..`rsct`).
    pub(super) overrides: Vec<(HeaderName, String)>,
    /// `skoid` of a user delegation SAS: its access is also bounded by the
    /// RBAC of that principal.
    pub(super) delegated_oid: Option<String>,
}

impl SasGrant {
    pub(super) fn require(&self, permission: char) -> Result<(), StorageError> {
        if self.permissions.contains(permission) {
            Ok(())
        } else {
            Err(permission_mismatch())
        }
    }
}

pub(super) fn verify_sas(
    shared: &Shared,
    account: &AccountKey,
    path: &RequestPath,
    query: &Query,
    trace: &mut Trace,
) -> Result<SasGrant, StorageError> {
    let user_delegation = query.get("skoid").is_some();
    trace.authorization = if user_delegation {
        Authorization::UserDelegationSas
    } else {
        Authorization::ServiceSas
    };
    let required = |name: &str| {
        query
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| auth_failed(&format!("{name} is mandatory. Cannot be empty")))
    };
    let sv = required("sv")?;
    let Some(lines) = layout(user_delegation, sv) else {
        return Err(auth_failed(&format!(
            "The emulator verifies service SAS versions 2018-11-09 through 2025-05-05 and user delegation SAS versions 2020-12-06 through 2026-02-06; sv={sv} is not one of them."
        )));
    };
    let container = path.container.as_deref().unwrap_or_default();
    let resource = match (required("sr")?, path.blob.as_deref()) {
        ("b", Some(blob)) => format!("/blob/{}/{container}/{blob}", account.name),
        ("c", _) => format!("/blob/{}/{container}", account.name),
        ("b", None) => return Err(StorageError::new(
            StatusCode::FORBIDDEN,
            "AuthorizationResourceTypeMismatch",
            "This request is not authorized to perform this operation using this resource type.",
        )),
        (other, _) => {
            return Err(auth_failed(&format!(
                "Signed resource '{other}' is not supported by the emulator (only b and c)."
            )))
        }
    };
    if query.get("si").is_some() {
        return Err(auth_failed(if user_delegation {
            "A user delegation SAS cannot refer to a stored access policy (si)."
        } else {
            "Stored access policies (si) are not supported by the emulator."
        }));
    }
    let permissions = required("sp")?.to_string();
    let expiry_text = required("se")?;
    let signature = required("sig")?;

    let key = if user_delegation {
        let oid = required("skoid")?;
        let tid = required("sktid")?;
        let key_start = required("skt")?;
        let key_expiry = required("ske")?;
        let service = required("sks")?;
        let key_version = required("skv")?;
        delegation_key(
            &shared.seed,
            oid,
            tid,
            key_start,
            key_expiry,
            service,
            key_version,
        )
        .to_vec()
    } else {
        account.key.clone()
    };
    let sts = string_to_sign(lines, query, &resource);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(sts.as_bytes());
    let given = BASE64.decode(signature).unwrap_or_default();
    if mac.verify_slice(&given).is_err() {
        return Err(auth_failed(&format!(
            "Signature did not match. String to sign used was {sts}"
        )));
    }

    let now = OffsetDateTime::now_utc();
    let time = |name: &str, text: &str| {
        parse_time(text)
            .ok_or_else(|| auth_failed(&format!("{name} '{text}' is not a valid ISO 8601 time.")))
    };
    let expiry = time("se", expiry_text)?;
    let start = query.get("st").map(|st| time("st", st)).transpose()?;
    if start.is_some_and(|s| now < s) || now >= expiry {
        return Err(auth_failed(&format!(
            "Signature not valid in the specified time frame: Start [{}] - Expiry [{}] - Current [{}]",
            start.map(http_date).unwrap_or_default(),
            http_date(expiry),
            http_date(now)
        )));
    }
    let delegated_oid = if user_delegation {
        let tid = required("sktid")?;
        if !tid.eq_ignore_ascii_case(shared.authority.tenant_id()) {
            return Err(auth_failed(
                "The signed tenant (sktid) is not the tenant of this storage account.",
            ));
        }
        if required("sks")? != "b" {
            return Err(auth_failed(
                "The user delegation key was not issued for the Blob service (sks).",
            ));
        }
        let key_start = time("skt", required("skt")?)?;
        let key_expiry = time("ske", required("ske")?)?;
        if now < key_start || now >= key_expiry {
            return Err(auth_failed(&format!(
                "The user delegation key is not valid at this time: Start [{}] - Expiry [{}] - Current [{}]",
                http_date(key_start),
                http_date(key_expiry),
                http_date(now)
            )));
        }
        let oid = required("skoid")?.to_string();
        trace.principal_oid = Some(oid.clone());
        Some(oid)
    } else {
        None
    };
    match query.get("spr") {
        None | Some("https") | Some("https,http") => {}
        Some("http") => {
            return Err(StorageError::new(
                StatusCode::FORBIDDEN,
                "AuthorizationProtocolMismatch",
                "This request is not authorized to perform this operation using this protocol.",
            ))
        }
        Some(other) => {
            return Err(auth_failed(&format!(
                "Signed protocol '{other}' is not valid (https or https,http)."
            )))
        }
    }
    if let Some(range) = query.get("sip") {
        match ip_range_contains(range, CLIENT_IP) {
            Some(true) => {}
            Some(false) => {
                return Err(StorageError::new(
                    StatusCode::FORBIDDEN,
                    "AuthorizationSourceIPMismatch",
                    format!("This request is not authorized to perform this operation using this source IP {CLIENT_IP}."),
                ))
            }
            None => {
                return Err(auth_failed(&format!(
                    "Signed IP '{range}' is not an IPv4 address or range."
                )))
            }
        }
    }
    let overrides = [
        ("rscc", header::CACHE_CONTROL),
        ("rscd", header::CONTENT_DISPOSITION),
        ("rsce", header::CONTENT_ENCODING),
        ("rscl", header::CONTENT_LANGUAGE),
        ("rsct", header::CONTENT_TYPE),
    ]
    .into_iter()
    .filter_map(|(param, name)| query.get(param).map(|v| (name, v.to_string())))
    .collect();
    Ok(SasGrant {
        permissions,
        overrides,
        delegated_oid,
    })
}

/// Whether `ip` is `range` (`a.b.c.d` or `a.b.c.d-e.f.g.h`); None if
/// `range` is malformed.
pub(super) fn ip_range_contains(range: &str, ip: Ipv4Addr) -> Option<bool> {
    let (low, high) = match range.split_once('-') {
        Some((low, high)) => (low.parse::<Ipv4Addr>().ok()?, high.parse().ok()?),
        None => {
            let single = range.parse::<Ipv4Addr>().ok()?;
            (single, single)
        }
    };
    Some(low <= ip && ip <= high)
}
