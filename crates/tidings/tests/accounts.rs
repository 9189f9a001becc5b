//! Accounts and OAuth over real HTTP: registration rules, password and refresh grants,
//! rotation and reuse detection, revocation, devices, password changes, metadata.

use tidings_core::config::RegistrationMode;
use tidings_proto::ErrorCode;
use tidings_proto::ws::ServerFrame;
use tidings_sdk::{Connection, SdkError};
use tidings_testkit::{PASSWORD, TestServer};

fn oauth_error(err: SdkError) -> String {
    match err {
        SdkError::OAuth { status, error } => {
            assert_eq!(status, 400);
            error.error
        }
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

#[tokio::test]
async fn registration_enforces_rules_and_uniqueness() {
    let server = TestServer::start().await;
    let client = server.client();
    let account = client.register("Alice", PASSWORD).await.unwrap();
    assert_eq!(account.username, "alice");
    for (name, password, code) in [
        ("alice", PASSWORD, ErrorCode::Conflict),
        ("ALICE", PASSWORD, ErrorCode::Conflict),
        ("x", PASSWORD, ErrorCode::InvalidField),
        ("9lives", PASSWORD, ErrorCode::InvalidField),
        ("bob", "short", ErrorCode::InvalidField),
        ("carol12345", "carol12345", ErrorCode::InvalidField),
    ] {
        let err = client.register(name, password).await.unwrap_err();
        assert_eq!(err.code(), Some(code), "{name}/{password}");
        if let SdkError::Problem { status, problem } = &err {
            assert_eq!(*status, code.http_status());
            assert!(problem.type_uri.starts_with("urn:tidings:problem:"));
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn closed_and_invite_only_registration() {
    let closed =
        TestServer::start_with(|c| c.accounts.registration = RegistrationMode::Closed).await;
    let err = closed
        .client()
        .register("alice", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RegistrationClosed));
    // Operators can still create accounts.
    closed
        .core()
        .admin_create_user("alice", PASSWORD.into(), false)
        .await
        .unwrap();
    closed
        .client()
        .login("alice", PASSWORD, "laptop")
        .await
        .unwrap();
    closed.stop().await;

    let invite =
        TestServer::start_with(|c| c.accounts.registration = RegistrationMode::Invite).await;
    let client = invite.client();
    let err = client.register("bob", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RegistrationClosed));
    let code = invite.core().admin_create_invite(1, 3600).await.unwrap();
    let with = |name: &str, code: &str| tidings_proto::rest::RegisterRequest {
        username: name.into(),
        password: PASSWORD.into(),
        invite_code: Some(code.into()),
    };
    client.register_with(with("bob", &code)).await.unwrap();
    // The code was for one registration only.
    let err = client
        .register_with(with("carol", &code))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RegistrationClosed));
    let err = client
        .register_with(with("dave", "made-up"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RegistrationClosed));
    invite.stop().await;
}

#[tokio::test]
async fn password_grant_refresh_rotation_and_reuse_detection() {
    let server = TestServer::start().await;
    let client = server.client();
    client.register("alice", PASSWORD).await.unwrap();
    assert_eq!(
        oauth_error(
            client
                .login("alice", "wrong password", "x")
                .await
                .unwrap_err()
        ),
        "invalid_grant"
    );
    assert_eq!(
        oauth_error(client.login("nobody", PASSWORD, "x").await.unwrap_err()),
        "invalid_grant"
    );

    let first = client.login("alice", PASSWORD, "laptop").await.unwrap();
    assert_eq!(first.token_type, "Bearer");
    assert_eq!(first.expires_in, 900);
    assert_eq!(
        client
            .authed(&first.access_token)
            .me()
            .await
            .unwrap()
            .username,
        "alice"
    );

    let second = client.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(second.device_id, first.device_id);
    // Presenting the rotated token again is theft or a bug: the whole device is signed out.
    assert_eq!(
        oauth_error(client.refresh(&first.refresh_token).await.unwrap_err()),
        "invalid_grant"
    );
    assert_eq!(
        oauth_error(client.refresh(&second.refresh_token).await.unwrap_err()),
        "invalid_grant"
    );
    let err = client.authed(&second.access_token).me().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));

    // Garbage tokens and unsupported grants get RFC 6749 errors.
    assert_eq!(
        oauth_error(client.refresh("garbage").await.unwrap_err()),
        "invalid_grant"
    );
    let err = client.authed("not.a.jwt").me().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
    server.stop().await;
}

