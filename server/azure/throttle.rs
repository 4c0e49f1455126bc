//! Sending one upstream request (ARM, Storage) with retries on throttling
//! (429, Storage's 503 ServerBusy) and transient failures (500, 502, 504,
//! timeouts), honouring `Retry-After` and the caller's deadline. Waits go
//! through the injected clock, so tests with a manual clock do not sleep.
//!
//! It returns the last response whatever its status: mapping a final 429 or
//! 5xx to a [`GatewayError`] is the caller's job, since only the caller knows
//! the upstream's error body format.
//!
//! Every attempt is counted in `upstream_requests` (by service and status)
//! and every retry in `upstream_retries`, here, once for all clients.

use std::time::Duration;

use super::http::{retry_after, transport_error};
use crate::{error::GatewayError, Upstream};
use identity_gateway_core::metrics::{service_label, transport_status};

/// Retries after the first attempt.
const MAX_RETRIES: u32 = 3;
/// First backoff without Retry-After; doubles each retry.
const BASE_DELAY: Duration = Duration::from_millis(500);
/// A Retry-After longer than this is not waited for: the caller gets
/// RESOURCE_EXHAUSTED at once and can decide.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Upper bound on one streamed download when the caller set no deadline
/// (reqwest cannot switch its whole-request timeout off per request).
pub const MAX_STREAM_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How the caller will consume the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUse {
    /// Read whole (JSON, XML): the request, body included, must finish within
    /// `upstream.request_timeout_secs` (and the caller's deadline).
    Buffered,
    /// Streamed (blob downloads): only the response headers must arrive within
    /// `upstream.request_timeout_secs`; the body is bounded by the caller's
    /// deadline (or [`MAX_STREAM_DURATION`]); stalls are the reader's to detect.
    Streamed,
}

/// Sends the request `build` makes (called once per attempt) and retries as
/// described in the module docs. `upstream` names the service in messages.
pub async fn send_with_retry(
    up: &Upstream,
    budget: Option<Duration>,
    upstream: &str,
    body_use: BodyUse,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, GatewayError> {
    let started = up.clock.now();
    let request_timeout = Duration::from_secs(up.config.request_timeout_secs);
    let mut attempt = 0u32;
    let service = service_label(upstream);
    loop {
        let remaining = match budget {
            Some(budget) => {
                let left = budget.saturating_sub(up.clock.now().saturating_duration_since(started));
                if left.is_zero() {
                    return Err(deadline(upstream));
                }
                Some(left)
            }
            None => None,
        };
        let header_timeout = remaining.map_or(request_timeout, |r| r.min(request_timeout));
        let request = match body_use {
            BodyUse::Buffered => build().timeout(header_timeout),
            BodyUse::Streamed => build().timeout(remaining.unwrap_or(MAX_STREAM_DURATION)),
        };
        let sent = tokio::time::timeout(header_timeout, request.send()).await;
        let backoff = BASE_DELAY.saturating_mul(1 << attempt.min(8));
        let status_label = match &sent {
            Ok(Ok(response)) => response.status().as_str().to_string(),
            Ok(Err(err)) => transport_status(err).to_string(),
            Err(_) => "timeout".to_string(),
        };
        up.metrics.request(&service, &status_label);
        let delay = match sent {
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                if !matches!(status, 429 | 500 | 502 | 503 | 504) || attempt >= MAX_RETRIES {
                    return Ok(response);
                }
                // Retry-After is a floor: never come back sooner than asked.
                let delay = retry_after(response.headers()).map_or(backoff, |ra| ra.max(backoff));
                if delay > MAX_DELAY || remaining.is_some_and(|r| delay >= r) {
                    return Ok(response);
                }
                tracing::debug!(
                    upstream,
                    status,
                    ?delay,
                    attempt,
                    "retrying upstream request"
                );
                delay
            }
            Ok(Err(err)) if !err.is_timeout() => return Err(transport_error(upstream, &err)),
            // A timeout: reqwest's own, or no headers within `header_timeout`.
            Ok(Err(_)) | Err(_) => {
                if remaining.is_some_and(|r| r <= request_timeout) {
                    return Err(deadline(upstream));
                }
                if attempt >= MAX_RETRIES {
                    return Err(GatewayError::Unavailable(format!(
                        "{upstream} did not answer within {}s ({} attempts)",
                        request_timeout.as_secs(),
                        attempt + 1
                    )));
                }
                backoff
            }
        };
        up.metrics.retry(&service, &status_label);
        up.clock.sleep(delay).await;
        attempt += 1;
    }
}

fn deadline(upstream: &str) -> GatewayError {
    GatewayError::DeadlineExceeded(format!(
        "{upstream} did not answer within the caller's deadline"
    ))
}

/// An upstream's error text made safe for a caller-facing message: the first
/// line only (Storage appends request ids and times), no control characters,
/// at most 1024 characters.
pub fn sanitize_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    let mut clean: String = first.chars().filter(|c| !c.is_control()).collect();
    if clean.chars().count() > 1024 {
        clean = clean.chars().take(1024).collect::<String>() + "…";
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{blob, testing};
    use futures::StreamExt;
    use identity_gateway_core::{clock::ManualClock, http::UpstreamConfig};
    use std::sync::Arc;

    /// A loopback server answering 1200 bytes in 4 pieces, 400 ms apart:
    /// 1.2 s in all, longer than a 1 s `request_timeout_secs`.
    async fn slow_server() -> identity_gateway_emulator::http::RunningServer {
        let router = axum::Router::new().route(
            "/blob",
            axum::routing::get(|| async {
                let pieces = futures::stream::iter(0..4u8).then(|i| async move {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                    Ok::<_, std::io::Error>(bytes::Bytes::from(vec![i; 300]))
                });
                axum::body::Body::from_stream(pieces)
            }),
        );
        identity_gateway_emulator::http::serve_http(router, 0)
            .await
            .unwrap()
    }

    fn one_second_state() -> Upstream {
        let config = UpstreamConfig {
            request_timeout_secs: 1,
            ..UpstreamConfig::default()
        };
        testing::upstream(config, &ManualClock::new(), Arc::new(testing::NoTokens))
    }

    #[tokio::test]
    async fn streamed_bodies_are_not_cut_by_the_whole_request_timeout() {
        let server = slow_server().await;
        let up = one_second_state();
        let url = format!("{}/blob", server.base_url());

        let response = send_with_retry(&up, None, "test", BodyUse::Streamed, || up.http.get(&url))
            .await
            .unwrap();
        let mut body = blob::chunked_for_tests(response, Duration::from_secs(1));
        let mut received = Vec::new();
        while let Some(chunk) = body.next().await {
            received.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(received.len(), 1200);
        assert_eq!(received[1199], 3);

        // The same body read as a buffered answer hits the 1 s limit.
        let response = send_with_retry(&up, None, "test", BodyUse::Buffered, || up.http.get(&url))
            .await
            .unwrap();
        assert!(response.bytes().await.is_err());
    }

    #[test]
    fn messages_are_trimmed_to_one_clean_line() {
        assert_eq!(
            sanitize_message("The specified blob does not exist.\nRequestId:abc\nTime:2026"),
            "The specified blob does not exist."
        );
        assert_eq!(sanitize_message("a\u{7}b"), "ab");
        assert_eq!(sanitize_message(&"x".repeat(5000)).chars().count(), 1025);
    }
}
