//! The token cache: one per gateway, keyed by (identity, resource exactly as
//! given).
//!
//! - Single-flight: concurrent misses for a key share one upstream fetch, run
//!   as its own task so a caller that gives up does not cancel it for others.
//! - Refresh ahead: a background task renews each key before expiry (5 min
//!   before, or at half-life for tokens living 2 h or more, minus jitter)
//!   while callers keep getting the cached token.
//! - Static stability: a failed refresh keeps the cached token in service
//!   until it really expires; the failure is logged and counted.
//! - Every fetch passes the [`Governor`] (IMDS's limits, shared fairly
//!   between callers; refreshes of tokens close to expiry first) and the
//!   [`RetryPolicy`] (retries fill the caller's deadline, no more).
//! - A cold fetch whose callers have all given up is dropped before it takes
//!   a governor slot (or before its next retry); a key whose fetch failed or
//!   was dropped, with nothing cached and nobody watching, is evicted at once.
//! - A caller whose deadline passes first is told what the source last
//!   answered and how long it was tried.
//! - Keys nobody used for a while (the token's lifetime, at least an hour)
//!   and nobody watches are dropped at refresh time instead of being renewed
//!   forever.
//! - Lookups, refreshes and requests to the source are counted in
//!   [`IdentityMetrics`]; whether the source answers at all is tracked in
//!   [`Reachability`](crate::reachability) (health reports it).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use foldhash::fast::RandomState;
use futures::{
    future::{BoxFuture, Shared},
    FutureExt,
};
use rand::Rng;
use tokio::sync::{broadcast, watch};

use tokio_util::sync::CancellationToken;

use super::{
    governor::{CallerKey, Governor, Priority},
    metrics::IdentityMetrics,
    reachability::{self, Reachability, SourceHealth},
    retry::{describe, final_error, Decision, FetchError, RetryPolicy, Tried},
    AccessToken, IdentitySelector, TokenSource,
};
use identity_gateway_core::{clock::Clock, error::GatewayError, TokenProvider};

/// Tunables of the cache.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Refresh this long before expiry (tokens living under 2 h).
    pub refresh_before: Duration,
    pub max_concurrent: usize,
    pub max_per_second: u32,
    /// Timeout of one request to the source.
    pub request_timeout: Duration,
    /// Connect timeout of the unreachable-source probe (the HTTP client the
    /// cache is given carries its own, normally the same).
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(300),
            max_concurrent: 5,
            max_per_second: 20,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            retry: RetryPolicy::default(),
        }
    }
}

/// Something the cache did, for metrics, logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEvent {
    /// A token was fetched (cold or refresh).
    Fetched { resource: String, background: bool },
    /// A background refresh failed; the cached token stays in service.
    RefreshFailed { resource: String },
    /// A key was dropped (unused, or expired without a refresh).
    Evicted { resource: String },
}

type Key = (IdentitySelector, String);
type SharedFetch = Shared<BoxFuture<'static, Result<Arc<AccessToken>, GatewayError>>>;
/// Entries by identity, then by resource: looked up with borrowed keys, so a
/// cache hit allocates nothing. Hashed with foldhash (seeded per map): keys
/// come from local callers, and SipHash cost a quarter of a hit's own work.
type Entries = HashMap<IdentitySelector, HashMap<Box<str>, Arc<Entry>, RandomState>, RandomState>;

/// The machine-wide token cache. Cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.inner.source.name())
            .field("upstream_requests", &self.upstream_requests())
            .finish_non_exhaustive()
    }
}

struct Inner {
    source: TokenSource,
    http: reqwest::Client,
    governor: Governor,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
    entries: RwLock<Entries>,
    upstream_requests: AtomicU64,
    refresh_failures: AtomicU64,
    abandoned: AtomicU64,
    generations: AtomicU64,
    events: broadcast::Sender<CacheEvent>,
    metrics: IdentityMetrics,
    reachability: Reachability,
}

struct Entry {
    key: Key,
    state: Mutex<EntryState>,
    updates: watch::Sender<Option<Arc<AccessToken>>>,
}

