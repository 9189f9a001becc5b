-- 0003_avatars.sql: avatars are file ids (as SQLite's 0009_rich.sql). A file that is a user's
-- or a group's avatar is readable by every signed-in user; these indexes back that check.
ALTER TABLE profiles ADD COLUMN avatar TEXT NOT NULL DEFAULT '';
CREATE INDEX profiles_by_avatar ON profiles (avatar);
CREATE INDEX conversations_by_avatar ON conversations (avatar);
