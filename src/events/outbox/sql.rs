//! The outbox statements of each backend. They differ only in how the database's clock is
//! read: `now()` in Postgres; in SQLite `strftime('%Y-%m-%dT%H:%M:%fZ', 'now', …)`, a
//! fixed-width UTC text that orders as time. `$1` is the event id wherever one event is
//! addressed. [`POSTGRES`] and [`SQLITE`] gather each backend's spelling for the store's
//! dialect.

/// The outbox statements whose spelling differs between the backends.
pub(crate) struct Statements {
    /// `$1` id, `$2` type, `$3` body. Due at once.
    pub(crate) insert: &'static str,
    /// The database's clock.
    pub(crate) clock: &'static str,
    /// `$1` owner, `$2` lease seconds, `$3` limit, `$4` attempted-before.
    pub(crate) claim: &'static str,
    /// `$1` id, `$2` owner, `$3` error, `$4` seconds until the next attempt.
    pub(crate) failed: &'static str,
    /// `$1` maximum age in seconds.
    pub(crate) drop_expired: &'static str,
}

/// The Postgres spelling.
pub(crate) const POSTGRES: Statements = Statements {
    insert: INSERT_POSTGRES,
    clock: CLOCK_POSTGRES,
    claim: CLAIM_POSTGRES,
    failed: FAILED_POSTGRES,
    drop_expired: DROP_EXPIRED_POSTGRES,
};

/// The SQLite spelling.
pub(crate) const SQLITE: Statements = Statements {
    insert: INSERT_SQLITE,
    clock: CLOCK_SQLITE,
    claim: CLAIM_SQLITE,
    failed: FAILED_SQLITE,
    drop_expired: DROP_EXPIRED_SQLITE,
};

/// The SQLite clock, plus a number of seconds bound at `$n`.
macro_rules! sqlite_clock {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
    ($seconds:literal) => {
        concat!(
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('%+.3f seconds', ",
            $seconds,
            "))"
        )
    };
}

/// `$1` id, `$2` type, `$3` body. Due at once.
const INSERT_POSTGRES: &str = "
    INSERT INTO grant_events (id, event_type, body, created_at, next_attempt_at)
    VALUES ($1, $2, $3, now(), now())";

const INSERT_SQLITE: &str = concat!(
    "INSERT INTO grant_events (id, event_type, body, created_at, next_attempt_at)
     VALUES ($1, $2, $3, ",
    sqlite_clock!(),
    ", ",
    sqlite_clock!(),
    ")"
);

const CLOCK_POSTGRES: &str = "SELECT now() AS now";
const CLOCK_SQLITE: &str = concat!("SELECT ", sqlite_clock!(), " AS now");

/// `$1` owner, `$2` lease seconds, `$3` limit, `$4` attempted-before (NULL: due events only).
/// `SKIP LOCKED` makes a concurrent claimer pass over the rows being claimed here; once this
/// commits, its re-check sees the lease.
const CLAIM_POSTGRES: &str = "
    UPDATE grant_events SET lease_owner = $1, lease_until = now() + make_interval(secs => $2)
    WHERE id IN (
        SELECT id FROM grant_events
        WHERE (lease_until IS NULL OR lease_until < now())
          AND (next_attempt_at <= now()
               OR ($4 IS NOT NULL AND (last_attempt_at IS NULL OR last_attempt_at < $4)))
        ORDER BY created_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, event_type, body, attempts";

/// As [`CLAIM_POSTGRES`]; SQLite has one writer at a time, so the statement is the claim.
const CLAIM_SQLITE: &str = concat!(
    "UPDATE grant_events SET lease_owner = $1, lease_until = ",
    sqlite_clock!("$2"),
    "
    WHERE id IN (
        SELECT id FROM grant_events
        WHERE (lease_until IS NULL OR lease_until < ",
    sqlite_clock!(),
    ")
          AND (next_attempt_at <= ",
    sqlite_clock!(),
    "
               OR ($4 IS NOT NULL AND (last_attempt_at IS NULL OR last_attempt_at < $4)))
        ORDER BY created_at
        LIMIT $3
    )
    RETURNING id, event_type, body, attempts"
);

/// `$2` owner.
pub(super) const DELIVERED: &str = "DELETE FROM grant_events WHERE id = $1 AND lease_owner = $2";

/// `$2` owner, `$3` error, `$4` seconds until the next attempt.
const FAILED_POSTGRES: &str = "
    UPDATE grant_events SET
        attempts = attempts + 1, last_error = $3, last_attempt_at = now(),
        next_attempt_at = now() + make_interval(secs => $4),
        lease_owner = NULL, lease_until = NULL
    WHERE id = $1 AND lease_owner = $2";

const FAILED_SQLITE: &str = concat!(
    "UPDATE grant_events SET
        attempts = attempts + 1, last_error = $3, last_attempt_at = ",
    sqlite_clock!(),
    ",
        next_attempt_at = ",
    sqlite_clock!("$4"),
    ",
        lease_owner = NULL, lease_until = NULL
    WHERE id = $1 AND lease_owner = $2"
);

/// `$1` maximum age in seconds. An event being sent right now is left to its sender.
const DROP_EXPIRED_POSTGRES: &str = "
    DELETE FROM grant_events
    WHERE created_at < now() - make_interval(secs => $1)
      AND (lease_until IS NULL OR lease_until < now())
    RETURNING id, event_type, attempts, last_error";

const DROP_EXPIRED_SQLITE: &str = concat!(
    "DELETE FROM grant_events
    WHERE created_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('-%.3f seconds', $1))
      AND (lease_until IS NULL OR lease_until < ",
    sqlite_clock!(),
    ")
    RETURNING id, event_type, attempts, last_error"
);

pub(super) const REPORT: &str = "
    SELECT count(*) AS pending,
           min(created_at) AS oldest,
           count(*) FILTER (WHERE attempts > 0) AS failing,
           coalesce(sum(attempts), 0) AS failed_attempts
    FROM grant_events";

pub(super) const LAST_ERROR: &str = "
    SELECT last_error FROM grant_events
    WHERE last_error IS NOT NULL
    ORDER BY last_attempt_at DESC
    LIMIT 1";

/// `$1` tenant, `$2` user. The access history goes with the row (ON DELETE CASCADE).
pub(super) const DELETE_USER: &str =
    "DELETE FROM user_tokens WHERE tenant_id = $1 AND user_id = $2";

/// `$1` tenant.
pub(super) const DELETE_TENANT: &str =
    "DELETE FROM user_tokens WHERE tenant_id = $1 RETURNING user_id";
