-- Calibration tables (see run.sh): the least a queue can do per message on
-- this server, in two storage models, without pgflow's envelope, fences,
-- priorities or delays.
--
--   r:    one row per message (what pgflow and pgmq do), claimed with
--         FOR UPDATE SKIP LOCKED and a lease update, acked by DELETE; the
--         claim starts at a floor (`head`) as pgflow's does.
--   ch:   one row per send call ("chunk") holding its 100 payloads in an
--         array, leased and deleted as a whole.
DROP TABLE IF EXISTS head;
DROP TABLE IF EXISTS ch;
DROP TABLE IF EXISTS r;
CREATE TABLE r (
    id      bigserial PRIMARY KEY,
    payload jsonb NOT NULL,
    vt      timestamptz NOT NULL DEFAULT now(),
    lease   uuid
) WITH (fillfactor = 40);
CREATE TABLE head (floor bigint NOT NULL);
INSERT INTO head VALUES (0);
CREATE TABLE ch (
    id       bigserial PRIMARY KEY,
    n        int NOT NULL,
    payloads jsonb[] NOT NULL,
    vt       timestamptz NOT NULL DEFAULT now(),
    lease    uuid,
    attempts int NOT NULL DEFAULT 0
);
-- Out of line but uncompressed: the chunk's payloads are not recompressed
-- on every lease update.
ALTER TABLE ch ALTER payloads SET STORAGE EXTERNAL;
