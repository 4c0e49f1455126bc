//! [`ManualClock`]: time that moves only when a test says so. Built only for
//! tests (`test-util` feature), never into the product.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::Clock;

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
