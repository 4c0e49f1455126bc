//! The audit log, bounded: caller, RPC, target, identity, outcome (and a
//! detail such as the SAS permissions granted). Targets are names
//! and URLs without query strings, truncated to [`MAX_TARGET_CHARS`] and
//! escaped (no control characters, quotes or newlines from a caller reach
//! the log); never tokens, secrets or signatures.
//!
//! Every denial, failure and call that went upstream is a line of its own.
//! Grants served from the token cache, and calls refused by a caller's
//! rate or concurrency limit, are counted instead and written as one line
//! per (caller, RPC, target, outcome) per interval with a `count`, so a
//! caller hammering the gateway cannot turn the log into its weapon.
//!
//! Every operation passes here exactly once, so the call counters and the
//! latency histogram ([`ServiceMetrics`]) are recorded here too: for every
//! call, aggregated ones included.

use std::{
    borrow::Cow,
    fmt::Write as _,
    hash::{Hash, Hasher},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use hashbrown::{Equivalent, HashMap};

use identity_gateway_core::GatewayError;

use crate::{
    admission::CallerId, context::CallContext, metrics::ServiceMetrics, validate::IdentityRef,
};

/// Longest target written, in characters; longer ones are cut and say how
/// many bytes were left out.
pub(crate) const MAX_TARGET_CHARS: usize = 256;
/// Most aggregated keys held between flushes; past it the counts are
/// written at once.
const MAX_PENDING: usize = 4096;
/// How often aggregated counts are written.
pub(crate) const AGGREGATE_INTERVAL: Duration = Duration::from_secs(10);

/// Aggregated counts waiting to be written.
#[derive(Debug, Default)]
pub(crate) struct Audit {
    pending: Mutex<HashMap<Key, Pending>>,
}

/// An aggregated line: target and identity as they will be written
/// (bounded and escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    caller: CallerId,
    rpc: &'static str,
    target: Box<str>,
    identity: Box<str>,
    outcome: &'static str,
}

/// [`Key`] borrowed, to count a call without allocating when its line is
/// already pending (the hot path of a cached GetToken). Hashes as the
/// [`Key`] it matches.
#[derive(Debug, Hash)]
struct KeyRef<'a> {
    caller: CallerId,
    rpc: &'static str,
    target: &'a str,
    identity: &'a str,
    outcome: &'static str,
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            caller: self.caller,
            rpc: self.rpc,
            target: &self.target,
            identity: &self.identity,
            outcome: self.outcome,
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.caller == key.caller
            && self.rpc == key.rpc
            && self.outcome == key.outcome
            && self.target == &*key.target
            && self.identity == &*key.identity
    }
}

