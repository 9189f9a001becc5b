//! The statements of SCRAM credentials (RFC 5802), stored beside the argon2 hash.

use crate::queries::{execute, query_opt};
use rusqlite::{Connection, params};
use tidings_proto::UserId;
use tidings_store::{ScramCredential, StoreError, StoreResult};

const USER_EXISTS: &str = "SELECT 1 FROM users WHERE id = ?1";
const DELETE: &str = "DELETE FROM scram_credentials WHERE user_id = ?1";
const INSERT: &str = "INSERT INTO scram_credentials \
    (user_id, algorithm, salt, iterations, stored_key, server_key, password_hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const SELECT: &str = "SELECT algorithm, salt, iterations, stored_key, server_key, password_hash \
    FROM scram_credentials WHERE user_id = ?1 AND algorithm = ?2";

pub(crate) fn set(
    conn: &Connection,
    user: UserId,
    credentials: &[ScramCredential],
) -> StoreResult<()> {
    if query_opt(conn, USER_EXISTS, params![user.0], |row| {
        row.get::<_, i64>(0)
    })?
    .is_none()
    {
        return Err(StoreError::NotFound);
    }
    execute(conn, DELETE, params![user.0])?;
    for c in credentials {
        execute(
            conn,
            INSERT,
            params![
                user.0,
                c.algorithm,
                c.salt,
                i64::from(c.iterations),
                c.stored_key,
                c.server_key,
                c.password_hash
            ],
        )?;
    }
    Ok(())
}

pub(crate) fn get(
    conn: &Connection,
    user: UserId,
    algorithm: &str,
) -> StoreResult<Option<ScramCredential>> {
    query_opt(conn, SELECT, params![user.0, algorithm], |row| {
        Ok(ScramCredential {
            algorithm: row.get(0)?,
            salt: row.get(1)?,
            iterations: u32::try_from(row.get::<_, i64>(2)?).unwrap_or(u32::MAX),
            stored_key: row.get(3)?,
            server_key: row.get(4)?,
            password_hash: row.get(5)?,
        })
    })
}
