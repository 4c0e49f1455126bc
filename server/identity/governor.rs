//! The upstream governor: at most N requests in flight and R requests per
//! second to the identity endpoint (IMDS allows 5 and 20 per VM), shared
//! fairly:
//!
//! - a refresh of a token close to expiry ([`Priority::Urgent`]) goes first
//!   and has one concurrency slot reserved for it, so no flood of cold
//!   requests can let a token in use expire;
//! - callers waiting for a token ([`Priority::Foreground`]) are served
//!   round-robin by [`CallerKey`], so one caller's queue cannot starve
//!   another's;
//! - refreshes with time to spare ([`Priority::Background`]) use capacity
//!   nobody else is waiting for.
//!
//! A waiter that is dropped before its turn (its callers gave up) never
//! takes a slot: the queue skips it.
//!
//! Its queue (per priority), in-flight count and waits are reported
//! through [`IdentityMetrics`].

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use identity_gateway_core::clock::Clock;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::IdentityMetrics;

/// Whose work a request is: requests of one key share one turn in the
/// round-robin (a uid, a TCP address, or the gateway's own upstream calls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CallerKey(pub u64);

impl CallerKey {
    /// The gateway's own upstream calls (Key Vault, Storage, SQL tokens).
    pub const GATEWAY: CallerKey = CallerKey(u64::MAX);
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A caller waiting for a token.
    Foreground(CallerKey),
    /// A refresh nobody waits on, with time to spare.
    Background,
    /// A refresh of a token close to expiry.
    Urgent,
}

/// Shared by every request to the identity endpoint.
#[derive(Clone)]
pub struct Governor {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    interval: Duration,
    next_slot: tokio::sync::Mutex<Option<Instant>>,
    clock: Arc<dyn Clock>,
    metrics: IdentityMetrics,
}

struct Queue {
    free: usize,
    /// Slots only urgent refreshes may take.
    reserved: usize,
    urgent: VecDeque<oneshot::Sender<Permit>>,
    foreground: HashMap<CallerKey, VecDeque<oneshot::Sender<Permit>>>,
    /// Callers with queued work, in round-robin order.
    turns: VecDeque<CallerKey>,
    background: VecDeque<oneshot::Sender<Permit>>,
}

impl fmt::Debug for Governor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = lock(&self.shared.queue);
        f.debug_struct("Governor")
            .field("free", &q.free)
            .field("urgent_waiting", &q.urgent.len())
            .field("callers_waiting", &q.turns.len())
            .field("background_waiting", &q.background.len())
            .finish()
    }
}

/// Held while a request is in flight; dropping it hands the slot to the
/// next waiter.
pub struct Permit {
    shared: Option<Arc<Shared>>,
    /// The `governor_in_flight` gauge, once the request is in flight.
    in_flight: Option<Gauge>,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Permit")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gauge) = self.in_flight.take() {
            gauge.dec();
        }
        if let Some(shared) = self.shared.take() {
            let mut q = lock(&shared.queue);
            q.free += 1;
            q.dispatch(&shared);
        }
    }
}

/// One request in the queue, for the `governor_waiting` gauge.
struct Waiting(Gauge);

