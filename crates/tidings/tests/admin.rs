//! Server administration and the audit log end to end: real HTTP and WebSocket clients against
//! an in-process server, and the real binary for the command line and the tamper test.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tidings_proto::rest::{AuditEntry, AuditOutcome};
use tidings_proto::{ErrorCode, MessageBody};
use tidings_sdk::{AuthedClient, Client, SdkError};
use tidings_testkit::{PASSWORD, ServerProcess, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_tidings");
const WAIT: Duration = Duration::from_secs(10);

/// Creates the first administrator the way an operator does (`create-user --admin`), in process.
async fn admin(server: &TestServer) -> AuthedClient {
    server.admin("root").await.api
}

fn oauth_description(err: SdkError) -> (String, String) {
    match err {
        SdkError::OAuth { error, .. } => (error.error, error.error_description.unwrap_or_default()),
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

/// One query parameter.
fn q(key: &'static str, value: &str) -> Vec<(&'static str, String)> {
    vec![(key, value.to_string())]
}

/// Every entry matching `query`, following `next_after`.
async fn audit(admin: &AuthedClient, query: &[(&str, String)]) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let mut q = query.to_vec();
        q.push(("limit", "2".into()));
        if let Some(after) = after {
            q.push(("after", format!("{after}")));
        }
        let page = admin.admin_audit(&q).await.unwrap();
        all.extend(page.entries);
        match page.next_after {
            Some(next) => after = Some(next),
            None => return all,
        }
    }
}

#[tokio::test]
async fn non_admins_are_refused_everywhere_and_each_refusal_is_audited() {
    let server = TestServer::start().await;
    let root = admin(&server).await;
    let bob = server.user("bob").await;
    let carol = server.user("carol").await;
    let target = carol.user_id;
    let refusals: Vec<(&str, Result<(), SdkError>)> = vec![
        (
            "users.list",
            bob.api.admin_users("", None, 10).await.map(drop),
        ),
        (
            "user.suspend",
            bob.api.admin_suspend(target).await.map(drop),
        ),
        (
            "user.reactivate",
            bob.api.admin_reactivate(target).await.map(drop),
        ),
        ("user.delete", bob.api.admin_delete_user(target).await),
        ("user.sign_out", bob.api.admin_sign_out(target).await),
        (
            "role.grant_admin",
            bob.api.admin_set_admin(target, true).await.map(drop),
        ),
        (
            "role.revoke_admin",
            bob.api.admin_set_admin(target, false).await.map(drop),
        ),
        (
            "audit.read",
            bob.api.admin_audit(&q("kind", "x")).await.map(drop),
        ),
        (
            "audit.read",
            bob.api.admin_audit_export(&[]).await.map(drop),
        ),
    ];
    for (kind, result) in &refusals {
        match result {
            Err(SdkError::Problem { status, problem }) => {
                assert_eq!(*status, 403, "{kind}");
                assert_eq!(problem.code, ErrorCode::Forbidden, "{kind}");
            }
            other => panic!("{kind}: expected 403, got {other:?}"),
        }
    }
    // Nothing happened to carol.
    carol.api.me().await.unwrap();

    // Bob's entries: his sign-in, then one refusal per attempt, in order.
    let by_bob = audit(&root, &q("actor", &bob.user_id.to_string())).await;
    assert_eq!(by_bob[0].kind, "sign_in.success");
    let refused = &by_bob[1..];
    assert_eq!(refused.len(), refusals.len());
    assert!(refused.iter().all(|e| e.outcome == AuditOutcome::Refused));
    assert!(
        refused
            .iter()
            .all(|e| e.address.as_deref() == Some("127.0.0.1"))
    );
    let kinds: Vec<&str> = refused.iter().map(|e| e.kind.as_str()).collect();
    let expected: Vec<&str> = refusals.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, expected);
    assert_eq!(refused[1].target_user, Some(target));

    // An administrator may not lock themselves out.
    let me = root.me().await.unwrap().user_id;
    let err = root.admin_suspend(me).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let err = root.admin_set_admin(me, false).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));

    // The role is read on every request: a grant and a revocation act on the token bob holds.
    let promoted = root.admin_set_admin(bob.user_id, true).await.unwrap();
    assert!(promoted.is_admin);
    let listed = bob.api.admin_users("", None, 10).await.unwrap();
    assert_eq!(listed.users.len(), 3);
    let by_prefix = bob.api.admin_users("CA", None, 10).await.unwrap();
    assert_eq!(by_prefix.users.len(), 1);
    assert_eq!(by_prefix.users[0].username, "carol");
    let page = bob.api.admin_users("", None, 2).await.unwrap();
    let rest = bob.api.admin_users("", page.next_after, 2).await.unwrap();
    assert_eq!(page.users.len() + rest.users.len(), 3);
    root.admin_set_admin(bob.user_id, false).await.unwrap();
    let err = bob.api.admin_users("", None, 10).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let grants = audit(&root, &q("kind", "role.grant_admin")).await;
    assert_eq!(grants.last().unwrap().target_user, Some(bob.user_id));
    assert_eq!(grants.last().unwrap().actor, Some(me));
    server.stop().await;
}

