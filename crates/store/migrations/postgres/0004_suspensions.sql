-- Addresses the list server does not deliver to for now (bounces, unsubscribe, a member's own
-- pause). Suspension is the list server's alone: it never changes who may read.
CREATE TABLE suspensions (
    list    TEXT   NOT NULL,
    address TEXT   NOT NULL,
    reason  TEXT   NOT NULL,
    since   BIGINT NOT NULL,
    PRIMARY KEY (list, address)
);