#[derive(Default)]
struct EntryState {
    cached: Option<Cached>,
    in_flight: Option<InFlight>,
    refreshing: bool,
    last_used: Option<Instant>,
    /// What the source last answered a failing fetch, and how long it was
    /// tried: told to a caller whose deadline passes first.
    last_failure: Option<String>,
    /// Taken out of the map: a caller holding it looks the key up again.
    removed: bool,
}

/// The one fetch in flight for a key.
struct InFlight {
    fetch: SharedFetch,
    generation: u64,
    /// Callers awaiting it now.
    waiters: usize,
    /// A refresh awaits it: never dropped for lack of callers.
    pinned: bool,
    abandon: CancellationToken,
}

/// A caller's place among a fetch's waiters; leaving as the last one drops
/// a fetch that has not reached the source yet.
struct Waiting {
    cache: TokenCache,
    entry: Arc<Entry>,
    generation: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut state = lock(&self.entry.state);
        let Some(in_flight) = state
            .in_flight
            .as_mut()
            .filter(|f| f.generation == self.generation)
        else {
            return;
        };
        in_flight.waiters = in_flight.waiters.saturating_sub(1);
        if in_flight.waiters == 0 && !in_flight.pinned {
            in_flight.abandon.cancel();
            state.in_flight = None;
            drop(state);
            self.cache.evict_if_idle(&self.entry);
        }
    }
}

struct Cached {
    token: Arc<AccessToken>,
    fetched_at: Instant,
    expires_at: Instant,
}

impl Cached {
    /// Stop handing out a token this long before it expires: a caller needs
    /// time to use it.
    fn margin(&self) -> Duration {
        (self.expires_at - self.fetched_at.min(self.expires_at))
            .div_f64(4.0)
            .min(Duration::from_secs(30))
    }

    fn usable_at(&self, now: Instant) -> bool {
        now + self.margin() < self.expires_at
    }

    fn refresh_at(&self, refresh_before: Duration, jitter: f64) -> Instant {
        let lifetime = self.expires_at.saturating_duration_since(self.fetched_at);
        let lead = if lifetime >= Duration::from_secs(2 * 3600) {
            lifetime / 2
        } else {
            refresh_before.min(lifetime / 2)
        };
        let spread = (lead / 10)
            .min(Duration::from_secs(60))
            .mul_f64(jitter.clamp(0.0, 1.0));
        self.expires_at - lead - spread
    }
}

impl EntryState {
    /// Used within the token's lifetime (at least an hour): worth renewing.
    fn in_use(&self, cached: &Cached, now: Instant) -> bool {
        let window = cached
            .expires_at
            .saturating_duration_since(cached.fetched_at)
            .max(Duration::from_secs(3600));
        self.last_used
            .is_some_and(|used| now.saturating_duration_since(used) < window)
    }
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short, await-free locks would be a bug in
    // this module; the state they guard stays consistent, so keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl TokenCache {
    pub fn new(
        source: TokenSource,
        http: reqwest::Client,
        settings: CacheSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::with_metrics(source, http, settings, clock, IdentityMetrics::default())
    }

