//! The statements of account security and export on PostgreSQL: TOTP enrolments, recovery
//! codes, and the listing of a user's files. Time steps advance with a conditional UPDATE, so
//! two nodes accepting the same code at once cannot both succeed.

use crate::error::{Fail, Result};
use crate::queries::{FILE_COLUMNS, all, exec, file_from_row, insert_audit, opt};
use deadpool_postgres::GenericClient;
use tidings_proto::UserId;
use tidings_store::{FileRecord, NewAudit, StoreError, TwoFactorRecord};

pub(crate) async fn two_factor<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Option<TwoFactorRecord>> {
    let row = opt(
        c,
        "SELECT t.secret, t.created_at, t.confirmed_at, t.last_step, \
         (SELECT count(*) FROM recovery_codes r WHERE r.user_id = t.user_id AND r.used_at IS NULL) \
         FROM two_factor t WHERE t.user_id = $1",
        &[&user.0],
    )
    .await?;
    Ok(row.map(|row| TwoFactorRecord {
        user_id: user,
        secret: row.get(0),
        created_at: row.get(1),
        confirmed_at: row.get(2),
        last_step: row.get(3),
        recovery_codes_left: u32::try_from(row.get::<_, i64>(4)).unwrap_or(0),
    }))
}

pub(crate) async fn begin<C: GenericClient>(
    c: &C,
    user: UserId,
    secret: &[u8],
    now: i64,
) -> Result<()> {
    // The user row is locked so a deletion cannot interleave with the enrolment.
    if opt(
        c,
        "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        &[&user.0],
    )
    .await?
    .is_none()
    {
        return Err(Fail::Store(StoreError::NotFound));
    }
    let changed = exec(
        c,
        "INSERT INTO two_factor (user_id, secret, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
         created_at = excluded.created_at, last_step = 0 WHERE two_factor.confirmed_at IS NULL",
        &[&user.0, &secret, &now],
    )
    .await?;
    if changed == 0 {
        return Err(Fail::Store(StoreError::Conflict("two-factor enrolment")));
    }
    exec(
        c,
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    Ok(())
}

async fn store_recovery<C: GenericClient>(
    c: &C,
    user: UserId,
    recovery: &[[u8; 32]],
) -> Result<()> {
    exec(
        c,
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    for hash in recovery {
        exec(
            c,
            "INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)",
            &[&user.0, &&hash[..]],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn confirm<C: GenericClient>(
    c: &C,
    user: UserId,
    step: i64,
    recovery: &[[u8; 32]],
    now: i64,
    audit: &NewAudit,
) -> Result<()> {
    let changed = exec(
        c,
        "UPDATE two_factor SET confirmed_at = $3, last_step = $2 \
         WHERE user_id = $1 AND confirmed_at IS NULL",
        &[&user.0, &step, &now],
    )
    .await?;
    if changed == 0 {
        return Err(Fail::Store(StoreError::NotFound));
    }
    store_recovery(c, user, recovery).await?;
    insert_audit(c, audit).await?;
    Ok(())
}

pub(crate) async fn use_step<C: GenericClient>(c: &C, user: UserId, step: i64) -> Result<bool> {
    Ok(exec(
        c,
        "UPDATE two_factor SET last_step = $2 \
         WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2",
        &[&user.0, &step],
    )
    .await?
        > 0)
}

pub(crate) async fn use_recovery<C: GenericClient>(
    c: &C,
    user: UserId,
    hash: &[u8; 32],
    now: i64,
) -> Result<bool> {
    Ok(exec(
        c,
        "UPDATE recovery_codes SET used_at = $3 \
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL \
         AND EXISTS (SELECT 1 FROM two_factor WHERE user_id = $1 AND confirmed_at IS NOT NULL)",
        &[&user.0, &&hash[..], &now],
    )
    .await?
        > 0)
}

pub(crate) async fn replace_recovery<C: GenericClient>(
    c: &C,
    user: UserId,
    recovery: &[[u8; 32]],
    audit: &NewAudit,
) -> Result<()> {
    if opt(
        c,
        "SELECT 1 FROM two_factor WHERE user_id = $1 AND confirmed_at IS NOT NULL FOR UPDATE",
        &[&user.0],
    )
    .await?
    .is_none()
    {
        return Err(Fail::Store(StoreError::NotFound));
    }
    store_recovery(c, user, recovery).await?;
    insert_audit(c, audit).await?;
    Ok(())
}

/// Removes the enrolment and its codes; also called when an account is deleted.
pub(crate) async fn remove<C: GenericClient>(c: &C, user: UserId) -> Result<bool> {
    exec(
        c,
        "DELETE FROM recovery_codes WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    Ok(exec(c, "DELETE FROM two_factor WHERE user_id = $1", &[&user.0]).await? > 0)
}

/// Removes the settings and security state that only the account itself used, when it is
/// deleted (its profile and memberships are handled by the caller).
pub(crate) async fn remove_personal<C: GenericClient>(c: &C, user: UserId) -> Result<()> {
    remove(c, user).await?;
    exec(
        c,
        "DELETE FROM push_settings WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    exec(
        c,
        "DELETE FROM privacy_settings WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    exec(c, "DELETE FROM blocks WHERE blocker_id = $1", &[&user.0]).await?;
    Ok(())
}

pub(crate) async fn disable<C: GenericClient>(
    c: &C,
    user: UserId,
    audit: &NewAudit,
) -> Result<bool> {
    let removed = remove(c, user).await?;
    if removed {
        insert_audit(c, audit).await?;
    }
    Ok(removed)
}

pub(crate) async fn files_of<C: GenericClient>(
    c: &C,
    owner: UserId,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<FileRecord>> {
    let sql = format!(
        "SELECT {FILE_COLUMNS} FROM files WHERE owner_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    all(
        c,
        &sql,
        &[&owner.0, &after.unwrap_or(""), &i64::from(limit)],
    )
    .await?
    .iter()
    .map(file_from_row)
    .collect()
}
