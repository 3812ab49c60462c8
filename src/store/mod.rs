//! Persistence of sealed refresh tokens: one trait, a Postgres and a SQLite adapter.
//!
//! The store only ever sees sealed bytes. Every write that replaces a token is a
//! compare-and-set on the row's `revision`, and work on a row across instances is serialised
//! by a short lease (`lease_owner`, `lease_until`) that is never held inside a transaction.
//! Leases, back-off times and due selection use the database's clock: callers pass spans of
//! time, never an instant of their own clock.

mod adapter;
#[cfg(test)]
mod claim_tests;
#[cfg(test)]
mod contract_tests;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod plan_tests;
mod postgres;
mod rows;
mod sql;
mod sqlite;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::domain::{TenantId, TokenStatus, UserKey};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// A stored row of `user_tokens`.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    /// (`tenant_id`, `user_id`), the primary key.
    pub key: UserKey,
    /// The sealed refresh token (see `crypto`).
    pub sealed_refresh_token: Vec<u8>,
    /// Key Vault secret name of the key that sealed it.
    pub key_name: String,
    /// Key Vault secret version of the key that sealed it.
    pub key_version: String,
    /// Whether the grant still works.
    pub status: TokenStatus,
    /// Entra's error code when `status` is `reauth_required`.
    pub status_reason: Option<String>,
    /// Space-separated scopes granted to the downstream API.
    pub scopes: String,
    /// First connection of the user.
    pub created_at: DateTime<Utc>,
    /// Last time the grant was obtained or redeemed at Entra.
    pub refreshed_at: DateTime<Utc>,
    /// Incremented by every write of the token; the compare-and-set guard.
    pub revision: i64,
    /// The instance working on the row, while `lease_until` is in the future.
    pub lease_owner: Option<String>,
    /// End of the current lease.
    pub lease_until: Option<DateTime<Utc>>,
    /// Transient failures since the last success (timer back-off).
    pub failure_count: i32,
    /// The timer does not pick the row before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Machine code of the last failure, for operators.
    pub last_error: Option<String>,
}

/// A freshly sealed refresh token and the key that sealed it.
#[derive(Clone, Debug)]
pub struct SealedGrant {
    /// The sealed bytes.
    pub sealed_refresh_token: Vec<u8>,
    /// Key Vault secret name.
    pub key_name: String,
    /// Key Vault secret version.
    pub key_version: String,
}

/// One compare-and-set save of a freshly sealed grant (see [`TokenStore::save_grants`]).
#[derive(Clone, Copy, Debug)]
pub struct GrantSave<'a> {
    /// Whose row.
    pub key: &'a UserKey,
    /// The revision the grant was read at; the save is refused if the row moved on.
    pub expected_revision: i64,
    /// The new sealed token.
    pub grant: &'a SealedGrant,
    /// `Some(now)` after a redeem (sets `refreshed_at`, clears failures); `None` for a
    /// re-seal under a newer key (keeps `refreshed_at` and the failure bookkeeping).
    pub refreshed_at: Option<DateTime<Utc>>,
}

/// The result of `connect`.
#[derive(Debug)]
pub struct Connected {
    /// The row as stored now.
    pub record: TokenRecord,
    /// `true` when the row did not exist before.
    pub created: bool,
}

/// The result of trying to take a row's lease.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// The lease is ours; the row as read while taking it.
    Acquired(TokenRecord),
    /// Another owner holds the lease until the given time.
    Held(DateTime<Utc>),
    /// There is no such row.
    Missing,
    /// The row exists but is not `active`.
    NotActive(TokenRecord),
}

/// Who asks for a lease and for how long.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Unique per process (and per run for the timer).
    pub owner: String,
    /// The lease ends this long after the database stamps it, even if its owner dies.
    pub duration: Duration,
}

/// What the timer asks for when it claims a batch of due rows of one key.
#[derive(Clone, Debug)]
pub struct DueClaim {
    /// Only rows sealed under this key name.
    pub key_name: String,
    /// Rows on any other version are due for a re-seal.
    pub latest_version: String,
    /// Rows last refreshed longer ago than this (by the database's clock) are due for a
    /// refresh; `None`: only rows on another key version are due.
    pub refresh_after: Option<Duration>,
    /// The lease stamped on claimed rows.
    pub lease: Lease,
    /// At most this many rows.
    pub limit: i64,
}

/// A batch claimed by [`TokenStore::claim_due`].
#[derive(Debug, Default)]
pub struct Claimed {
    /// Claimed rows, oldest first.
    pub rows: Vec<TokenRecord>,
    /// Claimed rows that cannot be read (ids or timestamps that do not parse). They carry
    /// this claim's lease like the others; the caller backs them off so they do not come
    /// first in every later claim.
    pub corrupt: Vec<CorruptRow>,
}

/// A claimed row that does not parse, addressed by its raw ids.
#[derive(Clone, Debug)]
pub struct CorruptRow {
    /// The stored `tenant_id`, as is.
    pub tenant_id: String,
    /// The stored `user_id`, as is.
    pub user_id: String,
    /// The row's revision (the guard of the back-off write).
    pub revision: i64,
    /// The row's failures so far (the back-off's exponent).
    pub failure_count: i32,
    /// What does not parse.
    pub reason: String,
}

