#!/usr/bin/env bash
# Server-side calibration of the queue's storage (BENCHMARKS.md, "Where
# the time goes"). pgbench runs producers (100 messages per transaction,
# each payload a seed proposal built and parsed as jsonb on the server) and
# consumers (claim up to 100 under a lease, send them to the client, ack
# them) side by side: 6 clients, 15 s per model, no Rust client involved.
#
#   rows:    a bare one-row-per-message queue (bigint key, payload, lease)
#   chunks:  one row per send call, holding its 100 payloads
#   pgflow:  pgflow's own send and ack_and_claim statements on its schema
#            (only with the path to a `pgflow` binary, which initialises a
#            scratch database `pgflow_calibration` and drops it afterwards)
#
#   PGHOST=/var/run/postgresql PGUSER=postgres ./run.sh test [path/to/pgflow]
#
# The sessions run like pgflow's queue sessions (no sequential scans, no
# JIT). Messages per second = (100 x the producers' transactions - what
# was left in the queue) / 15.
set -euo pipefail
db="${1:-test}"
pgflow_bin="${2:+$(realpath "$2")}"
cd "$(dirname "$0")"
export PGOPTIONS="-c enable_seqscan=off -c jit=off"
run() { # database, model
    pgbench -n -T 15 -c 6 -j 2 -M prepared -D ids='{}' -D leases='{}' \
        -f "$2_send.sql@1" -f "$2_claim_ack.sql@1" "$1" |
        grep -E '^ - [0-9]+ transactions|SQL script|failed transactions: [1-9]'
}
for model in rows chunks; do
    psql -q -v ON_ERROR_STOP=1 -f setup.sql "$db" 2>/dev/null
    echo "== $model"
    run "$db" "$model"
    # Sent but not acked when the clock stopped.
    psql -Atq -c "SELECT 'left in the queue: ' || (SELECT count(*) FROM r) + (SELECT coalesce(sum(n), 0) FROM ch)" "$db"
done
psql -q -c "DROP TABLE head, ch, r" "$db"
if [ -n "$pgflow_bin" ]; then
    psql -q -c "DROP DATABASE IF EXISTS pgflow_calibration" -c "CREATE DATABASE pgflow_calibration" "$db"
    url="postgres:///pgflow_calibration?host=${PGHOST:-/var/run/postgresql}"
    "$pgflow_bin" --database-url "$url" init >/dev/null
    psql -q -c "INSERT INTO pgflow.queues (queue_name, archive_retention) VALUES ('calibration', interval '0')" pgflow_calibration
    echo "== pgflow"
    run pgflow_calibration pgflow
    psql -Atq -c "SELECT 'left in the queue: ' || count(*) FROM pgflow.messages" pgflow_calibration
    psql -q -c "DROP DATABASE pgflow_calibration" "$db"
fi
