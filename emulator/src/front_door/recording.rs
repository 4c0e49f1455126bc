//! Request recording: every fake keeps a [`RequestLog`] of the requests it
//! answered, so a test can assert what reached it (method, path, query,
//! which token, what status). The log is generic over the record: the
//! bearer-checking data-plane fakes (Key Vault, ADLS Gen1/Gen2) share
//! [`RecordedRequest`]; IMDS, ARM and Blob keep protocol-specific records
//! (identity headers, request bodies, SAS kinds) in the same log.
//!
//! A record never holds a token, a secret or a SAS signature.

use std::sync::{Arc, Mutex};

use axum::http::{Method, Uri};

use super::{bearer::TokenSeen, lock};

/// One request as a bearer-checking data-plane fake saw it.
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
    /// The record of a request answered with `status`, and what its token
    /// carried.
    pub fn new(method: &Method, uri: &Uri, seen: TokenSeen, status: u16) -> Self {
        Self {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or_default().to_string(),
            bearer: seen.bearer,
            audience: seen.audience,
            oid: seen.oid,
            status,
        }
    }

    /// The decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The requests a fake has answered, in order; clones share one log.
#[derive(Debug)]
pub struct RequestLog<R = RecordedRequest> {
    entries: Arc<Mutex<Vec<R>>>,
    /// Records kept at most; later requests are served but not recorded.
    capacity: usize,
}

impl<R> Clone for RequestLog<R> {
    fn clone(&self) -> Self {
        Self {
            entries: Arc::clone(&self.entries),
            capacity: self.capacity,
        }
    }
}

impl<R> Default for RequestLog<R> {
    fn default() -> Self {
        Self::with_capacity(usize::MAX)
    }
}

impl<R> RequestLog<R> {
    /// A log that keeps the first `capacity` records, so a long `--emulator`
    /// session cannot grow it without bound.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: Arc::default(),
            capacity,
        }
    }

    /// Records `request`; returns its index, or `None` when the log is full.
    pub fn push(&self, request: R) -> Option<usize> {
        let mut entries = lock(&self.entries);
        let index = entries.len();
        (index < self.capacity).then(|| {
            entries.push(request);
            index
        })
    }

    /// Changes the record at `index` (e.g. its status once answered).
    pub fn update(&self, index: usize, change: impl FnOnce(&mut R)) {
        if let Some(record) = lock(&self.entries).get_mut(index) {
            change(record);
        }
    }

    /// How many recorded requests satisfy `pred`.
    pub fn count(&self, pred: impl Fn(&R) -> bool) -> usize {
        lock(&self.entries).iter().filter(|r| pred(r)).count()
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

impl<R: Clone> RequestLog<R> {
    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Vec<R> {
        lock(&self.entries).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_log_serves_but_stops_recording() {
        let log = RequestLog::<u16>::with_capacity(2);
        assert_eq!(log.push(1), Some(0));
        assert_eq!(log.push(2), Some(1));
        assert_eq!(log.push(3), None);
        log.update(1, |r| *r = 20);
        assert_eq!(log.snapshot(), vec![1, 20]);
        assert_eq!(log.count(|r| *r > 1), 1);
    }
}