impl Waiting {
    fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Await-free, panic-free critical sections: the state stays consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Queue {
    /// Whether `priority` may take a free slot at once (nobody it must let
    /// go first is waiting).
    fn may_take(&self, priority: Priority) -> bool {
        match priority {
            Priority::Urgent => self.free > 0,
            Priority::Foreground(_) => {
                self.free > self.reserved && self.urgent.is_empty() && self.turns.is_empty()
            }
            Priority::Background => {
                self.free > self.reserved
                    && self.urgent.is_empty()
                    && self.turns.is_empty()
                    && self.background.is_empty()
            }
        }
    }

    fn push(&mut self, priority: Priority, waiter: oneshot::Sender<Permit>) {
        match priority {
            Priority::Urgent => self.urgent.push_back(waiter),
            Priority::Background => {
                self.background.retain(|w| !w.is_closed());
                self.background.push_back(waiter);
            }
            Priority::Foreground(caller) => {
                let queue = self.foreground.entry(caller).or_default();
                queue.retain(|w| !w.is_closed());
                if queue.is_empty() && !self.turns.contains(&caller) {
                    self.turns.push_back(caller);
                }
                queue.push_back(waiter);
            }
        }
    }

    /// The next live waiter allowed a slot now, if any.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<Permit>> {
        if self.free == 0 {
            return None;
        }
        while let Some(w) = self.urgent.pop_front() {
            if !w.is_closed() {
                return Some(w);
            }
        }
        if self.free <= self.reserved {
            return None;
        }
        while let Some(caller) = self.turns.pop_front() {
            let Some(queue) = self.foreground.get_mut(&caller) else {
                continue;
            };
            let mut found = None;
            while let Some(w) = queue.pop_front() {
                if !w.is_closed() {
                    found = Some(w);
                    break;
                }
            }
            if queue.iter().any(|w| !w.is_closed()) {
                self.turns.push_back(caller);
            } else {
                self.foreground.remove(&caller);
            }
            if found.is_some() {
                return found;
            }
        }
        while let Some(w) = self.background.pop_front() {
            if !w.is_closed() {
                return Some(w);
            }
        }
        None
    }

    /// Hands free slots to waiters.
    fn dispatch(&mut self, shared: &Arc<Shared>) {
        while let Some(waiter) = self.next_waiter() {
            self.free -= 1;
            let permit = Permit {
                shared: Some(Arc::clone(shared)),
                in_flight: None,
            };
            if let Err(mut permit) = waiter.send(permit) {
                // The waiter left between the check and the send: keep the
                // slot (without re-entering this lock) and try the next.
                permit.shared = None;
                self.free += 1;
            }
        }
    }
}

impl Governor {
    pub fn new(max_concurrent: usize, max_per_second: u32, clock: Arc<dyn Clock>) -> Self {
        Self::with_metrics(
            max_concurrent,
            max_per_second,
            clock,
            IdentityMetrics::default(),
        )
    }

