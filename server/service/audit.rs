//! One audit line per call: caller, RPC, target, identity, outcome. Targets
//! are names and URLs without query strings; never tokens, secrets or
//! signatures.

use identity_gateway_core::GatewayError;

use crate::{context::CallContext, validate::IdentityRef};

/// Logs the outcome of one operation under the `audit` target.
pub(crate) fn record<T>(
    ctx: &CallContext,
    rpc: &str,
    target: &str,
    identity: &IdentityRef,
    outcome: &Result<T, GatewayError>,
) {
    record_with(ctx, rpc, target, identity, None, outcome);
}

/// [`record`] with a `detail` field (GetServiceSas: the SAS permissions and
/// expiry granted, or asked for when refused).
pub(crate) fn record_with<T>(
    ctx: &CallContext,
    rpc: &str,
    target: &str,
    identity: &IdentityRef,
    detail: Option<&str>,
    outcome: &Result<T, GatewayError>,
) {
    let caller = &ctx.peer;
    match outcome {
        Ok(_) => {
            tracing::info!(target: "audit", %caller, rpc, target, %identity, detail, outcome = "ok")
        }
        Err(error) => tracing::info!(
            target: "audit",
            %caller,
            rpc,
            target,
            %identity,
            detail,
            outcome = error.code_name(),
            message = %error
        ),
    }
}

/// A caller-supplied URL as an audit target: scheme, host, port and path
/// only (no credentials, query or fragment, where SAS signatures and the
/// like would sit), or a placeholder when it does not parse.
pub(crate) fn url_target(raw: &str) -> String {
    match url::Url::parse(raw.trim()) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(not a URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::url_target;

    #[test]
    fn url_targets_drop_credentials_queries_and_fragments() {
        assert_eq!(
            url_target("https://user:pw@acct.dfs.core.windows.net/fs?sig=abc#x"),
            "https://acct.dfs.core.windows.net/fs"
        );
        assert_eq!(
            url_target("https://v.vault.azure.net/"),
            "https://v.vault.azure.net"
        );
        assert_eq!(url_target("sig=abc"), "(not a URL)");
    }
}
