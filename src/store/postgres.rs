//! The production adapter: Postgres through a `PgPool`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{FromRow, PgPool, Postgres};

use super::rows::{distinct_users, RawAccess, RawRecord};
use super::steps::{self, Steps};
use super::{sql, AccessRecord, Connected, DueClaim, Lease, LeaseAttempt, SealedGrant};
use super::{KeyVersionCount, StatusReport, StoreError, TokenRecord, TokenStore};
use crate::domain::UserKey;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Sealed refresh tokens in Postgres.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

type Raw = RawRecord<DateTime<Utc>>;

/// A statement addressing one row: `$1` tenant id, `$2` user id.
fn keyed<'q>(statement: &'q str, key: &'q UserKey) -> Query<'q, Postgres, PgArguments> {
    sqlx::query(statement)
        .bind(key.tenant_id.as_str())
        .bind(key.user_id.as_str())
}

/// Like [`keyed`], decoding rows as `O`.
fn keyed_as<'q, O>(statement: &'q str, key: &'q UserKey) -> QueryAs<'q, Postgres, O, PgArguments>
where
    O: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as(statement)
        .bind(key.tenant_id.as_str())
        .bind(key.user_id.as_str())
}

fn record(raw: Raw) -> Result<TokenRecord, StoreError> {
    raw.into_record(Ok)
}

impl PostgresStore {
    /// Opens a pool on `url` and brings the schema up to date. Connections are made lazily,
    /// but the migration needs one, so an unreachable server fails here.
    pub async fn open(url: &SecretString) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose_secret())
            .map_err(StoreError::from)?
            .application_name("obo-vault");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(options);
        // sqlx holds an advisory lock while migrating, so instances starting together wait
        // for each other instead of racing.
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
            Some(now) => query.bind(now),
            None => query,
        };
        let done = query.bind(owner).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Steps for PostgresStore {
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
            .bind(now);
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
            .bind(lease.until)
            .bind(now)
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
impl TokenStore for PostgresStore {
    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn connect(
        &self,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
    ) -> Result<Connected, StoreError> {
        steps::connect(self, key, grant, scopes, now).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn find(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        self.find_row(key).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %key.tenant_id, user.id = %key.user_id))]
    async fn delete(&self, key: &UserKey) -> Result<bool, StoreError> {
        // The access history goes with the row (ON DELETE CASCADE).
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
            .bind(next_attempt_at)
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
        let raws: Vec<Raw> = sqlx::query_as(sql::CLAIM_DUE_POSTGRES)
            .bind(&claim.key_name)
            .bind(claim.refreshed_before)
            .bind(&claim.latest_version)
            .bind(claim.now)
            .bind(&claim.lease.owner)
            .bind(claim.lease.until)
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
        let mut tx = self.pool.begin().await?;
        for access in records {
            keyed(sql::INSERT_ACCESS, &access.key)
                .bind(access.at)
                .bind(&access.caller_app_id)
                .bind(&access.method)
                .bind(&access.path)
                .bind(access.downstream_status)
                .bind(access.refreshed)
                .execute(&mut *tx)
                .await?;
        }
        for user in distinct_users(records) {
            keyed(sql::TRIM_ACCESSES_POSTGRES, user)
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
        let raws: Vec<RawAccess<DateTime<Utc>>> = keyed_as(sql::RECENT_ACCESSES, key)
            .bind(limit.max(0))
            .fetch_all(&self.pool)
            .await?;
        raws.into_iter().map(|raw| raw.into_access(Ok)).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn status_report(&self, now: DateTime<Utc>) -> Result<StatusReport, StoreError> {
        let by_status = sqlx::query_as(sql::COUNT_BY_STATUS)
            .fetch_all(&self.pool)
            .await?;
        let by_key_version: Vec<(String, String, i64)> = sqlx::query_as(sql::COUNT_BY_KEY_VERSION)
            .fetch_all(&self.pool)
            .await?;
        let (oldest_refreshed_at, leased, backing_off) = sqlx::query_as(sql::SUMMARY)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(StatusReport {
            by_status,
            by_key_version: by_key_version
                .into_iter()
                .map(KeyVersionCount::from)
                .collect(),
            oldest_refreshed_at,
            leased,
            backing_off,
        })
    }
}
