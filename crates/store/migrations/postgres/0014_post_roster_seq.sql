-- The list's roster head when each post was accepted, so that the archive lists to a member
-- only the posts the list's policy lets them read (a member who joined later does not see
-- earlier posts unless the policy says so). Posts stored before this migration have none and
-- are listed as before; the key server decides who reads them either way.
ALTER TABLE posts ADD COLUMN roster_seq BIGINT;
