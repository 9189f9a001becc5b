//! Rich messages on PostgreSQL: appending a message with its relations (reply, thread,
//! mentions), the effects of messages that act on another one (edit, recall, reaction, pin),
//! and the reads and maintenance that go with them (edit history, reactions, pins, threads,
//! per-member settings, "delete for me", retention). The statements mirror the SQLite
//! backend's; the append path runs after `queries::append_messages` has locked the
//! conversation, so effects on one conversation apply one at a time across nodes.

use crate::error::{Fail, Result};
use crate::queries::{
    MESSAGE_COLUMNS, MetaColumn, PreparedMessage, all, bad, exec, message_from_row,
    notify_from_sql, opt, seq_from_sql, seq_to_sql, tombstone,
};
use deadpool_postgres::GenericClient;
use tidings_proto::rest::{ConversationSettings, NotifyLevel, UpdateConversationSettingsRequest};
use tidings_proto::{ConversationId, Message, MessageBody, MessageId, Seq, ThreadSummary, UserId};
use tidings_store::meta::{MessageMeta, REACTION_USERS_SHOWN};
use tidings_store::{Appended, EditRecord, Prune, Retention, StoreError, ThreadRecord};

/// Appends one message (its conversation already locked) and applies its effect on its target.
/// `NotFound` when the conversation or the target does not exist, `Conflict("deleted")` when
/// the target was recalled.
pub(crate) async fn append_one<C: GenericClient>(
    c: &C,
    prepared: &PreparedMessage,
) -> Result<Appended> {
    let message = &prepared.message;
    let conversation = message.conversation_id.0;
    let target = message.body.target();
    let countable = target.is_none();
    // Apply the effect first: a refusal (missing or recalled target) then costs no sequence.
    if let Some(target) = target {
        apply_effect(c, message, target).await?;
    }
    let Some(next) = opt(
        c,
        "UPDATE conversations SET last_seq = last_seq + 1, \
         message_count = message_count + $3, \
         last_message_seq = CASE WHEN $3 = 1 THEN last_seq + 1 ELSE last_message_seq END, \
         last_activity = CASE WHEN $3 = 1 THEN GREATEST(last_activity, $2) \
             ELSE last_activity END \
         WHERE id = $1 RETURNING last_seq, message_count",
        &[&conversation, &message.ts, &i64::from(countable)],
    )
    .await?
    else {
        return Err(StoreError::NotFound.into());
    };
    let seq: i64 = next.try_get(0)?;
    let count: i64 = next.try_get(1)?;
    let relations = &message.relations;
    let mentions = relations
        .mentions
        .clone()
        .filter(|m| m.all || !m.users.is_empty());
    let meta = MessageMeta {
        mentions: mentions.clone(),
        ..MessageMeta::default()
    };
    let row = opt(
        c,
        "INSERT INTO messages (conversation_id, seq, sender_id, sender_device_id, \
         client_msg_id, ts, kind, body, reply_to, thread_root, target, meta, ordinal) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
        &[
            &conversation,
            &seq,
            &message.sender_id.0,
            &message.sender_device_id.0,
            &message.client_msg_id,
            &message.ts,
            &message.body.kind(),
            &prepared.body_json,
            &relations.reply_to.map(seq_to_sql),
            &relations.thread_root.map(seq_to_sql),
            &target.map(seq_to_sql),
            &meta.to_sql()?,
            &count,
        ],
    )
    .await?
    .ok_or_else(|| bad("INSERT ... RETURNING returned no row"))?;
    let id: i64 = row.try_get(0)?;
    // One's own message is delivered and read.
    exec(
        c,
        "UPDATE members SET delivered_seq = GREATEST(delivered_seq, $3), \
         read_seq = GREATEST(read_seq, $3), read_count = GREATEST(read_count, $4), \
         marked_unread = false WHERE conversation_id = $1 AND user_id = $2",
        &[&conversation, &message.sender_id.0, &seq, &count],
    )
    .await?;
    if let Some(mentions) = &mentions {
        let mut users: Vec<i64> = mentions
            .users
            .iter()
            .filter(|u| **u != message.sender_id)
            .map(|u| u.0)
            .collect();
        if mentions.all {
            users.push(0);
        }
        if !users.is_empty() {
            exec(
                c,
                "INSERT INTO mentions (conversation_id, user_id, seq) \
                 SELECT $1, u, $3 FROM unnest($2::bigint[]) AS u ON CONFLICT DO NOTHING",
                &[&conversation, &users, &seq],
            )
            .await?;
        }
    }
    if let Some(root) = relations.thread_root {
        let ts = message.ts;
        update_meta(c, conversation, root, |meta| {
            let replies = meta.thread.map_or(0, |t| t.replies) + 1;
            meta.thread = Some(ThreadSummary {
                replies,
                last_seq: seq_from_sql(seq),
                last_ts: ts,
            });
        })
        .await?;
    }
    let mut stored = Message::new(
        message.conversation_id,
        seq_from_sql(seq),
        MessageId(id),
        (message.sender_id, message.sender_device_id),
        message.client_msg_id.clone(),
        message.ts,
        message.body.clone(),
    );
    stored.reply_to = relations.reply_to;
    stored.thread_root = relations.thread_root;
    stored.mentions = mentions;
    Ok(Appended {
        message: stored,
        duplicate: false,
    })
}

