//! One audit line per call: caller, RPC, target, outcome. Targets are names
//! and URLs without query strings; never tokens, secrets or signatures.

use tonic::Status;

use super::request::CallerInfo;

/// Logs the outcome of one RPC under the `audit` target.
pub(super) fn record<T>(caller: &CallerInfo, rpc: &str, target: &str, outcome: &Result<T, Status>) {
    match outcome {
        Ok(_) => tracing::info!(target: "audit", %caller, rpc, target, outcome = "ok"),
        Err(status) => tracing::info!(
            target: "audit",
            %caller,
            rpc,
            target,
            outcome = ?status.code(),
            message = status.message()
        ),
    }
}
