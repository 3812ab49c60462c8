-- One row per user in custody (SPEC §5). The service only ever stores the sealed refresh
-- token; key_name/key_version say which Key Vault secret version sealed it, so a rotation is
-- visible per row and old versions can be retired once no row uses them.
--
-- Timestamps are TEXT written by the store itself in one fixed-width UTC format
-- (YYYY-MM-DDTHH:MM:SS.ffffffZ), so comparing and sorting the strings orders by time.
CREATE TABLE user_tokens (
    tenant_id            TEXT    NOT NULL,
    user_id              TEXT    NOT NULL,
    sealed_refresh_token BLOB    NOT NULL,
    key_name             TEXT    NOT NULL,
    key_version          TEXT    NOT NULL,
    status               TEXT    NOT NULL CHECK (status IN ('active', 'reauth_required')),
    -- Entra's error code when status = 'reauth_required', for the user and operators.
    status_reason        TEXT    NULL,
    scopes               TEXT    NOT NULL,
    created_at           TEXT    NOT NULL,
    refreshed_at         TEXT    NOT NULL,
    -- Compare-and-set guard: every write of the token is
    -- `UPDATE ... WHERE revision = $expected`, so a slow writer never overwrites a newer token.
    -- A new row starts at its creation time in microseconds, not 1, so a user who disconnects
    -- and connects again never gets back a revision a slow writer of the old row still holds.
    revision             INTEGER NOT NULL,
    -- A short lease instead of a lock: nothing stays locked while we wait for Entra, and a
    -- crashed owner's lease simply runs out.
    lease_owner          TEXT    NULL,
    lease_until          TEXT    NULL,
    -- Back-off bookkeeping so a broken row cannot take every timer slot on every run.
    failure_count        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      TEXT    NULL,
    last_error           TEXT    NULL,
    PRIMARY KEY (tenant_id, user_id),
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- claim_due, rows due by age: a range scan on refreshed_at that stops after LIMIT rows; a
-- refreshed row moves to the end. Partial: reauth_required rows are never claimed.
CREATE INDEX user_tokens_due_by_age
    ON user_tokens (key_name, refreshed_at)
    WHERE status = 'active';

-- claim_due, rows on an old key version. A re-seal keeps refreshed_at, so on the index above
-- the re-sealed rows would stay in front and every batch after a rotation would re-read them.
-- Here a re-sealed row leaves the `key_version < latest` / `> latest` ranges.
CREATE INDEX user_tokens_due_by_key
    ON user_tokens (key_name, key_version, refreshed_at)
    WHERE status = 'active';
