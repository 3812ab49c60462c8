//! What differs between the two backends, and nothing else.
//!
//! The store is written once, as [`SqlStore`](super::sql_store::SqlStore) generic over a
//! [`Dialect`]: the SQL is the same text for Postgres and SQLite except for the statements that
//! read the database's clock (and the claim and the batch writes), and the
//! drivers differ only in how a timestamp and a span of time are bound and read. A dialect
//! supplies exactly that: its statements, its time conversions, and how a batch of grants is
//! saved and a batch of accesses kept (Postgres: `UNNEST` statements; SQLite: one transaction). Values reach a statement
//! as [`Param`]s, which [`Exec`](super::exec::Exec) binds in the dialect's spelling.
//!
//! A small trait rather than two adapters written out in full: the adapters would repeat every
//! statement's bindings and every transaction (a change to one would have to be made twice),
//! while the dialect keeps the few real differences side by side.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{Database, Pool};

use super::{sql, AccessRecord, GrantSave, RowId, StoreError};
use crate::events::outbox;

/// One backend's spelling of the store (see the module doc).
pub(crate) trait Dialect: Send + Sync + Sized + 'static {
    /// The sqlx driver.
    type Db: Database;
    /// A timestamp as the driver binds and decodes it.
    type Stamp: Send + Sync + 'static;
    /// A span of time as the statements read it in `sql::clock_plus!`.
    type Span: Send + Sync + 'static;

    /// The backend's OpenTelemetry `db.system.name`, on the client span of every statement.
    const SYSTEM: &'static str;
    /// The store statements that differ between the backends.
    const SQL: sql::Statements;
    /// The outbox statements that differ between the backends.
    const OUTBOX: outbox::sql::Statements;

    /// A time as stored in the token tables.
    fn stamp(time: DateTime<Utc>) -> Self::Stamp;
    /// A stored time back; an error when it does not parse (a corrupt row).
    fn unstamp(stamp: Self::Stamp) -> Result<DateTime<Utc>, StoreError>;
    /// A time as stored in the outbox table (written by the database's clock).
    fn event_stamp(time: DateTime<Utc>) -> Self::Stamp;
    /// An outbox time back.
    fn event_unstamp(stamp: Self::Stamp) -> Result<DateTime<Utc>, StoreError>;
    /// A span of time into the future.
    fn span(duration: Duration) -> Self::Span;
    /// A span of time into the past.
    fn span_back(duration: Duration) -> Self::Span;
    /// How many rows a statement changed.
    fn rows_affected(done: &<Self::Db as Database>::QueryResult) -> u64;

    /// Saves a non-empty batch of grants as `TokenStore::save_grants` says.
    fn save_grants(
        pool: &Pool<Self::Db>,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Appends a non-empty batch of accesses and trims each of their users' history to its
    /// `keep` (≥ 0) latest, in one transaction, as `TokenStore::record_accesses` says.
    fn record_accesses(
        pool: &Pool<Self::Db>,
        records: &[AccessRecord],
        keep: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A value for a statement's parameter, in the store's own types. Times and spans are bound
/// as the [`Dialect`] spells them.
#[derive(Clone, Copy)]
pub(crate) enum Param<'a> {
    /// A row's ids: two parameters, its tenant id and then its user id (`$1` and `$2` in
    /// every statement addressing one row).
    Row(RowId<'a>),
    /// Text.
    Text(&'a str),
    /// Text or NULL.
    MaybeText(Option<&'a str>),
    /// Bytes.
    Bytes(&'a [u8]),
    /// A 64-bit integer.
    BigInt(i64),
    /// A 32-bit integer.
    Int(i32),
    /// A 32-bit integer or NULL.
    MaybeInt(Option<i32>),
    /// A boolean.
    Bool(bool),
    /// A number of seconds, as a float.
    Seconds(f64),
    /// A time in the token tables ([`Dialect::stamp`]).
    Time(DateTime<Utc>),
    /// A time in the outbox or NULL ([`Dialect::event_stamp`]).
    EventTime(Option<DateTime<Utc>>),
    /// A span into the future ([`Dialect::span`]).
    Span(Duration),
    /// A span into the past or NULL ([`Dialect::span_back`]).
    SpanBack(Option<Duration>),
}
