//! The token cache's and the governor's metric handles: cache lookups,
//! background refreshes, the governor's queue and waits, and whether the
//! identity source answers. Requests to the source itself are counted in the
//! shared [`UpstreamMetrics`] under the source's service name.
//!
//! Values only (prometheus-client types, registered once by the composition
//! root); nothing here serves or encodes them.

use prometheus_client::{
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use identity_gateway_core::metrics::UpstreamMetrics;

type Labels = [(&'static str, &'static str); 1];

fn new_wait_histogram() -> Histogram {
    // 1 ms .. ~33 s: a free slot, a rate-limited queue, a saturated one.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Metric handles of the identity layer. Cheap to clone; a default
/// (unregistered) value still counts.
#[derive(Debug, Clone)]
pub struct IdentityMetrics {
    /// Requests to the identity source, by `service` and `status`.
    pub upstream: UpstreamMetrics,
    lookups: Family<Labels, Counter>,
    /// `lookups`' two series, looked up once: every cached GetToken counts
    /// a hit, and a family lookup hashes its labels (SipHash) each time.
    hits: Counter,
    misses: Counter,
    refreshes: Family<Labels, Counter>,
    governor_waiting: Family<Labels, Gauge>,
    governor_in_flight: Gauge,
    governor_wait: Family<Labels, Histogram, fn() -> Histogram>,
    source_up: Gauge,
}

impl Default for IdentityMetrics {
    fn default() -> Self {
        let lookups = Family::<Labels, Counter>::default();
        let hits = lookups.get_or_create(&[("result", "hit")]).clone();
        let misses = lookups.get_or_create(&[("result", "miss")]).clone();
        Self {
            upstream: UpstreamMetrics::default(),
            lookups,
            hits,
            misses,
            refreshes: Family::default(),
            governor_waiting: Family::default(),
            governor_in_flight: Gauge::default(),
            governor_wait: Family::new_with_constructor(new_wait_histogram),
            source_up: Gauge::default(),
        }
    }
}

impl IdentityMetrics {
    /// Registers the identity layer's metrics in `registry`; requests to the
    /// source go to `upstream`.
    pub fn register(registry: &mut Registry, upstream: UpstreamMetrics) -> Self {
        let metrics = Self {
            upstream,
            ..Self::default()
        };
        registry.register(
            "token_cache_lookups",
            "Token cache lookups by result: hit (a cached token), miss (fetched or joined a fetch in flight)",
            metrics.lookups.clone(),
        );
        registry.register(
            "token_refreshes",
            "Background token refreshes by outcome (ok, failed: the cached token stays in service)",
            metrics.refreshes.clone(),
        );
        registry.register(
            "governor_waiting",
            "Requests queued at the identity-source governor (concurrency and rate limit), by priority",
            metrics.governor_waiting.clone(),
        );
        registry.register(
            "governor_in_flight",
            "Requests to the identity source in flight",
            metrics.governor_in_flight.clone(),
        );
        registry.register_with_unit(
            "governor_wait",
            "Time a request to the identity source waited at the governor, by priority",
            Unit::Seconds,
            metrics.governor_wait.clone(),
        );
        registry.register(
            "identity_source_up",
            "1 while the identity source (IMDS) accepts connections, 0 after a connect failure or timeout",
            metrics.source_up.clone(),
        );
        metrics.source_up.set(1);
        metrics
    }

    pub(crate) fn lookup(&self, hit: bool) {
        if hit { &self.hits } else { &self.misses }.inc();
    }

    pub(crate) fn refresh(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.refreshes.get_or_create(&[("outcome", outcome)]).inc();
    }

    pub(crate) fn waiting(&self, priority: &'static str) -> Gauge {
        self.governor_waiting
            .get_or_create(&[("priority", priority)])
            .clone()
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        &self.governor_in_flight
    }

    pub(crate) fn waited(&self, priority: &'static str, seconds: f64) {
        self.governor_wait
            .get_or_create(&[("priority", priority)])
            .observe(seconds);
    }

    pub(crate) fn source_up(&self, up: bool) {
        self.source_up.set(i64::from(up));
    }

    /// Cache lookups with `result` (`hit` or `miss`) so far.
    pub fn lookups(&self, result: &'static str) -> u64 {
        self.lookups
            .get(&[("result", result)])
            .map_or(0, |c| c.get())
    }
}