#[tokio::test]
async fn suspension_ends_live_sessions_at_once_and_reactivation_restores_sign_in() {
    let server = TestServer::start().await;
    let root = admin(&server).await;
    let alice = server.user("alice").await;
    let mut ws = server.connect(&alice).await;

    let view = root.admin_suspend(alice.user_id).await.unwrap();
    assert!(view.suspended);
    // The open socket is closed by the server, without waiting for any timeout.
    let closed =
        tokio::time::timeout(WAIT, async { while ws.next_event().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the socket stayed open");
    assert!(ws.close_reason().is_some());
    let err = alice.api.me().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));

    // Signing in and refreshing are refused with a clear reason.
    let client = server.client();
    let (error, description) =
        oauth_description(client.login("alice", PASSWORD, "again").await.unwrap_err());
    assert_eq!(error, "invalid_grant");
    assert_eq!(description, "account suspended");
    let (error, _) = oauth_description(
        client
            .refresh(&alice.tokens.refresh_token)
            .await
            .unwrap_err(),
    );
    assert_eq!(error, "invalid_grant");
    // Someone without the password learns nothing about the suspension.
    let (_, description) = oauth_description(
        client
            .login("alice", "wrong password!", "x")
            .await
            .unwrap_err(),
    );
    assert_eq!(description, "wrong username or password");

    let view = root.admin_reactivate(alice.user_id).await.unwrap();
    assert!(!view.suspended);
    let tokens = client.login("alice", PASSWORD, "back").await.unwrap();
    client.authed(tokens.access_token).me().await.unwrap();

    // A forced sign-out ends every device but leaves the account usable.
    let second = server.second_device(&alice, "tablet").await;
    root.admin_sign_out(alice.user_id).await.unwrap();
    assert!(second.api.me().await.is_err());
    client.login("alice", PASSWORD, "after").await.unwrap();

    let kinds: Vec<String> = audit(&root, &[("target", alice.user_id.to_string())])
        .await
        .into_iter()
        .filter(|e| e.kind.starts_with("user."))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec!["user.suspend", "user.reactivate", "user.sign_out"]
    );
    server.stop().await;
}

