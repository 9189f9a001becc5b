-- 0008_search.sql: the full-text index of message text.
--
-- A contentless FTS5 table (the text is already in `messages`; the index keeps only its terms)
-- whose rowid is the message id. The terms are written by `tidings_store::search::index_terms`,
-- which expands CJK runs into characters and pairs so Chinese is searchable without a
-- dictionary. `contentless_delete` lets a removed message leave the index.
CREATE VIRTUAL TABLE message_search USING fts5(
    terms,
    content = '',
    contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);

-- How far the background indexer has come: every message with a smaller or equal id has been
-- looked at. Indexing runs behind appends so the send path never pays for it.
CREATE TABLE search_progress (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    last_message_id INTEGER NOT NULL
) STRICT;
INSERT INTO search_progress (id, last_message_id) VALUES (1, 0);
