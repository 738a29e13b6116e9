-- Signed requests per signer per rate-limit window, shared by every instance of a server so
-- that a signer's limit holds whichever instance they reach. Old windows are pruned.
CREATE TABLE request_counts (
    signer       TEXT   NOT NULL,
    window_start BIGINT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (signer, window_start)
);