/// The message an effect applies to, as stored.
struct TargetRow {
    id: i64,
    kind: String,
    body: String,
    sender: i64,
    ts: i64,
    meta: MessageMeta,
}

async fn target_row<C: GenericClient>(c: &C, conversation: i64, seq: Seq) -> Result<TargetRow> {
    let row = opt(
        c,
        "SELECT id, kind, body, sender_id, ts, meta FROM messages \
         WHERE conversation_id = $1 AND seq = $2",
        &[&conversation, &seq_to_sql(seq)],
    )
    .await?
    .ok_or(Fail::Store(StoreError::NotFound))?;
    Ok(TargetRow {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        body: row.try_get(2)?,
        sender: row.try_get(3)?,
        ts: row.try_get(4)?,
        meta: MessageMeta::parse(row.try_get(5)?)?,
    })
}

async fn set_meta<C: GenericClient>(
    c: &C,
    conversation: i64,
    seq: i64,
    meta: &MessageMeta,
) -> Result<()> {
    exec(
        c,
        "UPDATE messages SET meta = $3 WHERE conversation_id = $1 AND seq = $2",
        &[&conversation, &seq, &meta.to_sql()?],
    )
    .await
    .map(drop)
}

/// Reads, changes and writes back the aggregated state of one message (ignoring a message
/// that is gone).
async fn update_meta<C: GenericClient>(
    c: &C,
    conversation: i64,
    seq: Seq,
    change: impl FnOnce(&mut MessageMeta),
) -> Result<()> {
    let mut row = match target_row(c, conversation, seq).await {
        Ok(row) => row,
        Err(Fail::Store(StoreError::NotFound)) => return Ok(()),
        Err(other) => return Err(other),
    };
    change(&mut row.meta);
    set_meta(c, conversation, seq_to_sql(seq), &row.meta).await
}

