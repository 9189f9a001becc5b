//! The PostgreSQL statements of the OAuth authorization server: registered clients (and bot
//! clients with their account), authorization codes, device authorizations and device grants
//! (see `tidings_store::oauth`).

use crate::error::Result;
use crate::queries::{all, bad, create_device, create_user, exec, insert_audit, opt, sign_in};
use deadpool_postgres::GenericClient;
use tidings_proto::{DeviceId, UserId};
use tidings_store::{
    AuthorizationCodeRecord, BotBinding, DeviceAuthorizationRecord, DeviceAuthorizationState,
    DeviceGrant, DeviceRecord, NewAudit, OAuthClientRecord, StoreError,
};
use tokio_postgres::Row;

const CLIENT_COLUMNS: &str =
    "client_id, name, secret_hash, redirect_uris, scope, created_at, bot_user_id, bot_device_id";
const DEVICE_AUTH_COLUMNS: &str = "device_code_hash, user_code, client_id, scope, expires_at, \
     interval_secs, last_polled_at, state, user_id";

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
        bot: match (
            row.try_get::<_, Option<i64>>(6)?,
            row.try_get::<_, Option<i64>>(7)?,
        ) {
            (Some(user), Some(device)) => Some(BotBinding {
                user_id: UserId(user),
                device_id: DeviceId(device),
            }),
            _ => None,
        },
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
         (client_id, name, secret_hash, redirect_uris, scope, created_at, bot_user_id, \
         bot_device_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &client.client_id,
            &client.name,
            &secret,
            &uris,
            &client.scope,
            &client.created_at,
            &client.bot.map(|b| b.user_id.0),
            &client.bot.map(|b| b.device_id.0),
        ],
    )
    .await?;
    insert_audit(c, audit).await?;
    Ok(())
}

/// Creates the bot account, its one device with the client's grant, and the client bound to
/// both; the caller runs it in one transaction.
pub(crate) async fn create_bot_client<C: GenericClient>(
    c: &C,
    client: &OAuthClientRecord,
    username: &str,
    password_hash: &str,
    audit: &NewAudit,
) -> Result<OAuthClientRecord> {
    let user = create_user(c, username, password_hash, client.created_at).await?;
    let device = create_device(c, user.id, &client.name, client.created_at).await?;
    exec(
        c,
        "INSERT INTO device_grants (device_id, client_id, scope) VALUES ($1, $2, $3)",
        &[&device.id.0, &client.client_id, &client.scope],
    )
    .await?;
    let client = OAuthClientRecord {
        bot: Some(BotBinding {
            user_id: user.id,
            device_id: device.id,
        }),
        ..client.clone()
    };
    create_client(c, &client, audit).await?;
    Ok(client)
}

fn device_auth_from_row(row: &Row) -> Result<DeviceAuthorizationRecord> {
    let hash: Vec<u8> = row.try_get(0)?;
    let state: i16 = row.try_get(7)?;
    let user: Option<i64> = row.try_get(8)?;
    Ok(DeviceAuthorizationRecord {
        device_code_hash: <[u8; 32]>::try_from(hash.as_slice())
            .map_err(|_| bad("device_code_hash is not 32 bytes"))?,
        user_code: row.try_get(1)?,
        client_id: row.try_get(2)?,
        scope: row.try_get(3)?,
        expires_at: row.try_get(4)?,
        interval_secs: row.try_get(5)?,
        last_polled_at: row.try_get(6)?,
        state: match (state, user) {
            (1, Some(user)) => DeviceAuthorizationState::Approved(UserId(user)),
            (2, _) => DeviceAuthorizationState::Denied,
            _ => DeviceAuthorizationState::Pending,
        },
    })
}

fn state_columns(state: DeviceAuthorizationState) -> (i16, Option<i64>) {
    match state {
        DeviceAuthorizationState::Pending => (0, None),
        DeviceAuthorizationState::Approved(user) => (1, Some(user.0)),
        DeviceAuthorizationState::Denied => (2, None),
    }
}

pub(crate) async fn create_device_authorization<C: GenericClient>(
    c: &C,
    auth: &DeviceAuthorizationRecord,
    now: i64,
) -> Result<()> {
    exec(
        c,
        "DELETE FROM device_authorizations WHERE expires_at <= $1",
        &[&now],
    )
    .await?;
    let (state, user) = state_columns(auth.state);
    exec(
        c,
        &format!(
            "INSERT INTO device_authorizations ({DEVICE_AUTH_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &&auth.device_code_hash[..],
            &auth.user_code,
            &auth.client_id,
            &auth.scope,
            &auth.expires_at,
            &auth.interval_secs,
            &auth.last_polled_at,
            &state,
            &user,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn device_authorization<C: GenericClient>(
    c: &C,
    user_code: &str,
    now: i64,
) -> Result<Option<DeviceAuthorizationRecord>> {
    let sql = format!(
        "SELECT {DEVICE_AUTH_COLUMNS} FROM device_authorizations \
         WHERE user_code = $1 AND expires_at > $2"
    );
    opt(c, &sql, &[&user_code, &now])
        .await?
        .as_ref()
        .map(device_auth_from_row)
        .transpose()
}

pub(crate) async fn decide_device_authorization<C: GenericClient>(
    c: &C,
    user_code: &str,
    state: DeviceAuthorizationState,
    now: i64,
) -> Result<bool> {
    let (state, user) = state_columns(state);
    let changed = exec(
        c,
        "UPDATE device_authorizations SET state = $3, user_id = $4 \
         WHERE user_code = $1 AND expires_at > $2 AND state = 0",
        &[&user_code, &now, &state, &user],
    )
    .await?;
    Ok(changed == 1)
}

pub(crate) async fn poll_device_authorization<C: GenericClient>(
    c: &C,
    hash: [u8; 32],
    now: i64,
) -> Result<Option<DeviceAuthorizationRecord>> {
    // FOR UPDATE serializes concurrent polls of one code, so an answer is collected once.
    let sql = format!(
        "SELECT {DEVICE_AUTH_COLUMNS} FROM device_authorizations \
         WHERE device_code_hash = $1 FOR UPDATE"
    );
    let Some(row) = opt(c, &sql, &[&&hash[..]]).await? else {
        return Ok(None);
    };
    let before = device_auth_from_row(&row)?;
    if before.state != DeviceAuthorizationState::Pending || before.expires_at <= now {
        exec(
            c,
            "DELETE FROM device_authorizations WHERE device_code_hash = $1",
            &[&&hash[..]],
        )
        .await?;
    } else {
        let early = before
            .last_polled_at
            .is_some_and(|t| now - t < before.interval_secs.saturating_mul(1000));
        let step: i64 = if early { 5 } else { 0 };
        exec(
            c,
            "UPDATE device_authorizations \
             SET last_polled_at = $2, interval_secs = interval_secs + $3 \
             WHERE device_code_hash = $1",
            &[&&hash[..], &now, &step],
        )
        .await?;
    }
    Ok(Some(before))
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
    exec(
        c,
        "DELETE FROM device_authorizations WHERE client_id = $1",
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
