//! The PostgreSQL statements of accounts linked to external OpenID Connect identities (see
//! `tidings_store::ExternalIdentity`).

use crate::error::Result;
use crate::queries::{all, create_user, exec, insert_audit, opt};
use deadpool_postgres::GenericClient;
use tidings_proto::UserId;
use tidings_store::{ExternalIdentity, NewAudit, StoreError, UserRecord};

const INSERT_LINK: &str = "INSERT INTO external_identities \
     (issuer, subject, user_id, provider, linked_at) VALUES ($1, $2, $3, $4, $5)";

pub(crate) async fn user_of<C: GenericClient>(
    c: &C,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserId>> {
    let row = opt(
        c,
        "SELECT user_id FROM external_identities WHERE issuer = $1 AND subject = $2",
        &[&issuer, &subject],
    )
    .await?;
    Ok(match row {
        Some(row) => Some(UserId(row.try_get(0)?)),
        None => None,
    })
}

pub(crate) async fn link<C: GenericClient>(
    c: &C,
    user: UserId,
    link: &ExternalIdentity,
    audit: &NewAudit,
) -> Result<()> {
    // The user row is locked so a deletion cannot commit between this check and the link.
    let alive = opt(
        c,
        "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
        &[&user.0],
    )
    .await?;
    if alive.is_none() {
        return Err(StoreError::NotFound.into());
    }
    exec(
        c,
        INSERT_LINK,
        &[
            &link.issuer,
            &link.subject,
            &user.0,
            &link.provider,
            &link.linked_at,
        ],
    )
    .await?;
    insert_audit(c, audit).await?;
    Ok(())
}

pub(crate) async fn create_linked_user<C: GenericClient>(
    c: &C,
    username: &str,
    password_hash: &str,
    link: &ExternalIdentity,
    audit: &NewAudit,
) -> Result<UserRecord> {
    let user = create_user(c, username, password_hash, link.linked_at).await?;
    let mut audit = audit.clone();
    audit.actor = Some(user.id);
    audit.target_user = Some(user.id);
    exec(
        c,
        INSERT_LINK,
        &[
            &link.issuer,
            &link.subject,
            &user.id.0,
            &link.provider,
            &link.linked_at,
        ],
    )
    .await?;
    insert_audit(c, &audit).await?;
    Ok(user)
}

pub(crate) async fn of_user<C: GenericClient>(
    c: &C,
    user: UserId,
) -> Result<Vec<ExternalIdentity>> {
    let rows = all(
        c,
        "SELECT provider, issuer, subject, linked_at FROM external_identities \
         WHERE user_id = $1 ORDER BY linked_at, issuer, subject",
        &[&user.0],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ExternalIdentity {
                provider: row.try_get(0)?,
                issuer: row.try_get(1)?,
                subject: row.try_get(2)?,
                linked_at: row.try_get(3)?,
            })
        })
        .collect()
}
