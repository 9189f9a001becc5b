//! Profiles (display name, status text) and the user directory.
//!
//! Any signed-in user may read a profile and search the directory; the directory answers
//! prefixes of at least two characters with a small page, at a limited rate per user
//! (`limits.directory_searches_per_minute`), so it cannot be used to list every account.

use crate::error::{CoreError, CoreResult};
use crate::{Caller, Core};
use tidings_proto::UserId;
use tidings_proto::rest::{Profile, UpdateProfileRequest, UserSearchResults};
use tidings_store::ProfileRecord;

/// Longest display name, in characters.
const MAX_DISPLAY_NAME: usize = 64;
/// Longest status text, in characters.
const MAX_STATUS_TEXT: usize = 140;
/// Shortest search prefix, in characters.
const MIN_SEARCH_PREFIX: usize = 2;
/// Largest page of search results.
const MAX_SEARCH_RESULTS: u32 = 50;

fn view(p: ProfileRecord) -> Profile {
    Profile {
        user_id: p.user_id,
        username: p.username,
        display_name: p.display_name,
        status_text: p.status_text,
        avatar: p.avatar,
    }
}

/// Trims and checks a profile field.
fn clean(value: &str, max: usize, what: &str) -> CoreResult<String> {
    let value = value.trim();
    if value.chars().count() > max {
        return Err(CoreError::invalid(format!(
            "{what} has at most {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(CoreError::invalid(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(value.to_owned())
}

impl Core {
    /// A user's profile.
    pub async fn profile(&self, _caller: &Caller, user: UserId) -> CoreResult<Profile> {
        match self.inner.store.user_by_id(user).await? {
            Some(u) if !u.disabled => {}
            _ => return Err(CoreError::not_found("user")),
        }
        self.inner
            .store
            .profile(user)
            .await?
            .map(view)
            .ok_or_else(|| CoreError::not_found("user"))
    }

    /// Changes the caller's display name, status text and avatar; a change is told to the
    /// caller's devices and friends (`profile_changed`).
    pub async fn update_profile(
        &self,
        caller: &Caller,
        req: UpdateProfileRequest,
    ) -> CoreResult<Profile> {
        let current = self.profile(caller, caller.user_id).await?;
        let avatar_before = current.avatar.clone();
        let text_before = (current.display_name.clone(), current.status_text.clone());
        let display_name = match req.display_name {
            Some(name) => clean(&name, MAX_DISPLAY_NAME, "a display name")?,
            None => current.display_name,
        };
        let status_text = match req.status_text {
            Some(text) => clean(&text, MAX_STATUS_TEXT, "a status text")?,
            None => current.status_text,
        };
        if let Some(avatar) = &req.avatar {
            self.check_avatar(caller, avatar).await?;
        }
        self.inner
            .store
            .set_profile(caller.user_id, &display_name, &status_text, self.now_ms())
            .await?;
        if let Some(avatar) = &req.avatar {
            self.inner
                .store
                .set_avatar(caller.user_id, avatar, self.now_ms())
                .await?;
        }
        // Clients set their whole profile again with every vCard; only a change is told.
        let changed = (display_name, status_text) != text_before
            || req.avatar.is_some_and(|avatar| avatar != avatar_before);
        if changed {
            self.deliver(
                self.self_and_friends(caller.user_id).await,
                tidings_proto::ws::ServerFrame::ProfileChanged {
                    user_id: caller.user_id,
                },
            )
            .await;
        }
        self.profile(caller, caller.user_id).await
    }

    /// An avatar is empty (none) or an image file the caller may read; once set it becomes
    /// readable by everyone (see `policy::use_as_avatar`).
    pub(crate) async fn check_avatar(&self, caller: &Caller, avatar: &str) -> CoreResult<()> {
        if avatar.is_empty() {
            return Ok(());
        }
        let well_formed = avatar.len() == 32 && avatar.bytes().all(|b| b.is_ascii_hexdigit());
        let store = &self.inner.store;
        let file = if well_formed {
            store.file(avatar).await?
        } else {
            None
        };
        let readable = match &file {
            Some(_) => store.can_read_file(avatar, caller.user_id).await?,
            None => false,
        };
        let image = file.as_ref().is_some_and(|f| {
            matches!(
                f.content_type.as_str(),
                "image/png" | "image/jpeg" | "image/gif" | "image/webp"
            )
        });
        crate::policy::use_as_avatar(readable, image)
    }

    /// Users whose username or display name starts with `query`.
    pub async fn search_users(
        &self,
        caller: &Caller,
        query: &str,
        limit: Option<u32>,
    ) -> CoreResult<UserSearchResults> {
        let query = query.trim();
        if query.chars().count() < MIN_SEARCH_PREFIX || query.chars().count() > 64 {
            return Err(CoreError::invalid(format!(
                "a search needs {MIN_SEARCH_PREFIX} to 64 characters"
            )));
        }
        self.inner
            .search_limiter
            .check(&caller.user_id, self.now_ms())
            .map_err(|wait| CoreError::rate_limited("directory searches", wait))?;
        let limit = limit.unwrap_or(20).clamp(1, MAX_SEARCH_RESULTS);
        let users = self.inner.store.search_users(query, limit).await?;
        Ok(UserSearchResults {
            users: users.into_iter().map(view).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_trimmed_and_bounded() {
        assert_eq!(clean("  Alice  ", 64, "x").unwrap(), "Alice");
        assert_eq!(clean("小明", 2, "x").unwrap(), "小明");
        assert!(clean("小明明", 2, "x").is_err());
        assert!(clean("a\u{7}b", 64, "x").is_err());
    }
}
