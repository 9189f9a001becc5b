//! The SQLite statements of the OAuth authorization server: registered clients, authorization
//! codes and device grants (see `tidings_store::oauth`).

use crate::queries::{execute, insert_audit, query_all, query_opt, sign_in};
use rusqlite::{Connection, Row, params};
use tidings_proto::{DeviceId, UserId};
use tidings_store::{
    AuthorizationCodeRecord, DeviceGrant, DeviceRecord, NewAudit, OAuthClientRecord, StoreError,
    StoreResult,
};

const INSERT_CLIENT: &str = "INSERT INTO oauth_clients \
     (client_id, name, secret_hash, redirect_uris, scope, created_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const CLIENT: &str = "SELECT client_id, name, secret_hash, redirect_uris, scope, created_at \
     FROM oauth_clients WHERE client_id = ?1";
const CLIENTS_AFTER: &str = "SELECT client_id, name, secret_hash, redirect_uris, scope, \
     created_at FROM oauth_clients WHERE client_id > ?1 ORDER BY client_id LIMIT ?2";
const DELETE_CLIENT: &str = "DELETE FROM oauth_clients WHERE client_id = ?1";
const DELETE_CLIENT_CODES: &str = "DELETE FROM oauth_codes WHERE client_id = ?1";
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
            client.created_at
        ],
    )?;
    insert_audit(conn, audit)?;
    Ok(())
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
