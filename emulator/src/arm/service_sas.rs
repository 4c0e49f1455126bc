//! Minting a blob service SAS as the Storage RP does: the 2020-12-06+
//! string-to-sign, HMAC-SHA256 with the account key.

#[allow(unused_imports)]
use super::*;

/// Builds and signs a blob service SAS the way the Storage RP does: the
/// 2020-12-06+ service SAS string-to-sign, HMAC-SHA256 with the account key.
/// Returns the query string (no `?`), or the offending parameter's name.
pub(super) fn mint_service_sas(
    account: &str,
    key: &[u8],
    p: &ServiceSasParameters,
) -> Result<String, &'static str> {
    let resource = p
        .canonicalized_resource
        .as_deref()
        .ok_or("canonicalizedResource")?;
    let prefix = format!("/blob/{account}/");
    let Some(path) = resource.strip_prefix(&prefix) else {
        return Err("canonicalizedResource");
    };
    let (container, blob) = match path.split_once('/') {
        Some((c, b)) => (c, Some(b)),
        None => (path, None),
    };
    if container.is_empty() || blob.is_some_and(str::is_empty) {
        return Err("canonicalizedResource");
    }
    let signed_resource = match (p.signed_resource.as_deref(), blob) {
        (Some("b"), Some(_)) => "b",
        (Some("c"), None) => "c",
        _ => return Err("signedResource"),
    };
    let permissions = p.signed_permission.clone().unwrap_or_default();
    if permissions.is_empty() && p.signed_identifier.is_none()
        || !permissions.chars().all(|c| "racwdxyltfmeopi".contains(c))
    {
        return Err("signedPermission");
    }
    let start = p
        .signed_start
        .as_deref()
        .map(sas_time)
        .transpose()
        .map_err(|_| "signedStart")?;
    let expiry = match p.signed_expiry.as_deref() {
        Some(e) => Some(sas_time(e).map_err(|_| "signedExpiry")?),
        None if p.signed_identifier.is_some() => None,
        None => return Err("signedExpiry"),
    };
    let protocol = match p.signed_protocol.as_deref() {
        None => None,
        Some(v @ ("https" | "https,http")) => Some(v),
        Some(_) => return Err("signedProtocol"),
    };
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let string_to_sign = [
        permissions.clone(),
        start.clone().unwrap_or_default(),
        expiry.clone().unwrap_or_default(),
        resource.to_string(),
        opt(&p.signed_identifier),
        opt(&p.signed_ip),
        protocol.unwrap_or_default().to_string(),
        SAS_VERSION.to_string(),
        signed_resource.to_string(),
        String::new(), // snapshot time
        String::new(), // encryption scope
        opt(&p.rscc),
        opt(&p.rscd),
        opt(&p.rsce),
        opt(&p.rscl),
        opt(&p.rsct),
    ]
    .join("\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| "keyToSign")?;
    mac.update(string_to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());

    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("sv", SAS_VERSION);
    query.append_pair("sr", signed_resource);
    if let Some(st) = &start {
        query.append_pair("st", st);
    }
    if let Some(se) = &expiry {
        query.append_pair("se", se);
    }
    if !permissions.is_empty() {
        query.append_pair("sp", &permissions);
    }
    for (name, value) in [
        ("sip", &p.signed_ip),
        ("si", &p.signed_identifier),
        ("rscc", &p.rscc),
        ("rscd", &p.rscd),
        ("rsce", &p.rsce),
        ("rscl", &p.rscl),
        ("rsct", &p.rsct),
    ] {
        if let Some(v) = value {
            query.append_pair(name, v);
        }
    }
    if let Some(spr) = protocol {
        query.append_pair("spr", spr);
    }
    query.append_pair("sig", &signature);
    Ok(query.finish())
}

/// An ISO-8601 time as the SAS carries it: UTC, whole seconds, `Z`.
pub(super) fn sas_time(value: &str) -> Result<String, ()> {
    let parsed = OffsetDateTime::parse(value, &Rfc3339).map_err(|_| ())?;
    parsed
        .to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|_| ())
}