async fn apply_effect<C: GenericClient>(
    c: &C,
    message: &tidings_store::NewMessage,
    target: Seq,
) -> Result<()> {
    let conversation = message.conversation_id.0;
    let at = seq_to_sql(target);
    let mut row = target_row(c, conversation, target).await?;
    if row.kind == "deleted" {
        return Err(StoreError::Conflict("deleted").into());
    }
    match &message.body {
        MessageBody::Edit { body, .. } => {
            let versions: i64 = opt(
                c,
                "SELECT count(*) FROM message_edits WHERE conversation_id = $1 AND seq = $2",
                &[&conversation, &at],
            )
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
            let new_json =
                serde_json::to_string(body).map_err(|e| bad(format!("encoding an edit: {e}")))?;
            let insert_edit = "INSERT INTO message_edits \
                 (conversation_id, seq, version, ts, editor_id, body) \
                 VALUES ($1, $2, $3, $4, $5, $6)";
            let mut version = versions;
            if versions == 0 {
                // The first edit saves the original as version 0.
                exec(
                    c,
                    insert_edit,
                    &[&conversation, &at, &0i64, &row.ts, &row.sender, &row.body],
                )
                .await?;
                version = 1;
            }
            exec(
                c,
                insert_edit,
                &[
                    &conversation,
                    &at,
                    &version,
                    &message.ts,
                    &message.sender_id.0,
                    &new_json,
                ],
            )
            .await?;
            row.meta.edited_at = Some(message.ts);
            // An indexed message gets the new text's lexemes now; one the indexer has not
            // reached yet is indexed later with its new body.
            let terms = body
                .text()
                .map(|text| tidings_store::search::lexemes(text).join(" "));
            exec(
                c,
                "UPDATE messages SET body = $3, meta = $4, \
                 search_terms = CASE WHEN indexed AND $5::text IS NOT NULL \
                     THEN array_to_tsvector(string_to_array($5::text, ' ')) ELSE NULL END \
                 WHERE conversation_id = $1 AND seq = $2",
                &[&conversation, &at, &new_json, &row.meta.to_sql()?, &terms],
            )
            .await?;
        }
        MessageBody::Recall { .. } => {
            let tombstone = tombstone()?;
            if let Some(mentions) = &row.meta.mentions {
                let mut ids: Vec<i64> = mentions.users.iter().map(|u| u.0).collect();
                if mentions.all {
                    ids.push(0);
                }
                exec(
                    c,
                    "DELETE FROM mentions WHERE conversation_id = $1 AND seq = $2 \
                     AND user_id = ANY($3)",
                    &[&conversation, &at, &ids],
                )
                .await?;
            }
            delete_annotations(c, conversation, at).await?;
            // Edit events carry the new text, so a recall tombstones them as well.
            exec(
                c,
                "UPDATE messages SET kind = 'deleted', body = $3, search_terms = NULL \
                 WHERE conversation_id = $1 AND target = $2 AND kind = 'edit'",
                &[&conversation, &at, &tombstone],
            )
            .await?;
            // Only the thread summary survives: the replies are other people's messages.
            let meta = MessageMeta {
                thread: row.meta.thread,
                ..MessageMeta::default()
            };
            exec(
                c,
                "UPDATE messages SET kind = 'deleted', body = $3, meta = $4, search_terms = NULL \
                 WHERE conversation_id = $1 AND seq = $2",
                &[&conversation, &at, &tombstone, &meta.to_sql()?],
            )
            .await?;
        }
        MessageBody::Reaction { key, remove, .. } => {
            let user = message.sender_id;
            if *remove {
                let removed = exec(
                    c,
                    "DELETE FROM reactions \
                     WHERE conversation_id = $1 AND seq = $2 AND key = $3 AND user_id = $4",
                    &[&conversation, &at, key, &user.0],
                )
                .await?;
                if removed > 0 && row.meta.remove_reaction(key, user) {
                    let users = all(
                        c,
                        "SELECT user_id FROM reactions \
                         WHERE conversation_id = $1 AND seq = $2 AND key = $3 \
                         ORDER BY ts, user_id LIMIT $4",
                        &[&conversation, &at, key, &(REACTION_USERS_SHOWN as i64)],
                    )
                    .await?
                    .iter()
                    .map(|r| r.try_get(0).map(UserId))
                    .collect::<std::result::Result<_, _>>()?;
                    row.meta.set_reactors(key, users);
                }
            } else {
                let added = exec(
                    c,
                    "INSERT INTO reactions (conversation_id, seq, key, user_id, ts) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&conversation, &at, key, &user.0, &message.ts],
                )
                .await?;
                if added > 0 {
                    row.meta.add_reaction(key, user);
                }
            }
            set_meta(c, conversation, at, &row.meta).await?;
        }
        MessageBody::Pin { unpin, .. } => {
            if *unpin {
                exec(
                    c,
                    "DELETE FROM pins WHERE conversation_id = $1 AND seq = $2",
                    &[&conversation, &at],
                )
                .await?;
                row.meta.pinned_at = None;
            } else {
                exec(
                    c,
                    "INSERT INTO pins (conversation_id, seq, pinned_at, pinned_by) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    &[&conversation, &at, &message.ts, &message.sender_id.0],
                )
                .await?;
                row.meta.pinned_at.get_or_insert(message.ts);
            }
            set_meta(c, conversation, at, &row.meta).await?;
        }
        _ => {}
    }
    let _ = row.id;
    Ok(())
}

/// Deletes a message's edit history, reactions and pin.
async fn delete_annotations<C: GenericClient>(c: &C, conversation: i64, seq: i64) -> Result<()> {
    for sql in [
        "DELETE FROM message_edits WHERE conversation_id = $1 AND seq = $2",
        "DELETE FROM reactions WHERE conversation_id = $1 AND seq = $2",
        "DELETE FROM pins WHERE conversation_id = $1 AND seq = $2",
    ] {
        exec(c, sql, &[&conversation, &seq]).await?;
    }
    Ok(())
}

async fn message_at<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    seq: Seq,
) -> Result<Option<Message>> {
    let sql =
        format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq = $2");
    opt(c, &sql, &[&conversation.0, &seq_to_sql(seq)])
        .await?
        .as_ref()
        .map(message_from_row)
        .transpose()
}

