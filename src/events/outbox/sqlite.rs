//! The outbox on SQLite: times are the fixed-width UTC text SQLite's clock writes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::Notify;

use super::{dropped, pending, sql, Dropped, Row};
use super::{DroppedEvent, EventClaim, EventStore, OutboxReport, PendingEvent, Purged};
use crate::domain::{TenantId, UserKey};
use crate::events::{DisconnectedBy, NewEvent};
use crate::store::StoreError;

/// Writes `event` on `connection`, inside the caller's transaction.
pub async fn insert(
    connection: &mut SqliteConnection,
    event: &NewEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(sql::INSERT_SQLITE)
        .bind(&event.id)
        .bind(event.event_type)
        .bind(&event.body)
        .execute(connection)
        .await?;
    Ok(())
}

/// The outbox of a SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteEvents {
    pool: SqlitePool,
    wake: Option<Arc<Notify>>,
}

impl SqliteEvents {
    /// Over the store's pool; `wake` is `Some` when events are on.
    pub fn new(pool: SqlitePool, wake: Option<Arc<Notify>>) -> Self {
        Self { pool, wake }
    }

    fn notify(&self) {
        if let Some(wake) = &self.wake {
            wake.notify_one();
        }
    }
}

#[async_trait]
impl EventStore for SqliteEvents {
    fn wake(&self) -> Option<Arc<Notify>> {
        self.wake.clone()
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        let text: String = sqlx::query_scalar(sql::CLOCK_SQLITE)
            .fetch_one(&self.pool)
            .await?;
        unstamp(&text)
    }

    async fn claim(&self, claim: &EventClaim) -> Result<Vec<PendingEvent>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(sql::CLAIM_SQLITE)
            .bind(&claim.owner)
            .bind(claim.lease.as_secs_f64())
            .bind(claim.limit)
            .bind(claim.retry_attempted_before.map(stamp))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(pending).collect())
    }

    async fn delivered(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(sql::DELIVERED)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn failed(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        sqlx::query(sql::FAILED_SQLITE)
            .bind(id)
            .bind(owner)
            .bind(error)
            .bind(retry_in.as_secs_f64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn drop_expired(&self, max_age: Duration) -> Result<Vec<DroppedEvent>, StoreError> {
        let rows: Vec<Dropped> = sqlx::query_as(sql::DROP_EXPIRED_SQLITE)
            .bind(max_age.as_secs_f64())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(dropped).collect())
    }

    async fn report(&self) -> Result<OutboxReport, StoreError> {
        let (pending, oldest, failing, failed_attempts): (i64, Option<String>, i64, i64) =
            sqlx::query_as(sql::REPORT).fetch_one(&self.pool).await?;
        let oldest = oldest.as_deref().map(unstamp).transpose()?;
        let last_error = sqlx::query_scalar(sql::LAST_ERROR)
            .fetch_optional(&self.pool)
            .await?;
        Ok(OutboxReport {
            pending,
            oldest,
            failing,
            failed_attempts,
            last_error,
        })
    }

    async fn delete_user(&self, key: &UserKey) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(sql::DELETE_USER)
            .bind(key.tenant_id.as_str())
            .bind(key.user_id.as_str())
            .execute(&mut *tx)
            .await?;
        let existed = done.rows_affected() > 0;
        if existed && self.wake.is_some() {
            insert(
                &mut tx,
                &NewEvent::disconnected(key, DisconnectedBy::Operator),
            )
            .await?;
        }
        tx.commit().await?;
        if existed {
            self.notify();
        }
        Ok(existed)
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<Purged, StoreError> {
        let mut tx = self.pool.begin().await?;
        let users: Vec<String> = sqlx::query_scalar(sql::DELETE_TENANT)
            .bind(tenant.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let mut events = 0;
        if self.wake.is_some() {
            for user in &users {
                let key = super::user_key(tenant, user)?;
                insert(
                    &mut tx,
                    &NewEvent::disconnected(&key, DisconnectedBy::Operator),
                )
                .await?;
                events += 1;
            }
        }
        tx.commit().await?;
        self.notify();
        Ok(Purged {
            users: users.len() as u64,
            events,
        })
    }
}

/// The text `strftime('%Y-%m-%dT%H:%M:%fZ')` writes: milliseconds, fixed width.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

fn stamp(time: DateTime<Utc>) -> String {
    time.format(TIME_FORMAT).to_string()
}

fn unstamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    chrono::NaiveDateTime::parse_from_str(text, TIME_FORMAT)
        .map(|naive| naive.and_utc())
        .map_err(|error| StoreError::Other(anyhow::Error::new(error).context("corrupt timestamp")))
}
