//! Persistence of sealed refresh tokens: one trait, one implementation over a small dialect
//! trait with a Postgres and a SQLite spelling.
//!
//! The store only ever sees sealed bytes. Every write that replaces a token is a
//! compare-and-set on the row's `revision`, and work on a row across instances is serialised
//! by a short lease (`lease_owner`, `lease_until`) that is never held inside a transaction.
//! Leases, back-off times and due selection use the database's clock: callers pass spans of
//! time, never an instant of their own clock.
//!
//! Where things are: [`TokenStore`] here and its values in `records`; [`SqlStore`] implements
//! it once for any backend (`sql_store`), with the statements in `sql` and the row shapes in
//! `rows`; `dialect` says what a backend supplies (why a dialect rather than two adapters is
//! explained there), `exec` runs a statement on any of them; `postgres` and `sqlite` are the
//! two backends and open their pools. A new backend is one more dialect module.

#[cfg(test)]
mod claim_tests;
#[cfg(test)]
mod contract_tests;
mod dialect;
mod error;
mod exec;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod plan_tests;
mod pooled;
mod postgres;
mod records;
mod rows;
mod sql;
mod sql_store;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::config::DatabaseAuth;
use crate::domain::UserKey;

pub(crate) use dialect::{Dialect, Param};
pub use error::StoreError;
pub(crate) use exec::{Conn, Exec, StoreBackend};
pub(crate) use pooled::{connection, execute_pooled, transaction};
pub use records::*;
pub(crate) use sql_store::SqlStore;

use postgres::PostgresDialect;
use sqlite::SqliteDialect;

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
    open_as(url, &DatabaseAuth::Password, events).await
}

/// Like [`open`], signing in to Postgres as `auth` says (`OBOVAULT_DATABASE_AUTH`).
pub async fn open_as(
    url: &SecretString,
    auth: &DatabaseAuth,
    events: bool,
) -> Result<Arc<dyn TokenStore>, StoreError> {
    let raw = url.expose_secret();
    let wake = events.then(|| Arc::new(tokio::sync::Notify::new()));
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        let pool = postgres::open(url, auth).await?;
        Ok(Arc::new(SqlStore::<PostgresDialect>::new(pool, wake)))
    } else if raw.starts_with("sqlite:") {
        let pool = sqlite::open(url).await?;
        Ok(Arc::new(SqlStore::<SqliteDialect>::new(pool, wake)))
    } else {
        Err(StoreError::Other(anyhow::anyhow!(
            "the database URL must start with postgres://, postgresql:// or sqlite:"
        )))
    }
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
