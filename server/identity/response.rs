//! Parsing of identity endpoints' answers: the token JSON (every field may be a
//! string, `expires_on` may be epoch seconds or a 2017-09-01-style date) and
//! the error JSON of IMDS (`error`/`error_description`) and App Service
//! (`statusCode`/`message`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use serde::Deserialize;
use time::{
    format_description::FormatItem, macros::format_description, OffsetDateTime, PrimitiveDateTime,
};

use super::{retry::FetchError, AccessToken};
use identity_gateway_core::http::retry_after;

/// Largest token answer read (real ones are ~2-4 KB).
const MAX_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct RawToken {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_on: Option<StringOrNumber>,
    expires_in: Option<StringOrNumber>,
    resource: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    Number(i64),
    String(String),
}

/// Parses a successful token answer. `requested` is the resource asked for;
/// `now` is wall time for answers that carry only `expires_in`.
pub fn parse_token(
    body: &[u8],
    requested: &str,
    now: SystemTime,
) -> Result<AccessToken, FetchError> {
    let raw: RawToken = serde_json::from_slice(body).map_err(|e| {
        FetchError::Malformed(format!("token answer is not the expected JSON: {e}"))
    })?;
    let token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| FetchError::Malformed("token answer has no access_token".into()))?;
    let expires_on = match (raw.expires_on, raw.expires_in) {
        (Some(on), _) => parse_expires_on(&on)?,
        (None, Some(StringOrNumber::Number(secs))) => now + Duration::from_secs(secs.max(0) as u64),
        (None, Some(StringOrNumber::String(secs))) => {
            let secs: u64 = secs.trim().parse().map_err(|_| {
                FetchError::Malformed(format!("expires_in '{secs}' is not a number of seconds"))
            })?;
            now + Duration::from_secs(secs)
        }
        (None, None) => {
            return Err(FetchError::Malformed(
                "token answer has neither expires_on nor expires_in".into(),
            ))
        }
    };
    Ok(AccessToken {
        token: SecretString::from(token),
        token_type: raw.token_type.unwrap_or_else(|| "Bearer".into()),
        expires_on,
        // The audience is what the caller asked for; sources echo it, but the
        // cache key and the reply must be the caller's exact string.
        resource: raw
            .resource
            .filter(|r| r == requested)
            .unwrap_or_else(|| requested.to_string()),
    })
}

const DATE_12H: &[FormatItem<'static>] = format_description!(
    "[month padding:none]/[day padding:none]/[year] [hour repr:12 padding:none]:[minute]:[second] [period] [offset_hour sign:mandatory]:[offset_minute]"
);
const DATE_24H: &[FormatItem<'static>] = format_description!(
    "[month]/[day]/[year] [hour]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]"
);

