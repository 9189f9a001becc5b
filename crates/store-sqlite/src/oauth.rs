//! The SQLite statements of the OAuth authorization server: registered clients (and bot
//! clients with their account), authorization codes, device authorizations and device grants
//! (see `tidings_store::oauth`).

use crate::queries::{
    create_device, create_user, execute, insert_audit, query_all, query_opt, sign_in,
};
use rusqlite::{Connection, Row, params};
use tidings_proto::{DeviceId, UserId};
use tidings_store::{
    AuthorizationCodeRecord, BotBinding, DeviceAuthorizationRecord, DeviceAuthorizationState,
    DeviceGrant, DeviceRecord, NewAudit, OAuthClientRecord, StoreError, StoreResult,
};

const INSERT_CLIENT: &str = "INSERT INTO oauth_clients \
     (client_id, name, secret_hash, redirect_uris, scope, created_at, bot_user_id, \
     bot_device_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const CLIENT: &str = "SELECT client_id, name, secret_hash, redirect_uris, scope, created_at, \
     bot_user_id, bot_device_id FROM oauth_clients WHERE client_id = ?1";
const CLIENTS_AFTER: &str = "SELECT client_id, name, secret_hash, redirect_uris, scope, \
     created_at, bot_user_id, bot_device_id FROM oauth_clients WHERE client_id > ?1 \
     ORDER BY client_id LIMIT ?2";
const DELETE_CLIENT: &str = "DELETE FROM oauth_clients WHERE client_id = ?1";
const DELETE_CLIENT_CODES: &str = "DELETE FROM oauth_codes WHERE client_id = ?1";
const DELETE_CLIENT_DEVICE_AUTHS: &str = "DELETE FROM device_authorizations WHERE client_id = ?1";
const DELETE_EXPIRED_DEVICE_AUTHS: &str =
    "DELETE FROM device_authorizations WHERE expires_at <= ?1";
const INSERT_DEVICE_AUTH: &str = "INSERT INTO device_authorizations \
     (device_code_hash, user_code, client_id, scope, expires_at, interval_secs, last_polled_at, \
     state, user_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const DEVICE_AUTH_BY_USER_CODE: &str = "SELECT device_code_hash, user_code, client_id, scope, \
     expires_at, interval_secs, last_polled_at, state, user_id FROM device_authorizations \
     WHERE user_code = ?1 AND expires_at > ?2";
const DEVICE_AUTH_BY_HASH: &str = "SELECT device_code_hash, user_code, client_id, scope, \
     expires_at, interval_secs, last_polled_at, state, user_id FROM device_authorizations \
     WHERE device_code_hash = ?1";
const DECIDE_DEVICE_AUTH: &str = "UPDATE device_authorizations SET state = ?3, user_id = ?4 \
     WHERE user_code = ?1 AND expires_at > ?2 AND state = 0";
const POLL_DEVICE_AUTH: &str = "UPDATE device_authorizations \
     SET last_polled_at = ?2, interval_secs = interval_secs + ?3 WHERE device_code_hash = ?1";
const DELETE_DEVICE_AUTH: &str = "DELETE FROM device_authorizations WHERE device_code_hash = ?1";
const REVOKE_CLIENT_DEVICES: &str = "UPDATE devices SET revoked_at = ?2 \
     WHERE id IN (SELECT device_id FROM device_grants WHERE client_id = ?1) \
     AND revoked_at IS NULL RETURNING user_id, id";
const DELETE_TOKENS_OF_DEVICE: &str = "DELETE FROM refresh_tokens WHERE device_id = ?1";
const DELETE_EXPIRED_CODES: &str = "DELETE FROM oauth_codes WHERE expires_at <= ?1";
const INSERT_CODE: &str = "INSERT INTO oauth_codes \
     (code_hash, client_id, user_id, redirect_uri, code_challenge, scope, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const TAKE_CODE: &str = "DELETE FROM oauth_codes WHERE code_hash = ?1 \
     RETURNING client_id, user_id, redirect_uri, code_challenge, scope, expires_at";
