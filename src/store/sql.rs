//! The statements of both backends. They are written once in the SQL both Postgres and SQLite
//! (3.35+, bundled with sqlx) understand; only the claim, the history trim and the saves of a
//! new grant differ (Postgres saves every batch in one `UNNEST` statement).
//! Parameters: `$1` tenant id and `$2` user id wherever a single row is addressed. In SQLite
//! timestamps are bound as fixed-width UTC text, so the same comparisons order by time.
//!
//! Leases, back-off times and due selection are stamped and compared with the database's
//! clock (`clock!`), never with an instance's: instances drift, and a lease stamped by an
//! instance whose clock is behind looks expired to the others the moment it is written. The
//! statements that read the clock come in a Postgres and a SQLite spelling, made from one text
//! by the macros below. A span of time is bound as a number of seconds in Postgres and as a
//! date-function modifier (`+35.000000 seconds`) in SQLite (see each dialect's `span`).

/// The database's clock, comparable with stored timestamps. SQLite's `%f` is `SS.SSS`
/// (milliseconds): three zeros make the store's fixed-width microseconds, so the text still
/// orders as time against stamps the store wrote.
macro_rules! clock {
    (postgres) => {
        "now()"
    };
    (sqlite) => {
        "(strftime('%Y-%m-%dT%H:%M:%f', 'now') || '000Z')"
    };
}

/// The database's clock moved by the span bound as parameter `$p`. A NULL span gives NULL,
/// which compares as false.
macro_rules! clock_plus {
    (postgres, $p:literal) => {
        concat!("(now() + ", $p, " * interval '1 second')")
    };
    (sqlite, $p:literal) => {
        concat!("(strftime('%Y-%m-%dT%H:%M:%f', 'now', ", $p, ") || '000Z')")
    };
}

/// Every `user_tokens` column, in place of `*`: a Postgres statement prepared with `*` fails
/// ("cached plan must not change result type") once a rolling deploy adds a column.
macro_rules! token_columns {
    () => {
        "tenant_id, user_id, sealed_refresh_token, key_name, key_version, status, status_reason, \
         scopes, created_at, refreshed_at, revision, lease_owner, lease_until, failure_count, \
         next_attempt_at, last_error"
    };
}

/// The statements whose spelling differs between the backends, for a store dialect.
pub(crate) struct Statements {
    /// [`ACQUIRE_LEASE_POSTGRES`].
    pub(crate) acquire_lease: &'static str,
    /// [`EXTEND_LEASE_POSTGRES`].
    pub(crate) extend_lease: &'static str,
    /// [`RECORD_FAILURE_POSTGRES`].
    pub(crate) record_failure: &'static str,
    /// [`CLAIM_DUE_POSTGRES`].
    pub(crate) claim_due: &'static str,
    /// [`SUMMARY_POSTGRES`].
    pub(crate) summary: &'static str,
}

/// The Postgres spelling.
pub(super) const POSTGRES: Statements = Statements {
    acquire_lease: ACQUIRE_LEASE_POSTGRES,
    extend_lease: EXTEND_LEASE_POSTGRES,
    record_failure: RECORD_FAILURE_POSTGRES,
    claim_due: CLAIM_DUE_POSTGRES,
    summary: SUMMARY_POSTGRES,
};

/// The SQLite spelling.
pub(super) const SQLITE: Statements = Statements {
    acquire_lease: ACQUIRE_LEASE_SQLITE,
    extend_lease: EXTEND_LEASE_SQLITE,
    record_failure: RECORD_FAILURE_SQLITE,
    claim_due: CLAIM_DUE_SQLITE,
    summary: SUMMARY_SQLITE,
};

/// `$3`..`$5` grant, `$6` scopes, `$7` now, `$8` first revision. Returns no row when the user
/// is already connected; `RECONNECT` then replaces the grant.
pub(super) const INSERT_NEW: &str = concat!(
    "INSERT INTO user_tokens (tenant_id, user_id, sealed_refresh_token, key_name, key_version,
                              status, scopes, created_at, refreshed_at, revision)
     VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7, $8)
     ON CONFLICT (tenant_id, user_id) DO NOTHING
     RETURNING ",
    token_columns!()
);

/// `$3`..`$5` grant, `$6` scopes, `$7` now. A new grant resets every piece of bookkeeping but
/// `created_at`; the revision moves on, so writers still holding the old one are refused.
pub(super) const RECONNECT: &str = concat!(
    "UPDATE user_tokens SET
         sealed_refresh_token = $3, key_name = $4, key_version = $5,
         status = 'active', status_reason = NULL, scopes = $6, refreshed_at = $7,
         revision = revision + 1,
         lease_owner = NULL, lease_until = NULL,
         failure_count = 0, next_attempt_at = NULL, last_error = NULL
     WHERE tenant_id = $1 AND user_id = $2
     RETURNING ",
    token_columns!()
);

