//! The embedded adapter: SQLite through a `SqlitePool`, one database file.
//!
//! Timestamps are TEXT in one fixed-width UTC format written here, so SQL compares and sorts
//! them as time. SQLite has a single writer at a time, which makes each statement (and the
//! claim in particular) atomic without row locks.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::query::{Query, QueryAs};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode};
use sqlx::sqlite::{SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{FromRow, Sqlite, SqlitePool};

use super::rows::{distinct_users, RawAccess, RawRecord};
use super::steps::{self, Steps};
use super::{sql, AccessRecord, Connected, DueClaim, Lease, LeaseAttempt, SealedGrant};
use super::{KeyVersionCount, StatusReport, StoreError, TokenRecord, TokenStore};
use crate::domain::UserKey;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Microseconds, like Postgres; fixed width for years 0000-9999, so text order is time order.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Sealed refresh tokens in a SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

type Raw = RawRecord<String>;

fn text(time: DateTime<Utc>) -> String {
    time.format(TIME_FORMAT).to_string()
}

fn time(text: String) -> Result<DateTime<Utc>, StoreError> {
    NaiveDateTime::parse_from_str(&text, TIME_FORMAT)
        .map(|naive| naive.and_utc())
        .map_err(|error| StoreError::Other(anyhow::Error::new(error).context("corrupt timestamp")))
}

/// A statement addressing one row: `$1` tenant id, `$2` user id.
fn keyed<'q>(statement: &'q str, key: &'q UserKey) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    sqlx::query(statement)
        .bind(key.tenant_id.as_str())
        .bind(key.user_id.as_str())
}

/// Like [`keyed`], decoding rows as `O`.
fn keyed_as<'q, O>(
    statement: &'q str,
    key: &'q UserKey,
) -> QueryAs<'q, Sqlite, O, SqliteArguments<'q>>
where
    O: for<'r> FromRow<'r, SqliteRow>,
{
    sqlx::query_as(statement)
        .bind(key.tenant_id.as_str())
        .bind(key.user_id.as_str())
}

