//! What a failed token request means and whether to try again: IMDS guidance
//! (retry 404, 429, 5xx and timeouts with exponential backoff and jitter,
//! honouring Retry-After; 410 means "upgrading, back within 70 s"; 400, 401
//! and 403 are final) and the mapping of a final failure to a caller-facing
//! [`GatewayError`].

use std::time::Duration;

use super::IdentitySelector;
use identity_gateway_core::error::GatewayError;

/// One failed request to an identity endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The endpoint answered with a non-200 status.
    Status {
        status: u16,
        retry_after: Option<Duration>,
        /// The `error` code of IMDS-style bodies.
        code: Option<String>,
        /// `error_description` / `message`; shown to callers, never branched on
        /// except for IMDS's documented "Identity not found" wording.
        description: Option<String>,
    },
    /// No HTTP answer: refused, unreachable, timed out.
    Transport {
        connect: bool,
        timed_out: bool,
        message: String,
    },
    /// A 200 whose body is not a token.
    Malformed(String),
    /// Refused before sending (e.g. a selector the source cannot express).
    Rejected(GatewayError),
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop and report the failure.
    GiveUp,
}

/// The retry policy for identity endpoints.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries of 404/429/5xx/timeouts.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub base_delay: Duration,
    /// Longest single wait.
    pub max_delay: Duration,
    /// How long 410 ("IMDS upgrading") is retried.
    pub gone_window: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            gone_window: Duration::from_secs(70),
        }
    }
}

impl RetryPolicy {
    /// Decides after failure number `attempt` (0-based) with `elapsed` since the
    /// first try and `budget` left before the caller's deadline. `jitter` in
    /// [0, 1) spreads retries of many keys apart.
    pub fn decide(
        &self,
        attempt: u32,
        error: &FetchError,
        elapsed: Duration,
        budget: Option<Duration>,
        jitter: f64,
    ) -> Decision {
        let backoff = || {
            let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
            let jittered = exp.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5);
            jittered.min(self.max_delay)
        };
        let delay = match error {
            FetchError::Status {
                status: 410,
                retry_after,
                ..
            } => {
                let delay = retry_after.unwrap_or_else(backoff).min(self.max_delay);
                if elapsed + delay > self.gone_window {
                    return Decision::GiveUp;
                }
                delay
            }
            FetchError::Status {
                status,
                retry_after,
                ..
            } if *status == 404 || *status == 429 || (500..600).contains(status) => {
                if attempt >= self.max_retries {
                    return Decision::GiveUp;
                }
                // Retry-After is a floor: never come back sooner than asked.
                retry_after.map_or_else(backoff, |ra| ra.max(backoff()).min(self.max_delay.max(ra)))
            }
            FetchError::Transport {
                connect: false,
                timed_out: true,
                ..
            } => {
                if attempt >= self.max_retries {
                    return Decision::GiveUp;
                }
                backoff()
            }
            // Connection refused or unroutable: no endpoint is there. Saying so
            // at once beats 30 s of backoff against nothing.
            FetchError::Transport { .. }
            | FetchError::Status { .. }
            | FetchError::Malformed(_)
            | FetchError::Rejected(_) => return Decision::GiveUp,
        };
        match budget {
            Some(left) if delay >= left => Decision::GiveUp,
            _ => Decision::Retry(delay),
        }
    }
}

