-- 0016_occupant_presence.sql: an occupant's availability and status text, as in the SQLite
-- backend's 0022_occupant_presence.sql.
ALTER TABLE occupants ADD COLUMN show TEXT;
ALTER TABLE occupants ADD COLUMN status TEXT;
