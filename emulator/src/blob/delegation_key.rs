//! Get User Delegation Key: parsing the `KeyInfo` request, deriving the key
//! from the fake's seed and the key's fields (nothing stored), and the XML
//! answer.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct KeyInfoXml {
    pub(super) start: Option<String>,
    pub(super) expiry: Option<String>,
    pub(super) delegated_user_tid: Option<String>,
}

pub(super) fn get_user_delegation_key(
    shared: &Shared,
    claims: &Claims,
    version: &str,
    body: &[u8],
) -> Result<Response, StorageError> {
    if version < USER_DELEGATION_KEY_MIN_VERSION {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            "Value for one of the query parameters specified in the request URI is invalid.",
        )
        .element("QueryParameterName", "comp")
        .element("QueryParameterValue", "userdelegationkey")
        .element(
            "Reason",
            format!("Get User Delegation Key needs x-ms-version {USER_DELEGATION_KEY_MIN_VERSION} or later."),
        ));
    }
    let invalid_xml = || {
        StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidXmlDocument",
            "XML specified is not syntactically valid.",
        )
    };
    let text = std::str::from_utf8(body).map_err(|_| invalid_xml())?;
    let info: KeyInfoXml =
        quick_xml::de::from_str(text.trim_start_matches('\u{feff}')).map_err(|_| invalid_xml())?;
    let node_value = |node: &str, value: &str, reason: &str| {
        StorageError::new(
            StatusCode::BAD_REQUEST,
            "InvalidXmlNodeValue",
            "The value for one of the XML nodes is not in the correct format.",
        )
        .element("XmlNodeName", node)
        .element("XmlNodeValue", value)
        .element("Reason", reason)
    };
    let now = OffsetDateTime::now_utc();
    let latest = now + MAX_DELEGATION_KEY_LIFETIME;
    let Some(expiry_text) = info.expiry.as_deref() else {
        return Err(StorageError::new(
            StatusCode::BAD_REQUEST,
            "MissingRequiredXmlNode",
            "An XML node that is required for this request was not specified.",
        )
        .element("XmlNodeName", "Expiry"));
    };
    let expiry = parse_time(expiry_text)
        .ok_or_else(|| node_value("Expiry", expiry_text, "not an ISO 8601 UTC time"))?;
    let start = match info.start.as_deref() {
        Some(text) => {
            parse_time(text).ok_or_else(|| node_value("Start", text, "not an ISO 8601 UTC time"))?
        }
        None => now,
    };
    if expiry <= now {
        return Err(node_value("Expiry", expiry_text, "must be in the future"));
    }
    if expiry > latest {
        return Err(node_value(
            "Expiry",
            expiry_text,
            "must be within 7 days of the current time",
        ));
    }
    if start >= expiry || start > latest {
        return Err(node_value(
            "Start",
            info.start.as_deref().unwrap_or_default(),
            "must be before Expiry and within 7 days of the current time",
        ));
    }
    let signed_start = sas_time(start);
    let signed_expiry = sas_time(expiry);
    let key = delegation_key(
        &shared.seed,
        &claims.oid,
        &claims.tid,
        &signed_start,
        &signed_expiry,
        "b",
        version,
    );
    let delegated = info
        .delegated_user_tid
        .as_deref()
        .map(|tid| {
            format!(
                "<SignedDelegatedUserTid>{}</SignedDelegatedUserTid>",
                xml_escape(tid)
            )
        })
        .unwrap_or_default();
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey><SignedOid>{}</SignedOid><SignedTid>{}</SignedTid><SignedStart>{signed_start}</SignedStart><SignedExpiry>{signed_expiry}</SignedExpiry><SignedService>b</SignedService><SignedVersion>{}</SignedVersion>{delegated}<Value>{}</Value></UserDelegationKey>",
        xml_escape(&claims.oid),
        xml_escape(&claims.tid),
        xml_escape(version),
        BASE64.encode(key),
    );
    let mut response = (StatusCode::OK, xml).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    Ok(response)
}

/// A user delegation key: HMAC-SHA256 under the fake's seed over the key's
/// fields, so the fake can recompute any key it issued from a SAS's
/// `skoid`..`skv` and no one without the seed can.
pub(super) fn delegation_key(
    seed: &[u8],
    oid: &str,
    tid: &str,
    start: &str,
    expiry: &str,
    service: &str,
    version: &str,
) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(seed).expect("HMAC takes any key length");
    mac.update(
        [oid, tid, start, expiry, service, version]
            .join("\n")
            .as_bytes(),
    );
    mac.finalize().into_bytes().into()
}
