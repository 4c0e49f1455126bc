//! Injected time. The token cache and retry loop read time and sleep only
//! through [`Clock`], so tests drive expiry and refresh with [`ManualClock`]
//! while the network around them runs in real time.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::future::BoxFuture;
use tokio::sync::watch;

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

/// A clock that moves only when told: [`ManualClock::advance`] moves it and
/// wakes scheduled sleepers. Backoff sleeps ([`Clock::sleep`]) return at once,
/// moving the clock by their length, and are recorded so tests can check them.
#[derive(Clone)]
pub struct ManualClock {
    start: Instant,
    start_wall: SystemTime,
    offset: Arc<watch::Sender<Duration>>,
    backoffs: Arc<Mutex<Vec<Duration>>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("offset", &*self.offset.borrow())
            .finish()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_wall: SystemTime::now(),
            offset: Arc::new(watch::channel(Duration::ZERO).0),
            backoffs: Arc::default(),
        }
    }

    /// Moves time forward and wakes every sleeper whose instant has come.
    pub fn advance(&self, by: Duration) {
        self.offset.send_modify(|offset| *offset += by);
    }

    /// The backoff sleeps taken so far, in order.
    pub fn backoffs(&self) -> Vec<Duration> {
        self.backoffs.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.borrow()
    }
    fn wall(&self) -> SystemTime {
        self.start_wall + *self.offset.borrow()
    }
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        if let Ok(mut backoffs) = self.backoffs.lock() {
            backoffs.push(duration);
        }
        self.advance(duration);
        Box::pin(async {})
    }
    fn sleep_until(&self, deadline: Instant) -> BoxFuture<'static, ()> {
        let mut rx = self.offset.subscribe();
        let start = self.start;
        Box::pin(async move {
            loop {
                if start + *rx.borrow_and_update() >= deadline {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The clock is gone: nothing will ever wake this sleeper.
                    futures::future::pending::<()>().await;
                }
            }
        })
    }
}
