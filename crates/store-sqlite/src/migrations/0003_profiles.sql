-- Profiles: what users show of themselves. Kept apart from `users` (credentials) so the hot
-- account queries stay narrow; a user without a row has an empty profile.
CREATE TABLE profiles (
    user_id      INTEGER PRIMARY KEY REFERENCES users (id),
    display_name TEXT    NOT NULL,
    status_text  TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
-- Directory search by display-name prefix, case-insensitive for ASCII.
CREATE INDEX profiles_by_display_name ON profiles (display_name COLLATE NOCASE);
