//! The statements of SCRAM credentials (RFC 5802) on PostgreSQL, as in the SQLite backend.

use crate::error::Result;
use crate::queries::{exec, opt};
use deadpool_postgres::GenericClient;
use tidings_proto::UserId;
use tidings_store::{ScramCredential, StoreError};

pub(crate) async fn set<C: GenericClient>(
    c: &C,
    user: UserId,
    credentials: &[ScramCredential],
) -> Result<()> {
    // Locking the user row orders this against a concurrent replacement for the same user.
    if opt(
        c,
        "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
        &[&user.0],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    exec(
        c,
        "DELETE FROM scram_credentials WHERE user_id = $1",
        &[&user.0],
    )
    .await?;
    for cred in credentials {
        exec(
            c,
            "INSERT INTO scram_credentials \
             (user_id, algorithm, salt, iterations, stored_key, server_key, password_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &user.0,
                &cred.algorithm,
                &cred.salt,
                &i64::from(cred.iterations),
                &cred.stored_key,
                &cred.server_key,
                &cred.password_hash,
            ],
        )
        .await?;
    }
    Ok(())
}

pub(crate) async fn get<C: GenericClient>(
    c: &C,
    user: UserId,
    algorithm: &str,
) -> Result<Option<ScramCredential>> {
    let row = opt(
        c,
        "SELECT algorithm, salt, iterations, stored_key, server_key, password_hash \
         FROM scram_credentials WHERE user_id = $1 AND algorithm = $2",
        &[&user.0, &algorithm],
    )
    .await?;
    Ok(row.map(|row| ScramCredential {
        algorithm: row.get(0),
        salt: row.get(1),
        iterations: u32::try_from(row.get::<_, i64>(2)).unwrap_or(u32::MAX),
        stored_key: row.get(3),
        server_key: row.get(4),
        password_hash: row.get(5),
    }))
}
