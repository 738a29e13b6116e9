-- Roster logs: the exact signed bytes of every op, in order.
CREATE TABLE roster_ops (
    list      TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    body      BYTEA    NOT NULL,
    signature BYTEA    NOT NULL,
    PRIMARY KEY (list, seq)
);

-- Session keys, encrypted under the key server's master key (AES-256-GCM).
CREATE TABLE session_keys (
    key_id        TEXT   PRIMARY KEY,
    list          TEXT   NOT NULL,
    sender        TEXT   NOT NULL,
    roster_seq    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    master_key_id TEXT   NOT NULL,
    nonce         BYTEA   NOT NULL,
    sealed_key    BYTEA   NOT NULL
);
CREATE INDEX session_keys_expiry ON session_keys (expires_at) WHERE expires_at IS NOT NULL;

-- What remains of a destroyed key: enough to answer 410 instead of 404, never the key.
CREATE TABLE destroyed_keys (
    key_id       TEXT   PRIMARY KEY,
    list         TEXT   NOT NULL,
    sender       TEXT   NOT NULL,
    reason       TEXT   NOT NULL,
    destroyed_at BIGINT NOT NULL
);

-- Every deposit, release, refusal, revocation and expiry.
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    key_id  TEXT   NOT NULL,
    list    TEXT   NOT NULL,
    at      BIGINT NOT NULL,
    actor   TEXT   NOT NULL,
    action  TEXT   NOT NULL,
    outcome TEXT   NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_by_key ON audit (key_id, id);

-- Nonces of signed requests, kept until the request could no longer pass the clock check.
CREATE TABLE nonces (
    signer     TEXT   NOT NULL,
    nonce      TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (signer, nonce)
);

-- Secrets of the server itself (its OpenPGP key), encrypted under the master key.
CREATE TABLE server_secrets (
    name          TEXT PRIMARY KEY,
    master_key_id TEXT NOT NULL,
    nonce         BYTEA NOT NULL,
    sealed        BYTEA NOT NULL
);
