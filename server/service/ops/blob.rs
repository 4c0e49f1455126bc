//! ReadBlob: a blob (or a range of it) downloaded with a bearer token and
//! streamed back in chunks.

use identity_gateway_azure::blob::{self, BlobDownload};
use identity_gateway_core::GatewayError;

use crate::{
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

/// A blob read.
#[derive(Debug, Clone, Default)]
pub struct BlobRequest {
    pub blob_url: String,
    pub identity: IdentityRef,
    pub offset: u64,
    /// 0: to the end.
    pub length: u64,
}

impl Gateway {
    /// ReadBlob: properties, then the content as a stream.
    pub async fn read_blob(
        &self,
        ctx: &CallContext,
        request: BlobRequest,
    ) -> Result<BlobDownload, GatewayError> {
        let target = request
            .blob_url
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        let outcome = async {
            let _admitted = self.admission.admit(ctx)?;
            let url = blob::blob_url(&self.upstream, &request.blob_url)?;
            let selector = validate::identity(request.identity.clone())?;
            // `url` is the guard's normalised URL: the account judged here
            // is the one the request goes to.
            self.authorize(
                &ctx.policy_caller(),
                &selector,
                Target::Blob {
                    account: &blob::account_of(&url),
                },
            )?;
            blob::open(
                &self.upstream,
                ctx.budget,
                &selector,
                &url,
                request.offset,
                request.length,
            )
            .await
        }
        .await;
        self.audit.record(
            &self.metrics,
            ctx,
            "ReadBlob",
            &target,
            &request.identity,
            &outcome,
        );
        outcome
    }
}
