-- Posts accepted by the list server: ciphertext only, written before the SMTP 250.
CREATE TABLE posts (
    id          BIGSERIAL PRIMARY KEY,
    list        TEXT   NOT NULL,
    mail_from   TEXT,
    key_id      TEXT   NOT NULL,
    message_id  TEXT,
    received_at BIGINT NOT NULL,
    message     BYTEA   NOT NULL
);
CREATE INDEX posts_by_list ON posts (list, id);
