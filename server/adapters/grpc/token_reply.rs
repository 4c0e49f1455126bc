//! The wire form of a token (`GetTokenResponse`, the reply of GetToken and
//! each message of WatchToken), written straight from the cache's
//! [`AccessToken`].
//!
//! The generated type owns its strings, so every cached GetToken copied the
//! token (~1.5 KB, past the allocator's per-thread cache) into a message of
//! its own, and freed it once encoded: 2 % of the gateway's CPU at 256
//! callers (BENCHMARKS.md). `build.rs` maps the message to this type instead
//! (prost `extern_path`); it shares the cached token and its encoding reads
//! the strings in place. The bytes are those of the generated type, which a
//! unit test checks against the client's generated message.
//! The gateway only sends this message; decoding exists for completeness
//! (and the round-trip test).

use std::{sync::Arc, time::UNIX_EPOCH};

use identity_gateway_core::AccessToken;
use prost::{
    bytes::{Buf, BufMut},
    encoding::{
        self, encode_key, encode_varint, encoded_len_varint, key_len, skip_field, DecodeContext,
        WireType,
    },
    DecodeError, Message,
};
use secrecy::SecretString;

const ACCESS_TOKEN: u32 = 1;
const TOKEN_TYPE: u32 = 2;
const EXPIRES_ON: u32 = 3;
const RESOURCE: u32 = 4;

/// `GetTokenResponse`: a token, its type, expiry and audience. `Debug`
/// never prints the token ([`AccessToken`]'s own `Debug`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GetTokenResponse {
    /// The token, its type and audience; `None` for an empty message.
    token: Option<Arc<AccessToken>>,
    /// Kept apart from `token.expires_on` so a decoded message without an
    /// expiry encodes without one, like the generated type.
    expires_on: Option<prost_types::Timestamp>,
}

impl GetTokenResponse {
    /// The reply for `token`, sharing it.
    pub fn new(token: Arc<AccessToken>) -> Self {
        Self {
            expires_on: Some(super::convert::timestamp(token.expires_on)),
            token: Some(token),
        }
    }

    /// The bearer token (empty in an empty message).
    pub fn access_token(&self) -> &str {
        self.token.as_deref().map_or("", AccessToken::secret)
    }

    pub fn token_type(&self) -> &str {
        self.token.as_deref().map_or("", |t| &t.token_type)
    }

    pub fn expires_on(&self) -> Option<&prost_types::Timestamp> {
        self.expires_on.as_ref()
    }

    pub fn resource(&self) -> &str {
        self.token.as_deref().map_or("", |t| &t.resource)
    }

    /// The strings, to decode into (a copy if shared).
    fn token_mut(&mut self) -> &mut AccessToken {
        Arc::make_mut(self.token.get_or_insert_with(|| {
            Arc::new(AccessToken {
                token: SecretString::from(String::new()),
                token_type: String::new(),
                // Not on the wire: `expires_on` above is.
                expires_on: UNIX_EPOCH,
                resource: String::new(),
            })
        }))
    }
}

/// A proto3 `string` field from a borrowed `str` (prost's helpers take
/// `&String`); skipped when empty, as the generated type does.
fn encode_str(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

fn str_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(value.len() as u64) + value.len()
    }
}

impl Message for GetTokenResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        // Field order as generated: 1, 2, 3, 4.
        encode_str(ACCESS_TOKEN, self.access_token(), buf);
        encode_str(TOKEN_TYPE, self.token_type(), buf);
        if let Some(expires_on) = &self.expires_on {
            encoding::message::encode(EXPIRES_ON, expires_on, buf);
        }
        encode_str(RESOURCE, self.resource(), buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            ACCESS_TOKEN => {
                let mut value = String::new();
                encoding::string::merge(wire_type, &mut value, buf, ctx)?;
                self.token_mut().token = SecretString::from(value);
                Ok(())
            }
            TOKEN_TYPE => {
                encoding::string::merge(wire_type, &mut self.token_mut().token_type, buf, ctx)
            }
            EXPIRES_ON => encoding::message::merge(
                wire_type,
                self.expires_on.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            RESOURCE => {
                encoding::string::merge(wire_type, &mut self.token_mut().resource, buf, ctx)
            }
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        str_len(ACCESS_TOKEN, self.access_token())
            + str_len(TOKEN_TYPE, self.token_type())
            + str_len(RESOURCE, self.resource())
            + self
                .expires_on
                .as_ref()
                .map_or(0, |t| encoding::message::encoded_len(EXPIRES_ON, t))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use identity_gateway_client::proto as client;

    use super::*;

    fn token() -> Arc<AccessToken> {
        Arc::new(AccessToken {
            token: SecretString::from("eyJ0eXAiOiJKV1QifQ.e30.c2lnbmF0dXJl".to_string()),
            token_type: "Bearer".into(),
            expires_on: UNIX_EPOCH + Duration::from_secs(1_764_300_000),
            resource: "https://vault.azure.net".into(),
        })
    }

    #[test]
    fn encodes_as_the_generated_message() {
        let reply = GetTokenResponse::new(token());
        let generated = client::GetTokenResponse {
            access_token: "eyJ0eXAiOiJKV1QifQ.e30.c2lnbmF0dXJl".into(),
            token_type: "Bearer".into(),
            expires_on: Some(prost_types::Timestamp {
                seconds: 1_764_300_000,
                nanos: 0,
            }),
            resource: "https://vault.azure.net".into(),
        };
        assert_eq!(reply.encode_to_vec(), generated.encode_to_vec());
        assert_eq!(reply.encoded_len(), generated.encoded_len());
        // Empty fields are left out, as proto3 does.
        let partial = client::GetTokenResponse {
            access_token: "t".into(),
            ..Default::default()
        };
        let decoded = GetTokenResponse::decode(&partial.encode_to_vec()[..]).unwrap();
        assert_eq!(decoded.encode_to_vec(), partial.encode_to_vec());
        assert_eq!(decoded.expires_on(), None);
        assert!(GetTokenResponse::default().encode_to_vec().is_empty());
    }

    #[test]
    fn round_trips_and_shares_the_token() {
        let shared = token();
        let reply = GetTokenResponse::new(Arc::clone(&shared));
        assert_eq!(Arc::strong_count(&shared), 2, "the reply shares the token");
        let back = GetTokenResponse::decode(&reply.encode_to_vec()[..]).unwrap();
        assert_eq!(back.access_token(), shared.secret());
        assert_eq!(back.token_type(), "Bearer");
        assert_eq!(back.resource(), "https://vault.azure.net");
        assert_eq!(
            back.expires_on(),
            Some(&prost_types::Timestamp::from(shared.expires_on))
        );
        assert_eq!(back.encode_to_vec(), reply.encode_to_vec());
        // An unknown field (a newer peer) is skipped.
        let mut newer = reply.encode_to_vec();
        encoding::string::encode(9, &"later".to_string(), &mut newer);
        let back = GetTokenResponse::decode(&newer[..]).unwrap();
        assert_eq!(back.encode_to_vec(), reply.encode_to_vec());
    }

    #[test]
    fn debug_does_not_print_the_token() {
        let reply = GetTokenResponse::new(token());
        let shown = format!("{reply:?}");
        assert!(!shown.contains("eyJ0eXAi"), "{shown}");
        assert!(shown.contains("vault.azure.net"), "{shown}");
    }
}
