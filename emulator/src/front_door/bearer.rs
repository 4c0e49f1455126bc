//! Bearer tokens at a fake's front door: reading `Authorization: Bearer`,
//! verifying the token against the emulator's [`TokenAuthority`] (signature,
//! issuer, audience, lifetime), and noting what was presented for the
//! request log ([`TokenSeen`]).
//!
//! It owns the check, not the answer: a refusal comes back as a
//! [`BearerRefusal`], and each fake renders it with its own status code,
//! error body and `WWW-Authenticate` challenge
//! ([`with_challenge`] adds the header). It never logs or stores a token.

use std::time::SystemTime;

use axum::{
    http::{header, HeaderMap, HeaderValue},
    response::Response,
};

use crate::authority::{Claims, TokenAuthority, VerifyError};

/// Why a request did not get past the bearer check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerRefusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not visible ASCII text.
    Unreadable,
    /// Another scheme (`SharedKey`, `Basic`, ...), or no scheme at all
    /// (`scheme` is then empty).
    OtherScheme { scheme: String },
    /// `Bearer` with no token after it.
    EmptyToken,
    /// A token the authority refused: foreign signature, wrong audience,
    /// expired or not yet valid.
    Rejected(VerifyError),
}

impl BearerRefusal {
    /// True when the request carried no bearer token at all (no header,
    /// another scheme, or an empty token): the "missing token" answers.
    pub fn no_token(&self) -> bool {
        !matches!(self, BearerRefusal::Rejected(_))
    }
}

/// What the request log keeps about a presented token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSeen {
    /// An `Authorization: Bearer <token>` header was present.
    pub bearer: bool,
    /// The `aud` of a token the authority signed (also when refused for its
    /// audience).
    pub audience: Option<String>,
    /// The `oid` of an accepted token.
    pub oid: Option<String>,
}

/// The token of an `Authorization: Bearer <token>` header (scheme
/// case-insensitive, as Azure accepts; the token trimmed).
pub fn presented(headers: &HeaderMap) -> Result<&str, BearerRefusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(BearerRefusal::Missing);
    };
    let Ok(value) = value.to_str() else {
        return Err(BearerRefusal::Unreadable);
    };
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(BearerRefusal::EmptyToken)
            } else {
                Ok(token)
            }
        }
        Some((scheme, _)) => Err(BearerRefusal::OtherScheme {
            scheme: scheme.to_string(),
        }),
        None => Err(BearerRefusal::OtherScheme {
            scheme: String::new(),
        }),
    }
}

/// Verifies `token` for any of `audiences` now, noting what it carried in
/// `seen`.
pub fn verify(
    authority: &TokenAuthority,
    token: &str,
    audiences: &[&str],
    seen: &mut TokenSeen,
) -> Result<Claims, VerifyError> {
    seen.bearer = true;
    match authority.verify_any(token, audiences, SystemTime::now()) {
        Ok(claims) => {
            seen.audience = Some(claims.aud.clone());
            seen.oid = Some(claims.oid.clone());
            Ok(claims)
        }
        Err(e) => {
            if let VerifyError::WrongAudience { actual, .. } = &e {
                seen.audience = Some(actual.clone());
            }
            Err(e)
        }
    }
}

/// [`presented`] then [`verify`]: the whole check for fakes with nothing to
/// test in between.
pub fn authenticate(
    authority: &TokenAuthority,
    headers: &HeaderMap,
    audiences: &[&str],
    seen: &mut TokenSeen,
) -> Result<Claims, BearerRefusal> {
    let token = presented(headers)?;
    verify(authority, token, audiences, seen).map_err(BearerRefusal::Rejected)
}

/// Adds a `WWW-Authenticate` challenge to a fake's refusal.
pub fn with_challenge(mut response: Response, challenge: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::front_door::testing::{Kit, OID};

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), Err(BearerRefusal::Missing));
        headers.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(presented(&headers), Ok("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(
            presented(&headers),
            Err(BearerRefusal::OtherScheme {
                scheme: "Basic".into()
            })
        );
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(presented(&headers), Err(BearerRefusal::EmptyToken));
        headers.insert("authorization", "garbage".parse().unwrap());
        assert!(presented(&headers).unwrap_err().no_token());
    }

    #[test]
    fn verification_notes_audience_and_oid() {
        let kit = Kit::new();
        let token = kit.token_for(OID, "https://vault.azure.net");
        let mut seen = TokenSeen::default();
        let claims = verify(
            &kit.authority,
            &token,
            &["https://vault.azure.net"],
            &mut seen,
        )
        .expect("valid token");
        assert_eq!(claims.oid, OID);
        assert_eq!(seen.oid.as_deref(), Some(OID));

        let mut seen = TokenSeen::default();
        let refusal = verify(
            &kit.authority,
            &token,
            &["https://storage.azure.com"],
            &mut seen,
        )
        .unwrap_err();
        assert!(matches!(refusal, VerifyError::WrongAudience { .. }));
        assert!(seen.bearer);
        assert_eq!(seen.audience.as_deref(), Some("https://vault.azure.net"));
        assert_eq!(seen.oid, None);
    }
}
