//! The embedded adapter: SQLite through a `SqlitePool`, one database file.
//!
//! Timestamps are TEXT in one fixed-width UTC format written here, so SQL compares and sorts
//! them as time. SQLite has a single writer at a time, which makes each statement (and the
//! claim in particular) atomic without row locks.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::query::{Query, QueryAs};
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode};
use sqlx::sqlite::{SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Executor, FromRow, Sqlite, SqlitePool};
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
use crate::events::outbox::sqlite::{insert as insert_event, SqliteEvents as Events};
use crate::events::{DisconnectedBy, EventStore, NewEvent};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Microseconds, like Postgres; fixed width for years 0000-9999, so text order is time order.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// Sealed refresh tokens in a SQLite file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// `Some` when grant changes write events (and wake the delivery task).
    events: Option<Arc<Notify>>,
}

type Stamp = String;
type Raw = RawRecord<Stamp>;
const CLAIM_DUE: &str = sql::CLAIM_DUE_SQLITE;
const ACQUIRE_LEASE: &str = sql::ACQUIRE_LEASE_SQLITE;
const EXTEND_LEASE: &str = sql::EXTEND_LEASE_SQLITE;
const RECORD_FAILURE: &str = sql::RECORD_FAILURE_SQLITE;
const SUMMARY: &str = sql::SUMMARY_SQLITE;
const TRIM_ACCESSES: &str = sql::TRIM_ACCESSES_SQLITE;

fn stamp(time: DateTime<Utc>) -> Stamp {
    time.format(TIME_FORMAT).to_string()
}

/// A span of time as SQLite reads it in `sql::clock_plus!`: a date-function modifier.
fn span(duration: Duration) -> String {
    format!("+{:.6} seconds", duration.as_secs_f64())
}

/// `span` of a time in the past: the due-by-age cut.
fn span_back(duration: Duration) -> String {
    format!("-{:.6} seconds", duration.as_secs_f64())
}

fn unstamp(text: Stamp) -> Result<DateTime<Utc>, StoreError> {
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
    raw.into_record(unstamp)
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
        Ok(Self { pool, events: None })
    }

    /// Several saves in one transaction: statements are in-process calls here, the commit is
    /// what costs.
    async fn save_many(
        &self,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError> {
        if let [save] = saves {
            // A single statement is atomic on its own: no transaction needed.
            return Ok(vec![save_grant(&self.pool, save, owner).await?]);
        }
        // The first statement writes, so the transaction takes the write lock up front rather
        // than upgrading from a read snapshot.
        let mut tx = self.pool.begin().await?;
        let mut saved = Vec::with_capacity(saves.len());
        for save in saves {
            saved.push(save_grant(&mut *tx, save, owner).await?);
        }
        tx.commit().await?;
        Ok(saved)
    }
}

/// Runs `sql::SAVE_REFRESHED` or `sql::SAVE_RESEALED` for one [`GrantSave`] on `executor`
/// (the pool, or the transaction of a batch).
async fn save_grant<'e>(
    executor: impl Executor<'e, Database = Sqlite>,
    save: &GrantSave<'_>,
    owner: &str,
) -> Result<bool, StoreError> {
    let statement = match save.refreshed_at {
        Some(_) => sql::SAVE_REFRESHED,
        None => sql::SAVE_RESEALED,
    };
    let query = keyed(statement, save.key)
        .bind(save.expected_revision)
        .bind(&save.grant.sealed_refresh_token)
        .bind(&save.grant.key_name)
        .bind(&save.grant.key_version);
    let query = match save.refreshed_at {
        Some(now) => query.bind(stamp(now)),
        None => query,
    };
    let done = query.bind(owner).execute(executor).await?;
    Ok(done.rows_affected() == 1)
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
            .bind(stamp(now));
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

token_store_impl!(SqliteStore);
