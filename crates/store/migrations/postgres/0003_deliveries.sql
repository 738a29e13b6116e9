-- One row per (post, recipient): the delivery queue, written in the same transaction as the
-- post, so an accepted post always has its deliveries.
CREATE TABLE deliveries (
    post_id         BIGINT NOT NULL REFERENCES posts (id),
    recipient       TEXT   NOT NULL,
    state           TEXT   NOT NULL DEFAULT 'pending',
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    PRIMARY KEY (post_id, recipient)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
