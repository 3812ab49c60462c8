//! [`TokenStore`] written once for any [`StoreBackend`]: which statement runs with which
//! parameters, which writes share a transaction with their grant event, and the short retry
//! sequences of `connect` and `acquire_lease`.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Pool;
use tokio::sync::Notify;
use tracing::instrument;

use super::dialect::{Dialect, Param};
use super::exec::StoreBackend;
use super::pooled::{connection, execute_pooled, transaction, HotConnection};
use super::rows::{claimed, refused_lease, RawAccess, RawRecord, Summary};
use super::{sql, AccessRecord, Claimed, Connected, DueClaim, Failure, GrantSave, Lease};
use super::{KeyVersionCount, LeaseAttempt, SealedGrant, StatusReport, StoreError};
use super::{TokenRecord, TokenStore};
use crate::domain::UserKey;
use crate::events::outbox::{self, Emitter, SqlEvents};
use crate::events::{DisconnectedBy, EventStore, NewEvent};

/// How often `connect` retries when the row is deleted between its insert and its update.
const CONNECT_ATTEMPTS: usize = 3;

/// How often `acquire_lease` retries when the lease was freed between its update and read.
const LEASE_ATTEMPTS: usize = 3;

/// Sealed refresh tokens in the database of dialect `D`.
pub(crate) struct SqlStore<D: Dialect> {
    pool: Pool<D::Db>,
    /// The connection the last read of a row left for the next one (`find`).
    hot: HotConnection<D::Db>,
    /// Writes grant events with the changes they report, when events are on.
    emitter: Emitter,
    dialect: PhantomData<D>,
}

impl<D: StoreBackend> SqlStore<D> {
    /// Over `pool`; with `Some(wake)`, grant changes write their events and notify the
    /// delivery task.
    pub(crate) fn new(pool: Pool<D::Db>, wake: Option<Arc<Notify>>) -> Self {
        Self {
            pool,
            hot: HotConnection::default(),
            emitter: Emitter::new(wake),
            dialect: PhantomData,
        }
    }

    /// With `first_revision`, runs `INSERT_NEW`, else `RECONNECT`; `None` when it wrote
    /// nothing. The grant and its `grant.connected` commit together (or not at all).
    async fn write_grant(
        &self,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
        first_revision: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let params = [
            Param::Row(key.into()),
            Param::Bytes(&grant.sealed_refresh_token),
            Param::Text(&grant.key_name),
            Param::Text(&grant.key_version),
            Param::Text(scopes),
            Param::Time(now),
            Param::BigInt(first_revision.unwrap_or_default()),
        ];
        let (statement, params) = match first_revision {
            Some(_) => (sql::INSERT_NEW, &params[..]),
            // No `$8`.
            None => (sql::RECONNECT, &params[..7]),
        };
        let mut tx = transaction(&self.pool).await?;
        let raw: Option<RawRecord<D>> = D::all(&mut tx, statement, params).await?.pop();
        let event = || NewEvent::connected(key, first_revision.is_none());
        self.emitter.commit::<D>(tx, raw.is_some(), event).await?;
        raw.map(RawRecord::into_record).transpose()
    }

    /// Runs `sql::FIND` on the connection the last read left, when it is still fresh.
    async fn find_row(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.hot.take(&self.pool).await?;
        let raw: Option<RawRecord<D>> = D::all(&mut conn, sql::FIND, &[Param::Row(key.into())])
            .await?
            .pop();
        self.hot.keep(conn, &self.pool);
        raw.map(RawRecord::into_record).transpose()
    }

    /// Runs the dialect's `acquire_lease`; the row if the lease is now ours.
    async fn try_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let params = [
            Param::Row(key.into()),
            Param::Text(&lease.owner),
            Param::Span(lease.duration),
        ];
        let mut conn = connection(&self.pool).await?;
        let raw: Option<RawRecord<D>> = D::all(&mut conn, D::SQL.acquire_lease, &params)
            .await?
            .pop();
        raw.map(RawRecord::into_record).transpose()
    }
}

/// The revision of a newly inserted row: its creation time in microseconds rather than 1, so a
/// user who disconnects and connects again never gets back a revision that a slow writer of
/// the old row still holds (which would let its compare-and-set overwrite the new grant, or
/// mark it `reauth_required`).
fn first_revision(now: DateTime<Utc>) -> i64 {
    now.timestamp_micros()
}