pub(crate) async fn edit_history<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    seq: Seq,
) -> Result<Vec<EditRecord>> {
    let versions = all(
        c,
        "SELECT ts, editor_id, body FROM message_edits \
         WHERE conversation_id = $1 AND seq = $2 ORDER BY version",
        &[&conversation.0, &seq_to_sql(seq)],
    )
    .await?
    .iter()
    .map(|row| {
        let body: &str = row.try_get(2)?;
        Ok(EditRecord {
            ts: row.try_get(0)?,
            editor_id: UserId(row.try_get(1)?),
            body: serde_json::from_str(body).map_err(|e| bad(format!("bad edit body: {e}")))?,
        })
    })
    .collect::<Result<Vec<_>>>()?;
    if !versions.is_empty() {
        return Ok(versions);
    }
    // Never edited: the one version is the message itself.
    Ok(message_at(c, conversation, seq)
        .await?
        .into_iter()
        .filter(|m| !matches!(m.body, MessageBody::Deleted {}))
        .map(|m| EditRecord {
            ts: m.ts,
            editor_id: m.sender_id,
            body: m.body,
        })
        .collect())
}

pub(crate) async fn reactions<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    seq: Seq,
) -> Result<Vec<(String, Vec<UserId>)>> {
    let rows = all(
        c,
        "SELECT key, user_id FROM reactions WHERE conversation_id = $1 AND seq = $2 \
         ORDER BY ts, key, user_id",
        &[&conversation.0, &seq_to_sql(seq)],
    )
    .await?;
    let mut grouped: Vec<(String, Vec<UserId>)> = Vec::new();
    for row in &rows {
        let key: String = row.try_get(0)?;
        let user = UserId(row.try_get(1)?);
        match grouped.iter_mut().find(|(k, _)| *k == key) {
            Some((_, users)) => users.push(user),
            None => grouped.push((key, vec![user])),
        }
    }
    Ok(grouped)
}

pub(crate) async fn pinned_messages<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    limit: u32,
) -> Result<Vec<Message>> {
    all(
        c,
        "SELECT m.id, m.conversation_id, m.seq, m.sender_id, m.sender_device_id, \
         m.client_msg_id, m.ts, m.body, m.reply_to, m.thread_root, m.meta \
         FROM pins p JOIN messages m ON m.conversation_id = p.conversation_id AND m.seq = p.seq \
         WHERE p.conversation_id = $1 ORDER BY p.pinned_at DESC, p.seq DESC LIMIT $2",
        &[&conversation.0, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(message_from_row)
    .collect()
}

pub(crate) async fn thread_messages<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    root: Seq,
    after: Seq,
    limit: u32,
) -> Result<Vec<Message>> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages \
         WHERE conversation_id = $1 AND thread_root = $2 AND seq > $3 ORDER BY seq LIMIT $4"
    );
    all(
        c,
        &sql,
        &[
            &conversation.0,
            &seq_to_sql(root),
            &seq_to_sql(after),
            &i64::from(limit),
        ],
    )
    .await?
    .iter()
    .map(message_from_row)
    .collect()
}

pub(crate) async fn update_conversation_settings<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    user: UserId,
    change: &UpdateConversationSettingsRequest,
    now: i64,
) -> Result<ConversationSettings> {
    let notify = change.notify.map(|level| match level {
        NotifyLevel::All => "all",
        NotifyLevel::Mentions => "mentions",
        NotifyLevel::None => "none",
    });
    let row = opt(
        c,
        "UPDATE members SET notify = coalesce($3, notify), \
         pinned_at = CASE WHEN $4::boolean IS NULL THEN pinned_at \
             WHEN $4 THEN coalesce(pinned_at, $7) ELSE NULL END, \
         archived = coalesce($5, archived), marked_unread = coalesce($6, marked_unread) \
         WHERE conversation_id = $1 AND user_id = $2 \
         RETURNING notify, pinned_at, archived, marked_unread",
        &[
            &conversation.0,
            &user.0,
            &notify,
            &change.pinned,
            &change.archived,
            &change.marked_unread,
            &now,
        ],
    )
    .await?
    .ok_or(Fail::Store(StoreError::NotFound))?;
    Ok(ConversationSettings {
        notify: notify_from_sql(row.try_get(0)?),
        pinned_at: row.try_get(1)?,
        archived: row.try_get(2)?,
        marked_unread: row.try_get(3)?,
    })
}

