//! Whether the identity source answers at all: the difference between
//! "serving, tokens flowing" and "serving, but no upstream" (an ordinary VM
//! without a managed identity, a laptop, IMDS black-holed by a firewall).
//!
//! The cache reports every attempt here: any HTTP answer (even an error
//! status) means reachable; a connect failure or connect timeout means
//! unreachable. While unreachable, a probe opens a TCP connection to the
//! source every [`PROBE_INTERVAL`] (no token request, so it costs nothing
//! against IMDS's limits) and reports reachable again once one succeeds, so
//! health recovers without a caller having to try. This module owns the
//! state and the probe; mapping it to gRPC health is the composition root's
//! job.

use std::time::Duration;

use tokio::sync::watch;

/// How often an unreachable source is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What the gateway knows about its identity source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceHealth {
    /// Nothing asked yet.
    Unknown,
    /// It answered the last request, or accepted the last probe.
    Reachable,
    /// The last request could not connect: `reason` says why.
    Unreachable { reason: String },
}

impl SourceHealth {
    /// False only when the source is known to be unreachable.
    pub fn is_usable(&self) -> bool {
        !matches!(self, Self::Unreachable { .. })
    }
}

/// The shared state; the cache holds one.
#[derive(Debug)]
pub(crate) struct Reachability {
    state: watch::Sender<SourceHealth>,
}

impl Reachability {
    pub(crate) fn new() -> Self {
        Self {
            state: watch::channel(SourceHealth::Unknown).0,
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<SourceHealth> {
        self.state.subscribe()
    }

    pub(crate) fn current(&self) -> SourceHealth {
        self.state.borrow().clone()
    }

    /// The source answered (or accepted a connection). Returns whether this
    /// changed the state from unreachable.
    pub(crate) fn answered(&self) -> bool {
        let mut was_unreachable = false;
        self.state.send_if_modified(|state| {
            was_unreachable = !state.is_usable();
            if *state == SourceHealth::Reachable {
                false
            } else {
                *state = SourceHealth::Reachable;
                true
            }
        });
        was_unreachable
    }

    /// A connect failure. Returns whether the source was not already known
    /// to be unreachable (so the caller starts a probe and logs once).
    pub(crate) fn unreachable(&self, reason: String) -> bool {
        let mut newly = false;
        self.state.send_modify(|state| {
            newly = state.is_usable();
            *state = SourceHealth::Unreachable { reason };
        });
        newly
    }
}

/// `host:port` of a URL, for a TCP probe (the default port of its scheme
/// when it names none).
pub fn probe_address(url: &url::Url) -> Option<(String, u16)> {
    let host = url.host_str()?.trim_matches(['[', ']']).to_string();
    Some((host, url.port_or_known_default()?))
}

/// One TCP connection attempt within `timeout`.
pub async fn probe(address: &(String, u16), timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((address.0.as_str(), address.1))
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_reported_once() {
        let r = Reachability::new();
        assert_eq!(r.current(), SourceHealth::Unknown);
        assert!(r.unreachable("refused".into()));
        assert!(!r.unreachable("refused again".into()));
        assert!(!r.current().is_usable());
        assert!(r.answered());
        assert!(!r.answered());
        assert_eq!(r.current(), SourceHealth::Reachable);
    }

    #[tokio::test]
    async fn the_probe_tells_a_listener_from_a_dead_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let live = ("127.0.0.1".to_string(), port);
        assert!(probe(&live, Duration::from_secs(1)).await);
        drop(listener);
        assert!(!probe(&live, Duration::from_secs(1)).await);
    }
}
