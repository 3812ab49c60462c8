//! [`EventStore`] written once for any backend of the store (`crate::store::StoreBackend`):
//! the outbox lives in the store's database and runs on its dialect.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Pool;
use tokio::sync::Notify;

use super::{dropped, pending, sql, Counts, DroppedRow, Emitter, Now, PendingRow};
use super::{DroppedEvent, EventClaim, EventStore, OutboxReport, PendingEvent, Purged};
use crate::domain::{TenantId, UserId, UserKey};
use crate::events::{DisconnectedBy, NewEvent};
use crate::store::{connection, execute_pooled, transaction, Param, StoreBackend, StoreError};

/// The outbox in the store's database.
pub(crate) struct SqlEvents<D: StoreBackend> {
    pool: Pool<D::Db>,
    emitter: Emitter,
    dialect: PhantomData<D>,
}

impl<D: StoreBackend> SqlEvents<D> {
    /// Over the store's pool and its emitter.
    pub(crate) fn new(pool: Pool<D::Db>, emitter: Emitter) -> Self {
        Self {
            pool,
            emitter,
            dialect: PhantomData,
        }
    }
}

#[async_trait]
impl<D: StoreBackend> EventStore for SqlEvents<D> {
    fn wake(&self) -> Option<Arc<Notify>> {
        self.emitter.wake()
    }

    async fn clock(&self) -> Result<DateTime<Utc>, StoreError> {
        let mut conn = connection(&self.pool).await?;
        let now: Option<Now<D>> = D::all(&mut conn, D::OUTBOX.clock, &[]).await?.pop();
        D::event_unstamp(now.ok_or(sqlx::Error::RowNotFound)?.now)
    }

    async fn claim(&self, claim: &EventClaim) -> Result<Vec<PendingEvent>, StoreError> {
        let params = [
            Param::Text(&claim.owner),
            Param::Seconds(claim.lease.as_secs_f64()),
            Param::BigInt(claim.limit),
            Param::EventTime(claim.retry_attempted_before),
        ];
        let mut conn = connection(&self.pool).await?;
        let rows: Vec<PendingRow> = D::all(&mut conn, D::OUTBOX.claim, &params).await?;
        Ok(rows.into_iter().map(pending).collect())
    }

    async fn delivered(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        let params = [Param::Text(id), Param::Text(owner)];
        execute_pooled::<D>(&self.pool, sql::DELIVERED, &params).await?;
        Ok(())
    }

    async fn failed(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        // From the database's clock, like every time in the table.
        retry_in: Duration,
    ) -> Result<(), StoreError> {
        let params = [
            Param::Text(id),
            Param::Text(owner),
            Param::Text(error),
            Param::Seconds(retry_in.as_secs_f64()),
        ];
        execute_pooled::<D>(&self.pool, D::OUTBOX.failed, &params).await?;
        Ok(())
    }

    async fn drop_expired(&self, max_age: Duration) -> Result<Vec<DroppedEvent>, StoreError> {
        let params = [Param::Seconds(max_age.as_secs_f64())];
        let mut conn = connection(&self.pool).await?;
        let rows: Vec<DroppedRow> = D::all(&mut conn, D::OUTBOX.drop_expired, &params).await?;
        Ok(rows.into_iter().map(dropped).collect())
    }

    async fn report(&self) -> Result<OutboxReport, StoreError> {
        let mut conn = connection(&self.pool).await?;
        let counts: Option<Counts<D>> = D::all(&mut conn, sql::REPORT, &[]).await?.pop();
        let counts = counts.ok_or(sqlx::Error::RowNotFound)?;
        let last_error: Option<(String,)> = D::all(&mut conn, sql::LAST_ERROR, &[]).await?.pop();
        Ok(OutboxReport {
            pending: counts.pending,
            oldest: counts.oldest.map(D::event_unstamp).transpose()?,
            failing: counts.failing,
            failed_attempts: counts.failed_attempts,
            last_error: last_error.map(|(error,)| error),
        })
    }

    async fn delete_user(&self, key: &UserKey) -> Result<bool, StoreError> {
        super::delete_user::<D>(&self.pool, &self.emitter, key, DisconnectedBy::Operator).await
    }

    async fn purge_tenant(&self, tenant: &TenantId) -> Result<Purged, StoreError> {
        let mut tx = transaction(&self.pool).await?;
        let users: Vec<(String,)> =
            D::all(&mut tx, sql::DELETE_TENANT, &[Param::Text(tenant.as_str())]).await?;
        let mut events = 0;
        if self.emitter.is_on() {
            for (user,) in &users {
                let key = user_key(tenant, user)?;
                let event = NewEvent::disconnected(&key, DisconnectedBy::Operator);
                super::emitter::insert::<D>(&mut tx, &event).await?;
                events += 1;
            }
        }
        tx.commit().await?;
        self.emitter.notify();
        Ok(Purged {
            users: users.len() as u64,
            events,
        })
    }
}

/// Parses a user id returned by a purge (the column is always a GUID written by the store).
fn user_key(tenant: &TenantId, user_id: &str) -> Result<UserKey, StoreError> {
    let user_id = UserId::parse(user_id)
        .map_err(|error| StoreError::Other(anyhow::Error::new(error).context("corrupt row")))?;
    Ok(UserKey {
        tenant_id: tenant.clone(),
        user_id,
    })
}