pub(crate) async fn hide_message<C: GenericClient>(
    c: &C,
    user: UserId,
    conversation: ConversationId,
    seq: Seq,
) -> Result<()> {
    let at = seq_to_sql(seq);
    if opt(
        c,
        "SELECT 1 FROM messages WHERE conversation_id = $1 AND seq = $2",
        &[&conversation.0, &at],
    )
    .await?
    .is_none()
    {
        return Err(StoreError::NotFound.into());
    }
    exec(
        c,
        "INSERT INTO hidden_messages (user_id, conversation_id, seq) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
        &[&user.0, &conversation.0, &at],
    )
    .await
    .map(drop)
}

pub(crate) async fn hidden_messages<C: GenericClient>(
    c: &C,
    user: UserId,
    conversation: ConversationId,
    from: Seq,
    to: Seq,
) -> Result<Vec<Seq>> {
    all(
        c,
        "SELECT seq FROM hidden_messages \
         WHERE user_id = $1 AND conversation_id = $2 AND seq BETWEEN $3 AND $4 ORDER BY seq",
        &[&user.0, &conversation.0, &seq_to_sql(from), &seq_to_sql(to)],
    )
    .await?
    .iter()
    .map(|row| Ok(seq_from_sql(row.try_get(0)?)))
    .collect()
}

pub(crate) async fn mark_thread_read<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    root: Seq,
    user: UserId,
    seq: Seq,
) -> Result<()> {
    exec(
        c,
        "INSERT INTO thread_reads (conversation_id, root, user_id, read_seq) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, user_id, root) \
         DO UPDATE SET read_seq = GREATEST(thread_reads.read_seq, excluded.read_seq)",
        &[
            &conversation.0,
            &seq_to_sql(root),
            &user.0,
            &seq_to_sql(seq),
        ],
    )
    .await
    .map(drop)
}

pub(crate) async fn threads<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    user: UserId,
    limit: u32,
) -> Result<Vec<ThreadRecord>> {
    let roots: Vec<i64> = all(
        c,
        "SELECT DISTINCT thread_root FROM messages \
         WHERE conversation_id = $1 AND thread_root IS NOT NULL",
        &[&conversation.0],
    )
    .await?
    .iter()
    .map(|row| row.try_get(0))
    .collect::<std::result::Result<_, _>>()?;
    let mut threads = Vec::with_capacity(roots.len());
    for root in roots {
        // A root removed by retention leaves its replies without a thread to show.
        let Some(message) = message_at(c, conversation, seq_from_sql(root)).await? else {
            continue;
        };
        let read: i64 = opt(
            c,
            "SELECT read_seq FROM thread_reads \
             WHERE conversation_id = $1 AND user_id = $2 AND root = $3",
            &[&conversation.0, &user.0, &root],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
        let unread: i64 = opt(
            c,
            "SELECT count(*) FROM messages \
             WHERE conversation_id = $1 AND thread_root = $2 AND seq > $3 AND sender_id <> $4",
            &[&conversation.0, &root, &read, &user.0],
        )
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0);
        threads.push(ThreadRecord {
            root: message,
            unread: unread.max(0) as u64,
            read_seq: seq_from_sql(read),
        });
    }
    threads.sort_by_key(|t| std::cmp::Reverse(t.root.thread.map_or(0, |s| s.last_seq)));
    threads.truncate(limit as usize);
    Ok(threads)
}

pub(crate) async fn set_retention<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    retention: Retention,
) -> Result<()> {
    let keep = retention.keep_last.map(|n| n.min(i64::MAX as u64) as i64);
    let changed = exec(
        c,
        "UPDATE conversations SET retention_ms = $2, retention_keep = $3 WHERE id = $1",
        &[&conversation.0, &retention.max_age_ms, &keep],
    )
    .await?;
    if changed == 0 {
        return Err(StoreError::NotFound.into());
    }
    Ok(())
}

fn retention_from_row(row: &tokio_postgres::Row, at: usize) -> Result<Retention> {
    Ok(Retention {
        max_age_ms: row.try_get(at)?,
        keep_last: row
            .try_get::<_, Option<i64>>(at + 1)?
            .map(|n| n.max(0) as u64),
    })
}

pub(crate) async fn retention<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
) -> Result<Retention> {
    let row = opt(
        c,
        "SELECT retention_ms, retention_keep FROM conversations WHERE id = $1",
        &[&conversation.0],
    )
    .await?
    .ok_or(Fail::Store(StoreError::NotFound))?;
    retention_from_row(&row, 0)
}