/// A row addressed by its stored ids, parsed or not.
#[derive(Clone, Copy, Debug)]
pub struct RowId<'a> {
    /// `tenant_id`.
    pub tenant_id: &'a str,
    /// `user_id`.
    pub user_id: &'a str,
}

impl<'a> From<&'a UserKey> for RowId<'a> {
    fn from(key: &'a UserKey) -> Self {
        Self {
            tenant_id: key.tenant_id.as_str(),
            user_id: key.user_id.as_str(),
        }
    }
}

impl<'a> From<&'a CorruptRow> for RowId<'a> {
    fn from(row: &'a CorruptRow) -> Self {
        Self {
            tenant_id: &row.tenant_id,
            user_id: &row.user_id,
        }
    }
}

/// A failed attempt on a row, for [`TokenStore::record_failure`].
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// Whose row.
    pub row: RowId<'a>,
    /// The revision the worker read; the write is refused if the row moved on.
    pub expected_revision: i64,
    /// The lease owner; the write is refused if someone else holds the lease.
    pub owner: &'a str,
    /// Machine code for `last_error`.
    pub error_code: &'a str,
    /// The timer does not pick the row again before this long from now (database clock).
    pub retry_in: Duration,
    /// `false` for a pause that is not the row's fault: `failure_count` stays.
    pub counts: bool,
}

/// One act on behalf of a user, kept so the user can see who acted for them.
#[derive(Clone, Debug)]
pub struct AccessRecord {
    /// Whose token was used.
    pub key: UserKey,
    /// When.
    pub at: DateTime<Utc>,
    /// The workload's app id (`azp`/`appid`).
    pub caller_app_id: String,
    /// The workload's tenant (`tid`); `None` on records kept before it was recorded.
    pub caller_tenant_id: Option<TenantId>,
    /// The downstream API's name; `None` on records kept before it was recorded.
    pub downstream: Option<String>,
    /// Downstream method.
    pub method: String,
    /// Downstream path (no query).
    pub path: String,
    /// Downstream status, if the call was made.
    pub downstream_status: Option<i32>,
    /// Whether this call redeemed the refresh token.
    pub refreshed: bool,
}

/// Counts for the operator `status` command.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StatusReport {
    /// Rows per status.
    pub by_status: Vec<(String, i64)>,
    /// Rows per (key name, key version), whatever their status.
    pub by_key_version: Vec<KeyVersionCount>,
    /// Oldest `refreshed_at` among active rows.
    pub oldest_refreshed_at: Option<DateTime<Utc>>,
    /// Rows whose lease is still running.
    pub leased: i64,
    /// Active rows in back-off after a failure.
    pub backing_off: i64,
}

/// Rows sealed under one key version.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyVersionCount {
    /// Key Vault secret name.
    pub key_name: String,
    /// Key Vault secret version.
    pub key_version: String,
    /// Number of rows.
    pub rows: i64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is unreachable, restarting, or out of connections; retry later.
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken schema.
    #[error("database operation failed")]
    Other(#[source] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable(error),
            sqlx::Error::Database(db) if is_transient_database_error(db.as_ref()) => {
                Self::Unavailable(error)
            }
            _ => Self::Other(anyhow::Error::new(error)),
        }
    }
}

/// A failed migration is `Unavailable` only when the database could not be reached.
fn migrate_error(error: sqlx::migrate::MigrateError) -> StoreError {
    match error {
        sqlx::migrate::MigrateError::Execute(error) => StoreError::from(error),
        other => StoreError::Other(anyhow::Error::new(other).context("database migration failed")),
    }
}

/// Opens the database named by `url` (`postgres://…`, `postgresql://…` or `sqlite:…`), runs
/// that backend's embedded migrations, and returns the store.
///
/// Errors never quote the URL: it may carry a password.
pub async fn connect(url: &SecretString) -> Result<Arc<dyn TokenStore>, StoreError> {
    open(url, false).await
}

/// Like [`connect`]; with `events`, every change of a grant's state also writes its grant
/// event to the outbox in the same transaction (SPEC §6, `crate::events`).
pub async fn open(url: &SecretString, events: bool) -> Result<Arc<dyn TokenStore>, StoreError> {
    let raw = url.expose_secret();
    let wake = events.then(|| Arc::new(tokio::sync::Notify::new()));
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url).await?.with_events(wake)))
    } else if raw.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?.with_events(wake)))
    } else {
        Err(StoreError::Other(anyhow::anyhow!(
            "the database URL must start with postgres://, postgresql:// or sqlite:"
        )))
    }
}

fn is_transient_database_error(error: &dyn sqlx::error::DatabaseError) -> bool {
    let code = error.code();
    let code = code.as_deref().unwrap_or_default();
    // Postgres: 57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now,
    // 08xxx connection exceptions, 40001/40P01 serialization/deadlock.
    // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED (and their extended codes).
    code.starts_with("57P")
        || code.starts_with("08")
        || code == "40001"
        || code == "40P01"
        || code == "5"
        || code == "6"
        || code.starts_with("517")
        || code.starts_with("261")
}

