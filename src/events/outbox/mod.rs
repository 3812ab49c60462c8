//! The outbox of grant events, on both backends: claiming pending events for delivery under a
//! lease, recording the outcome, expiring undeliverable events, counts for `status`, and the
//! operator's deletions (`users delete`, `tenants purge`), which write their events in the
//! same transaction as the rows they remove.
//!
//! The store's own writes (setup, `DELETE /api/setup`, a grant found dead) insert their event
//! inside the store's transaction through [`Emitter`]. Every time in this table is the
//! database's clock, never an instance's (instances drift). One implementation,
//! [`SqlEvents`], serves both backends through the store's dialect (`crate::store`).

mod emitter;
pub(crate) mod sql;
mod table;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::domain::{TenantId, UserKey};
use crate::store::{Dialect, StoreError};

pub(crate) use emitter::{delete_user, Emitter};
pub(crate) use table::SqlEvents;

/// What a delivery pass asks for.
#[derive(Clone, Debug)]
pub struct EventClaim {
    /// Stamped on the claimed events; only this owner may then record their outcome.
    pub owner: String,
    /// How long the claim holds: longer than one send with its timeout.
    pub lease: Duration,
    /// At most this many events.
    pub limit: i64,
    /// The timer's pass: also events still in back-off, unless attempted at or after this
    /// time (the database's clock, from [`EventStore::clock`]), so one pass tries each event
    /// once. `None`: due events only.
    pub retry_attempted_before: Option<DateTime<Utc>>,
}

/// A claimed event.
#[derive(Clone, Debug)]
pub struct PendingEvent {
    /// The `webhook-id`.
    pub id: String,
    /// The event type, for logs.
    pub event_type: String,
    /// The body to sign and send.
    pub body: String,
    /// Failed attempts so far.
    pub attempts: i32,
}

/// An event deleted undelivered after the retention period.
#[derive(Clone, Debug)]
pub struct DroppedEvent {
    /// The `webhook-id`.
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// Failed attempts.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The outbox for `obo-vault status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxReport {
    /// Events not delivered yet.
    pub pending: i64,
    /// When the oldest of them was written.
    pub oldest: Option<DateTime<Utc>>,
    /// Pending events whose delivery failed at least once.
    pub failing: i64,
    /// Failed attempts of all pending events.
    pub failed_attempts: i64,
    /// The most recent failure, e.g. `http 503` or `timeout`.
    pub last_error: Option<String>,
}

/// What `tenants purge` removed.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Purged {
    /// `user_tokens` rows deleted (their access history went with them).
    pub users: u64,
    /// `grant.disconnected` events written.
    pub events: u64,
}

/// The outbox table and the operator's deletions. Safe to use from several processes sharing
/// one database.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Notified after this process committed an event; `None` when events are off.
    fn wake(&self) -> Option<Arc<Notify>>;

    /// The database's clock.
    async fn clock(&self) -> Result<DateTime<Utc>, StoreError>;

    /// Claims the oldest pending events that are due and not leased by anyone, stamping the
    /// lease in the claiming statement.
    async fn claim(&self, claim: &EventClaim) -> Result<Vec<PendingEvent>, StoreError>;

    /// Deletes a delivered event, if `owner` still holds it.
    async fn delivered(&self, id: &str, owner: &str) -> Result<(), StoreError>;

    /// Records a failed attempt and the next attempt `retry_in` from now; releases the lease.
    async fn failed(
        &self,
        id: &str,
        owner: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<(), StoreError>;

    /// Deletes events written more than `max_age` ago that nobody is sending now.
    async fn drop_expired(&self, max_age: Duration) -> Result<Vec<DroppedEvent>, StoreError>;

    /// Counts for operators.
    async fn report(&self) -> Result<OutboxReport, StoreError>;

    /// Deletes one user's row and access history, with a `grant.disconnected` (`by:
    /// operator`) event when events are on; `false` when there was no row.
    async fn delete_user(&self, key: &UserKey) -> Result<bool, StoreError>;

    /// Deletes every row of a tenant, with one `grant.disconnected` event per user.
    async fn purge_tenant(&self, tenant: &TenantId) -> Result<Purged, StoreError>;
}

/// A claimed event as the drivers decode it: id, type, body, attempts.
pub(crate) type PendingRow = (String, String, String, i32);

/// An expired event as the drivers decode it: id, type, attempts, last error.
pub(crate) type DroppedRow = (String, String, i32, Option<String>);

fn pending((id, event_type, body, attempts): PendingRow) -> PendingEvent {
    PendingEvent {
        id,
        event_type,
        body,
        attempts,
    }
}

fn dropped((id, event_type, attempts, last_error): DroppedRow) -> DroppedEvent {
    DroppedEvent {
        id,
        event_type,
        attempts,
        last_error,
    }
}

/// The database's clock (`clock` statements).
#[derive(sqlx::FromRow)]
pub(crate) struct Now<D: Dialect> {
    now: D::Stamp,
}

/// The `REPORT` row.
#[derive(sqlx::FromRow)]
pub(crate) struct Counts<D: Dialect> {
    pending: i64,
    oldest: Option<D::Stamp>,
    failing: i64,
    failed_attempts: i64,
}
