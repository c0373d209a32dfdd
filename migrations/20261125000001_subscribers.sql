-- Broadcast delivery: subscribers of a queue, and liveness.
--
-- A consumer of a broadcast queue registers itself here and refreshes
-- `last_seen` while it runs. A send to a broadcast queue (without an
-- explicit target) inserts one copy per live subscriber, addressed to it,
-- so every live subscriber gets its own copy exactly once. A subscriber is
-- live while `last_seen` is younger than the queue's `subscriber_ttl_ms`:
-- a restarting instance keeps receiving copies meanwhile and finds them
-- when it is back; one gone for longer stops receiving them.

CREATE TABLE pgflow.subscribers (
    queue_name    text NOT NULL REFERENCES pgflow.queues (queue_name) ON DELETE CASCADE,
    subscriber    text NOT NULL CHECK (length(subscriber) BETWEEN 1 AND 100),
    registered_at timestamptz NOT NULL DEFAULT now(),
    last_seen     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue_name, subscriber)
);

ALTER TABLE pgflow.queues
    ADD COLUMN subscriber_ttl_ms integer NOT NULL DEFAULT 600000 CHECK (subscriber_ttl_ms > 0);

CREATE VIEW public.pgflow_subscribers AS
    SELECT s.queue_name, s.subscriber, s.registered_at, s.last_seen,
           s.last_seen > now() - q.subscriber_ttl_ms * interval '1 millisecond' AS live
      FROM pgflow.subscribers s
      JOIN pgflow.queues q USING (queue_name);
