//! ListDataLake: one operation for ADLS Gen1 and Gen2 listings, a page at a
//! time.
//!
//! The first page is fetched before the call answers, so "not found" or
//! "forbidden" come back as the call's outcome. Later pages are fetched
//! lazily by the stream itself: the next upstream request goes out only when
//! the consumer asks for the next item (for gRPC, after the client took the
//! previous message: HTTP/2 flow control pushes back), so at most one page
//! is in flight and a million-entry folder never sits in memory.

use std::{
    pin::Pin,
    time::{Duration, Instant},
};

use futures::{stream, Stream};
use identity_gateway_azure::{
    datalake::{fetch_page, Generation, ListRequest, Listing, Page},
    Upstream,
};
use identity_gateway_core::{within_budget, GatewayError, IdentitySelector};

use crate::{
    audit,
    context::CallContext,
    policy::Target,
    validate::{self, IdentityRef},
    Gateway,
};

/// Empty pages with a continuation (the dfs endpoint may send them) skipped in
/// a row before the gateway calls the upstream broken.
const MAX_EMPTY_PAGES: usize = 100;

/// A listing request.
#[derive(Debug, Clone, Default)]
pub struct DataLakeRequest {
    pub account_url: String,
    /// None: from the account URL's host.
    pub generation: Option<Generation>,
    pub filesystem: String,
    pub path: String,
    pub recursive: bool,
    pub page_size: u32,
    /// Empty: from the start.
    pub continuation: String,
    pub identity: IdentityRef,
}

/// The pages of a listing, the first already fetched.
pub type DataLakePages = Pin<Box<dyn Stream<Item = Result<Page, GatewayError>> + Send>>;

impl Gateway {
    /// ListDataLake.
    pub async fn list_data_lake(
        &self,
        ctx: &CallContext,
        request: DataLakeRequest,
    ) -> Result<DataLakePages, GatewayError> {
        let mut target = audit::url_target(&request.account_url);
        let outcome = async {
            let _admitted = self.admission.admit(ctx)?;
            let listing = Listing::new(
                &self.upstream.hosts,
                &ListRequest {
                    account_url: &request.account_url,
                    generation: request.generation,
                    filesystem: &request.filesystem,
                    path: &request.path,
                    recursive: request.recursive,
                    page_size: request.page_size,
                },
            )?;
            let continuation = match request.continuation.as_str() {
                "" => None,
                token => {
                    listing.validate_continuation(token)?;
                    Some(token.to_string())
                }
            };
            let selector = validate::identity(request.identity.clone())?;
            target = listing.describe();
            self.authorize(
                &ctx.policy_caller(),
                &selector,
                Target::DataLake {
                    account: listing.account(),
                    path: &listing.policy_path(),
                },
            )?;

            let pager = Pager {
                deadline: ctx.budget.map(|b| self.upstream.clock.now() + b),
                upstream: self.upstream.clone(),
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
                            return Some((Err(error), (pager, Step::Done)));
                        }
                    },
                };
                let next = match &page.continuation {
                    Some(token) => Step::Fetch(token.clone()),
                    None => Step::Done,
                };
                Some((Ok(page), (pager, next)))
            });
            let pages: DataLakePages = Box::pin(pages);
            Ok(pages)
        }
        .await;
        self.audit.record(
            &self.metrics,
            ctx,
            "ListDataLake",
            &target,
            &request.identity,
            &outcome,
        );
        outcome
    }
}

/// What the stream does next.
enum Step {
    Ready(Page),
    Fetch(String),
    Done,
}

/// Everything a listing stream needs after the operation has returned.
struct Pager {
    upstream: Upstream,
    selector: IdentitySelector,
    deadline: Option<Instant>,
    listing: Listing,
}

impl Pager {
    /// The next non-empty page (or the last one), within the caller's deadline.
    async fn fetch(&self, mut continuation: Option<String>) -> Result<Page, GatewayError> {
        let work = async {
            for _ in 0..MAX_EMPTY_PAGES {
                // The token comes from the cache almost always; it is asked
                // for per page so a long listing outlives any one token.
                let page = fetch_page(
                    &self.upstream,
                    &self.listing,
                    continuation.as_deref(),
                    &self.selector,
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
        let left = deadline.saturating_duration_since(self.upstream.clock.now());
        if left.is_zero() {
            return Err(GatewayError::DeadlineExceeded(
                "the caller's deadline passed during the Data Lake listing".into(),
            ));
        }
        Ok(Some(left))
    }
}
