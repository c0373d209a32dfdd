-- Short leases on the design's 16 queues: 3 s instead of the seeds' 30 s.
--
-- The consumer runtime claims for the queue's visibility timeout and its
-- lease keeper extends the lease of every message it is still handling
-- four times per lease (every 750 ms here), so a handler keeps its message
-- for as long as it runs (up to its own timeout), while the messages of a
-- process that died (SIGKILL, a crashed host) are claimable again at most
-- 3 s after its last extension: with the 1 s poll interval another
-- instance resumes within about 4 s instead of the handler timeout plus a
-- margin (35 s). 3 s leaves three missed extensions of slack before a live
-- handler loses its lease, and a lost lease only means another delivery
-- (every settlement is fenced, and the services' effects are idempotent).
--
-- A queue whose timeout an operator already changed keeps it. A client
-- that claims by hand (Pgflow::claim) on these queues and works longer
-- than 3 s without Pgflow::extend_lease should pass its own
-- ClaimOptions::visibility_timeout.
UPDATE pgflow.queues
   SET visibility_timeout_ms = 3000
 WHERE visibility_timeout_ms = 30000
   AND queue_name IN (
       'proposals_for_consensus_queue',
       'consensus_vote_requests_queue',
       'consensus_votes_queue',
       'consensus_results_queue',
       'proposals_for_execution_queue',
       'metrics_to_guardian_queue',
       'patterns_for_aggregator_queue',
       'rollback_triggers_queue',
       'guardian_safety_profiles_queue',
       'learning_loop_completed_queue',
       'genesis_rule_updates',
       'genesis_rule_updates_results',
       'genesis_llm_config_updates',
       'genesis_llm_config_updates_results',
       'code_execution_requests',
       'code_execution_results');
