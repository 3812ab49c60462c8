//! The embedded backend: SQLite through a `SqlitePool`, one database file.
//!
//! Timestamps are TEXT in one fixed-width UTC format written here, so SQL compares and sorts
//! them as time; a span of time is bound as a date-function modifier. SQLite has a single
//! writer at a time, which makes each statement (and the claim in particular) atomic without
//! row locks.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::sqlite::{SqliteQueryResult, SqliteSynchronous};
use sqlx::SqlitePool;

use super::dialect::{Dialect, Param};
use super::exec::{Conn, Exec as _, StoreBackend};
use super::pooled::{connection, transaction};
use super::rows::distinct_users;
use super::{sql, AccessRecord, GrantSave, RowId, StoreError};
use crate::events::outbox;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Microseconds, like Postgres; fixed width for years 0000-9999, so text order is time order.
const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The text `strftime('%Y-%m-%dT%H:%M:%fZ')` writes in the outbox: milliseconds, fixed width.
const EVENT_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// The SQLite spelling of the store.
pub(crate) struct SqliteDialect;

/// Opens (creating if needed) the database file named by `url` and brings the schema up to
/// date.
pub(crate) async fn open(url: &SecretString) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url.expose_secret())
        .map_err(StoreError::from)?
        .create_if_missing(true)
        // WAL lets readers run while the one writer writes; NORMAL is durable across process
        // crashes (only an OS crash may lose the last commits).
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        // Writers queue for the file lock instead of failing at once with SQLITE_BUSY.
        .busy_timeout(Duration::from_secs(5))
        // The access history's ON DELETE CASCADE needs it, on every connection.
        .foreign_keys(true);
    let pool = super::pooled::ping_when_idle(SqlitePoolOptions::new())
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    MIGRATOR
        .run(&pool)
        .await
        .map_err(super::error::migrate_error)?;
    Ok(pool)
}

impl Dialect for SqliteDialect {
    type Db = sqlx::Sqlite;
    type Stamp = String;
    /// A date-function modifier, `+35.000000 seconds`.
    type Span = String;

    const SYSTEM: &'static str = "sqlite";
    const SQL: sql::Statements = sql::SQLITE;
    const OUTBOX: outbox::sql::Statements = outbox::sql::SQLITE;

    fn stamp(time: DateTime<Utc>) -> String {
        time.format(TIME_FORMAT).to_string()
    }

    fn unstamp(text: String) -> Result<DateTime<Utc>, StoreError> {
        parse(&text, TIME_FORMAT)
    }

    fn event_stamp(time: DateTime<Utc>) -> String {
        time.format(EVENT_TIME_FORMAT).to_string()
    }

    fn event_unstamp(text: String) -> Result<DateTime<Utc>, StoreError> {
        parse(&text, EVENT_TIME_FORMAT)
    }

    fn span(duration: Duration) -> String {
        format!("+{:.6} seconds", duration.as_secs_f64())
    }

    fn span_back(duration: Duration) -> String {
        format!("-{:.6} seconds", duration.as_secs_f64())
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }

    /// Several saves in one transaction: statements are in-process calls here, the commit is
    /// what costs.
    async fn save_grants(
        pool: &SqlitePool,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError> {
        if let [save] = saves {
            // A single statement is atomic on its own: no transaction needed.
            let mut conn = connection(pool).await?;
            return Ok(vec![save_grant(&mut conn, save, owner).await?]);
        }
        // The first statement writes, so the transaction takes the write lock up front rather
        // than upgrading from a read snapshot.
        let mut tx = transaction(pool).await?;
        let mut saved = Vec::with_capacity(saves.len());
        for save in saves {
            saved.push(save_grant(&mut tx, save, owner).await?);
        }
        tx.commit().await?;
        Ok(saved)
    }

    /// One statement per access and one trim per user, in one transaction: in-process calls
    /// here, the commit is what costs.
    async fn record_accesses(
        pool: &SqlitePool,
        records: &[AccessRecord],
        keep: i64,
    ) -> Result<(), StoreError> {
        // The first statement writes, so the transaction takes the write lock up front
        // (waiting under busy_timeout) rather than upgrading from a read snapshot.
        let mut tx = transaction(pool).await?;
        for access in records {
            let params = [
                Param::Row(RowId::from(&access.key)),
                Param::Time(access.at),
                Param::Text(&access.caller_app_id),
                Param::Text(&access.method),
                Param::Text(&access.path),
                Param::MaybeInt(access.downstream_status),
                Param::Bool(access.refreshed),
                Param::MaybeText(access.caller_tenant_id.as_ref().map(|t| t.as_str())),
                Param::MaybeText(access.downstream.as_deref()),
            ];
            Self::execute(&mut tx, sql::INSERT_ACCESS, &params).await?;
        }
        for user in distinct_users(records) {
            let params = [Param::Row(user.into()), Param::BigInt(keep)];
            Self::execute(&mut tx, sql::TRIM_ACCESSES_SQLITE, &params).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

impl StoreBackend for SqliteDialect {}

fn parse(text: &str, format: &str) -> Result<DateTime<Utc>, StoreError> {
    NaiveDateTime::parse_from_str(text, format)
        .map(|naive| naive.and_utc())
        .map_err(|error| StoreError::Other(anyhow::Error::new(error).context("corrupt timestamp")))
}

/// Runs `sql::SAVE_REFRESHED` or `sql::SAVE_RESEALED` for one [`GrantSave`] on `conn` (a
/// pooled connection, or the transaction of a batch).
async fn save_grant(
    conn: &mut Conn<SqliteDialect>,
    save: &GrantSave<'_>,
    owner: &str,
) -> Result<bool, StoreError> {
    let params = [
        Param::Row(save.key.into()),
        Param::BigInt(save.expected_revision),
        Param::Bytes(&save.grant.sealed_refresh_token),
        Param::Text(&save.grant.key_name),
        Param::Text(&save.grant.key_version),
        // `$7`: the time of a redeem, or the owner of a re-seal, whose statement stops there.
        match save.refreshed_at {
            Some(now) => Param::Time(now),
            None => Param::Text(owner),
        },
        Param::Text(owner),
    ];
    let (statement, params) = match save.refreshed_at {
        Some(_) => (sql::SAVE_REFRESHED, &params[..]),
        None => (sql::SAVE_RESEALED, &params[..7]),
    };
    Ok(SqliteDialect::execute(conn, statement, params).await? == 1)
}