    /// A cache that reports to `metrics` (registered by the composition root).
    pub fn with_metrics(
        source: TokenSource,
        http: reqwest::Client,
        settings: CacheSettings,
        clock: Arc<dyn Clock>,
        metrics: IdentityMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                governor: Governor::with_metrics(
                    settings.max_concurrent,
                    settings.max_per_second,
                    Arc::clone(&clock),
                    metrics.clone(),
                ),
                source,
                http,
                settings,
                clock,
                entries: RwLock::default(),
                upstream_requests: AtomicU64::new(0),
                refresh_failures: AtomicU64::new(0),
                abandoned: AtomicU64::new(0),
                generations: AtomicU64::new(0),
                events: broadcast::channel(256).0,
                metrics,
                reachability: Reachability::new(),
            }),
        }
    }

    /// A token for `resource`, from the cache or fetched, on behalf of the
    /// gateway itself (upstream calls). `budget` is the time left before the
    /// caller's deadline.
    pub async fn get(
        &self,
        selector: &IdentitySelector,
        resource: &str,
        budget: Option<Duration>,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        self.get_as(CallerKey::GATEWAY, selector, resource, budget)
            .await
    }

    /// The cached token for `resource`, if one is usable now (a hit counts
    /// as a use); never fetches.
    pub fn cached(&self, selector: &IdentitySelector, resource: &str) -> Option<Arc<AccessToken>> {
        let entry = read(&self.inner.entries)
            .get(selector)
            .and_then(|by_resource| by_resource.get(resource))
            .cloned()?;
        let mut state = lock(&entry.state);
        let now = self.inner.clock.now();
        let cached = state.cached.as_ref().filter(|c| c.usable_at(now))?;
        let token = Arc::clone(&cached.token);
        state.last_used = Some(now);
        // A miss is counted by the fetch that follows ([`Self::get_as`]).
        self.inner.metrics.lookup(true);
        Some(token)
    }

    /// A token for `resource` for `caller`: its cold fetches queue in
    /// `caller`'s turn at the governor. Gives up with DEADLINE_EXCEEDED
    /// (saying what the source last answered) when `budget` runs out.
    pub async fn get_as(
        &self,
        caller: CallerKey,
        selector: &IdentitySelector,
        resource: &str,
        budget: Option<Duration>,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        let (entry, fetch, _waiting) = loop {
            let entry = self.entry(selector, resource);
            let mut state = lock(&entry.state);
            if state.removed {
                continue;
            }
            let now = self.inner.clock.now();
            state.last_used = Some(now);
            if let Some(cached) = &state.cached {
                if cached.usable_at(now) {
                    self.inner.metrics.lookup(true);
                    return Ok(Arc::clone(&cached.token));
                }
            }
            self.inner.metrics.lookup(false);
            if budget.is_some_and(|b| b.is_zero()) && state.in_flight.is_none() {
                // No time to fetch: refuse before queueing any work.
                drop(state);
                self.evict_if_idle(&entry);
                return Err(deadline_exceeded(resource, Duration::ZERO, None));
            }
            let (fetch, generation) =
                self.shared_fetch(&entry, &mut state, Priority::Foreground(caller), budget);
            if let Some(in_flight) = state.in_flight.as_mut() {
                in_flight.waiters += 1;
            }
            drop(state);
            let waiting = Waiting {
                cache: self.clone(),
                entry: Arc::clone(&entry),
                generation,
            };
            break (entry, fetch, waiting);
        };
        match budget {
            None => fetch.await,
            Some(budget) => match tokio::time::timeout(budget, fetch).await {
                Ok(result) => result,
                Err(_) => {
                    let last = lock(&entry.state).last_failure.clone();
                    Err(deadline_exceeded(resource, budget, last))
                }
            },
        }
    }

    /// The current token plus a receiver of every token fetched after it.
    /// While the receiver lives, the key keeps being refreshed.
    pub async fn watch(
        &self,
        selector: &IdentitySelector,
        resource: &str,
        budget: Option<Duration>,
    ) -> Result<(Arc<AccessToken>, watch::Receiver<Option<Arc<AccessToken>>>), GatewayError> {
        self.watch_as(CallerKey::GATEWAY, selector, resource, budget)
            .await
    }

    /// [`watch`](Self::watch) on behalf of `caller`.
    pub async fn watch_as(
        &self,
        caller: CallerKey,
        selector: &IdentitySelector,
        resource: &str,
        budget: Option<Duration>,
    ) -> Result<(Arc<AccessToken>, watch::Receiver<Option<Arc<AccessToken>>>), GatewayError> {
        let entry = self.entry(selector, resource);
        let mut receiver = entry.updates.subscribe();
        let token = self.get_as(caller, selector, resource, budget).await?;
        receiver.mark_unchanged();
        Ok((token, receiver))
    }

    /// Forgets the cached token of (`selector`, `resource`) if it is still
    /// `rejected`, so the next [`get`](Self::get) fetches a new one. For an
    /// upstream that refused a token the cache still considers valid (e.g.
    /// Azure SQL answering "Token is expired" under clock skew). Returns
    /// whether the token was forgotten.
    pub fn invalidate(
        &self,
        selector: &IdentitySelector,
        resource: &str,
        rejected: &AccessToken,
    ) -> bool {
        let entry = self.entry(selector, resource);
        let mut state = lock(&entry.state);
        if state.cached.as_ref().is_some_and(|c| *c.token == *rejected) {
            state.cached = None;
            true
        } else {
            false
        }
    }

    /// Requests sent to the identity source so far (retries included).
    pub fn upstream_requests(&self) -> u64 {
        self.inner.upstream_requests.load(Ordering::Relaxed)
    }

    /// Cold fetches dropped before reaching the source because every caller
    /// waiting for them had gone.
    pub fn abandoned_fetches(&self) -> u64 {
        self.inner.abandoned.load(Ordering::Relaxed)
    }

    /// Keys held (cached, being fetched or refreshed).
    pub fn keys(&self) -> usize {
        read(&self.inner.entries).values().map(HashMap::len).sum()
    }

    /// Background refreshes that failed so far.
    pub fn refresh_failures(&self) -> u64 {
        self.inner.refresh_failures.load(Ordering::Relaxed)
    }

    /// A feed of what the cache does (fetches, failed refreshes, evictions).
    pub fn events(&self) -> broadcast::Receiver<CacheEvent> {
        self.inner.events.subscribe()
    }

    /// Whether the identity source answers, and every change of it.
    pub fn source_health(&self) -> watch::Receiver<SourceHealth> {
        self.inner.reachability.subscribe()
    }

    /// The metric handles the cache reports to.
    pub fn metrics(&self) -> &IdentityMetrics {
        &self.inner.metrics
    }

    /// Every cached token's identity, resource and time left before expiry
    /// (for the `token_expiry` gauge; no token values).
    pub fn expiries(&self) -> Vec<(IdentitySelector, String, Duration)> {
        let now = self.inner.clock.now();
        let entries = read(&self.inner.entries);
        let mut out = Vec::new();
        for by_resource in entries.values() {
            for entry in by_resource.values() {
                if let Some(cached) = &lock(&entry.state).cached {
                    out.push((
                        entry.key.0.clone(),
                        entry.key.1.clone(),
                        cached.expires_at.saturating_duration_since(now),
                    ));
                }
            }
        }
        out
    }

    /// The source's name and endpoint, for the startup banner.
    pub fn source_description(&self) -> String {
        format!(
            "{} at {}",
            self.inner.source.name(),
            self.inner.source.endpoint()
        )
    }

    fn entry(&self, selector: &IdentitySelector, resource: &str) -> Arc<Entry> {
        if let Some(entry) = read(&self.inner.entries)
            .get(selector)
            .and_then(|by_resource| by_resource.get(resource))
        {
            return Arc::clone(entry);
        }
        let mut entries = write(&self.inner.entries);
        let by_resource = entries.entry(selector.clone()).or_default();
        Arc::clone(by_resource.entry(resource.into()).or_insert_with(|| {
            Arc::new(Entry {
                key: (selector.clone(), resource.to_string()),
                state: Mutex::default(),
                updates: watch::channel(None).0,
            })
        }))
    }

    /// Joins the fetch in flight for `entry`, or starts one. Returns it and
    /// its generation.
    fn shared_fetch(
        &self,
        entry: &Arc<Entry>,
        state: &mut EntryState,
        priority: Priority,
        budget: Option<Duration>,
    ) -> (SharedFetch, u64) {
        let refresh = !matches!(priority, Priority::Foreground(_));
        if let Some(in_flight) = state.in_flight.as_mut() {
            in_flight.pinned |= refresh;
            return (in_flight.fetch.clone(), in_flight.generation);
        }
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed);
        let abandon = CancellationToken::new();
        let cache = self.clone();
        let task_entry = Arc::clone(entry);
        let task_abandon = abandon.clone();
        let task = tokio::spawn(async move {
            let result = cache
                .fetch_with_retries(&task_entry, priority, budget, &task_abandon)
                .await;
            cache.complete(&task_entry, generation, &result, refresh);
            result
        });
        let fetch = async move {
            task.await.unwrap_or_else(|e| {
                Err(GatewayError::Upstream(format!(
                    "token fetch task failed: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        state.in_flight = Some(InFlight {
            fetch: fetch.clone(),
            generation,
            waiters: 0,
            pinned: refresh,
            abandon,
        });
        (fetch, generation)
    }

    /// Takes `entry` out of the map if nothing is cached, fetched, refreshed
    /// or watched for it.
    fn evict_if_idle(&self, entry: &Arc<Entry>) {
        {
            let mut state = lock(&entry.state);
            if state.cached.is_some()
                || state.in_flight.is_some()
                || state.refreshing
                || state.removed
                || entry.updates.receiver_count() > 0
            {
                return;
            }
            state.removed = true;
        }
        self.remove(entry);
        let _ = self.inner.events.send(CacheEvent::Evicted {
            resource: entry.key.1.clone(),
        });
    }

    fn remove(&self, entry: &Arc<Entry>) {
        let mut entries = write(&self.inner.entries);
        let (selector, resource) = &entry.key;
        if let Some(by_resource) = entries.get_mut(selector) {
            if by_resource
                .get(resource.as_str())
                .is_some_and(|e| Arc::ptr_eq(e, entry))
            {
                by_resource.remove(resource.as_str());
            }
            if by_resource.is_empty() {
                entries.remove(selector);
            }
        }
    }

    /// Stores a fetch's outcome and makes sure the key is being refreshed.
    fn complete(
        &self,
        entry: &Arc<Entry>,
        generation: u64,
        result: &Result<Arc<AccessToken>, GatewayError>,
        background: bool,
    ) {
        let mut state = lock(&entry.state);
        if state
            .in_flight
            .as_ref()
            .is_some_and(|f| f.generation == generation)
        {
            state.in_flight = None;
        }
        let Ok(token) = result else {
            drop(state);
            self.evict_if_idle(entry);
            return;
        };
        if state.removed {
            // Every caller left and the key was forgotten while the request
            // was out: nobody can reach this entry, so keep nothing alive
            // (no refresh an hour from now for a key no one asked again).
            return;
        }
        state.last_failure = None;
        let token = Arc::clone(token);
        let now = self.inner.clock.now();
        let left = token
            .expires_on
            .duration_since(self.inner.clock.wall())
            .unwrap_or_default();
        state.cached = Some(Cached {
            token: token.clone(),
            fetched_at: now,
            expires_at: now + left,
        });
        entry.updates.send_replace(Some(token.clone()));
        let _ = self.inner.events.send(CacheEvent::Fetched {
            resource: entry.key.1.clone(),
            background,
        });
        if !state.refreshing {
            state.refreshing = true;
            let cache = self.clone();
            let entry = Arc::clone(entry);
            tokio::spawn(async move { cache.refresh_loop(entry).await });
        }
    }

    /// Renews `entry` ahead of expiry until nobody uses it or it expires
    /// without a successful refresh.
    async fn refresh_loop(&self, entry: Arc<Entry>) {
        let clock = &self.inner.clock;
        let mut retry_at: Option<Instant> = None;
        loop {
            let wake = {
                let state = lock(&entry.state);
                let Some(cached) = &state.cached else { break };
                retry_at.unwrap_or_else(|| {
                    cached.refresh_at(self.inner.settings.refresh_before, rand::rng().random())
                })
            };
            clock.sleep_until(wake).await;
            let (fetch, expires_at) = {
                let mut state = lock(&entry.state);
                let Some(cached) = state.cached.as_ref() else {
                    break;
                };
                let expires_at = cached.expires_at;
                if !state.in_use(cached, clock.now()) && entry.updates.receiver_count() == 0 {
                    tracing::debug!(resource = %entry.key.1, identity = %entry.key.0, "token unused for a while; not refreshing");
                    break;
                }
                let budget = expires_at.saturating_duration_since(clock.now());
                // Close to expiry, a refresh must not wait behind anyone.
                let priority = if budget <= self.inner.settings.refresh_before * 2 {
                    Priority::Urgent
                } else {
                    Priority::Background
                };
                (
                    self.shared_fetch(&entry, &mut state, priority, Some(budget))
                        .0,
                    expires_at,
                )
            };
            match fetch.await {
                Ok(_) => {
                    self.inner.metrics.refresh(true);
                    retry_at = None
                }
                Err(error) => {
                    self.inner.metrics.refresh(false);
                    self.inner.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    let _ = self.inner.events.send(CacheEvent::RefreshFailed {
                        resource: entry.key.1.clone(),
                    });
                    let left = expires_at.saturating_duration_since(clock.now());
                    if left.is_zero() {
                        tracing::warn!(resource = %entry.key.1, identity = %entry.key.0, %error, "token expired and could not be refreshed");
                        break;
                    }
                    tracing::warn!(resource = %entry.key.1, identity = %entry.key.0, %error, remaining_secs = left.as_secs(), "token refresh failed; serving the cached token until it expires");
                    let pause = (left / 4)
                        .clamp(Duration::from_secs(5), Duration::from_secs(60))
                        .min(left);
                    retry_at = Some(clock.now() + pause);
                }
            }
        }
        let mut state = lock(&entry.state);
        state.refreshing = false;
        let now = clock.now();
        let keep = state.cached.as_ref().is_some_and(|c| {
            c.usable_at(now) && (state.in_use(c, now) || entry.updates.receiver_count() > 0)
        });
        if !keep {
            state.cached = None;
            state.removed = true;
            drop(state);
            self.remove(&entry);
        }
    }

    async fn fetch_with_retries(
        &self,
        entry: &Entry,
        priority: Priority,
        budget: Option<Duration>,
        abandon: &CancellationToken,
    ) -> Result<Arc<AccessToken>, GatewayError> {
        let (selector, resource) = &entry.key;
        let inner = &self.inner;
        let start = inner.clock.now();
        let mut attempt = 0u32;
        let abandoned = || {
            inner.abandoned.fetch_add(1, Ordering::Relaxed);
            Err(GatewayError::DeadlineExceeded(format!(
                "every caller waiting for a token for '{resource}' gave up before it was requested"
            )))
        };
        loop {
            let permit = tokio::select! {
                biased;
                () = abandon.cancelled() => return abandoned(),
                permit = inner.governor.acquire(priority) => permit,
            };
            inner.upstream_requests.fetch_add(1, Ordering::Relaxed);
            let result = tokio::time::timeout(
                inner.settings.request_timeout,
                inner
                    .source
                    .fetch(&inner.http, selector, resource, inner.clock.wall()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Transport {
                    connect: false,
                    timed_out: true,
                    message: format!("no answer within {:?}", inner.settings.request_timeout),
                })
            })
            .and_then(|token| {
                if token.expires_on <= inner.clock.wall() {
                    Err(FetchError::Malformed(
                        "the token it issued has already expired".into(),
                    ))
                } else {
                    Ok(token)
                }
            });
            drop(permit);
            self.observe(&result);
            let error = match result {
                Ok(token) => {
                    tracing::debug!(%resource, identity = %selector, attempts = attempt + 1, "token fetched");
                    return Ok(Arc::new(token));
                }
                Err(error) => error,
            };
            let elapsed = inner.clock.now().saturating_duration_since(start);
            let tried = Tried {
                attempts: attempt + 1,
                elapsed,
            };
            lock(&entry.state).last_failure = Some(format!(
                "{} ({tried})",
                describe(&error, inner.source.name())
            ));
            let left = budget.map(|b| b.saturating_sub(elapsed));
            let jitter: f64 = rand::rng().random();
            match inner
                .settings
                .retry
                .decide(attempt, &error, elapsed, left, jitter)
            {
                Decision::Retry(delay) => {
                    inner
                        .metrics
                        .upstream
                        .retry(inner.source.metric_label(), &status_label(&error));
                    tracing::debug!(%resource, identity = %selector, ?error, retry_in_ms = delay.as_millis() as u64, "token request failed; retrying");
                    tokio::select! {
                        biased;
                        () = abandon.cancelled() => return abandoned(),
                        () = inner.clock.sleep(delay) => {}
                    }
                    attempt += 1;
                }
                Decision::GiveUp => {
                    return Err(final_error(
                        error,
                        tried,
                        inner.source.name(),
                        &inner.source.endpoint(),
                        selector,
                        resource,
                    ))
                }
            }
        }
    }
}

impl TokenCache {
    /// Counts one request to the source and updates its reachability; on
    /// the first connect failure, logs the hint and starts the probe.
    fn observe(&self, result: &Result<AccessToken, FetchError>) {
        let inner = &self.inner;
        let label = match result {
            Ok(_) => "200".to_string(),
            Err(FetchError::Rejected(_)) => return,
            Err(error) => status_label(error),
        };
        inner
            .metrics
            .upstream
            .request(inner.source.metric_label(), &label);
        match result {
            Err(FetchError::Transport {
                connect: true,
                message,
                ..
            }) => {
                if inner.reachability.unreachable(message.clone()) {
                    inner.metrics.source_up(false);
                    tracing::warn!(
                        source = inner.source.name(),
                        endpoint = %inner.source.endpoint(),
                        reason = %message,
                        "identity source unreachable: is this an Azure VM with a managed identity enabled? \
                         Tokens fail fast until it answers; health reports the gateway service NOT_SERVING"
                    );
                    self.start_probe();
                }
            }
            Err(FetchError::Transport { .. }) => {}
            _ => {
                if inner.reachability.answered() {
                    inner.metrics.source_up(true);
                    tracing::info!(
                        source = inner.source.name(),
                        "identity source reachable again"
                    );
                }
            }
        }
    }

    /// While the source is unreachable, tries a TCP connection every
    /// [`reachability::PROBE_INTERVAL`]; a success marks it reachable.
    fn start_probe(&self) {
        let Some(address) = self.inner.source.probe_address() else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let inner = &cache.inner;
            loop {
                inner.clock.sleep(reachability::PROBE_INTERVAL).await;
                if inner.reachability.current().is_usable() {
                    return;
                }
                if reachability::probe(&address, inner.settings.connect_timeout).await {
                    if inner.reachability.answered() {
                        inner.metrics.source_up(true);
                        tracing::info!(
                            source = inner.source.name(),
                            "identity source accepts connections again"
                        );
                    }
                    return;
                }
            }
        });
    }
}

