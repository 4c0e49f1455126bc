//! `grpc.health.v1` per-service status from what the gateway knows about its
//! identity source: the overall service (`""`) is SERVING while the process
//! serves; `identity_gateway.v1.IdentityGateway` is NOT_SERVING while the
//! identity source is unreachable (connect refused or timed out: off Azure,
//! no identity, IMDS firewalled) and SERVING again once it answers. A probe
//! that wants "process alive" asks `""`; readiness asks the service name.

use identity_gateway_identity::SourceHealth;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;

use super::GatewayService;
use crate::proto::identity_gateway_server::IdentityGatewayServer;

/// Keeps the gateway service's health in step with `source` until the
/// cache (the sender) goes away.
pub fn follow_source_health(reporter: HealthReporter, mut source: watch::Receiver<SourceHealth>) {
    tokio::spawn(async move {
        loop {
            let usable = source.borrow_and_update().is_usable();
            if usable {
                reporter
                    .set_serving::<IdentityGatewayServer<GatewayService>>()
                    .await;
            } else {
                reporter
                    .set_not_serving::<IdentityGatewayServer<GatewayService>>()
                    .await;
            }
            if source.changed().await.is_err() {
                return;
            }
        }
    });
}
