-- The downstream API the workload acted on (its name in OBOVAULT_DOWNSTREAMS, or `default`), so
-- a user's history shows which API a workload reached with their grant. NULL on records written
-- before it was kept.
ALTER TABLE user_token_accesses ADD COLUMN downstream text NULL;