pub(super) const FIND: &str = concat!(
    "SELECT ",
    token_columns!(),
    " FROM user_tokens WHERE tenant_id = $1 AND user_id = $2"
);

/// `$3` owner, `$4` lease span. Our own lease may be extended.
macro_rules! acquire_lease {
    ($db:ident) => {
        concat!(
            "UPDATE user_tokens SET lease_owner = $3, lease_until = ",
            clock_plus!($db, "$4"),
            " WHERE tenant_id = $1 AND user_id = $2 AND status = 'active'
               AND (lease_until IS NULL OR lease_until < ",
            clock!($db),
            " OR lease_owner = $3)
             RETURNING ",
            token_columns!()
        )
    };
}
pub(super) const ACQUIRE_LEASE_POSTGRES: &str = acquire_lease!(postgres);
pub(super) const ACQUIRE_LEASE_SQLITE: &str = acquire_lease!(sqlite);

/// `$3` owner, `$4` lease span, `$5` the revision the owner read. Renews the owner's lease, or
/// takes it again when it ran out and nobody wrote the row since: the token the owner holds
/// is still the stored one, so redeeming it is safe. Anything else matches no row.
macro_rules! extend_lease {
    ($db:ident) => {
        concat!(
            "UPDATE user_tokens SET lease_owner = $3, lease_until = ",
            clock_plus!($db, "$4"),
            " WHERE tenant_id = $1 AND user_id = $2 AND status = 'active' AND revision = $5
               AND (lease_owner = $3 OR lease_until IS NULL OR lease_until < ",
            clock!($db),
            ")"
        )
    };
}
pub(super) const EXTEND_LEASE_POSTGRES: &str = extend_lease!(postgres);
pub(super) const EXTEND_LEASE_SQLITE: &str = extend_lease!(sqlite);

/// `$3` owner.
pub(super) const RELEASE_LEASE: &str = "
    UPDATE user_tokens SET lease_owner = NULL, lease_until = NULL
    WHERE tenant_id = $1 AND user_id = $2 AND lease_owner = $3";

/// SQLite's save after a redeem (Postgres: `SAVE_MANY_POSTGRES`). `$3` expected revision,
/// `$4`..`$6` grant, `$7` now, `$8` owner. The CASEs read the old `lease_owner`: only our own
/// lease is released.
pub(super) const SAVE_REFRESHED: &str = "
    UPDATE user_tokens SET
        sealed_refresh_token = $4, key_name = $5, key_version = $6, refreshed_at = $7,
        revision = revision + 1,
        failure_count = 0, next_attempt_at = NULL, last_error = NULL,
        lease_owner = CASE WHEN lease_owner = $8 THEN NULL ELSE lease_owner END,
        lease_until = CASE WHEN lease_owner = $8 THEN NULL ELSE lease_until END
    WHERE tenant_id = $1 AND user_id = $2 AND revision = $3";

/// SQLite's save after a re-seal. `$3` expected revision, `$4`..`$6` grant, `$7` owner.
pub(super) const SAVE_RESEALED: &str = "
    UPDATE user_tokens SET
        sealed_refresh_token = $4, key_name = $5, key_version = $6,
        revision = revision + 1,
        lease_owner = CASE WHEN lease_owner = $7 THEN NULL ELSE lease_owner END,
        lease_until = CASE WHEN lease_owner = $7 THEN NULL ELSE lease_until END
    WHERE tenant_id = $1 AND user_id = $2 AND revision = $3";

/// Postgres, every save in one statement: `$1`..`$7` parallel arrays of tenant id, user id,
/// expected revision, sealed token, key name, key version and `refreshed_at` (NULL for a
/// re-seal, which keeps the age and the failure bookkeeping as `SAVE_RESEALED` does), `$8`
/// owner. Returns the 1-based position of each save that matched its revision. One round
/// trip however many rows, instead of one per row inside a transaction.
pub(super) const SAVE_MANY_POSTGRES: &str = "
    UPDATE user_tokens AS t SET
        sealed_refresh_token = v.sealed, key_name = v.key_name, key_version = v.key_version,
        refreshed_at = COALESCE(v.refreshed_at, t.refreshed_at),
        revision = t.revision + 1,
        failure_count = CASE WHEN v.refreshed_at IS NULL THEN t.failure_count ELSE 0 END,
        next_attempt_at = CASE WHEN v.refreshed_at IS NULL THEN t.next_attempt_at END,
        last_error = CASE WHEN v.refreshed_at IS NULL THEN t.last_error END,
        lease_owner = CASE WHEN t.lease_owner = $8 THEN NULL ELSE t.lease_owner END,
        lease_until = CASE WHEN t.lease_owner = $8 THEN NULL ELSE t.lease_until END
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bytea[], $5::text[], $6::text[],
                $7::timestamptz[]) WITH ORDINALITY
         AS v(tenant_id, user_id, revision, sealed, key_name, key_version, refreshed_at, position)
    WHERE t.tenant_id = v.tenant_id AND t.user_id = v.user_id AND t.revision = v.revision
    RETURNING v.position";

/// `$3` expected revision, `$4` reason, `$5` owner. The sealed token stays.
pub(super) const MARK_REAUTH_REQUIRED: &str = "
    UPDATE user_tokens SET
        status = 'reauth_required', status_reason = $4,
        revision = revision + 1,
        lease_owner = CASE WHEN lease_owner = $5 THEN NULL ELSE lease_owner END,
        lease_until = CASE WHEN lease_owner = $5 THEN NULL ELSE lease_until END
    WHERE tenant_id = $1 AND user_id = $2 AND revision = $3";

/// `$3` owner, `$4` error code, `$5` span until the next attempt, `$6` expected revision, `$7`
/// 1 to count the failure, 0 for a pause that is not the row's fault (Entra throttling its
/// tenant). No revision change: the token is untouched. Guarded like every other write: a
/// worker whose row was reconnected, saved or taken over meanwhile (revision moved on, or
/// another owner's lease) changes nothing.
macro_rules! record_failure {
    ($db:ident) => {
        concat!(
            "UPDATE user_tokens SET
                failure_count = failure_count + $7, last_error = $4, next_attempt_at = ",
            clock_plus!($db, "$5"),
            ", lease_owner = NULL, lease_until = NULL
             WHERE tenant_id = $1 AND user_id = $2 AND revision = $6
               AND (lease_owner = $3 OR lease_owner IS NULL)"
        )
    };
}
pub(super) const RECORD_FAILURE_POSTGRES: &str = record_failure!(postgres);
pub(super) const RECORD_FAILURE_SQLITE: &str = record_failure!(sqlite);

pub(super) const KEY_NAMES: &str =
    "SELECT DISTINCT key_name FROM user_tokens WHERE status = 'active' ORDER BY key_name";

/// Rows of key `$1` the timer may take now: active, not backing off and not leased, by the
/// database's clock.
macro_rules! free_rows_of_key {
    ($db:ident) => {
        concat!(
            "key_name = $1 AND status = 'active'
             AND (next_attempt_at IS NULL OR next_attempt_at <= ",
            clock!($db),
            ")
             AND (lease_until IS NULL OR lease_until < ",
            clock!($db),
            ")"
        )
    };
}

/// `$1` key name, `$2` refresh-after span (negative; NULL: re-seals only), `$3` latest version,
/// `$4` owner, `$5` lease span, `$6` limit.
///
/// Three index range scans, each stopping after `$6` free rows: due by age (oldest first), and
/// on a version sorting below or above the latest (`<>` cannot use an index). The union is cut
/// to the `$6` oldest and leased in this statement. The version scans go in (version, age)
/// order because a re-sealed row keeps `refreshed_at` but leaves these ranges, so a rotation
/// run never re-reads its own work; with one old version (the usual case) the batch is exactly
/// the oldest due rows, with several it is the oldest of the lowest old version first.
/// `FOR UPDATE SKIP LOCKED` makes a concurrent claimer skip rows being claimed here; once we
/// commit, its re-check sees our lease. Row locks end with the statement: nothing stays
/// locked while the timer calls Entra.
pub(super) const CLAIM_DUE_POSTGRES: &str = concat!(
    "
    WITH by_age AS (
        SELECT tenant_id, user_id, refreshed_at FROM user_tokens
        WHERE ",
    free_rows_of_key!(postgres),
    " AND refreshed_at < ",
    clock_plus!(postgres, "$2"),
    "
        ORDER BY refreshed_at LIMIT $6 FOR UPDATE SKIP LOCKED
    ), below_latest AS (
        SELECT tenant_id, user_id, refreshed_at FROM user_tokens
        WHERE ",
    free_rows_of_key!(postgres),
    " AND key_version < $3
        ORDER BY key_version, refreshed_at LIMIT $6 FOR UPDATE SKIP LOCKED
    ), above_latest AS (
        SELECT tenant_id, user_id, refreshed_at FROM user_tokens
        WHERE ",
    free_rows_of_key!(postgres),
    " AND key_version > $3
        ORDER BY key_version, refreshed_at LIMIT $6 FOR UPDATE SKIP LOCKED
    ), picked AS (
        SELECT tenant_id AS picked_tenant_id, user_id AS picked_user_id FROM (
            SELECT * FROM by_age UNION SELECT * FROM below_latest UNION SELECT * FROM above_latest
        ) AS due
        ORDER BY refreshed_at
        LIMIT $6
    )
    UPDATE user_tokens SET lease_owner = $4, lease_until = ",
    clock_plus!(postgres, "$5"),
    "
    FROM picked
    WHERE tenant_id = picked_tenant_id AND user_id = picked_user_id
    RETURNING ",
    token_columns!()
);

/// Parameters as in [`CLAIM_DUE_POSTGRES`], same three index range scans. SQLite runs one writer
/// at a time, so the single statement is the whole claim; no row lock exists or is needed.
/// `INDEXED BY` pins the plan: with skewed statistics SQLite was seen to read the age branch
/// through the key-version index and sort the whole key, and it errors rather than ignoring
/// an index that cannot serve the query.
pub(super) const CLAIM_DUE_SQLITE: &str = concat!(
    "
    UPDATE user_tokens SET lease_owner = $4, lease_until = ",
    clock_plus!(sqlite, "$5"),
    "
    WHERE rowid IN (
        SELECT id FROM (
            SELECT id, refreshed_at FROM (
                SELECT rowid AS id, refreshed_at FROM user_tokens INDEXED BY user_tokens_due_by_age
                WHERE ",
    free_rows_of_key!(sqlite),
    " AND refreshed_at < ",
    clock_plus!(sqlite, "$2"),
    "
                ORDER BY refreshed_at LIMIT $6
            )
            UNION
            SELECT id, refreshed_at FROM (
                SELECT rowid AS id, refreshed_at FROM user_tokens INDEXED BY user_tokens_due_by_key
                WHERE ",
    free_rows_of_key!(sqlite),
    " AND key_version < $3
                ORDER BY key_version, refreshed_at LIMIT $6
            )
            UNION
            SELECT id, refreshed_at FROM (
                SELECT rowid AS id, refreshed_at FROM user_tokens INDEXED BY user_tokens_due_by_key
                WHERE ",
    free_rows_of_key!(sqlite),
    " AND key_version > $3
                ORDER BY key_version, refreshed_at LIMIT $6
            )
        )
        ORDER BY refreshed_at
        LIMIT $6
    )
    RETURNING ",
    token_columns!()
);

/// `$3` at, `$4` caller, `$5` method, `$6` path, `$7` downstream status, `$8` refreshed,
/// `$9` the caller's tenant, `$10` the downstream's name. A user deleted meanwhile gets no
/// history instead of a foreign-key error. (SQLite, one statement per access in a
/// transaction; Postgres takes a whole batch in one statement, see `postgres.rs`.)
pub(super) const INSERT_ACCESS: &str = "
    INSERT INTO user_token_accesses
        (tenant_id, user_id, at, caller_app_id, method, path, downstream_status, refreshed,
         caller_tenant_id, downstream)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
    WHERE EXISTS (SELECT 1 FROM user_tokens WHERE tenant_id = $1 AND user_id = $2)";

/// `$1`, `$2` one user, `$3` how many to keep (SQLite wants a LIMIT before an OFFSET).
pub(super) const TRIM_ACCESSES_SQLITE: &str = "
    DELETE FROM user_token_accesses WHERE id IN (
        SELECT id FROM user_token_accesses
        WHERE tenant_id = $1 AND user_id = $2
        ORDER BY at DESC, id DESC
        LIMIT -1 OFFSET $3
    )";

/// `$3` limit.
pub(super) const RECENT_ACCESSES: &str = "
    SELECT tenant_id, user_id, at, caller_app_id, method, path, downstream_status, refreshed,
           caller_tenant_id, downstream
    FROM user_token_accesses
    WHERE tenant_id = $1 AND user_id = $2
    ORDER BY at DESC, id DESC
    LIMIT $3";

pub(super) const COUNT_BY_STATUS: &str =
    "SELECT status, count(*) AS n FROM user_tokens GROUP BY status ORDER BY status";

pub(super) const COUNT_BY_KEY_VERSION: &str = "
    SELECT key_name, key_version, count(*) AS n FROM user_tokens
    GROUP BY key_name, key_version ORDER BY key_name, key_version";

/// Leases and back-offs running now, by the database's clock.
macro_rules! summary {
    ($db:ident) => {
        concat!(
            "SELECT min(refreshed_at) FILTER (WHERE status = 'active') AS oldest,
                    count(*) FILTER (WHERE lease_until > ",
            clock!($db),
            ") AS leased,
                    count(*) FILTER (WHERE status = 'active' AND next_attempt_at > ",
            clock!($db),
            ") AS backing_off
             FROM user_tokens"
        )
    };
}
pub(super) const SUMMARY_POSTGRES: &str = summary!(postgres);
pub(super) const SUMMARY_SQLITE: &str = summary!(sqlite);
