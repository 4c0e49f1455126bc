//! Injected time. The token cache and retry loop read time and sleep only
//! through [`Clock`], so tests drive expiry and refresh with `ManualClock` (feature `test-util`)
//! while the network around them runs in real time.

use std::{
    fmt,
    time::{Duration, Instant, SystemTime},
};

use futures::future::BoxFuture;

#[cfg(any(test, feature = "test-util"))]
mod manual;
#[cfg(any(test, feature = "test-util"))]
pub use manual::ManualClock;

/// A source of monotonic and wall time, and of sleeps.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now (to turn a token's `expires_on` into a monotonic deadline).
    fn wall(&self) -> SystemTime;
    /// A short relative wait (retry backoff).
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
    /// Waits until a scheduled instant (refresh-ahead).
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()>;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}
