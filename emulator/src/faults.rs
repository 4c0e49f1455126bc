//! What the data-plane fakes share for tests: a log of the requests that
//! reached them ([`RequestLog`]), scripted failures ([`FaultScript`]) such
//! as "answer 429 with `Retry-After: 1` twice, then behave", and who may pass
//! their authorization check ([`Grant`]).
//!
//! Both are cheap, lock-guarded lists; nothing here knows a wire protocol.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
};

/// One request as a fake saw it. Never holds the bearer token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The raw query string, empty when there was none.
    pub query: String,
    /// Whether an `Authorization: Bearer` header was present.
    pub bearer: bool,
    /// The `aud` of the presented token when it was signed by the emulator's
    /// authority (also for tokens rejected for their audience).
    pub audience: Option<String>,
    /// The `oid` of an accepted token.
    pub oid: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

impl RecordedRequest {
    /// The decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The requests a fake has answered, in order.
#[derive(Debug, Clone, Default)]
pub struct RequestLog {
    entries: Arc<Mutex<Vec<RecordedRequest>>>,
}

impl RequestLog {
    pub fn push(&self, request: RecordedRequest) {
        lock(&self.entries).push(request);
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Vec<RecordedRequest> {
        lock(&self.entries).clone()
    }

    /// How many requests were recorded.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        lock(&self.entries).clear();
    }
}

/// A scripted failure: the fake answers `status` (with the service's own
/// error body for that status) instead of serving the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub status: u16,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// 429 with `Retry-After: <secs>`.
    pub fn throttle(retry_after_secs: u64) -> Self {
        Self {
            status: 429,
            retry_after: Some(retry_after_secs),
        }
    }

    /// Any status without `Retry-After` (e.g. 503).
    pub fn status(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

/// Failures consumed one per authenticated request, in order.
#[derive(Debug, Clone, Default)]
pub struct FaultScript {
    queue: Arc<Mutex<VecDeque<Fault>>>,
}

impl FaultScript {
    /// Appends failures for the next requests.
    pub fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.queue).extend(faults);
    }

    /// The failure for this request, if one is scripted.
    pub fn next(&self) -> Option<Fault> {
        lock(&self.queue).pop_front()
    }

    /// Failures not used yet.
    pub fn remaining(&self) -> usize {
        lock(&self.queue).len()
    }
}

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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent even if a handler panicked mid-way
    // (every critical section is a single insert or read), so keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh `x-ms-request-id`.
pub(crate) fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The bearer token of an `Authorization` header, if it has the `Bearer`
/// scheme (case-insensitive, as Azure accepts).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_come_out_in_order_once() {
        let script = FaultScript::default();
        script.push([Fault::throttle(2), Fault::status(503)]);
        assert_eq!(script.next(), Some(Fault::throttle(2)));
        assert_eq!(script.remaining(), 1);
        assert_eq!(script.next(), Some(Fault::status(503)));
        assert_eq!(script.next(), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}

/// What the data-plane fakes' own tests share: an authority, a CA, a client
/// that trusts it, and tokens for a fixed principal.
#[cfg(test)]
pub(crate) mod testing {
    use std::{
        sync::Arc,
        time::{Duration, SystemTime},
    };

    use crate::{authority::Principal, tls::TestCa, TokenAuthority};

    pub(crate) const OID: &str = "6a8f3c2e-1111-4222-8333-944455556666";
    pub(crate) const OTHER_OID: &str = "0b0b0b0b-2222-4333-8444-955566667777";

    pub(crate) struct Kit {
        pub(crate) authority: Arc<TokenAuthority>,
        pub(crate) ca: TestCa,
        pub(crate) http: reqwest::Client,
    }

    impl Kit {
        pub(crate) fn new() -> Self {
            let ca = TestCa::generate(&["localhost", "127.0.0.1"]);
            let root = reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).unwrap();
            let http = reqwest::Client::builder()
                .no_proxy()
                .add_root_certificate(root)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            Self {
                authority: Arc::new(TokenAuthority::generate(
                    "dc822496-97fa-4380-991a-c8b4ba5d4f73",
                )),
                ca,
                http,
            }
        }

        /// A token for `audience` minted for `oid`.
        pub(crate) fn token_for(&self, oid: &str, audience: &str) -> String {
            let principal = Principal {
                client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
                object_id: oid.into(),
                mirid: "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/vm".into(),
            };
            self.authority
                .mint(
                    &principal,
                    audience,
                    SystemTime::now(),
                    Duration::from_secs(3600),
                )
                .0
        }

        /// A token for `audience` that expired an hour ago.
        pub(crate) fn expired_token(&self, audience: &str) -> String {
            let principal = Principal {
                client_id: "b84e06d3-aba1-4bcc-9626-2e0d76cba2ce".into(),
                object_id: OID.into(),
                mirid: "/subscriptions/s".into(),
            };
            self.authority
                .mint(
                    &principal,
                    audience,
                    SystemTime::now() - Duration::from_secs(7200),
                    Duration::from_secs(3600),
                )
                .0
        }
    }
}
