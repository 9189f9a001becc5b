//! Profiles and the user directory over real HTTP.

use tidings_proto::ErrorCode;
use tidings_proto::rest::UpdateProfileRequest;
use tidings_testkit::TestServer;

#[tokio::test]
async fn profiles_can_be_set_read_and_found() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let alina = server.user("alina").await;
    let wang = server.user("wang").await;

    let mine = alice.api.my_profile().await.unwrap();
    assert_eq!(
        (mine.username.as_str(), mine.display_name.as_str()),
        ("alice", "")
    );
    let updated = wang
        .api
        .update_profile(&UpdateProfileRequest {
            display_name: Some("  王小明 ".into()),
            status_text: Some("在线".into()),
            avatar: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.status_text.as_str()),
        ("王小明", "在线")
    );
    // A partial update keeps the other field.
    let updated = wang
        .api
        .update_profile(&UpdateProfileRequest {
            display_name: None,
            status_text: Some("busy".into()),
            avatar: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (updated.display_name.as_str(), updated.status_text.as_str()),
        ("王小明", "busy")
    );
    assert_eq!(
        alice.api.profile(wang.user_id).await.unwrap().display_name,
        "王小明"
    );

    let names = |r: tidings_proto::rest::UserSearchResults| {
        r.users.into_iter().map(|p| p.username).collect::<Vec<_>>()
    };
    assert_eq!(
        names(alice.api.search_users("ali", 20).await.unwrap()),
        ["alice", "alina"]
    );
    assert_eq!(
        names(alice.api.search_users("王小", 20).await.unwrap()),
        ["wang"]
    );
    assert_eq!(
        names(alice.api.search_users("ALI", 1).await.unwrap()).len(),
        1
    );

    // Limits are explicit: one-character searches and oversized fields are refused.
    let err = alice.api.search_users("a", 20).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));
    let err = alice
        .api
        .update_profile(&UpdateProfileRequest {
            display_name: Some("x".repeat(65)),
            status_text: None,
            avatar: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidField));
    let err = alice
        .api
        .profile(tidings_proto::UserId(999_999))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let _ = alina;
    server.stop().await;
}

#[tokio::test]
async fn directory_searches_are_rate_limited_with_a_clear_wait() {
    let server = TestServer::start_with(|c| c.limits.directory_searches_per_minute = 6).await;
    let alice = server.user("alice").await;
    // A burst of ten passes; the eleventh waits about ten seconds (six a minute).
    for _ in 0..10 {
        alice.api.search_users("al", 5).await.unwrap();
    }
    let err = alice.api.search_users("al", 5).await.unwrap_err();
    match err {
        tidings_sdk::SdkError::Problem { status, problem } => {
            assert_eq!(status, 429);
            assert_eq!(problem.code, ErrorCode::RateLimited);
            let wait = problem.retry_after_ms.expect("a wait");
            assert!((1..=10_000).contains(&wait), "{wait}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // Other users have their own budget.
    let bob = server.user("bob").await;
    bob.api.search_users("al", 5).await.unwrap();
    server.stop().await;
}
