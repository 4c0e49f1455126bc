//! Retrying a data-plane request that Azure throttled (429) or that hit a
//! passing server error (500, 502, 503, 504): a bounded number of retries,
//! waiting what `Retry-After` says (else an exponential backoff), never past
//! the caller's deadline, sleeping only through the injected [`Clock`].
//!
//! It returns the last response whatever its status, so each service maps
//! its own error bodies; it decides only whether to try again.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use reqwest::StatusCode;

use super::http::{retry_after, transport_error};
use crate::{clock::Clock, error::GatewayError};

/// The longest wait the gateway accepts from `Retry-After`; asking for more
/// ends the retries (the caller gets RESOURCE_EXHAUSTED at once instead of a
/// call that hangs for minutes).
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// How a data-plane call retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryLimits {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff when no `Retry-After` is given; doubles each retry.
    pub base_backoff: Duration,
}

impl Default for RetryLimits {
    fn default() -> Self {
        Self {
            max_retries: 3,
            base_backoff: Duration::from_millis(500),
        }
    }
}

/// The final answer and how many attempts it took.
#[derive(Debug)]
pub struct Answer {
    pub response: reqwest::Response,
    pub attempts: u32,
}

/// Statuses worth another attempt.
pub fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// Sends with `send` until the answer is not [`retryable`], the retries run
/// out, the next wait would pass `deadline`, or Azure asks to wait longer
/// than [`MAX_WAIT`]. Transport failures are not retried here (the shared
/// client already has connect and request timeouts).
pub async fn send_with_retry<F, Fut>(
    clock: &dyn Clock,
    limits: RetryLimits,
    deadline: Option<Instant>,
    upstream: &str,
    mut send: F,
) -> Result<Answer, GatewayError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<reqwest::Response, reqwest::Error>>,
{
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let response = send().await.map_err(|e| transport_error(upstream, &e))?;
        let status = response.status();
        if !retryable(status) || attempts > limits.max_retries {
            return Ok(Answer { response, attempts });
        }
        let backoff = limits
            .base_backoff
            .saturating_mul(1u32 << (attempts - 1).min(16));
        let wait = retry_after(response.headers()).unwrap_or(backoff);
        let past_deadline = deadline.is_some_and(|d| clock.now() + wait >= d);
        if wait > MAX_WAIT || past_deadline {
            return Ok(Answer { response, attempts });
        }
        tracing::debug!(upstream, %status, ?wait, attempts, "retrying a throttled upstream call");
        // Free the connection before waiting.
        drop(response);
        clock.sleep(wait).await;
    }
}
