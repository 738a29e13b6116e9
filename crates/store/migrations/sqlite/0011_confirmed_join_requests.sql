-- Join requests are kept per list, address and key, so that a second key asking for an
-- address is shown to the owners beside the first rather than dropped, and each is kept as
-- the requester signed it (`request`: the JSON join request, certificate included), so that
-- owners' clients verify it themselves. A request reaches the owners only once the address
-- has answered the confirmation encrypted to that key (`confirmed_at`); `confirm_token` is
-- the SHA-256 of the token in that confirmation. Requests filed before this migration were
-- never confirmed, so they are dropped: their requesters ask again.
DROP TABLE join_requests;
CREATE TABLE join_requests (
    list          TEXT   NOT NULL,
    address       TEXT   NOT NULL,
    fingerprint   TEXT   NOT NULL,
    request       TEXT   NOT NULL,
    note          TEXT,
    confirm_token TEXT   NOT NULL UNIQUE,
    confirmed_at  BIGINT,
    requested_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (list, address, fingerprint)
);