    /// A governor that reports its queue and waits to `metrics`.
    pub fn with_metrics(
        max_concurrent: usize,
        max_per_second: u32,
        clock: Arc<dyn Clock>,
        metrics: IdentityMetrics,
    ) -> Self {
        let max = max_concurrent.max(1);
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    free: max,
                    reserved: usize::from(max > 1),
                    urgent: VecDeque::new(),
                    foreground: HashMap::new(),
                    turns: VecDeque::new(),
                    background: VecDeque::new(),
                }),
                // 10% headroom: the endpoint counts arrivals, which jitter.
                interval: Duration::from_millis(1100) / max_per_second.max(1),
                next_slot: tokio::sync::Mutex::new(None),
                clock,
                metrics,
            }),
        }
    }

    /// Waits for a concurrency slot (in the order the module docs describe)
    /// and then a rate slot. Dropping the future before it resolves gives
    /// up the place in the queue; no slot is taken.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        let label = match priority {
            Priority::Urgent => "urgent",
            Priority::Foreground(_) => "foreground",
            Priority::Background => "background",
        };
        let metrics = &self.shared.metrics;
        // Counted down on drop, so a caller that stops waiting leaves no trace.
        let waiting = Waiting::new(metrics.waiting(label));
        let started = self.shared.clock.now();
        let mut permit = self.acquire_slots(priority).await;
        drop(waiting);
        let waited = self.shared.clock.now().saturating_duration_since(started);
        metrics.waited(label, waited.as_secs_f64());
        let gauge = metrics.in_flight().clone();
        gauge.inc();
        permit.in_flight = Some(gauge);
        permit
    }

    async fn acquire_slots(&self, priority: Priority) -> Permit {
        let waiting = {
            let mut q = lock(&self.shared.queue);
            if q.may_take(priority) {
                q.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                q.push(priority, tx);
                Some(rx)
            }
        };
        let permit = match waiting {
            None => Permit {
                shared: Some(Arc::clone(&self.shared)),
                in_flight: None,
            },
            Some(rx) => rx
                .await
                .expect("the governor keeps every queued waiter until it hands it a slot"),
        };
        // Even spacing (no bursts): the n-th request in a second starts no
        // sooner than n/R seconds in, so no 1-second window exceeds R.
        let slot = {
            let mut next = self.shared.next_slot.lock().await;
            let now = self.shared.clock.now();
            let slot = match *next {
                Some(at) if at > now => at,
                _ => now,
            };
            *next = Some(slot + self.shared.interval);
            slot
        };
        let wait = slot.saturating_duration_since(self.shared.clock.now());
        if !wait.is_zero() {
            self.shared.clock.sleep(wait).await;
        }
        permit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity_gateway_core::clock::SystemClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_in_any_second() {
        let governor = Arc::new(Governor::new(5, 20, Arc::new(SystemClock)));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..60 {
            let g = Arc::clone(&governor);
            tasks.push(tokio::spawn(async move {
                let _permit = g.acquire(Priority::Foreground(CallerKey(0))).await;
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
                let _permit = g.acquire(Priority::Foreground(CallerKey(0))).await;
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                active.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // One of the five is kept for urgent refreshes.
        assert_eq!(peak.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn background_waits_for_queued_foreground() {
        let governor = Arc::new(Governor::new(1, 1000, Arc::new(SystemClock)));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = governor.acquire(Priority::Foreground(CallerKey(0))).await;
        let mut tasks = Vec::new();
        for (i, p) in [
            (0, Priority::Background),
            (1, Priority::Foreground(CallerKey(1))),
            (2, Priority::Foreground(CallerKey(2))),
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

    /// Runs `waiters` (in queue order) against a governor with one slot held
    /// and returns the order they were served in.
    async fn served_order(max: usize, waiters: Vec<(usize, Priority)>) -> Vec<usize> {
        let governor = Governor::new(max, 1000, Arc::new(SystemClock));
        let mut held = Vec::new();
        for _ in 0..max {
            held.push(governor.acquire(Priority::Urgent).await);
        }
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, p) in waiters {
            let (g, order) = (governor.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _permit = g.acquire(p).await;
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        order
    }

    #[tokio::test(start_paused = true)]
    async fn callers_are_served_round_robin() {
        let flood = CallerKey(1);
        let other = CallerKey(2);
        let mut waiters: Vec<_> = (0..5).map(|i| (i, Priority::Foreground(flood))).collect();
        waiters.push((100, Priority::Foreground(other)));
        let order = served_order(1, waiters).await;
        assert_eq!(order[..2], [0, 100], "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_refreshes_go_first() {
        let mut waiters: Vec<_> = (0..5)
            .map(|i| (i, Priority::Foreground(CallerKey(i as u64))))
            .collect();
        waiters.push((100, Priority::Urgent));
        waiters.push((200, Priority::Background));
        let order = served_order(1, waiters).await;
        assert_eq!(order.first(), Some(&100), "{order:?}");
        assert_eq!(order.last(), Some(&200), "{order:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_reserved_for_urgent_refreshes() {
        let governor = Governor::new(2, 1000, Arc::new(SystemClock));
        let _one = governor.acquire(Priority::Foreground(CallerKey(1))).await;
        let second = tokio::time::timeout(
            Duration::from_secs(1),
            governor.acquire(Priority::Foreground(CallerKey(2))),
        )
        .await;
        assert!(second.is_err(), "the last slot is not for foreground work");
        let urgent =
            tokio::time::timeout(Duration::from_secs(1), governor.acquire(Priority::Urgent)).await;
        assert!(urgent.is_ok(), "an urgent refresh gets the reserved slot");
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_that_leave_take_no_slot() {
        let governor = Governor::new(1, 1000, Arc::new(SystemClock));
        let held = governor.acquire(Priority::Urgent).await;
        for i in 0..100 {
            let g = governor.clone();
            let t =
                tokio::spawn(async move { g.acquire(Priority::Foreground(CallerKey(i))).await });
            tokio::task::yield_now().await;
            t.abort();
        }
        drop(held);
        let next = tokio::time::timeout(
            Duration::from_millis(50),
            governor.acquire(Priority::Foreground(CallerKey(7))),
        )
        .await;
        assert!(next.is_ok(), "{governor:?}");
    }
}
