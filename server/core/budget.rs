//! The caller's deadline as a time budget: work that must finish before it.

use std::{future::Future, time::Duration};

use crate::error::GatewayError;

/// Runs `work`, giving up with DEADLINE_EXCEEDED ("<what> within the
/// caller's deadline (<budget>)") when `budget` runs out first.
pub async fn within_budget<T>(
    budget: Option<Duration>,
    work: impl Future<Output = Result<T, GatewayError>>,
    what: impl FnOnce() -> String,
) -> Result<T, GatewayError> {
    match budget {
        None => work.await,
        Some(budget) => tokio::time::timeout(budget, work).await.map_err(|_| {
            GatewayError::DeadlineExceeded(format!(
                "{} within the caller's deadline ({budget:?})",
                what()
            ))
        })?,
    }
}
