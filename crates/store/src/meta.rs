//! What the server aggregates onto a message (mentions, edit time, reaction counts, thread
//! summary, pin time): one shape that every backend stores as JSON beside the message, so a
//! page of history stays one query and `migrate-store` copies the column as it is.

use serde::{Deserialize, Serialize};
use tidings_proto::{Mentions, Message, ReactionCount, ThreadSummary, UserId};

/// The most users listed per reaction key on the message itself (the rest are counted).
pub const REACTION_USERS_SHOWN: usize = 20;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mentions: Option<Mentions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<ReactionCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_at: Option<i64>,
}

impl MessageMeta {
    /// Reads the stored column (NULL is no aggregates).
    pub fn from_json(json: Option<&str>) -> Result<MessageMeta, serde_json::Error> {
        json.map_or_else(|| Ok(MessageMeta::default()), serde_json::from_str)
    }

    /// The column to store: NULL when there is nothing, so most rows carry no JSON.
    pub fn to_json(&self) -> Result<Option<String>, serde_json::Error> {
        if *self == MessageMeta::default() {
            return Ok(None);
        }
        serde_json::to_string(self).map(Some)
    }

    /// Puts the aggregates on a message read from storage.
    pub fn apply_to(self, message: &mut Message) {
        message.mentions = self.mentions;
        message.edited_at = self.edited_at;
        message.reactions = self.reactions;
        message.thread = self.thread;
        message.pinned_at = self.pinned_at;
    }

    /// Counts `user`'s new reaction `key` (call only when the reaction row was inserted).
    pub fn add_reaction(&mut self, key: &str, user: UserId) {
        match self.reactions.iter_mut().find(|r| r.key == key) {
            Some(entry) => {
                entry.count += 1;
                if entry.users.len() < REACTION_USERS_SHOWN {
                    entry.users.push(user);
                }
            }
            None => self.reactions.push(ReactionCount {
                key: key.to_owned(),
                count: 1,
                users: vec![user],
            }),
        }
        self.sort_reactions();
    }

    /// Uncounts `user`'s reaction `key` (call only when the reaction row was deleted). Returns
    /// true when the key now lists fewer users than it should: the caller reloads them from
    /// its reactions table with [`MessageMeta::set_reactors`].
    pub fn remove_reaction(&mut self, key: &str, user: UserId) -> bool {
        let Some(i) = self.reactions.iter().position(|r| r.key == key) else {
            return false;
        };
        let entry = &mut self.reactions[i];
        entry.count = entry.count.saturating_sub(1);
        entry.users.retain(|u| *u != user);
        let short = entry.users.len() < (entry.count as usize).min(REACTION_USERS_SHOWN);
        if entry.count == 0 {
            self.reactions.remove(i);
        }
        self.sort_reactions();
        short
    }

    /// Replaces the users listed for `key` (at most [`REACTION_USERS_SHOWN`] are kept).
    pub fn set_reactors(&mut self, key: &str, mut users: Vec<UserId>) {
        users.truncate(REACTION_USERS_SHOWN);
        if let Some(entry) = self.reactions.iter_mut().find(|r| r.key == key) {
            entry.users = users;
        }
    }

    /// Most used first; the sort is stable, so ties keep the order of first use.
    fn sort_reactions(&mut self) {
        self.reactions.sort_by_key(|r| std::cmp::Reverse(r.count));
    }
}
