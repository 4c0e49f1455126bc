//! The upstream governor: at most N requests in flight and R requests per
//! second to the identity endpoint (IMDS allows 5 and 20 per VM), with cold
//! misses served before background refreshes.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, Semaphore};

use identity_gateway_core::clock::Clock;

/// Who is asking: a caller waiting for a token, or a refresh nobody waits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Foreground,
    Background,
}

/// Shared by every request to the identity endpoint.
#[derive(Debug)]
pub struct Governor {
    in_flight: Arc<Semaphore>,
    interval: Duration,
    next_slot: Mutex<Option<Instant>>,
    foreground_waiting: AtomicUsize,
    foreground_done: Notify,
    clock: Arc<dyn Clock>,
}

/// Held while a request is in flight.
#[derive(Debug)]
pub struct Permit {
    _in_flight: OwnedSemaphorePermit,
}

impl Governor {
    pub fn new(max_concurrent: usize, max_per_second: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_concurrent.max(1))),
            // 10% headroom: the endpoint counts arrivals, which jitter.
            interval: Duration::from_millis(1100) / max_per_second.max(1),
            next_slot: Mutex::new(None),
            foreground_waiting: AtomicUsize::new(0),
            foreground_done: Notify::new(),
            clock,
        }
    }

    /// Waits for a concurrency slot and a rate slot. Background requests wait
    /// while any foreground request is queued.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        match priority {
            Priority::Foreground => {
                self.foreground_waiting.fetch_add(1, Ordering::SeqCst);
                let permit = self.acquire_slots().await;
                if self.foreground_waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.foreground_done.notify_waiters();
                }
                permit
            }
            Priority::Background => loop {
                let notified = self.foreground_done.notified();
                if self.foreground_waiting.load(Ordering::SeqCst) == 0 {
                    let permit = self.acquire_slots().await;
                    // Foreground callers that queued meanwhile go first: hand
                    // the slot over and wait for them.
                    if self.foreground_waiting.load(Ordering::SeqCst) == 0 {
                        return permit;
                    }
                    drop(permit);
                    continue;
                }
                notified.await;
            },
        }
    }

    async fn acquire_slots(&self) -> Permit {
        let permit = Arc::clone(&self.in_flight)
            .acquire_owned()
            .await
            .expect("the governor's semaphore is never closed");
        // Even spacing (no bursts): the n-th request in a second starts no
        // sooner than n/R seconds in, so no 1-second window exceeds R.
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = self.clock.now();
            let slot = match *next {
                Some(at) if at > now => at,
                _ => now,
            };
            *next = Some(slot + self.interval);
            slot
        };
        let wait = slot.saturating_duration_since(self.clock.now());
        if !wait.is_zero() {
            self.clock.sleep(wait).await;
        }
        Permit { _in_flight: permit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity_gateway_core::clock::SystemClock;

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_in_any_second() {
        let governor = Arc::new(Governor::new(5, 20, Arc::new(SystemClock)));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..60 {
            let g = Arc::clone(&governor);
            tasks.push(tokio::spawn(async move {
                let _permit = g.acquire(Priority::Foreground).await;
                tokio::time::Instant::now() - start
            }));
        }
        let mut starts = Vec::new();
        for t in tasks {
            starts.push(t.await.unwrap());
        }
        starts.sort();
        for window in starts.windows(21) {
            assert!(
                window[20] - window[0] >= Duration::from_millis(999),
                "{window:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_concurrency_limit() {
        let governor = Arc::new(Governor::new(5, 1000, Arc::new(SystemClock)));
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (g, active, peak) = (
                Arc::clone(&governor),
                Arc::clone(&active),
                Arc::clone(&peak),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = g.acquire(Priority::Foreground).await;
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                active.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn background_waits_for_queued_foreground() {
        let governor = Arc::new(Governor::new(1, 1000, Arc::new(SystemClock)));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = governor.acquire(Priority::Foreground).await;
        let mut tasks = Vec::new();
        for (i, p) in [
            (0, Priority::Background),
            (1, Priority::Foreground),
            (2, Priority::Foreground),
        ] {
            let (g, order) = (Arc::clone(&governor), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _permit = g.acquire(p).await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            tokio::task::yield_now().await;
        }
        drop(hold);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 0]);
    }
}
