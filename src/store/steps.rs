//! `connect` and `acquire_lease` are each a short sequence of single-row statements with a
//! retry when a concurrent writer slips in between. The sequence lives here once; each adapter
//! provides the statements.

use chrono::{DateTime, Utc};

use super::rows::refused_lease;
use super::{sql, Connected, Lease, LeaseAttempt, SealedGrant, StoreError, TokenRecord};
use crate::domain::UserKey;

/// How often `connect` retries when the row is deleted between its insert and its update.
const CONNECT_ATTEMPTS: usize = 3;

/// How often `acquire_lease` retries when the lease was freed between its update and read.
const LEASE_ATTEMPTS: usize = 3;

/// The single statements of one adapter.
pub(super) trait Steps {
    /// Runs `sql::INSERT_NEW` (with `first_revision`) or `sql::RECONNECT` (without); `None`
    /// when it wrote nothing.
    async fn write_grant(
        &self,
        statement: &'static str,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
        first_revision: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Runs the adapter's `ACQUIRE_LEASE`; the row if the lease is now ours.
    async fn try_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
    ) -> Result<Option<TokenRecord>, StoreError>;

    /// Runs `sql::FIND`.
    async fn find_row(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError>;
}

/// The revision of a newly inserted row: its creation time in microseconds rather than 1, so a
/// user who disconnects and connects again never gets back a revision that a slow writer of
/// the old row still holds (which would let its compare-and-set overwrite the new grant, or
/// mark it `reauth_required`).
fn first_revision(now: DateTime<Utc>) -> i64 {
    now.timestamp_micros()
}

/// Insert-or-nothing, then update: each statement is atomic, and which one wrote tells
/// `created` apart without a read-then-write transaction (in SQLite such a transaction can
/// fail with SQLITE_BUSY_SNAPSHOT when it upgrades to a writer).
pub(super) async fn connect(
    steps: &impl Steps,
    key: &UserKey,
    grant: &SealedGrant,
    scopes: &str,
    now: DateTime<Utc>,
) -> Result<Connected, StoreError> {
    for _ in 0..CONNECT_ATTEMPTS {
        let first = Some(first_revision(now));
        let inserted = steps.write_grant(sql::INSERT_NEW, key, grant, scopes, now, first);
        if let Some(record) = inserted.await? {
            return Ok(Connected {
                record,
                created: true,
            });
        }
        let updated = steps.write_grant(sql::RECONNECT, key, grant, scopes, now, None);
        if let Some(record) = updated.await? {
            return Ok(Connected {
                record,
                created: false,
            });
        }
        // Deleted between the two statements: insert again.
    }
    Err(StoreError::Other(anyhow::anyhow!(
        "the row kept changing during connect"
    )))
}

/// One conditional update takes the lease; only when it matched nothing is the row read to
/// say why. No transaction or row lock outlives the call.
pub(super) async fn acquire_lease(
    steps: &impl Steps,
    key: &UserKey,
    lease: &Lease,
) -> Result<LeaseAttempt, StoreError> {
    let mut last_seen = None;
    for _ in 0..LEASE_ATTEMPTS {
        if let Some(row) = steps.try_lease(key, lease).await? {
            return Ok(LeaseAttempt::Acquired(row));
        }
        let row = steps.find_row(key).await?;
        last_seen = row.as_ref().and_then(|row| row.lease_until).or(last_seen);
        if let Some(refused) = refused_lease(row, &lease.owner) {
            return Ok(refused);
        }
    }
    // The lease keeps changing hands under us: report it busy, the caller retries later.
    Ok(LeaseAttempt::Held(
        last_seen.unwrap_or(DateTime::<Utc>::MIN_UTC),
    ))
}
