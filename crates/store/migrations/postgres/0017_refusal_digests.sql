-- Posts refused because of who sent them, waiting to be reported to the list's owners in one
-- digest; and when each list's owners were last sent one (at most one per interval).
CREATE TABLE refused_posts (
    id         BIGSERIAL PRIMARY KEY,
    list       TEXT   NOT NULL,
    sender     TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    refused_at BIGINT NOT NULL
);
CREATE INDEX refused_posts_by_list ON refused_posts (list, id);
CREATE TABLE refusal_digests (
    list         TEXT   NOT NULL PRIMARY KEY,
    last_sent_at BIGINT NOT NULL
);