/// Storage of sealed refresh tokens. All methods are safe to call concurrently from several
/// processes sharing one database.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// Inserts the user's row, or replaces its token after a new setup (with events on, and
    /// in the same transaction, a `grant.connected`): status `active`,
    /// failures and lease cleared, `refreshed_at = now`, `revision` incremented.
    /// `created_at` is kept when the row existed. A new row's revision is its creation time in
    /// microseconds, so revisions are not reused when a user disconnects and connects again.
    async fn connect(
        &self,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
    ) -> Result<Connected, StoreError>;

    /// Reads one row.
    async fn find(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError>;

    /// Removes the row and its access history; `true` if a row existed. With events on, a
    /// `grant.disconnected` (`by: user`) is written in the same transaction.
    async fn delete(&self, key: &UserKey) -> Result<bool, StoreError>;

    /// Takes the row's lease if it is free (or already ours) and the row is active; returns
    /// the row as read while taking it, so the caller uses the newest token.
    async fn acquire_lease(&self, key: &UserKey, lease: &Lease)
        -> Result<LeaseAttempt, StoreError>;

    /// Renews `lease.owner`'s lease on the row for `lease.duration` from now, or takes it
    /// again if it ran out, provided the row is still active at `expected_revision` (so the
    /// token the owner holds is still the stored one). `false`: the row moved on or someone
    /// else holds it; the owner must not redeem the token it read.
    async fn extend_lease(
        &self,
        key: &UserKey,
        expected_revision: i64,
        lease: &Lease,
    ) -> Result<bool, StoreError>;

    /// Gives the lease back if `owner` still holds it.
    async fn release_lease(&self, key: &UserKey, owner: &str) -> Result<(), StoreError>;

    /// Saves grants by compare-and-set, each as [`GrantSave`] says: stores the sealed token,
    /// increments `revision` and releases the lease if `owner` holds it. A save whose revision
    /// moved on (or whose row is gone) changes nothing. Several saves share one transaction,
    /// so a batch costs one commit (the timer's saves); the answer says, in order, which were
    /// saved.
    async fn save_grants(
        &self,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError>;

    /// One save after a successful redeem: `refreshed_at = now`, failures cleared.
    async fn save_refreshed(
        &self,
        key: &UserKey,
        expected_revision: i64,
        grant: &SealedGrant,
        now: DateTime<Utc>,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let save = GrantSave {
            key,
            expected_revision,
            grant,
            refreshed_at: Some(now),
        };
        Ok(self.save_grants(&[save], owner).await? == [true])
    }

    /// One save after a re-seal under a newer key: keeps `refreshed_at` and the failures.
    async fn save_resealed(
        &self,
        key: &UserKey,
        expected_revision: i64,
        grant: &SealedGrant,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let save = GrantSave {
            key,
            expected_revision,
            grant,
            refreshed_at: None,
        };
        Ok(self.save_grants(&[save], owner).await? == [true])
    }

    /// Compare-and-set to `reauth_required` with Entra's error code; keeps the sealed token
    /// and releases the lease. Returns `false` when the revision moved on. With events on, a
    /// `grant.reauth_required` is written in the same transaction.
    async fn mark_reauth_required(
        &self,
        key: &UserKey,
        expected_revision: i64,
        reason: &str,
        owner: &str,
    ) -> Result<bool, StoreError>;

    /// Records a transient failure as [`Failure`] says: the error code, the next attempt
    /// time (database clock), `failure_count` incremented if it counts; releases the lease.
    /// Leaves the token untouched. Refused (`false`) when the row's revision moved on or
    /// another owner holds its lease.
    async fn record_failure(&self, failure: &Failure<'_>) -> Result<bool, StoreError>;

    /// Distinct key names of active rows (one Key Vault secret per tenant).
    async fn key_names(&self) -> Result<Vec<String>, StoreError>;

    /// Claims up to `limit` due rows of one key by stamping the lease on them in the claiming
    /// statement itself; rows leased by someone else, in back-off, or not active are skipped.
    /// A claimed row that does not parse comes back in [`Claimed::corrupt`], not as an error:
    /// one bad row must not stop the claim of the others.
    async fn claim_due(&self, claim: &DueClaim) -> Result<Claimed, StoreError>;

    /// Appends access records and keeps only the newest `keep` per user. Records of users
    /// without a row (deleted meanwhile) are dropped, not an error.
    async fn record_accesses(&self, records: &[AccessRecord], keep: i64) -> Result<(), StoreError>;

    /// The newest `limit` access records of a user, newest first.
    async fn recent_accesses(
        &self,
        key: &UserKey,
        limit: i64,
    ) -> Result<Vec<AccessRecord>, StoreError>;

    /// Counts for operators (leases and back-offs running by the database's clock).
    async fn status_report(&self) -> Result<StatusReport, StoreError>;

    /// The outbox of grant events in the same database (`crate::events`).
    fn events(&self) -> Arc<dyn crate::events::EventStore>;
}
