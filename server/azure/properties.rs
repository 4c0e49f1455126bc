//! Properties of the upstream answer parsers (Key Vault, Data Lake Gen1 and
//! Gen2, user delegation keys, ARM errors) on hostile bodies: they parse or
//! fail with an error, never panic (bounded runs: 256 cases each).

use proptest::prelude::*;

use crate::{arm, datalake, keyvault, sas};

/// JSON-ish bodies: objects of plausible keys with odd values.
fn json_body() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        Just("\"\"".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("18446744073709551616".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("true".to_string()),
        Just("{\"enabled\":true,\"exp\":-9223372036854775808}".to_string()),
        Just("[{\"name\":\"a\",\"isDirectory\":\"true\",\"contentLength\":\"x\"}]".to_string()),
        Just("{\"FileStatus\":[{\"pathSuffix\":\"../x\",\"type\":\"FILE\",\"length\":-5,\"modificationTime\":9e99}]}".to_string()),
        "\"[ -~]{0,16}\"",
    ];
    let key = prop_oneof![
        Just("value"),
        Just("id"),
        Just("attributes"),
        Just("contentType"),
        Just("paths"),
        Just("FileStatuses"),
        Just("error"),
        Just("code"),
        Just("message"),
        Just("other"),
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", inner.join(",")).into_bytes()
    })
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![json_body(), proptest::collection::vec(any::<u8>(), 0..256)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn key_vault_bundles(body in any_body()) {
        if let Ok(secret) = keyvault::parse_bundle(&body) {
            prop_assert!(!secret.name.is_empty(), "{:?}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn secret_ids(id in "https://[a-z]{1,5}\\.vault\\.azure\\.net(/[a-z0-9/]{0,12})?|\\PC{0,30}") {
        if let Some((name, _version)) = keyvault::parse_secret_id(&id) {
            prop_assert!(!name.is_empty() && id.contains(&name), "{} -> {}", id, name);
        }
    }

    #[test]
    fn data_lake_listings(body in any_body()) {
        let _ = datalake::parse_gen1(&body, &["dir".to_string()]);
        let _ = datalake::parse_gen2(&body);
    }

    #[test]
    fn user_delegation_keys(xml in "<\\??[A-Za-z]{0,12}>[ -~]{0,40}(</[A-Za-z]{0,12}>)?|\\PC{0,60}") {
        let _ = sas::parse_user_delegation_key(&xml);
    }

    #[test]
    fn arm_errors(status in 100u16..600, body in any_body()) {
        let error = arm::error_from_response(status, &body, "resource group");
        prop_assert!(!error.to_string().is_empty());
    }
}
