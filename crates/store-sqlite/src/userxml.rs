//! The statements of per-user XML storage.

use crate::queries::{execute, query_all, query_opt};
use rusqlite::{Connection, params};
use tidings_proto::UserId;
use tidings_store::{StoreError, StoreResult, UserXmlRecord};

macro_rules! statements {
    ($($name:ident = $sql:expr;)*) => {
        $(const $name: &str = $sql;)*
        /// Every keyed statement, for the index-plan test.
        #[cfg(test)]
        pub(crate) const ALL: &[(&str, &str)] = &[$((stringify!($name), $name)),*];
    };
}

statements! {
    USER_EXISTS = "SELECT 1 FROM users WHERE id = ?1";
    ITEM_EXISTS = "SELECT 1 FROM user_xml WHERE user_id = ?1 AND node = ?2 AND item_id = ?3";
    COUNT_ITEMS = "SELECT COUNT(*) FROM user_xml WHERE user_id = ?1";
    UPSERT = "INSERT INTO user_xml (user_id, node, item_id, xml, updated_at) \
        VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user_id, node, item_id) DO UPDATE SET \
        xml = excluded.xml, updated_at = excluded.updated_at";
    SELECT_NODE = "SELECT item_id, xml, updated_at FROM user_xml \
        WHERE user_id = ?1 AND node = ?2 ORDER BY updated_at DESC, item_id";
    DELETE = "DELETE FROM user_xml WHERE user_id = ?1 AND node = ?2 AND item_id = ?3";
    DELETE_ALL = "DELETE FROM user_xml WHERE user_id = ?1";
}

pub(crate) fn put(conn: &Connection, item: &UserXmlRecord, max_items: u32) -> StoreResult<bool> {
    let user = item.user_id.0;
    if query_opt(conn, USER_EXISTS, params![user], |row| row.get::<_, i64>(0))?.is_none() {
        return Err(StoreError::NotFound);
    }
    let exists = query_opt(
        conn,
        ITEM_EXISTS,
        params![user, item.node, item.item_id],
        |row| row.get::<_, i64>(0),
    )?
    .is_some();
    if !exists {
        let count =
            query_opt(conn, COUNT_ITEMS, params![user], |row| row.get::<_, i64>(0))?.unwrap_or(0);
        if count >= i64::from(max_items) {
            return Ok(false);
        }
    }
    execute(
        conn,
        UPSERT,
        params![user, item.node, item.item_id, item.xml, item.updated_at],
    )?;
    Ok(true)
}

pub(crate) fn get(conn: &Connection, user: UserId, node: &str) -> StoreResult<Vec<UserXmlRecord>> {
    query_all(conn, SELECT_NODE, params![user.0, node], |row| {
        Ok(UserXmlRecord {
            user_id: user,
            node: node.to_owned(),
            item_id: row.get(0)?,
            xml: row.get(1)?,
            updated_at: row.get(2)?,
        })
    })
}

pub(crate) fn delete(
    conn: &Connection,
    user: UserId,
    node: &str,
    item_id: &str,
) -> StoreResult<bool> {
    Ok(execute(conn, DELETE, params![user.0, node, item_id])? > 0)
}

/// Removes every item of a user's (account deletion).
pub(crate) fn delete_all(conn: &Connection, user: UserId) -> StoreResult<()> {
    execute(conn, DELETE_ALL, params![user.0])?;
    Ok(())
}