const CLIENT_EXISTS: &str = "SELECT 1 FROM oauth_clients WHERE client_id = ?1";
const INSERT_GRANT: &str =
    "INSERT INTO device_grants (device_id, client_id, scope) VALUES (?1, ?2, ?3)";
const GRANT: &str = "SELECT client_id, scope FROM device_grants WHERE device_id = ?1";

/// Every statement, for the index-plan test in `queries.rs`.
#[cfg(test)]
pub(crate) const ALL: &[(&str, &str)] = &[
    ("INSERT_CLIENT", INSERT_CLIENT),
    ("CLIENT", CLIENT),
    ("CLIENTS_AFTER", CLIENTS_AFTER),
    ("DELETE_CLIENT", DELETE_CLIENT),
    ("DELETE_CLIENT_CODES", DELETE_CLIENT_CODES),
    ("DELETE_CLIENT_DEVICE_AUTHS", DELETE_CLIENT_DEVICE_AUTHS),
    ("DELETE_EXPIRED_DEVICE_AUTHS", DELETE_EXPIRED_DEVICE_AUTHS),
    ("INSERT_DEVICE_AUTH", INSERT_DEVICE_AUTH),
    ("DEVICE_AUTH_BY_USER_CODE", DEVICE_AUTH_BY_USER_CODE),
    ("DEVICE_AUTH_BY_HASH", DEVICE_AUTH_BY_HASH),
    ("DECIDE_DEVICE_AUTH", DECIDE_DEVICE_AUTH),
    ("POLL_DEVICE_AUTH", POLL_DEVICE_AUTH),
    ("DELETE_DEVICE_AUTH", DELETE_DEVICE_AUTH),
    ("REVOKE_CLIENT_DEVICES", REVOKE_CLIENT_DEVICES),
    ("DELETE_TOKENS_OF_DEVICE", DELETE_TOKENS_OF_DEVICE),
    ("DELETE_EXPIRED_CODES", DELETE_EXPIRED_CODES),
    ("INSERT_CODE", INSERT_CODE),
    ("TAKE_CODE", TAKE_CODE),
    ("CLIENT_EXISTS", CLIENT_EXISTS),
    ("INSERT_GRANT", INSERT_GRANT),
    ("GRANT", GRANT),
];

fn client_from_row(row: &Row<'_>) -> rusqlite::Result<OAuthClientRecord> {
    let secret: Option<Vec<u8>> = row.get(2)?;
    let uris: String = row.get(3)?;
    Ok(OAuthClientRecord {
        client_id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: secret.and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok()),
        // The column is only ever written from a Vec<String> below.
        redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
        scope: row.get(4)?,
        created_at: row.get(5)?,
        bot: match (row.get::<_, Option<i64>>(6)?, row.get::<_, Option<i64>>(7)?) {
            (Some(user), Some(device)) => Some(BotBinding {
                user_id: UserId(user),
                device_id: DeviceId(device),
            }),
            _ => None,
        },
    })
}

pub(crate) fn create_client(
    conn: &Connection,
    client: &OAuthClientRecord,
    audit: &NewAudit,
) -> StoreResult<()> {
    let uris = serde_json::to_string(&client.redirect_uris)
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    execute(
        conn,
        INSERT_CLIENT,
        params![
            client.client_id,
            client.name,
            client.secret_hash.map(|h| h.to_vec()),
            uris,
            client.scope,
            client.created_at,
            client.bot.map(|b| b.user_id.0),
            client.bot.map(|b| b.device_id.0)
        ],
    )?;
    insert_audit(conn, audit)?;
    Ok(())
}

