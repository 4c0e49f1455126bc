//! Key Vault's JSON for secrets: the secret bundle and list items, paging with
//! `maxresults` and `$skiptoken`, and the vault base URL ids are built from.

#[allow(unused_imports)]
use super::*;

/// One page of a list, with `maxresults` (1-25, default 25) and an index
/// `$skiptoken`; `nextLink` is null on the last page.
pub(super) fn paged(base: &str, path: &str, uri: &Uri, items: Vec<Value>) -> Response {
    let max = match query_param(uri, "maxresults").map(|m| m.parse::<usize>()) {
        None => 25,
        Some(Ok(m)) if (1..=25).contains(&m) => m,
        Some(_) => {
            return kv_error(
                StatusCode::BAD_REQUEST,
                "BadParameter",
                None,
                "Invalid maxresults: must be between 1 and 25.",
            )
        }
    };
    let skip = match query_param(uri, "$skiptoken") {
        None => 0,
        Some(token) => match decode_skiptoken(&token) {
            Some(skip) => skip,
            None => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    None,
                    "The $skiptoken is not valid.",
                )
            }
        },
    };
    let api_version = query_param(uri, "api-version").unwrap_or_default();
    let end = (skip + max).min(items.len());
    let page: Vec<Value> = items
        .get(skip.min(items.len())..end)
        .unwrap_or_default()
        .to_vec();
    let next = (end < items.len()).then(|| {
        let mut next = url::Url::parse(&format!("{base}{path}")).ok()?;
        next.query_pairs_mut()
            .append_pair("api-version", &api_version)
            .append_pair("$skiptoken", &encode_skiptoken(end))
            .append_pair("maxresults", &max.to_string());
        Some(next.to_string())
    });
    kv_json(
        StatusCode::OK,
        json!({"value": page, "nextLink": next.flatten()}),
    )
}

pub(super) fn encode_skiptoken(index: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("kvfake:{index}"))
}

pub(super) fn decode_skiptoken(token: &str) -> Option<usize> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()?;
    String::from_utf8(raw)
        .ok()?
        .strip_prefix("kvfake:")?
        .parse()
        .ok()
}

/// The bundle without `value`: id, attributes, contentType, tags, kid, managed.
pub(super) fn item_json(base: &str, name: &str, stored: &StoredVersion) -> Map<String, Value> {
    let spec = &stored.spec;
    let mut attributes = Map::new();
    attributes.insert("enabled".into(), Value::Bool(spec.enabled));
    if let Some(nbf) = spec.not_before {
        attributes.insert("nbf".into(), nbf.into());
    }
    if let Some(exp) = spec.expires {
        attributes.insert("exp".into(), exp.into());
    }
    attributes.insert("created".into(), stored.created.into());
    attributes.insert("updated".into(), stored.updated.into());
    attributes.insert("recoverableDays".into(), 90.into());
    attributes.insert(
        "recoveryLevel".into(),
        Value::String("Recoverable+Purgeable".into()),
    );
    let mut item = Map::new();
    item.insert(
        "id".into(),
        Value::String(format!("{base}/secrets/{name}/{}", stored.id)),
    );
    if let Some(content_type) = &spec.content_type {
        item.insert("contentType".into(), Value::String(content_type.clone()));
    }
    item.insert("attributes".into(), Value::Object(attributes));
    if !spec.tags.is_empty() {
        item.insert("tags".into(), json!(spec.tags));
    }
    if spec.certificate_backed {
        item.insert(
            "kid".into(),
            Value::String(format!("{base}/keys/{name}/{}", stored.id)),
        );
        item.insert("managed".into(), Value::Bool(true));
    }
    item
}

/// The vault's base URL as the caller addressed it (ids echo the caller's host).
pub(super) fn vault_base(uri: &Uri, headers: &HeaderMap) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    format!("https://{host}")
}
