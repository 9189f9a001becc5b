//! What an account holder does to the account as a whole: take a copy of everything the server
//! holds about it (export) and delete it (docs/accounts.md).
//!
//! The export is one JSON document written as a stream of chunks: the small parts (account,
//! profile, settings, devices, contacts, two-factor state) first, then each conversation with its
//! members and messages a page at a time, then the file list a page at a time, so an account
//! with years of history is exported with one page in memory.

use crate::audit::kinds;
use crate::config::DeletedUserMessages;
use crate::error::{CoreError, CoreResult};
use crate::{Caller, Core};
use futures_util::Stream;
use tidings_proto::account::DeleteAccountRequest;
use tidings_proto::rest::Conversation;
use tidings_proto::{ErrorCode, Seq};
use tidings_store::FileRecord;

/// Messages (or files) read per page of the export.
const EXPORT_PAGE: u32 = 200;

/// The version of the export document's shape.
pub const EXPORT_FORMAT: &str = "tidings-account-export/1";

fn json<T: serde::Serialize>(value: &T) -> CoreResult<String> {
    serde_json::to_string(value).map_err(|e| CoreError::internal("encoding an export", e))
}

fn file_view(file: &FileRecord) -> serde_json::Value {
    serde_json::json!({
        "id": file.id,
        "name": file.name,
        "content_type": file.content_type,
        "size": file.size,
        "sha256": tidings_store::audit::hex(&file.sha256),
        "created_at": file.created_at,
        "width": file.width,
        "height": file.height,
    })
}

/// Where the export stream is.
enum Stage {
    /// The head of the document: everything but conversations and files.
    Head,
    /// Conversation `index` of the list. With `after` `None` its opening (the conversation and
    /// its members) is written next; with `Some(seq)`, its messages after `seq`.
    Conversation {
        list: Vec<Conversation>,
        index: usize,
        after: Option<Seq>,
    },
    /// Files after the given id (`None`: the list not yet opened).
    Files {
        after: Option<String>,
        opened: bool,
    },
    Done,
}

impl Core {
    /// The head of the export: `{"format":..., ..., "conversations":[`.
    async fn export_head(&self, caller: &Caller) -> CoreResult<String> {
        let account = self.me(caller).await?;
        let profile = self.inner.store.profile(caller.user_id).await?.map(|p| {
            serde_json::json!({
                "display_name": p.display_name,
                "status_text": p.status_text,
                "avatar": p.avatar,
            })
        });
        let two_factor = self.two_factor_status(caller).await?;
        let head = serde_json::json!({
            "format": EXPORT_FORMAT,
            "exported_at": self.now_ms(),
            "account": account,
            "profile": profile,
            "privacy": self.privacy(caller).await?,
            "push_settings": self.push_settings(caller).await?,
            "two_factor": two_factor,
            "devices": self.devices(caller).await?.devices,
            "friends": self.friends(caller).await?,
            "friend_requests": self.friend_requests(caller).await?,
            "blocks": self.blocks(caller).await?,
        });
        let mut text = json(&head)?;
        // The object stays open for the streamed parts.
        text.pop();
        text.push_str(",\"conversations\":[");
        Ok(text)
    }

