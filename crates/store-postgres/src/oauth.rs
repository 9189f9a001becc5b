//! The PostgreSQL statements of the OAuth authorization server: registered clients,
//! authorization codes and device grants (see `tidings_store::oauth`).

use crate::error::Result;
use crate::queries::{all, bad, exec, insert_audit, opt, sign_in};
use deadpool_postgres::GenericClient;
use tidings_proto::{DeviceId, UserId};
use tidings_store::{
    AuthorizationCodeRecord, DeviceGrant, DeviceRecord, NewAudit, OAuthClientRecord, StoreError,
};
use tokio_postgres::Row;

const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, redirect_uris, scope, created_at";

fn client_from_row(row: &Row) -> Result<OAuthClientRecord> {
    let secret: Option<Vec<u8>> = row.try_get(2)?;
    let uris: String = row.try_get(3)?;
    Ok(OAuthClientRecord {
        client_id: row.try_get(0)?,
        name: row.try_get(1)?,
        secret_hash: secret.and_then(|s| <[u8; 32]>::try_from(s.as_slice()).ok()),
        redirect_uris: serde_json::from_str(&uris)
            .map_err(|e| bad(format!("redirect_uris: {e}")))?,
        scope: row.try_get(4)?,
        created_at: row.try_get(5)?,
    })
}

pub(crate) async fn create_client<C: GenericClient>(
    c: &C,
    client: &OAuthClientRecord,
    audit: &NewAudit,
) -> Result<()> {
    let uris = serde_json::to_string(&client.redirect_uris).map_err(|e| bad(e.to_string()))?;
    let secret = client.secret_hash.map(|h| h.to_vec());
    exec(
        c,
        "INSERT INTO oauth_clients \
         (client_id, name, secret_hash, redirect_uris, scope, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &client.client_id,
            &client.name,
            &secret,
            &uris,
            &client.scope,
            &client.created_at,
        ],
    )
    .await?;
    insert_audit(c, audit).await?;
    Ok(())
}

pub(crate) async fn client<C: GenericClient>(
    c: &C,
    client_id: &str,
) -> Result<Option<OAuthClientRecord>> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1");
    opt(c, &sql, &[&client_id])
        .await?
        .as_ref()
        .map(client_from_row)
        .transpose()
}

pub(crate) async fn clients<C: GenericClient>(
    c: &C,
    after: &str,
    limit: u32,
) -> Result<Vec<OAuthClientRecord>> {
    let sql = format!(
        "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id > $1 \
         ORDER BY client_id LIMIT $2"
    );
    all(c, &sql, &[&after, &i64::from(limit)])
        .await?
        .iter()
        .map(client_from_row)
        .collect()
}

pub(crate) async fn delete_client<C: GenericClient>(
    c: &C,
    client_id: &str,
    now: i64,
    audit: &NewAudit,
) -> Result<Vec<(UserId, DeviceId)>> {
    // Deleting the client row first locks it, so a concurrent `sign_in_client` (which reads it
    // FOR SHARE) either commits before this and has its device revoked below, or sees no client.
    if exec(
        c,
        "DELETE FROM oauth_clients WHERE client_id = $1",
        &[&client_id],
    )
    .await?
        == 0
    {
        return Err(StoreError::NotFound.into());
    }
    exec(
        c,
        "DELETE FROM oauth_codes WHERE client_id = $1",
        &[&client_id],
    )
    .await?;
    let rows = all(
        c,
        "UPDATE devices SET revoked_at = $2 \
         WHERE id IN (SELECT device_id FROM device_grants WHERE client_id = $1) \
         AND revoked_at IS NULL RETURNING user_id, id",
        &[&client_id, &now],
    )
    .await?;
    let mut revoked = Vec::with_capacity(rows.len());
    for row in rows {
        let device = DeviceId(row.try_get(1)?);
        exec(
            c,
            "DELETE FROM refresh_tokens WHERE device_id = $1",
            &[&device.0],
        )
        .await?;
        revoked.push((UserId(row.try_get(0)?), device));
    }
    insert_audit(c, audit).await?;
    Ok(revoked)
}

pub(crate) async fn create_code<C: GenericClient>(
    c: &C,
    code: &AuthorizationCodeRecord,
    now: i64,
) -> Result<()> {
    exec(c, "DELETE FROM oauth_codes WHERE expires_at <= $1", &[&now]).await?;
    exec(
        c,
        "INSERT INTO oauth_codes \
         (code_hash, client_id, user_id, redirect_uri, code_challenge, scope, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &&code.code_hash[..],
            &code.client_id,
            &code.user_id.0,
            &code.redirect_uri,
            &code.code_challenge,
            &code.scope,
            &code.expires_at,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn take_code<C: GenericClient>(
    c: &C,
    code_hash: [u8; 32],
    now: i64,
) -> Result<Option<AuthorizationCodeRecord>> {
    let row = opt(
        c,
        "DELETE FROM oauth_codes WHERE code_hash = $1 \
         RETURNING client_id, user_id, redirect_uri, code_challenge, scope, expires_at",
        &[&&code_hash[..]],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let code = AuthorizationCodeRecord {
        code_hash,
        client_id: row.try_get(0)?,
        user_id: UserId(row.try_get(1)?),
        redirect_uri: row.try_get(2)?,
        code_challenge: row.try_get(3)?,
        scope: row.try_get(4)?,
        expires_at: row.try_get(5)?,
    };
    Ok((code.expires_at > now).then_some(code))
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn sign_in_client<C: GenericClient>(
    c: &C,
    user: UserId,
    device_name: &str,
    grant: &DeviceGrant,
    refresh_hash: [u8; 32],
    refresh_expires_at: i64,
    now: i64,
    audit: &NewAudit,
) -> Result<DeviceRecord> {
    let exists = opt(
        c,
        "SELECT 1 FROM oauth_clients WHERE client_id = $1 FOR SHARE",
        &[&grant.client_id],
    )
    .await?;
    if exists.is_none() {
        return Err(StoreError::NotFound.into());
    }
    let device = sign_in(
        c,
        user,
        device_name,
        refresh_hash,
        refresh_expires_at,
        now,
        audit,
    )
    .await?;
    exec(
        c,
        "INSERT INTO device_grants (device_id, client_id, scope) VALUES ($1, $2, $3)",
        &[&device.id.0, &grant.client_id, &grant.scope],
    )
    .await?;
    Ok(device)
}

pub(crate) async fn device_grant<C: GenericClient>(
    c: &C,
    device: DeviceId,
) -> Result<Option<DeviceGrant>> {
    let row = opt(
        c,
        "SELECT client_id, scope FROM device_grants WHERE device_id = $1",
        &[&device.0],
    )
    .await?;
    row.map(|row| {
        Ok(DeviceGrant {
            client_id: row.try_get(0)?,
            scope: row.try_get(1)?,
        })
    })
    .transpose()
}
