//! The gateway's metrics: one prometheus-client [`Registry`] built by the
//! composition root, into which each layer registers the handles it records
//! to (calls and denials from the service layer, cache/governor/source from
//! the identity layer, upstream requests and retries shared by both), plus
//! what is read at scrape time here (token time to expiry, SQL pool sizes,
//! build info). [`endpoint`] serves it as Prometheus/OpenMetrics text on an
//! opt-in listener.
//!
//! Every name starts with `identity_gateway_`; counters end in `_total`,
//! durations in `_seconds`.

pub mod endpoint;

use std::{fmt, sync::Arc};

use identity_gateway_azure::sql::SqlPools;
use identity_gateway_core::{metrics::UpstreamMetrics, IdentitySelector};
use identity_gateway_identity::{IdentityMetrics, TokenCache};
use identity_gateway_service::ServiceMetrics;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info, MetricType},
    registry::{Registry, Unit},
};

/// Prefix of every metric name.
pub const PREFIX: &str = "identity_gateway";

/// The registry while the layers register into it.
#[derive(Debug)]
pub struct MetricsBuilder {
    registry: Registry,
    /// Shared by the identity source and the Azure clients.
    pub upstream: UpstreamMetrics,
    pub identity: IdentityMetrics,
    pub service: ServiceMetrics,
}

impl Default for MetricsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsBuilder {
    /// A registry with every layer's handles and the build info registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let upstream = UpstreamMetrics::register(&mut registry);
        let identity = IdentityMetrics::register(&mut registry, upstream.clone());
        let service = ServiceMetrics::register(&mut registry);
        registry.register(
            "build",
            "The gateway's version and build (always 1)",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                (
                    "emulator",
                    if cfg!(feature = "emulator") {
                        "true"
                    } else {
                        "false"
                    },
                ),
            ]),
        );
        Self {
            registry,
            upstream,
            identity,
            service,
        }
    }

    /// Adds what is read at scrape time from the built parts, and freezes.
    pub fn finish(mut self, tokens: TokenCache, sql: Arc<SqlPools>) -> Metrics {
        self.registry
            .register_collector(Box::new(StateCollector { tokens, sql }));
        Metrics {
            registry: Arc::new(self.registry),
        }
    }
}

/// The finished registry, shared with the endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The OpenMetrics text of every metric, as a scrape gets it.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A short label for an identity: `system`, `client_id:<id>`, ...
fn identity_label(identity: &IdentitySelector) -> String {
    match identity {
        IdentitySelector::SystemAssigned => "system".into(),
        IdentitySelector::ClientId(id) => format!("client_id:{id}"),
        IdentitySelector::ObjectId(id) => format!("object_id:{id}"),
        IdentitySelector::ResourceId(id) => format!("resource_id:{id}"),
    }
}

/// Gauges and counters read from the token cache and the SQL pools at each
/// scrape.
struct StateCollector {
    tokens: TokenCache,
    sql: Arc<SqlPools>,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Token time to expiry, per cached (identity, resource).
        let expiries = self.tokens.expiries();
        {
            let mut family = encoder.encode_descriptor(
                "token_expiry",
                "Time until each cached token expires, by identity and resource (audience)",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            for (identity, resource, left) in &expiries {
                let labels = [
                    ("identity", identity_label(identity)),
                    ("resource", resource.clone()),
                ];
                ConstGauge::new(left.as_secs_f64()).encode(family.encode_family(&labels)?)?;
            }
        }
        ConstGauge::new(expiries.len() as i64).encode(encoder.encode_descriptor(
            "token_cache_entries",
            "Tokens held by the cache",
            None,
            MetricType::Gauge,
        )?)?;

        let sizes = self.sql.pool_sizes();
        ConstGauge::new(sizes.pools as i64).encode(encoder.encode_descriptor(
            "sql_pools",
            "SQL connection pools (one per server, database and identity)",
            None,
            MetricType::Gauge,
        )?)?;
        {
            let mut family = encoder.encode_descriptor(
                "sql_connections",
                "SQL connections held by the pools, by state (idle, in_use)",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in [("idle", sizes.idle), ("in_use", sizes.in_use)] {
                ConstGauge::new(n as i64).encode(family.encode_family(&[("state", state)])?)?;
            }
        }
        let sql = self.sql.metrics();
        let counters = [
            (
                "sql_logins",
                "SQL logins attempted (retries included)",
                &sql.logins,
            ),
            (
                "sql_connections_opened",
                "SQL connections opened (successful logins)",
                &sql.opened,
            ),
            (
                "sql_connections_reused",
                "SQL connections handed out again from a pool",
                &sql.reused,
            ),
            (
                "sql_connections_discarded",
                "SQL connections dropped instead of returned (cancelled, failed, timed out)",
                &sql.discarded,
            ),
        ];
        for (name, help, value) in counters {
            ConstCounter::new(value.load(std::sync::atomic::Ordering::Relaxed))
                .encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        Ok(())
    }
}
