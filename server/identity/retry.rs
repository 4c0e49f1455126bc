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
    /// Longest wait between two 410 retries: IMDS comes back at some point
    /// inside the window, and a caller should get its token soon after, not
    /// one doubled backoff later.
    pub gone_max_delay: Duration,
    /// What one attempt is given before the caller's deadline: a retry is
    /// scheduled so that it starts at least this long before the deadline
    /// (the last one is moved earlier to fit, never dropped while it can).
    pub attempt_room: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            gone_window: Duration::from_secs(70),
            gone_max_delay: Duration::from_secs(5),
            attempt_room: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// Decides after failure number `attempt` (0-based) with `elapsed` since the
    /// first try and `budget` left before the caller's deadline. `jitter` in
    /// [0, 1) spreads retries of many keys apart.
    ///
    /// A wait the endpoint asked for (`Retry-After`) is honoured exactly, as
    /// long as the attempt after it still fits before the deadline; a backoff
    /// of our own that would overrun is shortened so the last attempt lands
    /// inside the deadline (and, for 410, inside the 70 s window).
    pub fn decide(
        &self,
        attempt: u32,
        error: &FetchError,
        elapsed: Duration,
        budget: Option<Duration>,
        jitter: f64,
    ) -> Decision {
        let backoff = |cap: Duration| {
            let exp = self.base_delay.saturating_mul(1u32 << attempt.min(16));
            let jittered = exp.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5);
            jittered.min(cap)
        };
        // The latest a retry may start: room for the attempt before the
        // caller's deadline.
        let mut latest = budget.map(|left| left.saturating_sub(self.attempt_room));
        let (delay, asked) = match error {
            FetchError::Status {
                status: 410,
                retry_after,
                ..
            } => {
                let window = self.gone_window.saturating_sub(elapsed);
                latest = Some(latest.map_or(window, |l| l.min(window)));
                match retry_after {
                    Some(ra) => (*ra, true),
                    None => (backoff(self.gone_max_delay), false),
                }
            }
            FetchError::Status {
                status,
                retry_after,
                ..
            } if *status == 404 || *status == 429 || (500..600).contains(status) => {
                if attempt >= self.max_retries {
                    return Decision::GiveUp;
                }
                match retry_after {
                    Some(ra) => (*ra, true),
                    None => (backoff(self.max_delay), false),
                }
            }
            FetchError::Transport {
                connect: false,
                timed_out: true,
                ..
            } => {
                if attempt >= self.max_retries {
                    return Decision::GiveUp;
                }
                (backoff(self.max_delay), false)
            }
            // Connection refused or unroutable: no endpoint is there. Saying so
            // at once beats 30 s of backoff against nothing.
            FetchError::Transport { .. }
            | FetchError::Status { .. }
            | FetchError::Malformed(_)
            | FetchError::Rejected(_) => return Decision::GiveUp,
        };
        match latest {
            None => Decision::Retry(delay),
            Some(latest) if delay <= latest => Decision::Retry(delay),
            // The endpoint asked for more time than is left: coming back
            // sooner would only be throttled again.
            Some(_) if asked => Decision::GiveUp,
            Some(latest) if latest.is_zero() => Decision::GiveUp,
            Some(latest) => Decision::Retry(latest),
        }
    }
}

/// How long a token request was tried before its final failure, for the
/// caller's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tried {
    pub attempts: u32,
    pub elapsed: Duration,
}

impl std::fmt::Display for Tried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.attempts == 1 { "" } else { "s" };
        write!(
            f,
            "{} attempt{s} over {:.1} s",
            self.attempts,
            self.elapsed.as_secs_f64()
        )
    }
}

/// What the endpoint last answered, in a form fit for a caller-facing
/// message (no token, no body beyond the error code and description).
pub fn describe(error: &FetchError, source: &str) -> String {
    match error {
        FetchError::Status {
            status,
            code,
            retry_after,
            ..
        } => {
            let mut s = format!("{source} answered {status}");
            if let Some(code) = code {
                s.push(' ');
                s.push_str(code);
            }
            if let Some(ra) = retry_after {
                s.push_str(&format!(" with Retry-After {} s", ra.as_secs()));
            }
            s
        }
        FetchError::Transport { message, .. } => format!("{source} did not answer ({message})"),
        FetchError::Malformed(m) => format!("{source} answered garbage: {m}"),
        FetchError::Rejected(e) => e.to_string(),
    }
}