/// Turns the last failure into what the caller sees.
pub fn final_error(
    error: FetchError,
    source: &str,
    endpoint: &str,
    selector: &IdentitySelector,
    resource: &str,
) -> GatewayError {
    let not_enabled = format!(
        "the VM's managed identity may not be enabled, or the {selector} is not assigned to this VM \
         (portal: the VM's Identity blade; CLI: `az vm identity assign`)"
    );
    match error {
        FetchError::Rejected(e) => e,
        FetchError::Malformed(m) => {
            GatewayError::Upstream(format!("{source} answered garbage: {m}"))
        }
        FetchError::Transport {
            timed_out: true,
            connect: false,
            message,
        } => GatewayError::Unavailable(format!(
            "{source} at {endpoint} did not answer in time ({message})"
        )),
        FetchError::Transport { message, .. } => GatewayError::Unavailable(format!(
            "cannot reach {source} at {endpoint} ({message}); is this an Azure VM? {not_enabled}"
        )),
        FetchError::Status {
            status,
            code,
            description,
            ..
        } => {
            let description = description.unwrap_or_default();
            let detail = match &code {
                Some(code) => format!("{source} answered {status} {code}: {description}"),
                None => format!("{source} answered {status}: {description}"),
            };
            let lower = description.to_ascii_lowercase();
            match status {
                400 if code.as_deref() == Some("invalid_resource") || lower.contains("aadsts500011") => {
                    GatewayError::invalid("resource", format!("'{resource}' is not a resource Azure AD knows ({detail})"))
                }
                400 if lower.contains("multiple user assigned identities") => GatewayError::IdentityUnavailable(format!(
                    "{detail}. This VM has several user-assigned identities: set identity.client_id, object_id or resource_id"
                )),
                400 if lower.contains("identity not found")
                    || lower.contains("unable to load the proper managed identity") =>
                {
                    GatewayError::IdentityUnavailable(format!("{detail}. {not_enabled}"))
                }
                400 => GatewayError::invalid("resource", detail),
                401 | 403 => GatewayError::PermissionDenied(detail),
                429 => GatewayError::Throttled(format!("{detail} (still throttled after retries)")),
                410 => GatewayError::Unavailable(format!("{detail} ({source} is upgrading; try again within 70 s)")),
                _ => GatewayError::Unavailable(format!("{detail} (after retries)")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<u64>) -> FetchError {
        FetchError::Status {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            code: None,
            description: None,
        }
    }

    #[test]
    fn final_statuses_are_not_retried() {
        let p = RetryPolicy::default();
        for s in [400, 401, 403, 405] {
            assert_eq!(
                p.decide(0, &status(s, None), Duration::ZERO, None, 0.0),
                Decision::GiveUp,
                "{s}"
            );
        }
    }

    #[test]
    fn transient_statuses_back_off_exponentially_until_the_limit() {
        let p = RetryPolicy::default();
        for s in [404, 429, 500, 503] {
            assert_eq!(
                p.decide(0, &status(s, None), Duration::ZERO, None, 0.0),
                Decision::Retry(Duration::from_secs(1))
            );
            assert_eq!(
                p.decide(3, &status(s, None), Duration::ZERO, None, 0.0),
                Decision::Retry(Duration::from_secs(8))
            );
            assert_eq!(
                p.decide(5, &status(s, None), Duration::ZERO, None, 0.0),
                Decision::GiveUp
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(0, &status(429, Some(7)), Duration::ZERO, None, 0.0),
            Decision::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(4, &status(429, Some(2)), Duration::ZERO, None, 0.0),
            Decision::Retry(Duration::from_secs(16))
        );
    }

    #[test]
    fn gone_is_retried_for_seventy_seconds_within_the_deadline() {
        let p = RetryPolicy::default();
        let gone = status(410, None);
        assert!(matches!(
            p.decide(9, &gone, Duration::from_secs(10), None, 0.0),
            Decision::Retry(_)
        ));
        assert_eq!(
            p.decide(9, &gone, Duration::from_secs(69), None, 0.0),
            Decision::GiveUp
        );
        assert_eq!(
            p.decide(
                0,
                &gone,
                Duration::ZERO,
                Some(Duration::from_millis(500)),
                0.0
            ),
            Decision::GiveUp
        );
    }

    #[test]
    fn refused_connections_fail_fast_but_timeouts_retry() {
        let p = RetryPolicy::default();
        let refused = FetchError::Transport {
            connect: true,
            timed_out: false,
            message: "refused".into(),
        };
        let timeout = FetchError::Transport {
            connect: false,
            timed_out: true,
            message: "timeout".into(),
        };
        assert_eq!(
            p.decide(0, &refused, Duration::ZERO, None, 0.0),
            Decision::GiveUp
        );
        assert!(matches!(
            p.decide(0, &timeout, Duration::ZERO, None, 0.0),
            Decision::Retry(_)
        ));
    }

    #[test]
    fn identity_not_found_explains_how_to_enable_it() {
        let err = final_error(
            FetchError::Status {
                status: 400,
                retry_after: None,
                code: Some("invalid_request".into()),
                description: Some("Identity not found".into()),
            },
            "IMDS",
            "http://169.254.169.254",
            &IdentitySelector::ClientId("abc".into()),
            "https://vault.azure.net",
        );
        let GatewayError::IdentityUnavailable(msg) = err else {
            panic!("{err:?}")
        };
        assert!(
            msg.contains("not be enabled") && msg.contains("client_id=abc"),
            "{msg}"
        );
    }
}
