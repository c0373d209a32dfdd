//! The single-statement forms of the claim and the ack, for rows only.
//!
//! `pgflow.claim` and `pgflow.ack` (migration 15) handle rows and batches,
//! but as PL/pgSQL functions they cost the services more than one
//! statement: with them alone, 1,000 concurrent proposals drained in 9.1,
//! 11.2 and 11.8 s, against 8.8, 8.8 and 9.8 s before batch storage and
//! 8.4 and 10.0 s with these statements (`system-load`, alternating runs
//! on one VM). So the client
//! runs these statements when no batch is involved: an ack whose leases
//! are all rows' (a batch lease is a version-8 UUID), and a claim on a
//! queue and target that hold no batch. The claim checks that itself, in
//! the same statement: when a batch is there it claims nothing and says so
//! (`batches_waiting`), and the client claims through `pgflow.claim`.

/// The lease fence of a settle statement on `pgflow.messages m`: the rows
/// of ids `$ids` still held under the matching lease of `$leases` and not
/// expired. The rows are found by `id = ANY(ids)`, not by a join with
/// `unnest(ids, leases)`: a generic plan (made once per connection) of the
/// join, made while the queue table was nearly empty, hashed the whole
/// table on every ack however deep the queue grew (25.8 ms per ack at
/// 300,000 waiting); `= ANY` plans as a primary-key probe whatever the
/// table's size.
macro_rules! fenced {
    ($ids:literal, $leases:literal) => {
        concat!(
            "m.id = ANY(",
            $ids,
            "::uuid[])
   AND m.lease = (",
            $leases,
            "::uuid[])[array_position(",
            $ids,
            "::uuid[], m.id)]
   AND m.visible_at > now()"
        )
    };
}
pub(super) use fenced;

/// CTEs `d` (delete the acked rows, [`fenced`]) and `a` (archive them when
/// the queue keeps an archive). The same statement is the row part of
/// `pgflow.ack` (migrations 13 and 15); change both together.
macro_rules! ack_ctes {
    ($ids:literal, $leases:literal) => {
        concat!(
            "d AS (
    DELETE FROM pgflow.messages m
     WHERE ",
            fenced!($ids, $leases),
            "
    RETURNING m.*
), a AS (
    INSERT INTO pgflow.archive
        (id, seq, queue_name, target, priority, msg_type, schema_version, trace_id, source,
         payload, attempts, created_at, history)
    SELECT d.id, d.seq, d.queue_name, d.target, d.priority, d.msg_type, d.schema_version,
           d.trace_id, d.source, d.payload, d.attempts, d.created_at, d.history
      FROM d JOIN pgflow.queues aq ON aq.queue_name = d.queue_name
     WHERE aq.archive_retention > interval '0'
)"
        )
    };
}

/// CTEs `w` (whether the queue and target hold a batch), `q` (the queue's
/// settings), `c` (the next rows in claim order from the floor, locked,
/// skipping locked ones; none when `w`) and `u` (their lease): `$1` queue,
/// `$2` target, `$3` limit, `$4` lease token, `$5` lease ms. `w` and `q`
/// are materialized: read once, not again per row.
macro_rules! claim_ctes {
    () => {
        "w AS MATERIALIZED (
    SELECT EXISTS (SELECT 1 FROM pgflow.batches b
                    WHERE b.queue_name = $1 AND b.target = $2) AS batches_waiting
), q AS MATERIALIZED (
    SELECT queue_name, max_retries, visibility_timeout_ms FROM pgflow.queues WHERE queue_name = $1
), c AS (
    SELECT m.ctid
      FROM pgflow.messages m
     WHERE m.queue_name = $1 AND m.target = $2 AND m.visible_at <= now()
       AND m.ord >= COALESCE((SELECT h.floor FROM pgflow.heads h
                               WHERE h.queue_name = $1 AND h.target = $2),
                             -9223372036854775808)
       AND NOT (SELECT batches_waiting FROM w)
     ORDER BY m.ord
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE pgflow.messages m
       SET attempts = m.attempts + 1,
           lease = $4,
           claimed_at = now(),
           visible_at = now() + COALESCE($5, q.visibility_timeout_ms) * interval '1 millisecond'
      FROM c, q
     WHERE m.ctid = c.ctid
    RETURNING m.id, m.seq, m.queue_name, m.target, m.priority, m.msg_type, m.schema_version,
              m.trace_id, m.source, m.payload, m.attempts, q.max_retries, m.created_at,
              m.visible_at AS lease_expires_at, m.lease, m.last_error
)"
    };
}

/// Acks rows: `$1` ids, `$2` leases; returns the ids acked.
pub(super) const ACK_ROWS_SQL: &str = concat!("WITH ", ack_ctes!("$1", "$2"), "\nSELECT id FROM d");

/// Claims rows (see [`claim_ctes`]). Always one row or more: each carries
/// `batches_waiting`, and a claimed message or NULLs.
pub(super) const CLAIM_ROWS_SQL: &str = concat!(
    "WITH ",
    claim_ctes!(),
    "
SELECT w.batches_waiting, u.* FROM w LEFT JOIN u ON true"
);

/// Acks rows (`$6` ids, `$7` leases) and claims rows, in one statement:
/// every result row carries the acked ids and `batches_waiting`.
pub(super) const ACK_CLAIM_ROWS_SQL: &str = concat!(
    "WITH ",
    ack_ctes!("$6", "$7"),
    ", ",
    claim_ctes!(),
    "
SELECT (SELECT coalesce(array_agg(d.id), '{}') FROM d) AS acked, w.batches_waiting, u.*
  FROM w LEFT JOIN u ON true"
);