#[async_trait]
impl<D: StoreBackend> TokenStore for SqlStore<D> {
    /// Insert-or-nothing, then update: each statement is atomic, and which one wrote tells
    /// `created` apart without a read-then-write transaction (in SQLite such a transaction can
    /// fail with SQLITE_BUSY_SNAPSHOT when it upgrades to a writer).
    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn connect(
        &self,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        // `refreshed_at`, a new row's `created_at`, and its first revision.
        now: DateTime<Utc>,
    ) -> Result<Connected, StoreError> {
        for _ in 0..CONNECT_ATTEMPTS {
            let first = Some(first_revision(now));
            let inserted = self.write_grant(key, grant, scopes, now, first);
            if let Some(record) = inserted.await? {
                return Ok(Connected {
                    record,
                    created: true,
                });
            }
            let updated = self.write_grant(key, grant, scopes, now, None);
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

    /// At `debug`, unlike the writes: the read of every do-work call runs inside the caller's
    /// span, which names the same user, and logs nothing of its own at `info`.
    #[instrument(level = "debug", skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn find(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        self.find_row(key).await
    }

    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn delete(&self, key: &UserKey) -> Result<bool, StoreError> {
        outbox::delete_user::<D>(&self.pool, &self.emitter, key, DisconnectedBy::User).await
    }

    /// One conditional update takes the lease; only when it matched nothing is the row read
    /// to say why. No transaction or row lock outlives the call.
    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn acquire_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
    ) -> Result<LeaseAttempt, StoreError> {
        let mut last_seen = None;
        for _ in 0..LEASE_ATTEMPTS {
            if let Some(row) = self.try_lease(key, lease).await? {
                return Ok(LeaseAttempt::Acquired(row));
            }
            let row = self.find_row(key).await?;
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

    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn extend_lease(
        &self,
        key: &UserKey,
        expected_revision: i64,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        let params = [
            Param::Row(key.into()),
            Param::Text(&lease.owner),
            Param::Span(lease.duration),
            Param::BigInt(expected_revision),
        ];
        Ok(execute_pooled::<D>(&self.pool, D::SQL.extend_lease, &params).await? == 1)
    }

    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn release_lease(&self, key: &UserKey, owner: &str) -> Result<(), StoreError> {
        let params = [Param::Row(key.into()), Param::Text(owner)];
        execute_pooled::<D>(&self.pool, sql::RELEASE_LEASE, &params).await?;
        Ok(())
    }

    #[instrument(skip_all, fields(saves = saves.len()))]
    async fn save_grants(
        &self,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError> {
        if saves.is_empty() {
            return Ok(Vec::new());
        }
        D::save_grants(&self.pool, saves, owner).await
    }

    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn mark_reauth_required(
        &self,
        key: &UserKey,
        expected_revision: i64,
        // Entra's error code: the row's `status_reason` and the event's.
        reason: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let params = [
            Param::Row(key.into()),
            Param::BigInt(expected_revision),
            Param::Text(reason),
            Param::Text(owner),
        ];
        let mut tx = transaction(&self.pool).await?;
        let marked = D::execute(&mut tx, sql::MARK_REAUTH_REQUIRED, &params).await? == 1;
        let event = || NewEvent::reauth_required(key, reason);
        self.emitter.commit::<D>(tx, marked, event).await?;
        Ok(marked)
    }

    #[instrument(
        skip_all,
        fields(tenant.id = failure.row.tenant_id, user.id = failure.row.user_id)
    )]
    async fn record_failure(&self, failure: &Failure<'_>) -> Result<bool, StoreError> {
        let params = [
            Param::Row(failure.row),
            Param::Text(failure.owner),
            Param::Text(failure.error_code),
            Param::Span(failure.retry_in),
            Param::BigInt(failure.expected_revision),
            Param::Int(i32::from(failure.counts)),
        ];
        Ok(execute_pooled::<D>(&self.pool, D::SQL.record_failure, &params).await? == 1)
    }

    #[instrument(skip_all)]
    async fn key_names(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = connection(&self.pool).await?;
        let names: Vec<(String,)> = D::all(&mut conn, sql::KEY_NAMES, &[]).await?;
        Ok(names.into_iter().map(|(name,)| name).collect())
    }

    #[instrument(skip_all, fields(key.name = %claim.key_name, limit = claim.limit))]
    async fn claim_due(&self, claim: &DueClaim) -> Result<Claimed, StoreError> {
        if claim.limit <= 0 {
            return Ok(Claimed::default());
        }
        let params = [
            Param::Text(&claim.key_name),
            Param::SpanBack(claim.refresh_after),
            Param::Text(&claim.latest_version),
            Param::Text(&claim.lease.owner),
            Param::Span(claim.lease.duration),
            Param::BigInt(claim.limit),
        ];
        let mut conn = connection(&self.pool).await?;
        let raws: Vec<RawRecord<D>> = D::all(&mut conn, D::SQL.claim_due, &params).await?;
        Ok(claimed(raws))
    }

    #[instrument(skip_all, fields(records = records.len()))]
    async fn record_accesses(&self, records: &[AccessRecord], keep: i64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        D::record_accesses(&self.pool, records, keep.max(0)).await
    }

    #[instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn recent_accesses(
        &self,
        key: &UserKey,
        limit: i64,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let params = [Param::Row(key.into()), Param::BigInt(limit.max(0))];
        let mut conn = connection(&self.pool).await?;
        let raws: Vec<RawAccess<D>> = D::all(&mut conn, sql::RECENT_ACCESSES, &params).await?;
        raws.into_iter().map(RawAccess::into_access).collect()
    }

    #[instrument(skip_all)]
    async fn status_report(&self) -> Result<StatusReport, StoreError> {
        let mut conn = connection(&self.pool).await?;
        let by_status = D::all(&mut conn, sql::COUNT_BY_STATUS, &[]).await?;
        let by_key_version: Vec<(String, String, i64)> =
            D::all(&mut conn, sql::COUNT_BY_KEY_VERSION, &[]).await?;
        let summary: Option<Summary<D>> = D::all(&mut conn, D::SQL.summary, &[]).await?.pop();
        let summary = summary.ok_or(sqlx::Error::RowNotFound)?;
        Ok(StatusReport {
            by_status,
            by_key_version: by_key_version
                .into_iter()
                .map(KeyVersionCount::from)
                .collect(),
            oldest_refreshed_at: summary.oldest.map(D::unstamp).transpose()?,
            leased: summary.leased,
            backing_off: summary.backing_off,
        })
    }

    fn events(&self) -> Arc<dyn EventStore> {
        Arc::new(SqlEvents::<D>::new(self.pool.clone(), self.emitter.clone()))
    }
}
