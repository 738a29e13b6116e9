-- Each member's bounce score per list (see hushlist_core::bounce), and the probe sent when it
-- reached the threshold: a bounce of that probe, and only that, suspends delivery.
CREATE TABLE bounce_scores (
    list            TEXT   NOT NULL,
    address         TEXT   NOT NULL,
    score           REAL NOT NULL,
    last_counted_at BIGINT NOT NULL,
    probe_token     TEXT,
    probe_sent_at   BIGINT,
    PRIMARY KEY (list, address)
);
CREATE UNIQUE INDEX bounce_probes ON bounce_scores (probe_token);
-- Mail the list server writes itself (owner notices, probes), queued in the same transaction
-- as the change it reports and handed to the relay by the delivery workers.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    mail_from       TEXT   NOT NULL,
    recipient       TEXT   NOT NULL,
    message         BLOB   NOT NULL,
    state           TEXT   NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at, id);
