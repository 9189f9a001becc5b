//! Full-text search over the messages a user can read, and the background task that indexes
//! new messages behind the send path.

use crate::error::{CoreError, CoreResult};
use crate::{Caller, Core};
use std::time::Duration;
use tidings_proto::rest::{SearchHit, SearchRequest, SearchResults};
use tidings_store::SearchQuery;
use tidings_store::search::MAX_QUERY_CHARS;

/// Messages indexed per store call; small enough that the writer stays free for appends.
const INDEX_BATCH: u32 = 256;
/// How long the indexer rests once it has caught up: the most a new message waits before it
/// can be found.
const INDEX_IDLE: Duration = Duration::from_millis(200);

/// Indexes new messages for as long as the core runs. Appends never wait for it.
pub(crate) async fn run_indexer(core: Core) {
    loop {
        match core.inner.store.index_pending(INDEX_BATCH).await {
            Ok(n) if n == INDEX_BATCH => continue,
            Ok(_) => tokio::time::sleep(INDEX_IDLE).await,
            Err(e) => {
                tracing::warn!(%e, "Could not index messages for search; retrying.");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

impl Core {
    /// Searches every conversation the caller can read.
    pub async fn search(&self, caller: &Caller, req: SearchRequest) -> CoreResult<SearchResults> {
        let text = req.q.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_QUERY_CHARS {
            return Err(CoreError::invalid(format!(
                "q has 1 to {MAX_QUERY_CHARS} characters"
            )));
        }
        if tidings_store::search::parse_query(text).is_none() {
            return Err(CoreError::invalid(
                "q has no letters or digits to search for",
            ));
        }
        let limit = req.limit.unwrap_or(20);
        if !(1..=50).contains(&limit) {
            return Err(CoreError::invalid("limit is 1 to 50"));
        }
        self.inner
            .message_search_limiter
            .check(&caller.user_id, self.now_ms())
            .map_err(|wait| CoreError::rate_limited("searches", wait))?;
        let offset = req.offset.unwrap_or(0);
        let hits = self
            .inner
            .store
            .search_messages(
                caller.user_id,
                SearchQuery {
                    text: text.to_owned(),
                    conversation: req.conversation_id,
                    sender: req.sender_id,
                    since: req.since,
                    until: req.until,
                    limit,
                    offset,
                },
            )
            .await?;
        let next_offset = (hits.len() as u32 == limit).then(|| offset + limit);
        Ok(SearchResults {
            hits: hits
                .into_iter()
                .map(|h| SearchHit {
                    message: h.message,
                    score: h.score,
                })
                .collect(),
            next_offset,
        })
    }
}