/// Turns the last failure into what the caller sees.
pub fn final_error(
    error: FetchError,
    tried: Tried,
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
            "{source} at {endpoint} did not answer in time ({message}; {tried})"
        )),
        FetchError::Transport { message, .. } => GatewayError::Unavailable(format!(
            "cannot reach {source} at {endpoint} ({message}): is this an Azure VM with a managed \
             identity enabled? Off Azure there is no {source}; on a VM, {not_enabled}"
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
            let retried = if tried.attempts > 1 {
                format!(" ({tried})")
            } else {
                String::new()
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
                429 => GatewayError::Throttled(format!("{detail}; still throttled after {tried}")),
                410 => GatewayError::Unavailable(format!("{detail}; {source} is upgrading and was retried for {tried}; it should be back within 70 s of the first 410")),
                _ => GatewayError::Unavailable(format!("{detail}{retried}")),
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
    fn retry_after_is_honoured_while_the_next_attempt_fits() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(0, &status(429, Some(7)), Duration::ZERO, None, 0.0),
            Decision::Retry(Duration::from_secs(7))
        );
        // Exactly what was asked, not a larger backoff of our own.
        assert_eq!(
            p.decide(4, &status(429, Some(2)), Duration::ZERO, None, 0.0),
            Decision::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(
                4,
                &status(429, Some(2)),
                Duration::ZERO,
                Some(Duration::from_secs(3)),
                0.0
            ),
            Decision::Retry(Duration::from_secs(2))
        );
        // Asked to wait longer than the deadline leaves: stop now.
        assert_eq!(
            p.decide(
                0,
                &status(429, Some(10)),
                Duration::ZERO,
                Some(Duration::from_secs(8)),
                0.0
            ),
            Decision::GiveUp
        );
    }

    #[test]
    fn a_backoff_that_would_overrun_is_shortened_so_the_last_attempt_fits() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.decide(
                3,
                &status(503, None),
                Duration::ZERO,
                Some(Duration::from_secs(5)),
                0.0
            ),
            Decision::Retry(Duration::from_millis(4500))
        );
        assert_eq!(
            p.decide(
                3,
                &status(503, None),
                Duration::ZERO,
                Some(Duration::from_millis(500)),
                0.0
            ),
            Decision::GiveUp
        );
    }

    #[test]
    fn gone_is_retried_until_the_deadline_with_short_waits() {
        let p = RetryPolicy::default();
        let gone = status(410, None);
        // 410 is not bound by max_retries, and its waits stay short.
        assert_eq!(
            p.decide(20, &gone, Duration::from_secs(10), None, 0.9),
            Decision::Retry(Duration::from_secs(5))
        );
        // The last attempt is moved to land inside the 70 s window...
        assert_eq!(
            p.decide(9, &gone, Duration::from_secs(67), None, 0.0),
            Decision::Retry(Duration::from_secs(3))
        );
        assert_eq!(
            p.decide(9, &gone, Duration::from_secs(70), None, 0.0),
            Decision::GiveUp
        );
        // ...and inside the caller's deadline.
        assert_eq!(
            p.decide(
                9,
                &gone,
                Duration::from_secs(27),
                Some(Duration::from_secs(3)),
                0.0
            ),
            Decision::Retry(Duration::from_millis(2500))
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
    fn gone_for_twenty_seconds_is_outlasted_within_thirty() {
        // The schedule a 30 s caller gets while IMDS answers 410 for 20 s.
        let p = RetryPolicy::default();
        let deadline = Duration::from_secs(30);
        let mut elapsed = Duration::ZERO;
        let mut attempt = 0;
        while elapsed < Duration::from_secs(20) {
            match p.decide(
                attempt,
                &status(410, None),
                elapsed,
                Some(deadline - elapsed),
                0.99,
            ) {
                Decision::Retry(d) => elapsed += d,
                Decision::GiveUp => panic!("gave up at {elapsed:?}"),
            }
            attempt += 1;
        }
        assert!(elapsed < Duration::from_secs(26), "{elapsed:?}");
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
            Tried::default(),
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
