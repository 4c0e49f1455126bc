//! The operations' metric handles: calls by RPC, transport and gRPC status,
//! how long each took, and caller-policy denials. Recorded once per call at
//! the audit line and once per denial at the policy check, so no operation
//! counts for itself.
//!
//! Values only (prometheus-client types, registered once by the composition
//! root); nothing here serves or encodes them.
//!
//! A call records through handles looked up once per (RPC, transport,
//! status) and kept in a small foldhash map: prometheus-client's `Family`
//! hashes its labels with SipHash on every `get_or_create`, which was a
//! tenth of what the gateway itself spends on a cached GetToken.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};

use crate::{context::Transport, policy::Target};

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    rpc: &'static str,
    transport: &'static str,
    code: &'static str,
}

type RpcLabel = [(&'static str, &'static str); 1];

fn new_latency_histogram() -> Histogram {
    // 100 µs (a cached token) .. ~27 s (cold fetches with retries, SQL).
    Histogram::new(exponential_buckets(0.0001, 2.5, 14))
}

/// Metric handles of the operations. Cheap to clone; a default
/// (unregistered) value still counts.
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    calls: Family<CallLabels, Counter>,
    duration: Family<RpcLabel, Histogram, fn() -> Histogram>,
    denials: Family<RpcLabel, Counter>,
    /// The `calls` counter and `duration` histogram of each label set seen,
    /// shared with the families (a handle is a reference to the same value).
    handles: Arc<RwLock<hashbrown::HashMap<CallLabels, CallHandles>>>,
}

#[derive(Debug, Clone)]
struct CallHandles {
    calls: Counter,
    duration: Histogram,
}

impl CallHandles {
    fn record(&self, seconds: f64) {
        self.calls.inc();
        self.duration.observe(seconds);
    }
}

impl Default for ServiceMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(new_latency_histogram),
            denials: Family::default(),
            handles: Arc::default(),
        }
    }
}

impl ServiceMetrics {
    /// Registers `calls`, `call_duration_seconds` and `policy_denials`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "calls",
            "Calls by RPC, transport and gRPC status code (OK, InvalidArgument, PermissionDenied, ...)",
            metrics.calls.clone(),
        );
        registry.register_with_unit(
            "call_duration",
            "Time from a call's arrival to its answer (streams: to the first message), by RPC",
            Unit::Seconds,
            metrics.duration.clone(),
        );
        registry.register(
            "policy_denials",
            "Calls the gateway's caller policy refused, and open WatchToken streams it ended after a reload or at a refresh, by the kind of target (token, secret, blob, data_lake, sas, sql, resource_group)",
            metrics.denials.clone(),
        );
        metrics
    }

    pub(crate) fn call(
        &self,
        rpc: &'static str,
        transport: Transport,
        code: &'static str,
        took: Duration,
    ) {
        let labels = CallLabels {
            rpc,
            transport: transport_label(transport),
            code,
        };
        let took = took.as_secs_f64();
        {
            let handles = self
                .handles
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(known) = handles.get(&labels) {
                known.record(took);
                return;
            }
        }
        self.new_handles(labels).record(took);
    }

    fn new_handles(&self, labels: CallLabels) -> CallHandles {
        let handles = CallHandles {
            calls: self.calls.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&[("rpc", labels.rpc)]).clone(),
        };
        self.handles
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(labels, handles.clone());
        handles
    }

    pub(crate) fn denial(&self, target: &Target<'_>) {
        let kind = match target {
            Target::Token { .. } => "token",
            Target::Secret { .. } => "secret",
            Target::Blob { .. } => "blob",
            Target::DataLake { .. } => "data_lake",
            Target::Sas { .. } => "sas",
            Target::Sql { .. } => "sql",
            Target::ResourceGroup { .. } => "resource_group",
        };
        self.denials.get_or_create(&[("target", kind)]).inc();
    }

    /// Calls of `rpc` that ended with `code` so far, over any transport.
    pub fn calls(&self, rpc: &'static str, code: &'static str) -> u64 {
        [
            Transport::UnixSocket,
            Transport::NamedPipe,
            Transport::Tcp,
            Transport::IdentityEndpoint,
        ]
        .into_iter()
        .filter_map(|transport| {
            self.calls
                .get(&CallLabels {
                    rpc,
                    transport: transport_label(transport),
                    code,
                })
                .map(|c| c.get())
        })
        .sum()
    }
}

fn transport_label(transport: Transport) -> &'static str {
    match transport {
        Transport::UnixSocket => "unix",
        Transport::NamedPipe => "pipe",
        Transport::Tcp => "tcp",
        Transport::IdentityEndpoint => "identity_endpoint",
    }
}
