-- The learning loop keeps its schedule in the database and forgets old
-- outcomes (issue 16, points 11 and 12).
--
-- 1. `centralcloud.learning_schedule`: one row, the time of the last
--    learning pass (NULL: none yet). A pass locks the row (`FOR UPDATE SKIP
--    LOCKED`: a second centralcloud process finds it locked and skips) and
--    writes the time in the transaction that stores the pass's results, so
--    the periodic loop of a restarted process resumes the schedule instead
--    of starting a fresh interval (restarts used to starve the loop).
-- 2. The success rate of an agent type is computed from its outcomes
--    weighted by age (half-life decay); these indexes serve each pass's
--    scan of the recent outcomes already learned from.

CREATE TABLE centralcloud.learning_schedule (
    -- Always true: the table holds exactly one row.
    id           boolean PRIMARY KEY DEFAULT true CHECK (id),
    last_pass_at timestamptz
);

INSERT INTO centralcloud.learning_schedule (id, last_pass_at) VALUES (true, NULL);

GRANT SELECT, UPDATE ON centralcloud.learning_schedule TO centralcloud;

CREATE INDEX metrics_outcomes_idx ON centralcloud.metrics (received_at)
    WHERE learning_run_id IS NOT NULL;
CREATE INDEX pattern_reports_outcomes_idx ON centralcloud.pattern_reports (received_at)
    WHERE learning_run_id IS NOT NULL;
