//! The statements of per-user XML storage on PostgreSQL, as in the SQLite backend.

use crate::error::Result;
use crate::queries::{all, exec, opt};
use deadpool_postgres::GenericClient;
use tidings_proto::UserId;
use tidings_store::{StoreError, UserXmlRecord};

pub(crate) async fn put<C: GenericClient>(
    c: &C,
    item: &UserXmlRecord,
    max_items: u32,
) -> Result<bool> {
    let user = item.user_id.0;
    // The user's row is locked so two nodes adding items at once cannot both pass the count.
    if opt(c, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&user])
        .await?
        .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    let exists = opt(
        c,
        "SELECT 1 FROM user_xml WHERE user_id = $1 AND node = $2 AND item_id = $3",
        &[&user, &item.node, &item.item_id],
    )
    .await?
    .is_some();
    if !exists {
        let count: i64 = opt(
            c,
            "SELECT count(*) FROM user_xml WHERE user_id = $1",
            &[&user],
        )
        .await?
        .map_or(0, |row| row.get(0));
        if count >= i64::from(max_items) {
            return Ok(false);
        }
    }
    exec(
        c,
        "INSERT INTO user_xml (user_id, node, item_id, xml, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, node, item_id) DO UPDATE SET \
         xml = EXCLUDED.xml, updated_at = EXCLUDED.updated_at",
        &[
            &user,
            &item.node,
            &item.item_id,
            &item.xml,
            &item.updated_at,
        ],
    )
    .await?;
    Ok(true)
}

pub(crate) async fn get<C: GenericClient>(
    c: &C,
    user: UserId,
    node: &str,
) -> Result<Vec<UserXmlRecord>> {
    let rows = all(
        c,
        "SELECT item_id, xml, updated_at FROM user_xml WHERE user_id = $1 AND node = $2 \
         ORDER BY updated_at DESC, item_id",
        &[&user.0, &node],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|row| UserXmlRecord {
            user_id: user,
            node: node.to_owned(),
            item_id: row.get(0),
            xml: row.get(1),
            updated_at: row.get(2),
        })
        .collect())
}

pub(crate) async fn delete<C: GenericClient>(
    c: &C,
    user: UserId,
    node: &str,
    item_id: &str,
) -> Result<bool> {
    let n = exec(
        c,
        "DELETE FROM user_xml WHERE user_id = $1 AND node = $2 AND item_id = $3",
        &[&user.0, &node, &item_id],
    )
    .await?;
    Ok(n > 0)
}
