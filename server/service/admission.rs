//! Per-caller admission: before any work, each call takes a place in its
//! caller's rate (token bucket) and concurrency budget, and each WatchToken
//! stream a place among its caller's open watches. A caller past a limit
//! gets RESOURCE_EXHAUSTED naming the `[limits]` key; other callers are not
//! affected. Callers are told apart by uid on the Unix socket, by user SID
//! on the Windows pipe, by IP on loopback TCP and the identity endpoint.
//!
//! This module owns the counting only; the limits come from `[limits]`.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Instant,
};

use identity_gateway_core::GatewayError;
use identity_gateway_identity::governor::CallerKey;
use serde::Deserialize;

use crate::context::{CallContext, Peer, PeerId};

/// `[limits]`: what one caller may ask of the gateway, and the transport's
/// bounds (applied by the server around the operations).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Calls per second one caller may start (sustained).
    pub per_caller_rate: u32,
    /// Calls one caller may start at once after being idle.
    pub per_caller_burst: u32,
    /// Calls of one caller being served at the same time.
    pub per_caller_concurrency: usize,
    /// Open WatchToken streams per caller.
    pub per_caller_watches: usize,
    /// Largest request message accepted, in bytes (refused from its length
    /// prefix, before it is read).
    pub max_request_bytes: usize,
    /// Concurrent streams (calls) per connection.
    pub max_concurrent_streams: u32,
    /// Server-side timeout of a call (until its reply starts), whatever the
    /// caller's deadline.
    pub request_timeout_secs: u64,
    /// Open connections in total (Unix socket or Windows pipe, and TCP).
    pub max_connections: usize,
    /// Open connections per uid (Unix socket), user SID (Windows pipe) or
    /// IP (TCP).
    pub max_connections_per_caller: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            // Far above any real workload's cached-token rate (a whole
            // 2-core gateway serves ~30k/s): a cap on one caller's share of
            // the CPU, not a quota.
            per_caller_rate: 20_000,
            per_caller_burst: 40_000,
            per_caller_concurrency: 512,
            per_caller_watches: 64,
            max_request_bytes: 64 * 1024,
            max_concurrent_streams: 256,
            request_timeout_secs: 120,
            max_connections: 768,
            max_connections_per_caller: 256,
        }
    }
}

/// The per-caller counters.
pub(crate) struct Admission {
    config: LimitsConfig,
    /// Keyed with foldhash (hashbrown's default): looked up on every call.
    callers: Mutex<hashbrown::HashMap<CallerId, CallerState>>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Who a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CallerId {
    Uid(u32),
    /// A pipe caller's user SID, hashed (no allocation per call; a
    /// collision would only make two accounts share a budget).
    Account(u64),
    Ip(std::net::IpAddr),
    Unknown,
}

impl CallerId {
    pub(crate) fn of(peer: &Peer) -> Self {
        use std::hash::Hasher;
        match peer.peer_id() {
            PeerId::Uid(uid) => Self::Uid(uid),
            PeerId::Sid(sid) => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                // Windows writes SIDs in upper case; any other case is
                // another spelling of the same account.
                for b in sid.bytes() {
                    h.write_u8(b.to_ascii_uppercase());
                }
                Self::Account(h.finish())
            }
            PeerId::Ip(ip) => Self::Ip(ip),
            PeerId::Unknown => Self::Unknown,
        }
    }

    /// The caller's turn at the IMDS governor.
    pub(crate) fn fairness_key(self) -> CallerKey {
        use std::hash::{Hash, Hasher};
        match self {
            Self::Uid(uid) => CallerKey(u64::from(uid)),
            other => {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                other.hash(&mut h);
                // Above every uid, below the gateway's own key.
                CallerKey((h.finish() | (1 << 62)) & !(1 << 63))
            }
        }
    }
}

struct CallerState {
    tokens: f64,
    refilled: Instant,
    in_flight: usize,
    watches: usize,
}