#[derive(Debug)]
struct Pending {
    /// The caller as first seen in the interval (with its pid).
    caller: String,
    count: u64,
    message: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Audit {
    /// An audit with a task writing the aggregated counts every `interval`
    /// (when a runtime is there to run it) for as long as the audit lives.
    pub(crate) fn start(interval: Duration) -> Arc<Self> {
        let audit = Arc::new(Self::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak: Weak<Self> = Arc::downgrade(&audit);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(audit) = weak.upgrade() else { break };
                    audit.flush();
                }
            });
        }
        audit
    }

    /// One line for the outcome of one operation (under the `audit` target).
    pub(crate) fn record<T>(
        &self,
        metrics: &ServiceMetrics,
        ctx: &CallContext,
        rpc: &'static str,
        target: &str,
        identity: &IdentityRef,
        outcome: &Result<T, GatewayError>,
    ) {
        self.record_with(metrics, ctx, rpc, target, identity, None, outcome);
    }

    /// [`record`](Self::record) with a `detail` field (GetServiceSas: the
    /// SAS permissions and expiry granted, or asked for when refused).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record_with<T>(
        &self,
        metrics: &ServiceMetrics,
        ctx: &CallContext,
        rpc: &'static str,
        target: &str,
        identity: &IdentityRef,
        detail: Option<&str>,
        outcome: &Result<T, GatewayError>,
    ) {
        let code = match outcome {
            Ok(_) => "OK",
            Err(error) => error.code_name(),
        };
        metrics.call(rpc, ctx.transport, code, ctx.started.elapsed());
        if let Err(GatewayError::Throttled(message)) = outcome {
            if message.contains("limits.per_caller") {
                self.count(
                    ctx,
                    rpc,
                    target,
                    identity,
                    "ResourceExhausted",
                    Some(message),
                );
                return;
            }
        }
        self.line(
            ctx,
            rpc,
            target,
            identity,
            detail,
            outcome.as_ref().map(|_| ()),
        );
    }

    /// One line for an open stream the caller policy ended (the policy in
    /// force no longer grants it: see WatchToken), written like any other
    /// denial with `detail` saying the stream was open. The call itself
    /// was counted when it opened, so no call metric here.
    pub(crate) fn stream_denied(
        &self,
        ctx: &CallContext,
        rpc: &'static str,
        target: &str,
        identity: &IdentityRef,
        error: &GatewayError,
    ) {
        self.line(
            ctx,
            rpc,
            target,
            identity,
            Some("open stream ended"),
            Err(error),
        );
    }

    /// Writes one line (under the `audit` target).
    fn line(
        &self,
        ctx: &CallContext,
        rpc: &'static str,
        target: &str,
        identity: &IdentityRef,
        detail: Option<&str>,
        outcome: Result<(), &GatewayError>,
    ) {
        let caller = &ctx.peer;
        let target = bounded(target);
        let detail = detail.map(bounded);
        let detail = detail.as_deref();
        match outcome {
            Ok(()) => {
                tracing::info!(target: "audit", %caller, rpc, %target, %identity, detail, outcome = "ok")
            }
            Err(error) => tracing::info!(
                target: "audit",
                %caller,
                rpc,
                %target,
                %identity,
                detail,
                outcome = error.code_name(),
                message = %bounded(&error.to_string())
            ),
        }
    }

    /// A grant served from the cache: counted, written with the interval's
    /// count.
    pub(crate) fn cached_grant(
        &self,
        metrics: &ServiceMetrics,
        ctx: &CallContext,
        rpc: &'static str,
        target: &str,
        identity: &IdentityRef,
    ) {
        metrics.call(rpc, ctx.transport, "OK", ctx.started.elapsed());
        self.count(ctx, rpc, target, identity, "ok", None);
    }

    fn count(
        &self,
        ctx: &CallContext,
        rpc: &'static str,
        target: &str,
        identity: &IdentityRef,
        outcome: &'static str,
        message: Option<&str>,
    ) {
        if !tracing::enabled!(target: "audit", tracing::Level::INFO) {
            return;
        }
        let target = bounded_cow(target);
        let identity = match identity {
            IdentityRef::Default => Cow::Borrowed("system"),
            named => Cow::Owned(bounded(&named.to_string())),
        };
        let key = KeyRef {
            caller: CallerId::of(&ctx.peer),
            rpc,
            target: &target,
            identity: &identity,
            outcome,
        };
        let full = {
            let mut pending = lock(&self.pending);
            match pending.get_mut(&key) {
                Some(entry) => entry.count += 1,
                None => {
                    let key = Key {
                        caller: key.caller,
                        rpc,
                        target: key.target.into(),
                        identity: key.identity.into(),
                        outcome,
                    };
                    let entry = Pending {
                        caller: ctx.peer.to_string(),
                        count: 1,
                        message: message.map(bounded),
                    };
                    pending.insert(key, entry);
                }
            }
            pending.len() >= MAX_PENDING
        };
        if full {
            self.flush();
        }
    }

    /// Writes the aggregated counts.
    pub(crate) fn flush(&self) {
        let pending = std::mem::take(&mut *lock(&self.pending));
        for (key, p) in pending {
            let Pending {
                caller,
                count,
                message,
            } = p;
            let (rpc, target, identity, outcome) = (key.rpc, key.target, key.identity, key.outcome);
            match message {
                None => {
                    tracing::info!(target: "audit", %caller, rpc, %target, %identity, outcome, cached = true, count)
                }
                Some(message) => {
                    tracing::info!(target: "audit", %caller, rpc, %target, %identity, outcome, count, reason = %message)
                }
            }
        }
    }
}

