-- One row per user in custody (SPEC §5). The service only ever stores the sealed refresh
-- token; key_name/key_version say which Key Vault secret version sealed it, so a rotation is
-- visible per row and old versions can be retired once no row uses them.
CREATE TABLE user_tokens (
    tenant_id            text        NOT NULL,
    user_id              text        NOT NULL,
    sealed_refresh_token bytea       NOT NULL,
    key_name             text        NOT NULL,
    key_version          text        NOT NULL,
    -- A CHECK rather than an enum type: adding a status later is a plain migration.
    status               text        NOT NULL CHECK (status IN ('active', 'reauth_required')),
    -- Entra's error code when status = 'reauth_required', for the user and operators.
    status_reason        text        NULL,
    scopes               text        NOT NULL,
    created_at           timestamptz NOT NULL,
    refreshed_at         timestamptz NOT NULL,
    -- Compare-and-set guard: every write of the token is
    -- `UPDATE ... WHERE revision = $expected`, so a slow writer never overwrites a newer token.
    -- A new row starts at its creation time in microseconds, not 1, so a user who disconnects
    -- and connects again never gets back a revision a slow writer of the old row still holds.
    revision             bigint      NOT NULL,
    -- A short lease instead of a row lock or advisory lock: nothing stays locked while we wait
    -- for Entra, and a crashed owner's lease simply runs out.
    lease_owner          text        NULL,
    lease_until          timestamptz NULL,
    -- Back-off bookkeeping so a broken row cannot take every timer slot on every run.
    failure_count        integer     NOT NULL DEFAULT 0,
    next_attempt_at      timestamptz NULL,
    last_error           text        NULL,
    PRIMARY KEY (tenant_id, user_id),
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- claim_due, rows due by age: `key_name = $1 AND refreshed_at < $2 ORDER BY refreshed_at` is a
-- range scan that stops after LIMIT rows. A refreshed row moves to the end of the range, so
-- each batch reads about as many entries as it claims. Partial: reauth_required rows are
-- never claimed and must not slow the scan down.
CREATE INDEX user_tokens_due_by_age
    ON user_tokens (key_name, refreshed_at)
    WHERE status = 'active';

-- claim_due, rows on an old key version. After a rotation every row is due while almost none
-- is old, and a re-seal keeps refreshed_at: on the index above, the already re-sealed rows
-- would stay in front and every batch would re-read all of them (quadratic over a run).
-- Here a re-sealed row leaves the `key_version < $latest` / `> $latest` ranges, so each batch
-- only reads rows that are still due. Also serves the per-version counts of `status`.
CREATE INDEX user_tokens_due_by_key
    ON user_tokens (key_name, key_version, refreshed_at)
    WHERE status = 'active';
