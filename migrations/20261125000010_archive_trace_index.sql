-- The dashboard's journey search finds every message of a trace; the
-- archive (processed messages kept for audit) is the large table, so it
-- gets an index on trace_id. Live messages and dead letters are few and
-- are scanned.
CREATE INDEX archive_trace_id_idx ON pgflow.archive (trace_id);