#[tokio::test]
async fn deletion_keeps_or_removes_messages_by_policy() {
    for remove in [false, true] {
        let server = TestServer::start_with(|c| {
            c.accounts.deleted_user_messages = if remove {
                tidings_core::config::DeletedUserMessages::Remove
            } else {
                tidings_core::config::DeletedUserMessages::Keep
            };
        })
        .await;
        let root = admin(&server).await;
        let alice = server.user("alice").await;
        let bob = server.user("bob").await;
        let direct = alice.api.open_direct(bob.user_id).await.unwrap();
        let group = alice
            .api
            .create_group("friends", &[bob.user_id])
            .await
            .unwrap();
        for (conversation, id) in [(direct.id, "d1"), (group.id, "g1")] {
            bob.api
                .send(
                    conversation,
                    id,
                    MessageBody::Text {
                        text: "from bob".into(),
                    },
                )
                .await
                .unwrap();
        }
        alice
            .api
            .send(
                group.id,
                "a1",
                MessageBody::Text {
                    text: "from alice".into(),
                },
            )
            .await
            .unwrap();

        root.admin_delete_user(bob.user_id).await.unwrap();
        assert!(bob.api.me().await.is_err(), "bob's devices are signed out");
        let (error, _) = oauth_description(
            server
                .client()
                .login("bob", PASSWORD, "x")
                .await
                .unwrap_err(),
        );
        assert_eq!(error, "invalid_grant");
        let members = alice.api.members(group.id).await.unwrap();
        assert_eq!(members.len(), 1, "bob left every conversation");
        // The username stays taken.
        assert!(server.client().register("bob", PASSWORD).await.is_err());

        let history = alice
            .api
            .history(group.id, None, 10)
            .await
            .unwrap()
            .messages;
        assert_eq!(history.len(), 3, "envelopes keep their place either way");
        assert!(
            matches!(&history[2].body, MessageBody::System { event }
                if **event == tidings_proto::message::SystemEvent::MemberLeft {}),
            "the group is told bob left"
        );
        assert_eq!(history[0].sender_id, bob.user_id);
        let expected_kind = if remove { "deleted" } else { "text" };
        assert_eq!(history[0].body.kind(), expected_kind);
        assert_eq!(
            history[1].body.kind(),
            "text",
            "others' messages are untouched"
        );
        let direct_history = alice
            .api
            .history(direct.id, None, 10)
            .await
            .unwrap()
            .messages;
        assert_eq!(direct_history[0].body.kind(), expected_kind);

        let listed = root.admin_users("bob", None, 10).await.unwrap();
        assert!(listed.users[0].deleted);
        let deletions = audit(&root, &[("kind", "user.delete".into())]).await;
        assert_eq!(deletions.len(), 1);
        assert_eq!(
            deletions[0].detail["messages"],
            if remove { "remove" } else { "keep" }
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn audit_log_filters_pages_and_exports_json_lines() {
    let server = TestServer::start().await;
    let root = admin(&server).await;
    let alice = server.user("alice").await;
    let client = server.client();
    let started = server.core().now_ms();
    for _ in 0..3 {
        client
            .login("alice", "not her password", "x")
            .await
            .unwrap_err();
    }
    client
        .login("nobody", "not a password!", "x")
        .await
        .unwrap_err();
    alice
        .api
        .change_password(PASSWORD, "a brand new password")
        .await
        .unwrap();

    // Failed sign-ins carry the client's address, and the account when it exists.
    let failures = audit(&root, &[("kind", "sign_in.failure".into())]).await;
    assert_eq!(failures.len(), 4);
    assert!(
        failures
            .iter()
            .all(|e| e.address.as_deref() == Some("127.0.0.1"))
    );
    assert!(failures.iter().all(|e| e.outcome == AuditOutcome::Refused));
    assert_eq!(failures[0].target_user, Some(alice.user_id));
    assert_eq!(failures[0].detail["reason"], "wrong_password");
    assert_eq!(failures[3].target_user, None);
    assert_eq!(failures[3].detail["reason"], "unknown_user");
    // No secret ever reaches the log.
    let everything = audit(&root, &[]).await;
    let text = serde_json::to_string(&everything).unwrap();
    assert!(!text.contains("not her password") && !text.contains(PASSWORD));

    let successes = audit(&root, &[("kind", "sign_in.success".into())]).await;
    assert!(
        successes
            .iter()
            .all(|e| e.address.as_deref() == Some("127.0.0.1"))
    );
    let mine = audit(
        &root,
        &[
            ("target", alice.user_id.to_string()),
            ("kind", "password.change".into()),
        ],
    )
    .await;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].actor, Some(alice.user_id));
    // Time ranges: nothing before the test began but the bootstrap, everything after it.
    let since = audit(&root, &[("since", started.to_string())]).await;
    let until = audit(&root, &[("until", started.to_string())]).await;
    assert_eq!(since.len() + until.len(), everything.len());
    assert!(since.iter().all(|e| e.ts >= started));
    // Ids are gap-free and every entry chains to the one before.
    for pair in everything.windows(2) {
        assert_eq!(pair[1].id, pair[0].id + 1);
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }

    // The export holds the same entries, one JSON object per line, plus its own record.
    let export = root
        .admin_audit_export(&[("kind", "sign_in.failure".into())])
        .await
        .unwrap();
    let lines: Vec<AuditEntry> = export
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, failures);
    let exports = audit(&root, &[("kind", "audit.export".into())]).await;
    assert_eq!(exports.len(), 1);
    // Raw: the media type, and the whole log (what was read above, the first export, the
    // sign-in for this token, and this export itself).
    let raw = reqwest::Client::new()
        .get(format!("{}/api/v1/admin/audit/export", server.base_url))
        .bearer_auth(root_token(&server).await)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "application/jsonl");
    assert_eq!(
        raw.text().await.unwrap().lines().count(),
        everything.len() + 3
    );
    server.stop().await;
}

