//! ReadBlob: a blob downloaded with the identity's Storage token, streamed
//! back as properties first, then `data` chunks as the caller reads them.

use futures::StreamExt;
use tonic::{Request, Response, Status};

use super::{audit, request, token::timestamp, ResponseStream};
use crate::{
    azure::blob,
    gateway::GatewayState,
    policy::Target,
    proto::{BlobProperties, ReadBlobRequest, ReadBlobResponse},
};

pub(super) async fn read_blob(
    state: &GatewayState,
    request: Request<ReadBlobRequest>,
) -> Result<Response<ResponseStream<ReadBlobResponse>>, Status> {
    let caller = request::caller(&request);
    let peer = request::peer(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    // Never log a query string: it could carry a SAS.
    let target = message
        .blob_url
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string();
    let outcome = async {
        let url = blob::blob_url(state, &message.blob_url)?;
        let selector = request::identity(message.identity)?;
        state.policy.check(
            peer,
            &selector,
            Target::StorageAccount(&blob::account_of(&url)),
        )?;
        let download = blob::open(
            state,
            budget,
            &selector,
            &url,
            message.offset,
            message.length,
        )
        .await?;
        let props = download.properties;
        let first = ReadBlobResponse {
            properties: Some(BlobProperties {
                size: props.size,
                content_type: props.content_type,
                etag: props.etag,
                last_modified: props.last_modified.map(timestamp),
            }),
            data: Default::default(),
        };
        let data = download.body.map(|chunk| {
            chunk
                .map(|data| ReadBlobResponse {
                    properties: None,
                    data: data.into(),
                })
                .map_err(Status::from)
        });
        let stream: ResponseStream<ReadBlobResponse> =
            Box::pin(futures::stream::once(async move { Ok(first) }).chain(data));
        Ok(Response::new(stream))
    }
    .await;
    audit::record(&caller, "ReadBlob", &target, &outcome);
    outcome
}
