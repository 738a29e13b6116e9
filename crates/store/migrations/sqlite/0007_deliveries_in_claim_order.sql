-- Claims take the due deliveries in (next_attempt_at, post_id, recipient) order. With the
-- index on (state, next_attempt_at) alone, every claim sorted all due rows of a post (they
-- share next_attempt_at): measured at 1-2 s per claim with 200,000 pending deliveries,
-- holding the write lock meanwhile. This index hands them over in order.
CREATE INDEX deliveries_in_claim_order ON deliveries (state, next_attempt_at, post_id, recipient);
DROP INDEX deliveries_due;