/// A fresh access token for the administrator `root`.
async fn root_token(server: &TestServer) -> String {
    server
        .client()
        .login("root", PASSWORD, "raw")
        .await
        .unwrap()
        .access_token
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_address_with_retry_after() {
    let server =
        TestServer::start_with(|c| c.limits.sign_in_attempts_per_address_per_minute = 3).await;
    server.client().register("alice", PASSWORD).await.unwrap();
    let http = reqwest::Client::new();
    let attempt = || {
        http.post(format!("{}/oauth/token", server.base_url))
            .form(&[
                ("grant_type", "password"),
                ("username", "alice"),
                ("password", "wrong password!"),
            ])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(attempt().await.unwrap().status(), 400);
    }
    let limited = attempt().await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    // Even the right password waits: the limit counts attempts, not failures.
    let err = server
        .client()
        .login("alice", PASSWORD, "x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    server.stop().await;
}

#[tokio::test]
async fn pruning_leaves_a_signed_checkpoint_that_verify_checks() {
    let server = TestServer::start().await;
    let _root = admin(&server).await;
    for _ in 0..3 {
        server
            .client()
            .login("root", "wrong password!", "x")
            .await
            .unwrap_err();
    }
    let core = server.core();
    let before = core.verify_audit().await.unwrap().unwrap();
    let pruned = core.prune_audit_before(core.now_ms() + 1).await.unwrap();
    assert_eq!(pruned, before.entries);
    // A new entry chains from the checkpoint; the log still verifies.
    server
        .client()
        .login("root", "wrong password!", "x")
        .await
        .unwrap_err();
    let after = core.verify_audit().await.unwrap().unwrap();
    assert_eq!((after.entries, after.checkpoints), (1, 1));
    // A checkpoint that is not the server's fails verification, naming the entry it covers.
    let db = rusqlite::Connection::open(server.data_dir().join("tidings.db")).unwrap();
    db.execute("UPDATE audit_checkpoints SET pruned = pruned + 1", [])
        .unwrap();
    let broken = core.verify_audit().await.unwrap().unwrap_err();
    assert_eq!(broken.id, before.entries as i64);
    server.stop().await;
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("TIDINGS_ACCOUNTS_ARGON2_MEMORY_KIB", "256")
        .env("TIDINGS_ACCOUNTS_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cli_bootstraps_an_admin_and_an_altered_audit_row_fails_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let admin_cmd = |rest: &[&str]| -> Vec<String> {
        let mut args = vec!["admin".to_string(), "--data-dir".into(), data.to_string()];
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    };
    let run_admin = |rest: &[&str], stdin: &str| {
        let args = admin_cmd(rest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, stdin)
    };
    let out = run_admin(
        &["create-user", "--admin", "root"],
        "a long enough password\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("as an administrator"));
    let out = run_admin(&["create-user", "mallory"], "a long enough password\n");
    assert!(out.status.success());

    // The real server on that directory: the bootstrap administrator can use the API.
    let server = ServerProcess::spawn(std::path::Path::new(BIN), dir.path(), &[])
        .await
        .unwrap();
    let client = Client::new(server.base_url.clone());
    let root = client
        .login("root", "a long enough password", "laptop")
        .await
        .unwrap();
    let root = client.authed(root.access_token);
    let users = root.admin_users("", None, 10).await.unwrap();
    assert!(
        users
            .users
            .iter()
            .any(|u| u.username == "root" && u.is_admin)
    );
    for _ in 0..2 {
        client
            .login("mallory", "guessing wrong", "x")
            .await
            .unwrap_err();
    }
    server.terminate().await.unwrap();

    // The CLI twins of the admin API.
    for (cmd, expect) in [
        ("suspend", "suspended"),
        ("reactivate", "active again"),
        ("sign-out", "signed out"),
        ("grant-admin", "now an administrator"),
        ("revoke-admin", "no longer an administrator"),
    ] {
        let out = run_admin(&[cmd, "mallory"], "");
        assert!(out.status.success(), "{cmd}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(expect),
            "{cmd}: {}",
            text(&out.stdout)
        );
    }
    let out = run_admin(&["suspend", "nobody"], "");
    assert!(!out.status.success());

    let out = run_admin(
        &[
            "audit",
            "export",
            "--kind",
            "sign_in.failure",
            "--since",
            "1h",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let failures: Vec<AuditEntry> = text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .all(|e| e.target_user == failures[0].target_user)
    );
    let out = run_admin(&["audit", "export", "--target", "mallory"], "");
    let about_mallory = text(&out.stdout).lines().count();
    assert_eq!(
        about_mallory,
        2 + 5,
        "two failures and five operator actions"
    );

    // An untouched log verifies.
    let out = run_admin(&["audit", "verify"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("audit log intact"), "{report}");

    // Alter one entry directly in the database: verify fails and names it.
    let victim = failures[1].id;
    let db = rusqlite::Connection::open(dir.path().join("tidings.db")).unwrap();
    db.execute(
        "UPDATE audit_log SET address = '203.0.113.9' WHERE id = ?1",
        [victim],
    )
    .unwrap();
    drop(db);
    let out = run_admin(&["audit", "verify"], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("audit entry {victim}:")), "{err}");
    assert!(err.contains("altered"), "{err}");

    // Deleting an entry instead is caught too, naming the missing one.
    let db = rusqlite::Connection::open(dir.path().join("tidings.db")).unwrap();
    db.execute(
        "UPDATE audit_log SET address = '127.0.0.1' WHERE id = ?1",
        [victim],
    )
    .unwrap();
    let out = run_admin(&["audit", "verify"], "");
    assert!(out.status.success(), "restoring the row restores the chain");
    db.execute("DELETE FROM audit_log WHERE id = ?1", [victim])
        .unwrap();
    drop(db);
    let out = run_admin(&["audit", "verify"], "");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("audit entry {victim}: is missing")),
        "{err}"
    );

    // Deletion from the command line.
    let out = run_admin(&["delete-user", "mallory"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_admin(&["list-users", "--prefix", "mal"], "");
    let listing = text(&out.stdout);
    assert!(
        listing.contains("mallory") && listing.contains("deleted"),
        "{listing}"
    );
    assert!(!listing.contains("root"), "{listing}");
}