#[tokio::test]
async fn revocation_devices_and_password_change_sign_out() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let phone = server.second_device(&alice, "phone").await;
    let tablet = server.second_device(&alice, "tablet").await;
    let devices = alice.api.devices().await.unwrap().devices;
    assert_eq!(devices.len(), 3);
    assert_eq!(devices.iter().filter(|d| d.current).count(), 1);

    // Signing a device out closes its live connection.
    let mut phone_ws = server.connect(&phone).await;
    alice
        .api
        .sign_out_device(phone.tokens.device_id)
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), phone_ws.next_event())
            .await
            .unwrap()
        {
            Some(ServerFrame::Error { code, .. }) => assert_eq!(code, ErrorCode::Unauthenticated),
            Some(_) => continue,
            None => break,
        }
    }
    assert_eq!(phone_ws.close_reason().map(|r| r.0), Some(4003));
    assert_eq!(alice.api.devices().await.unwrap().devices.len(), 2);
    let err = server
        .client()
        .refresh(&phone.tokens.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(oauth_error(err), "invalid_grant");

    // RFC 7009: revoking the tablet's refresh token signs it out; unknown tokens are fine.
    server
        .client()
        .revoke(&tablet.tokens.refresh_token)
        .await
        .unwrap();
    server.client().revoke("never-issued").await.unwrap();
    assert_eq!(alice.api.devices().await.unwrap().devices.len(), 1);

    // A password change keeps the current device and signs out the others.
    let laptop2 = server.second_device(&alice, "laptop 2").await;
    let err = alice
        .api
        .change_password("wrong", "a new long password")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidCredentials));
    alice
        .api
        .change_password(PASSWORD, "a new long password")
        .await
        .unwrap();
    assert!(alice.api.me().await.is_ok());
    assert!(laptop2.api.me().await.is_err());
    server
        .client()
        .login("alice", "a new long password", "again")
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn metadata_jwks_openapi_and_health() {
    let server = TestServer::start().await;
    let client = server.client();
    let meta = client
        .get_json("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert_eq!(meta["issuer"], server.base_url.as_str());
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/oauth/token", server.base_url)
    );
    let jwks = client.get_json("/.well-known/jwks.json").await.unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let openapi = client.get_json("/api/openapi.json").await.unwrap();
    assert_eq!(openapi["openapi"], "3.1.0");
    assert!(openapi["paths"]["/api/v1/conversations/{id}/messages"]["post"].is_object());
    assert_eq!(client.get_json("/healthz").await.unwrap()["status"], "ok");
    assert_eq!(client.get_json("/readyz").await.unwrap()["status"], "ok");
    let err = client.get_json("/api/v1/nothing-here").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    server.stop().await;
}

#[tokio::test]
async fn signing_key_persists_with_owner_only_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let key = server.data_dir().join("token-signing.ed25519");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(server.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    server.stop().await;
}

#[tokio::test]
async fn websocket_token_refresh_keeps_the_session() {
    let server = TestServer::start().await;
    let alice = server.user("alice").await;
    let mut ws = Connection::connect(&server.client().ws_url(), &alice.tokens.access_token)
        .await
        .unwrap();
    let refreshed = server
        .client()
        .refresh(&alice.tokens.refresh_token)
        .await
        .unwrap();
    let expires = ws.authenticate(&refreshed.access_token).await.unwrap();
    assert!(expires > 0);
    // Another user's token cannot take over the connection.
    let bob = server.user("bob").await;
    let err = ws.authenticate(&bob.tokens.access_token).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    server.stop().await;
}
