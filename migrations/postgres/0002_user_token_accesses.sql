-- Who acted on behalf of whom (do-work audit), so a user can see which workloads used their
-- grant. Bounded per user: the store keeps only the newest N rows of each user.
CREATE TABLE user_token_accesses (
    -- A surrogate key gives equal timestamps a stable order and lets the trim delete by id.
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         text        NOT NULL,
    user_id           text        NOT NULL,
    at                timestamptz NOT NULL,
    caller_app_id     text        NOT NULL,
    method            text        NOT NULL,
    path              text        NOT NULL,
    -- NULL when the downstream call was not made (or did not answer).
    downstream_status integer     NULL,
    refreshed         boolean     NOT NULL,
    -- Disconnecting a user erases their history with their token.
    FOREIGN KEY (tenant_id, user_id)
        REFERENCES user_tokens (tenant_id, user_id) ON DELETE CASCADE
);

-- Serves "newest first" reads, the per-user trim, and the cascade's lookup by user.
CREATE INDEX user_token_accesses_by_user
    ON user_token_accesses (tenant_id, user_id, at DESC, id DESC);