fn record(raw: Raw) -> Result<TokenRecord, StoreError> {
    raw.into_record(time)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file named by `url` and brings the schema up
    /// to date.
    pub async fn open(url: &SecretString) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url.expose_secret())
            .map_err(StoreError::from)?
            .create_if_missing(true)
            // WAL lets readers run while the one writer writes; NORMAL is durable across
            // process crashes (only an OS crash may lose the last commits).
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Writers queue for the file lock instead of failing at once with SQLITE_BUSY.
            .busy_timeout(Duration::from_secs(5))
            // The access history's ON DELETE CASCADE needs it, on every connection.
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await.map_err(super::migrate_error)?;
        Ok(Self { pool })
    }

    async fn save_grant(
        &self,
        statement: &'static str,
        key: &UserKey,
        expected_revision: i64,
        grant: &SealedGrant,
        now: Option<DateTime<Utc>>,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let query = keyed(statement, key)
            .bind(expected_revision)
            .bind(&grant.sealed_refresh_token)
            .bind(&grant.key_name)
            .bind(&grant.key_version);
        let query = match now {
            Some(now) => query.bind(text(now)),
            None => query,
        };
        let done = query.bind(owner).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Steps for SqliteStore {
    async fn write_grant(
        &self,
        statement: &'static str,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
        first_revision: Option<i64>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let query = keyed_as(statement, key)
            .bind(&grant.sealed_refresh_token)
            .bind(&grant.key_name)
            .bind(&grant.key_version)
            .bind(scopes)
            .bind(text(now));
        let query = match first_revision {
            Some(revision) => query.bind(revision),
            None => query,
        };
        let raw: Option<Raw> = query.fetch_optional(&self.pool).await?;
        raw.map(record).transpose()
    }

    async fn try_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let raw: Option<Raw> = keyed_as(sql::ACQUIRE_LEASE, key)
            .bind(&lease.owner)
            .bind(text(lease.until))
            .bind(text(now))
            .fetch_optional(&self.pool)
            .await?;
        raw.map(record).transpose()
    }

    async fn find_row(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        let raw: Option<Raw> = keyed_as(sql::FIND, key).fetch_optional(&self.pool).await?;
        raw.map(record).transpose()
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn connect(
        &self,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
    ) -> Result<Connected, StoreError> {
        // One statement, no read-then-write transaction: a deferred SQLite transaction that
        // reads first can fail with SQLITE_BUSY_SNAPSHOT when it upgrades to a writer.
        steps::connect(self, key, grant, scopes, now).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn find(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        self.find_row(key).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn delete(&self, key: &UserKey) -> Result<bool, StoreError> {
        // The access history goes with the row (ON DELETE CASCADE, foreign_keys is on).
        let done = keyed(sql::DELETE, key).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn acquire_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<LeaseAttempt, StoreError> {
        steps::acquire_lease(self, key, lease, now).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn release_lease(&self, key: &UserKey, owner: &str) -> Result<(), StoreError> {
        keyed(sql::RELEASE_LEASE, key)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn save_refreshed(
        &self,
        key: &UserKey,
        expected_revision: i64,
        grant: &SealedGrant,
        now: DateTime<Utc>,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.save_grant(
            sql::SAVE_REFRESHED,
            key,
            expected_revision,
            grant,
            Some(now),
            owner,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn save_resealed(
        &self,
        key: &UserKey,
        expected_revision: i64,
        grant: &SealedGrant,
        owner: &str,
    ) -> Result<bool, StoreError> {
        self.save_grant(
            sql::SAVE_RESEALED,
            key,
            expected_revision,
            grant,
            None,
            owner,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn mark_reauth_required(
        &self,
        key: &UserKey,
        expected_revision: i64,
        reason: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let done = keyed(sql::MARK_REAUTH_REQUIRED, key)
            .bind(expected_revision)
            .bind(reason)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn record_failure(
        &self,
        key: &UserKey,
        owner: &str,
        error_code: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        keyed(sql::RECORD_FAILURE, key)
            .bind(owner)
            .bind(error_code)
            .bind(text(next_attempt_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn key_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(sql::KEY_NAMES)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(skip_all, fields(key.name = %claim.key_name, limit = claim.limit))]
    async fn claim_due(&self, claim: &DueClaim) -> Result<Vec<TokenRecord>, StoreError> {
        if claim.limit <= 0 {
            return Ok(Vec::new());
        }
        let raws: Vec<Raw> = sqlx::query_as(sql::CLAIM_DUE_SQLITE)
            .bind(&claim.key_name)
            .bind(text(claim.refreshed_before))
            .bind(&claim.latest_version)
            .bind(text(claim.now))
            .bind(&claim.lease.owner)
            .bind(text(claim.lease.until))
            .bind(claim.limit)
            .fetch_all(&self.pool)
            .await?;
        let mut rows = raws
            .into_iter()
            .map(record)
            .collect::<Result<Vec<_>, _>>()?;
        // RETURNING has no order; callers get the oldest first.
        rows.sort_by_key(|row| row.refreshed_at);
        Ok(rows)
    }

    #[tracing::instrument(skip_all, fields(records = records.len()))]
    async fn record_accesses(&self, records: &[AccessRecord], keep: i64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // The first statement writes, so the transaction takes the write lock up front (waiting
        // under busy_timeout) rather than upgrading from a read snapshot.
        let mut tx = self.pool.begin().await?;
        for access in records {
            keyed(sql::INSERT_ACCESS, &access.key)
                .bind(text(access.at))
                .bind(&access.caller_app_id)
                .bind(&access.method)
                .bind(&access.path)
                .bind(access.downstream_status)
                .bind(access.refreshed)
                .execute(&mut *tx)
                .await?;
        }
        for user in distinct_users(records) {
            keyed(sql::TRIM_ACCESSES_SQLITE, user)
                .bind(keep.max(0))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn recent_accesses(
        &self,
        key: &UserKey,
        limit: i64,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let raws: Vec<RawAccess<String>> = keyed_as(sql::RECENT_ACCESSES, key)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        raws.into_iter().map(|raw| raw.into_access(time)).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn status_report(&self, now: DateTime<Utc>) -> Result<StatusReport, StoreError> {
        let by_status = sqlx::query_as(sql::COUNT_BY_STATUS)
            .fetch_all(&self.pool)
            .await?;
        let by_key_version: Vec<(String, String, i64)> = sqlx::query_as(sql::COUNT_BY_KEY_VERSION)
            .fetch_all(&self.pool)
            .await?;
        let (oldest, leased, backing_off): (Option<String>, i64, i64) =
            sqlx::query_as(sql::SUMMARY)
                .bind(text(now))
                .fetch_one(&self.pool)
                .await?;
        Ok(StatusReport {
            by_status,
            by_key_version: by_key_version
                .into_iter()
                .map(KeyVersionCount::from)
                .collect(),
            oldest_refreshed_at: oldest.map(time).transpose()?,
            leased,
            backing_off,
        })
    }
}