pub(crate) async fn retentions<C: GenericClient>(
    c: &C,
    after: ConversationId,
    limit: u32,
) -> Result<Vec<(ConversationId, Retention)>> {
    all(
        c,
        "SELECT id, retention_ms, retention_keep FROM conversations \
         WHERE (retention_ms IS NOT NULL OR retention_keep IS NOT NULL) AND id > $1 \
         ORDER BY id LIMIT $2",
        &[&after.0, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|row| Ok((ConversationId(row.try_get(0)?), retention_from_row(row, 1)?)))
    .collect()
}

/// Deletes one message with everything that hangs off it.
async fn delete_message_row<C: GenericClient>(
    c: &C,
    id: i64,
    conversation: i64,
    seq: i64,
) -> Result<()> {
    delete_annotations(c, conversation, seq).await?;
    exec(c, "DELETE FROM messages WHERE id = $1", &[&id]).await?;
    Ok(())
}

/// The newest message id, which retention never deletes (the same rule as on SQLite, where a
/// deleted newest row's id would be handed out again).
async fn newest_message_id<C: GenericClient>(c: &C) -> Result<i64> {
    Ok(opt(c, "SELECT max(id) FROM messages", &[])
        .await?
        .map(|row| row.try_get::<_, Option<i64>>(0))
        .transpose()?
        .flatten()
        .unwrap_or(0))
}

async fn delete_mentions_upto<C: GenericClient>(c: &C, conversation: i64, seq: i64) -> Result<()> {
    exec(
        c,
        "DELETE FROM mentions WHERE conversation_id = $1 AND seq <= $2",
        &[&conversation, &seq],
    )
    .await
    .map(drop)
}

pub(crate) async fn prune_conversation<C: GenericClient>(
    c: &C,
    conversation: ConversationId,
    prune: Prune,
    limit: u32,
) -> Result<u32> {
    // Lock the conversation: an append on another node waits rather than race the deletion.
    let row = opt(
        c,
        "SELECT last_seq FROM conversations WHERE id = $1 FOR UPDATE",
        &[&conversation.0],
    )
    .await?
    .ok_or(Fail::Store(StoreError::NotFound))?;
    let last: i64 = row.try_get(0)?;
    let keep_below = prune.keep_last.map_or(i64::MIN, |keep| {
        last.saturating_sub(keep.min(i64::MAX as u64) as i64) + 1
    });
    let newest = newest_message_id(c).await?;
    let rows = all(
        c,
        "SELECT id, seq, ts FROM messages WHERE conversation_id = $1 ORDER BY seq LIMIT $2",
        &[&conversation.0, &i64::from(limit)],
    )
    .await?;
    let mut deleted = 0;
    let mut last_deleted = None;
    for row in &rows {
        let (id, seq, ts): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let expired = prune.before_ts.is_some_and(|before| ts < before);
        // Rows come oldest first: the first one to keep ends the pass.
        if !(expired || seq < keep_below) || id == newest {
            break;
        }
        delete_message_row(c, id, conversation.0, seq).await?;
        deleted += 1;
        last_deleted = Some(seq);
    }
    if let Some(seq) = last_deleted {
        delete_mentions_upto(c, conversation.0, seq).await?;
    }
    Ok(deleted)
}

pub(crate) async fn prune_before<C: GenericClient>(
    c: &C,
    before_ts: i64,
    limit: u32,
) -> Result<u32> {
    let newest = newest_message_id(c).await?;
    // SKIP LOCKED: retention on several nodes takes different rows instead of waiting.
    let rows = all(
        c,
        "SELECT id, conversation_id, seq, ts FROM messages ORDER BY id LIMIT $1 \
         FOR UPDATE SKIP LOCKED",
        &[&i64::from(limit)],
    )
    .await?;
    let mut deleted = 0;
    let mut upto: Vec<(i64, i64)> = Vec::new();
    for row in &rows {
        let (id, conversation, seq, ts): (i64, i64, i64, i64) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        if ts >= before_ts || id == newest {
            break;
        }
        delete_message_row(c, id, conversation, seq).await?;
        deleted += 1;
        match upto.iter_mut().find(|(c, _)| *c == conversation) {
            Some(entry) => entry.1 = seq,
            None => upto.push((conversation, seq)),
        }
    }
    for (conversation, seq) in upto {
        delete_mentions_upto(c, conversation, seq).await?;
    }
    Ok(deleted)
}