    /// One step of the export: the next chunk and the stage after it.
    async fn export_step(
        &self,
        caller: &Caller,
        stage: Stage,
    ) -> CoreResult<Option<(String, Stage)>> {
        match stage {
            Stage::Head => {
                let head = self.export_head(caller).await?;
                let list = self.conversations(caller).await?.conversations;
                Ok(Some((
                    head,
                    Stage::Conversation {
                        list,
                        index: 0,
                        after: None,
                    },
                )))
            }
            Stage::Conversation { list, index, after } => {
                let Some(conversation) = list.get(index) else {
                    return Ok(Some((
                        "],\"files\":[".to_owned(),
                        Stage::Files {
                            after: None,
                            opened: false,
                        },
                    )));
                };
                let id = conversation.id;
                let Some(after) = after else {
                    let members = self.members(caller, id).await?;
                    let mut text = String::new();
                    if index > 0 {
                        text.push(',');
                    }
                    text.push_str("{\"conversation\":");
                    text.push_str(&json(conversation)?);
                    text.push_str(",\"members\":");
                    text.push_str(&json(&members)?);
                    text.push_str(",\"messages\":[");
                    return Ok(Some((
                        text,
                        Stage::Conversation {
                            list,
                            index,
                            after: Some(0),
                        },
                    )));
                };
                // What the member may read now; the policy is asked for every page.
                self.authorize(caller, id, crate::policy::Action::Read)
                    .await?;
                let mut page = self
                    .inner
                    .store
                    .messages_after(id, after, EXPORT_PAGE)
                    .await?;
                self.apply_hidden(caller.user_id, id, &mut page).await?;
                if page.is_empty() {
                    return Ok(Some((
                        "]}".to_owned(),
                        Stage::Conversation {
                            list,
                            index: index + 1,
                            after: None,
                        },
                    )));
                }
                let mut text = String::new();
                for (i, message) in page.iter().enumerate() {
                    if after > 0 || i > 0 {
                        text.push(',');
                    }
                    text.push_str(&json(message)?);
                }
                let last = page.last().map_or(after, |m| m.seq);
                Ok(Some((
                    text,
                    Stage::Conversation {
                        list,
                        index,
                        after: Some(last),
                    },
                )))
            }
            Stage::Files { after, opened } => {
                let files = self
                    .inner
                    .store
                    .files_of(caller.user_id, after, EXPORT_PAGE)
                    .await?;
                if files.is_empty() {
                    return Ok(Some(("]}\n".to_owned(), Stage::Done)));
                }
                let mut text = String::new();
                for (i, file) in files.iter().enumerate() {
                    if opened || i > 0 {
                        text.push(',');
                    }
                    text.push_str(&json(&file_view(file))?);
                }
                let next = files.last().map(|f| f.id.clone());
                Ok(Some((
                    text,
                    Stage::Files {
                        after: next,
                        opened: true,
                    },
                )))
            }
            Stage::Done => Ok(None),
        }
    }

    /// `GET /api/v1/account/export`: everything the server holds about the caller, as one JSON
    /// document streamed in chunks (see the module docs). The export is audited.
    pub async fn export_account(
        &self,
        caller: &Caller,
    ) -> CoreResult<impl Stream<Item = CoreResult<String>> + Send + 'static> {
        crate::policy::decide_account_security(caller.scopes)?;
        let entry = self.new_audit(
            kinds::ACCOUNT_EXPORT,
            Some(caller.user_id),
            Some(caller.user_id),
        );
        self.inner.store.append_audit(entry).await?;
        let core = self.clone();
        let caller = *caller;
        Ok(futures_util::stream::try_unfold(
            Stage::Head,
            move |stage| {
                let core = core.clone();
                async move { core.export_step(&caller, stage).await }
            },
        ))
    }

    /// `DELETE /api/v1/account`: the caller deletes their own account, after the password and,
    /// with two-factor sign-in on, a code. Everything [`Core::delete_user`] does to an account
    /// deleted by an administrator happens: devices signed out, memberships ended, profile and
    /// settings removed, messages kept or tombstoned per `accounts.deleted_user_messages`, and
    /// the username stays taken for good.
    pub async fn delete_own_account(
        &self,
        caller: &Caller,
        req: DeleteAccountRequest,
    ) -> CoreResult<()> {
        crate::policy::decide_account_security(caller.scopes)?;
        let user = caller.user_id;
        self.check_own_password(user, req.password).await?;
        if self.needs_second_factor(user).await? {
            let Some(code) = req.code.as_deref().filter(|c| !c.trim().is_empty()) else {
                return Err(CoreError::new(
                    ErrorCode::SecondFactorRequired,
                    "deleting this account needs a code from its authenticator app",
                ));
            };
            self.spend_second_factor(user, code, true).await?;
        }
        let remove =
            self.inner.config.accounts.deleted_user_messages == DeletedUserMessages::Remove;
        let mut entry = self.new_audit(kinds::ACCOUNT_DELETE, Some(user), Some(user));
        entry.detail = serde_json::json!({ "messages": if remove { "remove" } else { "keep" } });
        self.detached(move |core| async move { core.remove_account(user, remove, entry).await })
            .await
    }
}
