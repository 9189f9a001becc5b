-- 0022_occupant_presence.sql: an occupant's availability (`show`: away, chat, dnd, xa) and status
-- text from its latest room presence, so those who enter a room later see them (XEP-0045 7.2.3).
ALTER TABLE occupants ADD COLUMN show TEXT;
ALTER TABLE occupants ADD COLUMN status TEXT;