/// Creates the bot account, its one device with the client's grant, and the client bound to
/// both (runs inside the writer's savepoint, so a conflict undoes it all).
pub(crate) fn create_bot_client(
    conn: &Connection,
    client: &OAuthClientRecord,
    username: &str,
    password_hash: &str,
    audit: &NewAudit,
) -> StoreResult<OAuthClientRecord> {
    let user = create_user(conn, username, password_hash, client.created_at)?;
    let device = create_device(conn, user.id, &client.name, client.created_at)?;
    execute(
        conn,
        INSERT_GRANT,
        params![device.id.0, client.client_id, client.scope],
    )?;
    let client = OAuthClientRecord {
        bot: Some(BotBinding {
            user_id: user.id,
            device_id: device.id,
        }),
        ..client.clone()
    };
    create_client(conn, &client, audit)?;
    Ok(client)
}

fn device_auth_from_row(row: &Row<'_>) -> rusqlite::Result<DeviceAuthorizationRecord> {
    let hash: Vec<u8> = row.get(0)?;
    let state: i64 = row.get(7)?;
    let user: Option<i64> = row.get(8)?;
    Ok(DeviceAuthorizationRecord {
        device_code_hash: <[u8; 32]>::try_from(hash.as_slice()).unwrap_or_default(),
        user_code: row.get(1)?,
        client_id: row.get(2)?,
        scope: row.get(3)?,
        expires_at: row.get(4)?,
        interval_secs: row.get(5)?,
        last_polled_at: row.get(6)?,
        state: match (state, user) {
            (1, Some(user)) => DeviceAuthorizationState::Approved(UserId(user)),
            (2, _) => DeviceAuthorizationState::Denied,
            _ => DeviceAuthorizationState::Pending,
        },
    })
}

fn state_columns(state: DeviceAuthorizationState) -> (i64, Option<i64>) {
    match state {
        DeviceAuthorizationState::Pending => (0, None),
        DeviceAuthorizationState::Approved(user) => (1, Some(user.0)),
        DeviceAuthorizationState::Denied => (2, None),
    }
}

pub(crate) fn create_device_authorization(
    conn: &Connection,
    auth: &DeviceAuthorizationRecord,
    now: i64,
) -> StoreResult<()> {
    execute(conn, DELETE_EXPIRED_DEVICE_AUTHS, [now])?;
    let (state, user) = state_columns(auth.state);
    execute(
        conn,
        INSERT_DEVICE_AUTH,
        params![
            &auth.device_code_hash[..],
            auth.user_code,
            auth.client_id,
            auth.scope,
            auth.expires_at,
            auth.interval_secs,
            auth.last_polled_at,
            state,
            user
        ],
    )?;
    Ok(())
}

pub(crate) fn device_authorization(
    conn: &Connection,
    user_code: &str,
    now: i64,
) -> StoreResult<Option<DeviceAuthorizationRecord>> {
    query_opt(
        conn,
        DEVICE_AUTH_BY_USER_CODE,
        params![user_code, now],
        device_auth_from_row,
    )
}

pub(crate) fn decide_device_authorization(
    conn: &Connection,
    user_code: &str,
    state: DeviceAuthorizationState,
    now: i64,
) -> StoreResult<bool> {
    let (state, user) = state_columns(state);
    Ok(execute(
        conn,
        DECIDE_DEVICE_AUTH,
        params![user_code, now, state, user],
    )? == 1)
}

pub(crate) fn poll_device_authorization(
    conn: &Connection,
    hash: [u8; 32],
    now: i64,
) -> StoreResult<Option<DeviceAuthorizationRecord>> {
    let Some(before) = query_opt(conn, DEVICE_AUTH_BY_HASH, [&hash[..]], device_auth_from_row)?
    else {
        return Ok(None);
    };
    if before.state != DeviceAuthorizationState::Pending || before.expires_at <= now {
        execute(conn, DELETE_DEVICE_AUTH, [&hash[..]])?;
    } else {
        let early = before
            .last_polled_at
            .is_some_and(|t| now - t < before.interval_secs.saturating_mul(1000));
        execute(
            conn,
            POLL_DEVICE_AUTH,
            params![&hash[..], now, if early { 5 } else { 0 }],
        )?;
    }
    Ok(Some(before))
}

