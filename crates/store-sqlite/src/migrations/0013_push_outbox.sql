-- 0013_push_outbox.sql: the push outbox, committed messages whose pushes are still to be
-- planned (see tidings_store::push). A row is written in the transaction that appends its
-- message, so a crash between the commit and the planning loses no push.

-- `next_at` is when the row is due: the message's time at first, the end of a planner's lease
-- once claimed. No foreign key: a message removed by retention before the planner saw it is
-- simply skipped.
CREATE TABLE push_outbox (
    conversation_id INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    next_at         INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
-- claim_push_outbox.
CREATE INDEX push_outbox_due ON push_outbox (next_at);
