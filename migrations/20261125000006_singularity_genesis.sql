-- Singularity's requests to Genesis (the genesis publisher), in its schema
-- `singularity`. Several instances share the schema, so every row names its
-- instance.
--
--   genesis_requests  one row per request an instance sent to Genesis:
--                     a learned rule (genesis_rule_updates), an LLM
--                     configuration (genesis_llm_config_updates) or a code
--                     analysis job (code_execution_requests). The row is
--                     inserted in the transaction that sends the request
--                     (status `sent`); the result Genesis addresses back to
--                     the instance sets `completed` or `failed`, with the
--                     result payload, in the transaction that acks it.
--
-- No other service role gets any privilege here.

CREATE TABLE singularity.genesis_requests (
    instance_id        text NOT NULL,
    -- rule_update | llm_config_update | code_execution
    kind               text NOT NULL
                       CHECK (kind IN ('rule_update', 'llm_config_update', 'code_execution')),
    -- The request's id as the result echoes it: a uuid for rule and
    -- LLM-config updates, the job id for code analysis.
    request_id         text NOT NULL,
    -- The queue it was sent to, and the message that carried it.
    queue_name         text NOT NULL,
    message_id         uuid NOT NULL,
    trace_id           uuid NOT NULL,
    -- The request payload as sent.
    payload            jsonb NOT NULL,
    status             text NOT NULL DEFAULT 'sent'
                       CHECK (status IN ('sent', 'completed', 'failed')),
    -- The result payload, and its error when it failed.
    result             jsonb,
    error              text,
    result_message_id  uuid,
    -- Results delivered again after the first one was recorded.
    duplicate_results  integer NOT NULL DEFAULT 0,
    sent_at            timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, kind, request_id),
    CHECK ((status = 'sent') = (finished_at IS NULL)),
    CHECK (status <> 'failed' OR error IS NOT NULL)
);

CREATE INDEX genesis_requests_instance_status_idx
    ON singularity.genesis_requests (instance_id, status);

GRANT SELECT, INSERT, UPDATE, DELETE ON singularity.genesis_requests TO singularity;
