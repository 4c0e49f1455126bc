//! Metric handles for upstream traffic, shared by every layer that talks to
//! an upstream: the identity sources (IMDS, App Service, legacy MSI) and the
//! Azure clients (Key Vault, Storage, ARM, Data Lake).
//!
//! This module owns the metric *values* only (prometheus-client types, cheap
//! to clone, registered once in the composition root); it serves nothing and
//! knows no exporter. A handle that was never registered still counts, so
//! tests and tools can build the layers without a registry.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    service: String,
    reason: String,
}

/// Requests to upstream services and the retries among them.
///
/// `service` is a short snake_case name (`imds`, `key_vault`, `storage`,
/// ...); `status` is the HTTP status code, or `timeout`, `connect_error` or
/// `error` when no answer came.
#[derive(Debug, Clone, Default)]
pub struct UpstreamMetrics {
    requests: Family<RequestLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
}

impl UpstreamMetrics {
    /// Registers `upstream_requests` and `upstream_retries` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "upstream_requests",
            "Requests sent to upstream services (identity source, Key Vault, Storage, ARM), by service and HTTP status or transport failure",
            metrics.requests.clone(),
        );
        registry.register(
            "upstream_retries",
            "Upstream requests retried, by service and the reason (HTTP status or transport failure)",
            metrics.retries.clone(),
        );
        metrics
    }

    /// Counts one request to `service` that ended with `status`.
    pub fn request(&self, service: &str, status: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                service: service.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts one retry of a request to `service` after `reason`.
    pub fn retry(&self, service: &str, reason: &str) {
        self.retries
            .get_or_create(&RetryLabels {
                service: service.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Requests to `service` with `status` so far (tests, diagnostics).
    pub fn requests(&self, service: &str, status: &str) -> u64 {
        self.requests
            .get(&RequestLabels {
                service: service.to_string(),
                status: status.to_string(),
            })
            .map_or(0, |c| c.get())
    }
}

/// A label value for an upstream's display name: `Key Vault` ->
/// `key_vault`, `Azure Resource Manager` -> `azure_resource_manager`.
pub fn service_label(name: &str) -> String {
    let mut label = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            label.push(c.to_ascii_lowercase());
        } else if !label.ends_with('_') && !label.is_empty() {
            label.push('_');
        }
    }
    label.trim_end_matches('_').to_string()
}

/// The `status` label of a request that got no HTTP answer.
pub fn transport_status(err: &reqwest::Error) -> &'static str {
    if err.is_connect() {
        "connect_error"
    } else if err.is_timeout() {
        "timeout"
    } else {
        "error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_labels_are_snake_case() {
        assert_eq!(service_label("Key Vault"), "key_vault");
        assert_eq!(
            service_label("Azure Resource Manager"),
            "azure_resource_manager"
        );
        assert_eq!(service_label("Data Lake (Gen2)"), "data_lake_gen2");
    }

    #[test]
    fn unregistered_handles_still_count() {
        let m = UpstreamMetrics::default();
        m.request("imds", "200");
        m.request("imds", "200");
        assert_eq!(m.requests("imds", "200"), 2);
        assert_eq!(m.requests("imds", "500"), 0);
    }
}
