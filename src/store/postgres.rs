//! The production adapter: Postgres through a `PgPool`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::query::{Query, QueryAs};
use sqlx::{FromRow, PgPool, Postgres};
use tokio::sync::Notify;

use super::adapter::token_store_impl;
use super::rows::{claimed, distinct_users, RawAccess, RawRecord};
use super::steps::{self, Steps};
use super::SealedGrant;
use super::{
    sql, AccessRecord, Claimed, Connected, DueClaim, Failure, GrantSave, Lease, LeaseAttempt,
};
use super::{KeyVersionCount, StatusReport, StoreError, TokenRecord, TokenStore};
use crate::domain::UserKey;
use crate::events::outbox::postgres::{insert as insert_event, PostgresEvents as Events};
use crate::events::{DisconnectedBy, EventStore, NewEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Server-side bounds on every pooled session, so a stuck statement or a black-holed
/// connection cannot hold a request or a timer run past its budget: the server cancels a
/// statement after 30 s (every statement here is a short indexed one) and ends a session
/// left idle inside a transaction; its TCP keepalive probes (after 60 s idle, every 10 s,
/// 3 unanswered end it) keep idle flows alive through load balancers and notice a vanished
/// client. (sqlx offers no client-side socket options; the pool's idle timeout and
/// acquire-time check cover the client side.)
const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("statement_timeout", "30s"),
    ("idle_in_transaction_session_timeout", "60s"),
    ("tcp_keepalives_idle", "60"),
    ("tcp_keepalives_interval", "10"),
    ("tcp_keepalives_count", "3"),
];

/// Sealed refresh tokens in Postgres.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    /// `Some` when grant changes write events (and wake the delivery task).
    events: Option<Arc<Notify>>,
}

/// Postgres binds and reads timestamps as `timestamptz`.
type Stamp = DateTime<Utc>;
type Raw = RawRecord<Stamp>;
const CLAIM_DUE: &str = sql::CLAIM_DUE_POSTGRES;
const ACQUIRE_LEASE: &str = sql::ACQUIRE_LEASE_POSTGRES;
const EXTEND_LEASE: &str = sql::EXTEND_LEASE_POSTGRES;
const RECORD_FAILURE: &str = sql::RECORD_FAILURE_POSTGRES;
const SUMMARY: &str = sql::SUMMARY_POSTGRES;
const TRIM_ACCESSES: &str = sql::TRIM_ACCESSES_POSTGRES;

fn stamp(time: DateTime<Utc>) -> Stamp {
    time
}

/// A span of time as Postgres reads it in `sql::clock_plus!`: seconds.
fn span(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// `span` of a time in the past: the due-by-age cut.
fn span_back(duration: Duration) -> f64 {
    -duration.as_secs_f64()
}

fn unstamp(stamp: Stamp) -> Result<DateTime<Utc>, StoreError> {
    Ok(stamp)
}

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
    raw.into_record(unstamp)
}

impl PostgresStore {
    /// Opens a pool on `url` and brings the schema up to date. Connections are made lazily,
    /// but the migration needs one, so an unreachable server fails here.
    pub async fn open(url: &SecretString) -> Result<Self, StoreError> {
        let base = PgConnectOptions::from_str(url.expose_secret())
            .map_err(StoreError::from)?
            .application_name("obo-vault");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            // Closed before a load balancer or NAT forgets an idle flow (Azure drops idle
            // flows silently after about 4 minutes), so no request inherits a dead connection.
            .idle_timeout(Duration::from_secs(120))
            .max_lifetime(Duration::from_secs(30 * 60))
            .connect_lazy_with(base.clone().options(SESSION_SETTINGS));
        // Migrations run on a connection of their own, without the statement timeout: a
        // future migration may rightly take longer than any request statement. sqlx holds an
        // advisory lock while migrating, so instances starting together wait for each other.
        let migrating = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(base);
        let migrated = MIGRATOR.run(&migrating).await;
        migrating.close().await;
        migrated.map_err(super::migrate_error)?;
        Ok(Self { pool, events: None })
    }

    /// Every save, one or many, in one statement (`SAVE_MANY_POSTGRES`): one round trip and
    /// one commit.
    async fn save_many(
        &self,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError> {
        let texts = |field: for<'s> fn(&'s GrantSave<'_>) -> &'s str| {
            saves.iter().map(field).collect::<Vec<&str>>()
        };
        let revisions: Vec<i64> = saves.iter().map(|s| s.expected_revision).collect();
        let sealed: Vec<&[u8]> = saves
            .iter()
            .map(|s| s.grant.sealed_refresh_token.as_slice())
            .collect();
        let refreshed_at: Vec<Option<DateTime<Utc>>> =
            saves.iter().map(|s| s.refreshed_at).collect();
        let positions: Vec<i64> = sqlx::query_scalar(sql::SAVE_MANY_POSTGRES)
            .bind(texts(|s| s.key.tenant_id.as_str()))
            .bind(texts(|s| s.key.user_id.as_str()))
            .bind(revisions)
            .bind(sealed)
            .bind(texts(|s| &s.grant.key_name))
            .bind(texts(|s| &s.grant.key_version))
            .bind(refreshed_at)
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        let mut saved = vec![false; saves.len()];
        for position in positions {
            if let Some(slot) = usize::try_from(position - 1)
                .ok()
                .and_then(|i| saved.get_mut(i))
            {
                *slot = true;
            }
        }
        Ok(saved)
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
        // The grant and its `grant.connected` commit together (or not at all).
        let mut tx = self.pool.begin().await?;
        let raw: Option<Raw> = query.fetch_optional(&mut *tx).await?;
        if raw.is_some() && self.events.is_some() {
            let event = NewEvent::connected(key, statement == sql::RECONNECT);
            insert_event(&mut tx, &event).await?;
        }
        tx.commit().await?;
        self.wake_delivery(raw.is_some());
        raw.map(record).transpose()
    }

    async fn try_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let raw: Option<Raw> = keyed_as(ACQUIRE_LEASE, key)
            .bind(&lease.owner)
            .bind(span(lease.duration))
            .fetch_optional(&self.pool)
            .await?;
        raw.map(record).transpose()
    }

    async fn find_row(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        let raw: Option<Raw> = keyed_as(sql::FIND, key).fetch_optional(&self.pool).await?;
        raw.map(record).transpose()
    }
}

token_store_impl!(PostgresStore);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pooled_sessions_carry_the_timeouts_and_keepalives() {
        super::super::harness::with_postgres(|url| async move {
            let store = PostgresStore::open(&url).await.expect("open");
            for (name, value) in [
                ("statement_timeout", "30s"),
                ("idle_in_transaction_session_timeout", "1min"),
                ("tcp_keepalives_idle", "60"),
            ] {
                let shown: String = sqlx::query_scalar(&format!("SHOW {name}"))
                    .fetch_one(&store.pool)
                    .await
                    .expect("show");
                assert_eq!(shown, value, "{name}");
            }
        })
        .await;
    }
}
