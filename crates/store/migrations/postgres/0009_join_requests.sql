-- Requests to join a list, waiting for an owner's signed add (or rejection) until they
-- lapse. The certificate is the one the requester proved they hold.
CREATE TABLE join_requests (
    list         TEXT   NOT NULL,
    address      TEXT   NOT NULL,
    fingerprint  TEXT   NOT NULL,
    cert         TEXT   NOT NULL,
    note         TEXT,
    requested_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    PRIMARY KEY (list, address)
);
