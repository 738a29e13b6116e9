-- Posts waiting for an owner's approval (the list's moderation policy). A held post has no
-- deliveries and is not in the archive until it is released; a discarded one is deleted.
CREATE TABLE held_posts (
    post_id BIGINT NOT NULL PRIMARY KEY REFERENCES posts (id),
    list    TEXT   NOT NULL,
    held_at BIGINT NOT NULL,
    reason  TEXT   NOT NULL
);
CREATE INDEX held_posts_by_list ON held_posts (list, post_id);
