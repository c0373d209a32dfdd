-- A vote that is kept but never counted, with the reason: today a vote from
-- an instance the proposal did not ask (not among `expected_voters`).
-- Before, such a vote was counted: five votes sent as `ghost_1`..`ghost_5`
-- outvoted two real rejections.
ALTER TABLE centralcloud.votes ADD COLUMN flag text;
COMMENT ON COLUMN centralcloud.votes.flag IS
    'Why this vote is not counted whatever its timing (NULL: an expected voter).';
CREATE INDEX votes_flagged_idx ON centralcloud.votes (proposal_id) WHERE flag IS NOT NULL;
