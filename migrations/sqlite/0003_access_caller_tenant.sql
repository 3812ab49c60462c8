-- The tenant of the workload that acted (the `tid` of its app-only token), so a user's history
-- shows which tenant's workload used their grant. NULL on records written before it was kept.
ALTER TABLE user_token_accesses ADD COLUMN caller_tenant_id TEXT NULL;