pub(crate) fn client(conn: &Connection, client_id: &str) -> StoreResult<Option<OAuthClientRecord>> {
    query_opt(conn, CLIENT, [client_id], client_from_row)
}

pub(crate) fn clients(
    conn: &Connection,
    after: &str,
    limit: u32,
) -> StoreResult<Vec<OAuthClientRecord>> {
    query_all(conn, CLIENTS_AFTER, params![after, limit], client_from_row)
}

pub(crate) fn delete_client(
    conn: &Connection,
    client_id: &str,
    now: i64,
    audit: &NewAudit,
) -> StoreResult<Vec<(UserId, DeviceId)>> {
    if execute(conn, DELETE_CLIENT, [client_id])? == 0 {
        return Err(StoreError::NotFound);
    }
    execute(conn, DELETE_CLIENT_CODES, [client_id])?;
    execute(conn, DELETE_CLIENT_DEVICE_AUTHS, [client_id])?;
    let revoked = query_all(
        conn,
        REVOKE_CLIENT_DEVICES,
        params![client_id, now],
        |row| Ok((UserId(row.get(0)?), DeviceId(row.get(1)?))),
    )?;
    for (_, device) in &revoked {
        execute(conn, DELETE_TOKENS_OF_DEVICE, [device.0])?;
    }
    insert_audit(conn, audit)?;
    Ok(revoked)
}

pub(crate) fn create_code(
    conn: &Connection,
    code: &AuthorizationCodeRecord,
    now: i64,
) -> StoreResult<()> {
    execute(conn, DELETE_EXPIRED_CODES, [now])?;
    execute(
        conn,
        INSERT_CODE,
        params![
            &code.code_hash[..],
            code.client_id,
            code.user_id.0,
            code.redirect_uri,
            code.code_challenge,
            code.scope,
            code.expires_at
        ],
    )?;
    Ok(())
}

pub(crate) fn take_code(
    conn: &Connection,
    code_hash: [u8; 32],
    now: i64,
) -> StoreResult<Option<AuthorizationCodeRecord>> {
    let code = query_opt(conn, TAKE_CODE, [&code_hash[..]], |row| {
        Ok(AuthorizationCodeRecord {
            code_hash,
            client_id: row.get(0)?,
            user_id: UserId(row.get(1)?),
            redirect_uri: row.get(2)?,
            code_challenge: row.get(3)?,
            scope: row.get(4)?,
            expires_at: row.get(5)?,
        })
    })?;
    Ok(code.filter(|c| c.expires_at > now))
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_in_client(
    conn: &Connection,
    user: UserId,
    device_name: &str,
    grant: &DeviceGrant,
    refresh_hash: [u8; 32],
    refresh_expires_at: i64,
    now: i64,
    audit: &NewAudit,
) -> StoreResult<DeviceRecord> {
    if query_opt(conn, CLIENT_EXISTS, [&grant.client_id], |row| {
        row.get::<_, i64>(0)
    })?
    .is_none()
    {
        return Err(StoreError::NotFound);
    }
    let device = sign_in(
        conn,
        user,
        device_name,
        refresh_hash,
        refresh_expires_at,
        now,
        audit,
    )?;
    execute(
        conn,
        INSERT_GRANT,
        params![device.id.0, grant.client_id, grant.scope],
    )?;
    Ok(device)
}

pub(crate) fn device_grant(
    conn: &Connection,
    device: DeviceId,
) -> StoreResult<Option<DeviceGrant>> {
    query_opt(conn, GRANT, [device.0], |row| {
        Ok(DeviceGrant {
            client_id: row.get(0)?,
            scope: row.get(1)?,
        })
    })
}
