//! The statements of account security and export: TOTP enrolments, recovery codes, and the
//! listing of a user's files.

use crate::queries::{execute, file_from_row, insert_audit, query_all, query_opt};
use rusqlite::{Connection, params};
use tidings_proto::UserId;
use tidings_store::{FileRecord, NewAudit, StoreError, StoreResult, TwoFactorRecord};

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        $(const $name: &str = $sql;)*
        /// Every statement, for the index-plan test.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    TWO_FACTOR = "SELECT t.secret, t.created_at, t.confirmed_at, t.last_step, \
        (SELECT count(*) FROM recovery_codes r WHERE r.user_id = t.user_id AND r.used_at IS NULL) \
        FROM two_factor t WHERE t.user_id = ?1";
    LIVE_USER = "SELECT 1 FROM users WHERE id = ?1 AND deleted_at IS NULL";
    CONFIRMED = "SELECT 1 FROM two_factor WHERE user_id = ?1 AND confirmed_at IS NOT NULL";
    UPSERT_PENDING = "INSERT INTO two_factor (user_id, secret, created_at) VALUES (?1, ?2, ?3) \
        ON CONFLICT (user_id) DO UPDATE SET secret = excluded.secret, \
        created_at = excluded.created_at, last_step = 0 WHERE two_factor.confirmed_at IS NULL";
    CONFIRM = "UPDATE two_factor SET confirmed_at = ?3, last_step = ?2 \
        WHERE user_id = ?1 AND confirmed_at IS NULL";
    USE_STEP = "UPDATE two_factor SET last_step = ?2 \
        WHERE user_id = ?1 AND confirmed_at IS NOT NULL AND last_step < ?2";
    USE_RECOVERY = "UPDATE recovery_codes SET used_at = ?3 \
        WHERE user_id = ?1 AND code_hash = ?2 AND used_at IS NULL \
        AND EXISTS (SELECT 1 FROM two_factor WHERE user_id = ?1 AND confirmed_at IS NOT NULL)";
    DELETE_RECOVERY = "DELETE FROM recovery_codes WHERE user_id = ?1";
    INSERT_RECOVERY = "INSERT INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)";
    DELETE_TWO_FACTOR = "DELETE FROM two_factor WHERE user_id = ?1";
    DELETE_PUSH_SETTINGS = "DELETE FROM push_settings WHERE user_id = ?1";
    DELETE_PRIVACY = "DELETE FROM privacy_settings WHERE user_id = ?1";
    DELETE_OWN_BLOCKS = "DELETE FROM blocks WHERE blocker_id = ?1";
    FILES_OF = "SELECT id, owner_id, sha256, size, content_type, name, created_at, width, height \
        FROM files WHERE owner_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3";
}

pub(crate) fn two_factor(conn: &Connection, user: UserId) -> StoreResult<Option<TwoFactorRecord>> {
    query_opt(conn, TWO_FACTOR, [user.0], |row| {
        Ok(TwoFactorRecord {
            user_id: user,
            secret: row.get(0)?,
            created_at: row.get(1)?,
            confirmed_at: row.get(2)?,
            last_step: row.get(3)?,
            recovery_codes_left: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
        })
    })
}

pub(crate) fn begin(conn: &Connection, user: UserId, secret: &[u8], now: i64) -> StoreResult<()> {
    if query_opt(conn, LIVE_USER, [user.0], |row| row.get::<_, i64>(0))?.is_none() {
        return Err(StoreError::NotFound);
    }
    // The upsert changes nothing when a confirmed enrolment exists.
    if execute(conn, UPSERT_PENDING, params![user.0, secret, now])? == 0 {
        return Err(StoreError::Conflict("two-factor enrolment"));
    }
    execute(conn, DELETE_RECOVERY, [user.0])?;
    Ok(())
}

fn store_recovery(conn: &Connection, user: UserId, recovery: &[[u8; 32]]) -> StoreResult<()> {
    execute(conn, DELETE_RECOVERY, [user.0])?;
    for hash in recovery {
        execute(conn, INSERT_RECOVERY, params![user.0, &hash[..]])?;
    }
    Ok(())
}

pub(crate) fn confirm(
    conn: &Connection,
    user: UserId,
    step: i64,
    recovery: &[[u8; 32]],
    now: i64,
    audit: &NewAudit,
) -> StoreResult<()> {
    if execute(conn, CONFIRM, params![user.0, step, now])? == 0 {
        return Err(StoreError::NotFound);
    }
    store_recovery(conn, user, recovery)?;
    insert_audit(conn, audit)?;
    Ok(())
}

pub(crate) fn use_step(conn: &Connection, user: UserId, step: i64) -> StoreResult<bool> {
    Ok(execute(conn, USE_STEP, params![user.0, step])? > 0)
}

pub(crate) fn use_recovery(
    conn: &Connection,
    user: UserId,
    hash: &[u8; 32],
    now: i64,
) -> StoreResult<bool> {
    Ok(execute(conn, USE_RECOVERY, params![user.0, &hash[..], now])? > 0)
}

pub(crate) fn replace_recovery(
    conn: &Connection,
    user: UserId,
    recovery: &[[u8; 32]],
    audit: &NewAudit,
) -> StoreResult<()> {
    if query_opt(conn, CONFIRMED, [user.0], |row| row.get::<_, i64>(0))?.is_none() {
        return Err(StoreError::NotFound);
    }
    store_recovery(conn, user, recovery)?;
    insert_audit(conn, audit)?;
    Ok(())
}

/// Removes the enrolment and its codes; also called when an account is deleted.
pub(crate) fn remove(conn: &Connection, user: UserId) -> StoreResult<bool> {
    execute(conn, DELETE_RECOVERY, [user.0])?;
    Ok(execute(conn, DELETE_TWO_FACTOR, [user.0])? > 0)
}

/// Removes the settings and security state that only the account itself used, when it is
/// deleted (its profile and memberships are handled by the caller).
pub(crate) fn remove_personal(conn: &Connection, user: UserId) -> StoreResult<()> {
    remove(conn, user)?;
    execute(conn, DELETE_PUSH_SETTINGS, [user.0])?;
    execute(conn, DELETE_PRIVACY, [user.0])?;
    execute(conn, DELETE_OWN_BLOCKS, [user.0])?;
    Ok(())
}

pub(crate) fn disable(conn: &Connection, user: UserId, audit: &NewAudit) -> StoreResult<bool> {
    let removed = remove(conn, user)?;
    if removed {
        insert_audit(conn, audit)?;
    }
    Ok(removed)
}

pub(crate) fn files_of(
    conn: &Connection,
    owner: UserId,
    after: Option<&str>,
    limit: u32,
) -> StoreResult<Vec<FileRecord>> {
    query_all(
        conn,
        FILES_OF,
        params![owner.0, after.unwrap_or(""), limit],
        file_from_row,
    )
}
