-- The 16 queues of the design (../shared/DESIGN.md, "Queue topology").
-- Defaults follow the seeds: 3 retries, 1000 ms base retry delay.
INSERT INTO pgflow.queues (queue_name, delivery, description) VALUES
    ('proposals_for_consensus_queue',      'competing', 'singularity -> centralcloud: proposal_for_consensus'),
    ('consensus_vote_requests_queue',      'broadcast', 'centralcloud -> every singularity: vote_request'),
    ('consensus_votes_queue',              'competing', 'singularity -> centralcloud: consensus_vote'),
    ('consensus_results_queue',            'targeted',  'centralcloud -> proposing instance: consensus_result'),
    ('proposals_for_execution_queue',      'targeted',  'singularity -> same instance: proposal_for_execution'),
    ('metrics_to_guardian_queue',          'competing', 'singularity -> centralcloud: execution_metrics'),
    ('patterns_for_aggregator_queue',      'competing', 'singularity -> centralcloud: pattern_discovered'),
    ('rollback_triggers_queue',            'targeted',  'centralcloud -> target instance: rollback_trigger (high priority)'),
    ('guardian_safety_profiles_queue',     'broadcast', 'centralcloud -> every singularity: safety_profile_update'),
    ('learning_loop_completed_queue',      'competing', 'centralcloud -> genesis: learning_loop_completed'),
    ('genesis_rule_updates',               'competing', 'singularity -> genesis: genesis_rule_update'),
    ('genesis_rule_updates_results',       'targeted',  'genesis -> requesting instance: rule result'),
    ('genesis_llm_config_updates',         'competing', 'singularity -> genesis: genesis_llm_config_update'),
    ('genesis_llm_config_updates_results', 'targeted',  'genesis -> requesting instance: config result'),
    ('code_execution_requests',            'competing', 'singularity -> genesis: code_execution_request'),
    ('code_execution_results',             'targeted',  'genesis -> requesting instance: job result')
ON CONFLICT (queue_name) DO NOTHING;
