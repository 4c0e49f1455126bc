//! Fault scripts: failures a test queues ("answer 429 with `Retry-After: 1`
//! twice, then behave"), consumed one per request in order, and the
//! `Retry-After` header they carry.
//!
//! [`FaultScript`] is generic over what a fault says: the data-plane fakes
//! share [`Fault`] (a status and a `Retry-After`) and render its body in
//! their own error shape; ARM's faults also carry an error code and message,
//! IMDS's scripted answers an optional raw body. Latency and rate limits
//! stay with the one fake (IMDS) that emulates them.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::Response,
};

use super::lock;

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

    /// The fault's status, or `fallback` when it is not a valid HTTP status.
    pub fn status_code(&self, fallback: StatusCode) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(fallback)
    }

    /// `response` (the fake's error for [`status_code`](Self::status_code))
    /// with this fault's `Retry-After`.
    pub fn finish(&self, response: Response) -> Response {
        with_retry_after(response, self.retry_after)
    }
}

/// Failures consumed one per request, in order; clones share one script.
#[derive(Debug)]
pub struct FaultScript<F = Fault> {
    queue: Arc<Mutex<VecDeque<F>>>,
}

impl<F> Clone for FaultScript<F> {
    fn clone(&self) -> Self {
        Self {
            queue: Arc::clone(&self.queue),
        }
    }
}

impl<F> Default for FaultScript<F> {
    fn default() -> Self {
        Self {
            queue: Arc::default(),
        }
    }
}

impl<F> FaultScript<F> {
    /// Appends failures for the next requests.
    pub fn push(&self, faults: impl IntoIterator<Item = F>) {
        lock(&self.queue).extend(faults);
    }

    /// The failure for this request, if one is scripted.
    pub fn next(&self) -> Option<F> {
        lock(&self.queue).pop_front()
    }

    /// Failures not used yet.
    pub fn remaining(&self) -> usize {
        lock(&self.queue).len()
    }
}

/// Adds `Retry-After: <secs>` to a fault's answer, when it has one.
pub fn with_retry_after(mut response: Response, retry_after_secs: Option<u64>) -> Response {
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
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
}