/// `expires_on` as epoch seconds (number or string) or as the older App
/// Service date forms: "1/16/2020 5:24:12 AM +00:00" (Windows) and
/// "06/20/2019 02:57:58 +00:00" (Linux).
fn parse_expires_on(value: &StringOrNumber) -> Result<SystemTime, FetchError> {
    let secs = match value {
        StringOrNumber::Number(n) => *n,
        StringOrNumber::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(n) => n,
                Err(_) => OffsetDateTime::parse(s, DATE_12H)
                    .or_else(|_| OffsetDateTime::parse(s, DATE_24H))
                    .or_else(|_| PrimitiveDateTime::parse(s, DATE_24H).map(|d| d.assume_utc()))
                    .map_err(|_| FetchError::Malformed(format!("expires_on '{s}' is not a date")))?
                    .unix_timestamp(),
            }
        }
    };
    if secs <= 0 {
        return Err(FetchError::Malformed(format!(
            "expires_on {secs} is not a time"
        )));
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

#[derive(Deserialize, Default)]
struct RawError {
    error: Option<String>,
    error_description: Option<String>,
    message: Option<String>,
    #[serde(rename = "Message")]
    message_upper: Option<String>,
}

/// Sends a prepared token request and reads the answer into a token or a
/// classified [`FetchError`].
pub async fn send(
    request: reqwest::RequestBuilder,
    requested: &str,
    now: SystemTime,
) -> Result<AccessToken, FetchError> {
    let response = request.send().await.map_err(|e| FetchError::Transport {
        connect: e.is_connect(),
        timed_out: e.is_timeout(),
        message: transport_message(&e),
    })?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let body = identity_gateway_core::http::read_capped(response, MAX_BODY, "identity endpoint")
        .await
        .map_err(|e| FetchError::Malformed(e.to_string()))?;
    if status == 200 {
        return parse_token(&body, requested, now);
    }
    let raw: RawError = serde_json::from_slice(&body).unwrap_or_default();
    let description = raw
        .error_description
        .or(raw.message)
        .or(raw.message_upper)
        .or_else(|| {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            (!text.is_empty()).then(|| text.chars().take(300).collect())
        });
    Err(FetchError::Status {
        status,
        retry_after,
        code: raw.error,
        description,
    })
}

fn transport_message(err: &reqwest::Error) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn imds_all_string_fields() {
        let body = br#"{"access_token":"eyJ0","client_id":"b84e","expires_in":"85726","expires_on":"1702288265","ext_expires_in":"86399","not_before":"1702201565","resource":"https://vault.azure.net","token_type":"Bearer"}"#;
        let token = parse_token(body, "https://vault.azure.net", at(0)).unwrap();
        assert_eq!(token.secret(), "eyJ0");
        assert_eq!(token.expires_on, at(1702288265));
        assert_eq!(token.token_type, "Bearer");
    }

    #[test]
    fn numeric_and_date_shaped_expiry() {
        let n = parse_token(
            br#"{"access_token":"t","expires_on":1586984735}"#,
            "r",
            at(0),
        )
        .unwrap();
        assert_eq!(n.expires_on, at(1586984735));
        let win = parse_token(
            br#"{"access_token":"t","expires_on":"1/16/2020 5:24:12 AM +00:00"}"#,
            "r",
            at(0),
        )
        .unwrap();
        assert_eq!(win.expires_on, at(1579152252));
        let linux = parse_token(
            br#"{"access_token":"t","expires_on":"06/20/2019 02:57:58 +00:00"}"#,
            "r",
            at(0),
        )
        .unwrap();
        assert_eq!(linux.expires_on, at(1560999478));
        let only_in = parse_token(
            br#"{"access_token":"t","expires_in":"3600"}"#,
            "r",
            at(1000),
        )
        .unwrap();
        assert_eq!(only_in.expires_on, at(4600));
    }

    #[test]
    fn resource_is_the_callers_exact_string() {
        let t = parse_token(
            br#"{"access_token":"t","expires_on":"5","resource":"https://x/"}"#,
            "https://x",
            at(0),
        )
        .unwrap();
        assert_eq!(t.resource, "https://x");
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for body in [
            &b"not json"[..],
            b"{}",
            br#"{"access_token":""}"#,
            br#"{"access_token":"t","expires_on":"soon"}"#,
            br#"{"access_token":"t","expires_on":"-4"}"#,
        ] {
            assert!(matches!(
                parse_token(body, "r", at(0)),
                Err(FetchError::Malformed(_))
            ));
        }
    }

    #[test]
    fn debug_never_prints_the_token() {
        let t = parse_token(
            br#"{"access_token":"SECRET-JWT","expires_on":"5"}"#,
            "r",
            at(0),
        )
        .unwrap();
        assert!(!format!("{t:?}").contains("SECRET-JWT"));
    }
}

/// Properties of the token-answer parser shared by IMDS, App Service and
/// the legacy extension (bounded runs: 512 cases).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn field() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just("\"t\"".to_string()),
            Just("\"\"".to_string()),
            Just("null".to_string()),
            Just("-1".to_string()),
            Just("18446744073709551616".to_string()),
            Just("\"99999999999999999999\"".to_string()),
            Just("\"1/16/2020 5:24:12 AM +00:00\"".to_string()),
            Just("\"13/45/2020 25:61:61 +99:99\"".to_string()),
            Just("1586984735".to_string()),
            Just("{}".to_string()),
            "\"[ -~]{0,12}\"",
            "-?[0-9]{1,21}",
        ];
        let name = prop_oneof![
            Just("access_token"),
            Just("expires_on"),
            Just("expires_in"),
            Just("token_type"),
            Just("resource"),
            Just("other"),
        ];
        (name, value).prop_map(|(n, v)| format!("\"{n}\":{v}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn token_answers_parse_or_fail_cleanly(fields in proptest::collection::vec(field(), 0..6)) {
            let body = format!("{{{}}}", fields.join(","));
            if let Ok(token) = parse_token(body.as_bytes(), "r", UNIX_EPOCH) {
                prop_assert!(!token.secret().is_empty(), "{}", body);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_token(&body, "r", UNIX_EPOCH);
        }
    }
}