/// The `status` label of a failed request to the source.
fn status_label(error: &FetchError) -> String {
    match error {
        FetchError::Status { status, .. } => status.to_string(),
        FetchError::Transport { connect: true, .. } => "connect_error".into(),
        FetchError::Transport {
            timed_out: true, ..
        } => "timeout".into(),
        FetchError::Transport { .. } => "error".into(),
        FetchError::Malformed(_) => "malformed".into(),
        FetchError::Rejected(_) => "rejected".into(),
    }
}

/// DEADLINE_EXCEEDED for a token, with what the source last answered.
fn deadline_exceeded(resource: &str, budget: Duration, last: Option<String>) -> GatewayError {
    let last = last.map(|l| format!("; last: {l}")).unwrap_or_default();
    GatewayError::DeadlineExceeded(format!(
        "no token for '{resource}' within the caller's deadline ({budget:?}){last}"
    ))
}

impl TokenProvider for TokenCache {
    fn token<'a>(
        &'a self,
        selector: &'a IdentitySelector,
        resource: &'a str,
        budget: Option<Duration>,
    ) -> BoxFuture<'a, Result<Arc<AccessToken>, GatewayError>> {
        Box::pin(self.get(selector, resource, budget))
    }

    fn cached(&self, selector: &IdentitySelector, resource: &str) -> Option<Arc<AccessToken>> {
        TokenCache::cached(self, selector, resource)
    }

    fn invalidate(
        &self,
        selector: &IdentitySelector,
        resource: &str,
        rejected: &AccessToken,
    ) -> bool {
        TokenCache::invalidate(self, selector, resource, rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_times_follow_the_design() {
        let t0 = Instant::now();
        let day = Cached {
            token: Arc::new(dummy()),
            fetched_at: t0,
            expires_at: t0 + Duration::from_secs(86_400),
        };
        assert_eq!(
            day.refresh_at(Duration::from_secs(300), 0.0),
            t0 + Duration::from_secs(43_200)
        );
        let hour = Cached {
            token: Arc::new(dummy()),
            fetched_at: t0,
            expires_at: t0 + Duration::from_secs(3600),
        };
        assert_eq!(
            hour.refresh_at(Duration::from_secs(300), 0.0),
            t0 + Duration::from_secs(3300)
        );
        let jittered = hour.refresh_at(Duration::from_secs(300), 1.0);
        assert_eq!(jittered, t0 + Duration::from_secs(3270));
        assert!(hour.usable_at(t0 + Duration::from_secs(3560)));
        assert!(!hour.usable_at(t0 + Duration::from_secs(3571)));
    }

    fn dummy() -> AccessToken {
        AccessToken {
            token: "t".to_string().into(),
            token_type: "Bearer".into(),
            expires_on: std::time::SystemTime::UNIX_EPOCH,
            resource: "r".into(),
        }
    }
}
