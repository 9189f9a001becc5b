//! The SQLite statements of accounts linked to external OpenID Connect identities (see
//! `tidings_store::ExternalIdentity`).

use crate::queries::{create_user, execute, insert_audit, query_all, query_opt, user_by_id};
use rusqlite::{Connection, Row, params};
use tidings_proto::UserId;
use tidings_store::{ExternalIdentity, NewAudit, StoreError, StoreResult, UserRecord};

const USER_OF: &str = "SELECT user_id FROM external_identities WHERE issuer = ?1 AND subject = ?2";
const INSERT_LINK: &str = "INSERT INTO external_identities \
     (issuer, subject, user_id, provider, linked_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const OF_USER: &str = "SELECT provider, issuer, subject, linked_at FROM external_identities \
     WHERE user_id = ?1 ORDER BY linked_at, issuer, subject";

fn identity_from_row(row: &Row<'_>) -> rusqlite::Result<ExternalIdentity> {
    Ok(ExternalIdentity {
        provider: row.get(0)?,
        issuer: row.get(1)?,
        subject: row.get(2)?,
        linked_at: row.get(3)?,
    })
}

pub(crate) fn user_of(
    conn: &Connection,
    issuer: &str,
    subject: &str,
) -> StoreResult<Option<UserId>> {
    query_opt(conn, USER_OF, params![issuer, subject], |row| {
        row.get(0).map(UserId)
    })
}

pub(crate) fn link(
    conn: &Connection,
    user: UserId,
    link: &ExternalIdentity,
    audit: &NewAudit,
) -> StoreResult<()> {
    if user_by_id(conn, user)?
        .filter(|u| u.deleted_at.is_none())
        .is_none()
    {
        return Err(StoreError::NotFound);
    }
    execute(
        conn,
        INSERT_LINK,
        params![
            link.issuer,
            link.subject,
            user.0,
            link.provider,
            link.linked_at
        ],
    )?;
    insert_audit(conn, audit)?;
    Ok(())
}

/// Runs inside the writer's savepoint, so a conflicting link takes the new user back with it.
pub(crate) fn create_linked_user(
    conn: &Connection,
    username: &str,
    password_hash: &str,
    link: &ExternalIdentity,
    mut audit: NewAudit,
) -> StoreResult<UserRecord> {
    let user = create_user(conn, username, password_hash, link.linked_at)?;
    audit.actor = Some(user.id);
    audit.target_user = Some(user.id);
    execute(
        conn,
        INSERT_LINK,
        params![
            link.issuer,
            link.subject,
            user.id.0,
            link.provider,
            link.linked_at
        ],
    )?;
    insert_audit(conn, &audit)?;
    Ok(user)
}

pub(crate) fn of_user(conn: &Connection, user: UserId) -> StoreResult<Vec<ExternalIdentity>> {
    query_all(conn, OF_USER, params![user.0], identity_from_row)
}
