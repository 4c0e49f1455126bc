//! ListDataLake: one RPC for ADLS Gen1 and Gen2 listings, server-streamed a
//! page per message.
//!
//! The first page is fetched before the call answers, so "not found" or
//! "forbidden" come back as the call's status. Later pages are fetched
//! lazily by the stream itself: the next upstream request goes out only when
//! the transport asks for the next message, i.e. after the client has taken
//! the previous one (HTTP/2 flow control pushes back), so at most one page is
//! in flight and a million-entry folder never sits in memory.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::stream;
use tonic::{Request, Response, Status};

use super::{audit, request, token::timestamp, ResponseStream};
use crate::{
    azure::datalake::{fetch_page, Entry, Generation, ListRequest, Listing, Page},
    error::GatewayError,
    gateway::{within_budget, GatewayState},
    identity::IdentitySelector,
    policy::Target,
    proto::{DataLakeEntry, DataLakeGeneration, ListDataLakeRequest, ListDataLakeResponse},
};

/// Empty pages with a continuation (the dfs endpoint may send them) skipped in
/// a row before the gateway calls the upstream broken.
const MAX_EMPTY_PAGES: usize = 100;

pub(super) async fn list_data_lake(
    state: Arc<GatewayState>,
    request: Request<ListDataLakeRequest>,
) -> Result<Response<ResponseStream<ListDataLakeResponse>>, Status> {
    let caller = request::caller(&request);
    let peer = request::peer(&request);
    let budget = request::budget(&request);
    let message = request.into_inner();
    let mut target = audit::url_target(&message.account_url);
    let outcome = async {
        let generation = match DataLakeGeneration::try_from(message.generation) {
            Ok(DataLakeGeneration::Unspecified) => None,
            Ok(DataLakeGeneration::Gen1) => Some(Generation::Gen1),
            Ok(DataLakeGeneration::Gen2) => Some(Generation::Gen2),
            Err(_) => {
                return Err(GatewayError::invalid(
                    "generation",
                    format!("unknown generation {}", message.generation),
                ))
            }
        };
        let listing = Listing::new(
            &state.hosts,
            &ListRequest {
                account_url: &message.account_url,
                generation,
                filesystem: &message.filesystem,
                path: &message.path,
                recursive: message.recursive,
                page_size: message.page_size,
            },
        )?;
        let continuation = match message.continuation.as_str() {
            "" => None,
            token => {
                listing.validate_continuation(token)?;
                Some(token.to_string())
            }
        };
        let selector = request::identity(message.identity.clone())?;
        target = listing.describe();
        state
            .policy
            .check(peer, &selector, Target::StorageAccount(listing.account()))?;

        let pager = Pager {
            deadline: budget.map(|b| state.clock.now() + b),
            state: Arc::clone(&state),
            selector,
            listing,
        };
        let first = pager.fetch(continuation).await?;
        let pages = stream::unfold((pager, Step::Ready(first)), |(pager, step)| async move {
            let page = match step {
                Step::Done => return None,
                Step::Ready(page) => page,
                Step::Fetch(token) => match pager.fetch(Some(token)).await {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(target = %pager.listing.describe(), %error, "a later ListDataLake page failed");
                        return Some((Err(Status::from(error)), (pager, Step::Done)));
                    }
                },
            };
            let next = match &page.continuation {
                Some(token) => Step::Fetch(token.clone()),
                None => Step::Done,
            };
            Some((Ok(to_proto(page)), (pager, next)))
        });
        let pages: ResponseStream<ListDataLakeResponse> = Box::pin(pages);
        Ok(Response::new(pages))
    }
    .await
    .map_err(Status::from);
    audit::record(&caller, "ListDataLake", &target, &outcome);
    outcome
}

/// What the stream does next.
enum Step {
    Ready(Page),
    Fetch(String),
    Done,
}

/// Everything a listing stream needs after the handler has returned.
struct Pager {
    state: Arc<GatewayState>,
    selector: IdentitySelector,
    deadline: Option<Instant>,
    listing: Listing,
}

impl Pager {
    /// The next non-empty page (or the last one), within the caller's deadline.
    async fn fetch(&self, mut continuation: Option<String>) -> Result<Page, GatewayError> {
        let work = async {
            for _ in 0..MAX_EMPTY_PAGES {
                let left = self.time_left()?;
                // From the cache almost always; fetched per page so a long
                // listing outlives any one token.
                let token = self
                    .state
                    .tokens
                    .get(&self.selector, self.listing.audience(), left)
                    .await?;
                let page = fetch_page(
                    &self.state,
                    &self.listing,
                    continuation.as_deref(),
                    &token,
                    self.time_left()?,
                )
                .await?;
                if !page.entries.is_empty() || page.continuation.is_none() {
                    return Ok(page);
                }
                continuation = page.continuation;
            }
            Err(GatewayError::Upstream(format!(
                "{} kept answering empty pages with a continuation",
                self.listing.describe()
            )))
        };
        within_budget(self.time_left()?, work, || {
            "the Data Lake listing did not finish".into()
        })
        .await
    }

    fn time_left(&self) -> Result<Option<Duration>, GatewayError> {
        let Some(deadline) = self.deadline else {
            return Ok(None);
        };
        let left = deadline.saturating_duration_since(self.state.clock.now());
        if left.is_zero() {
            return Err(GatewayError::DeadlineExceeded(
                "the caller's deadline passed during the Data Lake listing".into(),
            ));
        }
        Ok(Some(left))
    }
}

fn to_proto(page: Page) -> ListDataLakeResponse {
    ListDataLakeResponse {
        entries: page.entries.into_iter().map(entry).collect(),
        continuation: page.continuation.unwrap_or_default(),
    }
}

fn entry(entry: Entry) -> DataLakeEntry {
    DataLakeEntry {
        name: entry.name,
        is_directory: entry.is_directory,
        length: entry.length,
        modified: entry.modified.map(timestamp),
        owner: entry.owner,
        group: entry.group,
        permissions: entry.permissions,
    }
}
