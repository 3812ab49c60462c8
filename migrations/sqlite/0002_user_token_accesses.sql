-- Who acted on behalf of whom (do-work audit), so a user can see which workloads used their
-- grant. Bounded per user: the store keeps only the newest N rows of each user.
CREATE TABLE user_token_accesses (
    -- Alias of the rowid: gives equal timestamps a stable order and lets the trim delete by id.
    id                INTEGER PRIMARY KEY,
    tenant_id         TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    -- Same fixed-width UTC text format as user_tokens.
    at                TEXT    NOT NULL,
    caller_app_id     TEXT    NOT NULL,
    method            TEXT    NOT NULL,
    path              TEXT    NOT NULL,
    -- NULL when the downstream call was not made (or did not answer).
    downstream_status INTEGER NULL,
    refreshed         INTEGER NOT NULL CHECK (refreshed IN (0, 1)),
    -- Disconnecting a user erases their history with their token. SQLite enforces this only
    -- with `PRAGMA foreign_keys = ON`, which the store sets on every connection.
    FOREIGN KEY (tenant_id, user_id)
        REFERENCES user_tokens (tenant_id, user_id) ON DELETE CASCADE
);

-- Serves "newest first" reads, the per-user trim, and the cascade's lookup by user.
CREATE INDEX user_token_accesses_by_user
    ON user_token_accesses (tenant_id, user_id, at DESC, id DESC);
