//! Message search end to end: what members sent is found (Chinese and English alike) shortly
//! after it is stored, nothing from conversations the searcher cannot read is, and bad queries
//! get clear errors.

use std::time::{Duration, Instant};
use tidings_proto::ErrorCode;
use tidings_proto::MessageBody;
use tidings_proto::rest::{SearchRequest, SearchResults};
use tidings_sdk::AuthedClient;
use tidings_testkit::TestServer;

fn request(q: &str) -> SearchRequest {
    SearchRequest {
        q: q.into(),
        ..Default::default()
    }
}

/// Searches until at least `want` hits appear (the index runs behind appends) or time runs out.
async fn search_until(api: &AuthedClient, req: SearchRequest, want: usize) -> SearchResults {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let results = api.search(&req).await.unwrap();
        if results.hits.len() >= want || Instant::now() > deadline {
            return results;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn texts(results: &SearchResults) -> Vec<String> {
    let mut texts: Vec<String> = results
        .hits
        .iter()
        .map(|h| match &h.message.body {
            MessageBody::Text { text } => text.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    texts.sort();
    texts
}

#[tokio::test]
async fn members_find_messages_in_chinese_and_english() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let eve = server.user("eve").await;
    let conv = alice.api.open_direct(bob.user_id).await.unwrap();
    let group = alice
        .api
        .create_group("团队", &[bob.user_id])
        .await
        .unwrap();
    let ws = server.connect(&alice).await;
    for (n, (id, text)) in [
        (conv.id, "你好，明天开会吗？"),
        (conv.id, "Lunch at NOON?"),
        (group.id, "新的通讯软件上线了"),
        (group.id, "noon standup moved"),
    ]
    .into_iter()
    .enumerate()
    {
        ws.send_text(id, &format!("m{n}"), text).await.unwrap();
    }
    let results = search_until(&bob.api, request("你好"), 1).await;
    assert_eq!(texts(&results), vec!["你好，明天开会吗？"]);
    let results = search_until(&bob.api, request("通讯"), 1).await;
    assert_eq!(texts(&results), vec!["新的通讯软件上线了"]);
    let results = search_until(&bob.api, request("noon"), 2).await;
    assert_eq!(
        texts(&results),
        vec!["Lunch at NOON?", "noon standup moved"]
    );
    let only_group = SearchRequest {
        conversation_id: Some(group.id),
        ..request("noon")
    };
    assert_eq!(
        texts(&bob.api.search(&only_group).await.unwrap()),
        vec!["noon standup moved"]
    );
    // Someone who shares no conversation finds nothing, and cannot tell anything exists.
    assert!(
        eve.api
            .search(&request("noon"))
            .await
            .unwrap()
            .hits
            .is_empty()
    );

    // Pages: one hit per page, then no more.
    let first = bob
        .api
        .search(&SearchRequest {
            limit: Some(1),
            ..request("noon")
        })
        .await
        .unwrap();
    assert_eq!(first.hits.len(), 1);
    let second = bob
        .api
        .search(&SearchRequest {
            limit: Some(1),
            offset: first.next_offset,
            ..request("noon")
        })
        .await
        .unwrap();
    assert_eq!(second.hits.len(), 1);
    assert_ne!(first.hits[0].message.id, second.hits[0].message.id);

    for bad in ["", "   ", "!!!", &"x".repeat(101)] {
        let err = bob.api.search(&request(bad)).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidField), "{bad:?}");
    }
    server.stop().await;
}