/// A call's place in its caller's concurrency budget (or watch count),
/// given back on drop.
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    caller: CallerId,
    watch: bool,
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admitted")
            .field("caller", &self.caller)
            .finish()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut callers = lock(&self.admission.callers);
        if let Some(state) = callers.get_mut(&self.caller) {
            if self.watch {
                state.watches = state.watches.saturating_sub(1);
            } else {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Admission {
    pub(crate) fn new(config: LimitsConfig) -> Self {
        Self {
            config,
            callers: Mutex::new(hashbrown::HashMap::new()),
        }
    }

    /// A call of `ctx`'s caller: one token from its bucket and a
    /// concurrency place, or RESOURCE_EXHAUSTED naming the limit.
    pub(crate) fn admit(self: &Arc<Self>, ctx: &CallContext) -> Result<Admitted, GatewayError> {
        self.take(ctx, false)
    }

    /// A WatchToken stream of `ctx`'s caller, held while the stream is open.
    pub(crate) fn admit_watch(
        self: &Arc<Self>,
        ctx: &CallContext,
    ) -> Result<Admitted, GatewayError> {
        self.take(ctx, true)
    }

    fn take(self: &Arc<Self>, ctx: &CallContext, watch: bool) -> Result<Admitted, GatewayError> {
        let caller = CallerId::of(&ctx.peer);
        let c = &self.config;
        let now = Instant::now();
        let mut callers = lock(&self.callers);
        if callers.len() > 4096 {
            // Forget callers that are idle with a full bucket: nothing to remember.
            callers.retain(|_, s| {
                s.in_flight > 0
                    || s.watches > 0
                    || s.refill(c, now) < f64::from(c.per_caller_burst.max(1))
            });
        }
        let state = callers.entry(caller).or_insert_with(|| CallerState {
            tokens: f64::from(c.per_caller_burst.max(1)),
            refilled: now,
            in_flight: 0,
            watches: 0,
        });
        if watch {
            if state.watches >= c.per_caller_watches {
                return Err(GatewayError::Throttled(format!(
                    "{} WatchToken streams already open for this caller (limits.per_caller_watches); close one first",
                    state.watches
                )));
            }
            state.watches += 1;
        } else {
            if state.refill(c, now) < 1.0 {
                return Err(GatewayError::Throttled(format!(
                    "more than {} calls per second from this caller (limits.per_caller_rate, burst limits.per_caller_burst = {}); slow down",
                    c.per_caller_rate, c.per_caller_burst
                )));
            }
            if state.in_flight >= c.per_caller_concurrency {
                return Err(GatewayError::Throttled(format!(
                    "{} calls of this caller already in progress (limits.per_caller_concurrency)",
                    state.in_flight
                )));
            }
            state.tokens -= 1.0;
            state.in_flight += 1;
        }
        Ok(Admitted {
            admission: Arc::clone(self),
            caller,
            watch,
        })
    }
}

impl CallerState {
    /// Refills the bucket up to now and returns what it holds.
    fn refill(&mut self, c: &LimitsConfig, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        let burst = f64::from(c.per_caller_burst.max(1));
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * f64::from(c.per_caller_rate)).min(burst);
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Transport;

    fn ctx(uid: u32) -> CallContext {
        CallContext {
            peer: Peer {
                uid: Some(uid),
                gid: Some(uid),
                ..Peer::default()
            },
            transport: Transport::UnixSocket,
            budget: None,
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_caller_past_its_rate_is_refused_and_others_are_not() {
        let admission = Arc::new(Admission::new(LimitsConfig {
            per_caller_rate: 1,
            per_caller_burst: 3,
            ..LimitsConfig::default()
        }));
        for _ in 0..3 {
            drop(admission.admit(&ctx(1)).unwrap());
        }
        let err = admission.admit(&ctx(1)).unwrap_err();
        assert!(
            matches!(&err, GatewayError::Throttled(m) if m.contains("limits.per_caller_rate")),
            "{err}"
        );
        admission.admit(&ctx(2)).unwrap();
    }

    #[test]
    fn pipe_callers_are_told_apart_by_user_sid() {
        let pipe = |sid: &str| CallContext {
            peer: Peer {
                account: Some(Arc::new(crate::account::WindowsAccount {
                    user_sid: sid.into(),
                    group_sids: Vec::new(),
                })),
                ..Peer::default()
            },
            transport: Transport::NamedPipe,
            budget: None,
            started: std::time::Instant::now(),
        };
        let admission = Arc::new(Admission::new(LimitsConfig {
            per_caller_rate: 1,
            per_caller_burst: 1,
            ..LimitsConfig::default()
        }));
        drop(admission.admit(&pipe("S-1-5-21-1-2-3-1001")).unwrap());
        assert!(admission.admit(&pipe("s-1-5-21-1-2-3-1001")).is_err());
        admission.admit(&pipe("S-1-5-21-1-2-3-1002")).unwrap();
        let unread = CallContext {
            peer: Peer::default(),
            ..pipe("S-1-5-18")
        };
        admission.admit(&unread).unwrap();
    }

    #[test]
    fn concurrency_and_watches_are_given_back() {
        let admission = Arc::new(Admission::new(LimitsConfig {
            per_caller_concurrency: 2,
            per_caller_watches: 1,
            ..LimitsConfig::default()
        }));
        let a = admission.admit(&ctx(1)).unwrap();
        let _b = admission.admit(&ctx(1)).unwrap();
        let err = admission.admit(&ctx(1)).unwrap_err();
        assert!(
            err.to_string().contains("limits.per_caller_concurrency"),
            "{err}"
        );
        drop(a);
        admission.admit(&ctx(1)).unwrap();
        let w = admission.admit_watch(&ctx(1)).unwrap();
        let err = admission.admit_watch(&ctx(1)).unwrap_err();
        assert!(
            err.to_string().contains("limits.per_caller_watches"),
            "{err}"
        );
        drop(w);
        admission.admit_watch(&ctx(1)).unwrap();
    }
}