impl Drop for Audit {
    fn drop(&mut self) {
        self.flush();
    }
}

/// `raw` fit for one log field: at most [`MAX_TARGET_CHARS`] characters,
/// control characters, quotes and backslashes escaped.
pub(crate) fn bounded(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_TARGET_CHARS + 32));
    for (chars, (i, c)) in raw.char_indices().enumerate() {
        if chars >= MAX_TARGET_CHARS {
            let _ = write!(out, "…(+{} bytes)", raw.len() - i);
            break;
        }
        out.extend(c.escape_debug());
    }
    out
}

/// [`bounded`] without the copy when `raw` is already fit to write: short
/// enough, and printable ASCII that `escape_debug` leaves as it is.
fn bounded_cow(raw: &str) -> Cow<'_, str> {
    let plain = raw.len() <= MAX_TARGET_CHARS
        && raw
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\'));
    if plain {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(bounded(raw))
    }
}

/// A caller-supplied URL as an audit target: scheme, host, port and path
/// only (no credentials, query or fragment, where SAS signatures and the
/// like would sit), or a placeholder when it does not parse.
pub(crate) fn url_target(raw: &str) -> String {
    match url::Url::parse(raw.trim()) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_targets_drop_credentials_queries_and_fragments() {
        assert_eq!(
            url_target("https://user:pw@acct.dfs.core.windows.net/fs?sig=abc#x"),
            "https://acct.dfs.core.windows.net/fs"
        );
        assert_eq!(
            url_target("https://v.vault.azure.net/"),
            "https://v.vault.azure.net"
        );
        assert_eq!(url_target("sig=abc"), "(not a URL)");
    }

    #[test]
    fn targets_are_truncated_and_escaped() {
        let long = "a".repeat(4 * 1024 * 1024);
        let b = bounded(&long);
        assert!(b.len() < MAX_TARGET_CHARS + 40, "{}", b.len());
        assert!(
            b.ends_with(&format!("…(+{} bytes)", long.len() - MAX_TARGET_CHARS)),
            "{b}"
        );
        assert_eq!(bounded("x\ny\"z\u{1b}"), "x\\ny\\\"z\\u{1b}");
    }

    proptest::proptest! {
        #[test]
        fn plain_targets_are_written_as_bounded_would_write_them(raw in "(?s).{0,300}|[ -~]{0,300}") {
            let (cow, copy) = (bounded_cow(&raw), bounded(&raw));
            proptest::prop_assert_eq!(cow.as_ref(), copy.as_str());
        }
    }

    #[test]
    fn a_pending_line_is_found_from_its_borrowed_key() {
        use std::hash::BuildHasher;
        let key = Key {
            caller: CallerId::Uid(1000),
            rpc: "GetToken",
            target: "https://vault.azure.net".into(),
            identity: "system".into(),
            outcome: "ok",
        };
        let hasher = hashbrown::DefaultHashBuilder::default();
        let borrowed = key.as_ref();
        assert_eq!(hasher.hash_one(&key), hasher.hash_one(&borrowed));
        assert!(borrowed.equivalent(&key));
        let other = KeyRef {
            outcome: "ResourceExhausted",
            ..key.as_ref()
        };
        assert!(!other.equivalent(&key));
        let mut pending = HashMap::new();
        pending.insert(key.clone(), 1u64);
        assert_eq!(pending.get(&borrowed), Some(&1));
        assert_eq!(pending.get(&other), None);
    }
}
