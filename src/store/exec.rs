//! Running a statement on any [`Dialect`]: binding its [`Param`]s and decoding its rows.
//!
//! sqlx states what a driver can do as bounds on its types (`&mut Connection: Executor`,
//! `i64: Encode`, …), and Rust does not carry such bounds from a trait to its users. So they
//! are written once, on the blanket impl of [`Exec`] below, and the store and the outbox only
//! ever ask for `D: StoreBackend`: the row shapes they decode are listed as [`Reads`]
//! supertraits of [`StoreBackend`], which the compiler checks once per backend.

use std::future::Future;

use sqlx::{Arguments as _, Database, Encode, Executor, FromRow, IntoArguments, Type};

use super::dialect::{Dialect, Param};
use super::rows::{RawAccess, RawRecord, Summary};
use crate::events::outbox::{Counts, DroppedRow, Now, PendingRow};
use crate::telemetry;
use crate::telemetry::client::ClientCall;

/// A connection of the dialect's driver (pooled or inside a transaction).
pub(crate) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;

/// A row as the dialect's driver returns it.
pub(crate) type Row<D> = <<D as Dialect>::Db as Database>::Row;

type Args<'q, D> = <<D as Dialect>::Db as Database>::Arguments<'q>;

/// Runs statements with bound parameters.
pub(crate) trait Exec: Dialect {
    /// Binds `params` in order as `$1`, `$2`, …
    fn arguments<'q>(params: &[Param<'q>]) -> Result<Args<'q, Self>, sqlx::Error>;

    /// Runs a statement; how many rows it changed.
    fn execute(
        conn: &mut Conn<Self>,
        statement: &'static str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Runs a statement; every row it returned, decoded. A statement that returns at most
    /// one row has it with `.pop()`.
    fn all<O>(
        conn: &mut Conn<Self>,
        statement: &'static str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<O>, sqlx::Error>> + Send
    where
        Self: Reads<O>;
}

impl<D> Exec for D
where
    D: Dialect,
    for<'c> &'c mut Conn<D>: Executor<'c, Database = D::Db>,
    for<'q> Args<'q, D>: IntoArguments<'q, D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> &'q [u8]: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> i32: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> bool: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> f64: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> D::Stamp: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> D::Span: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db>,
    for<'q> Option<i32>: Encode<'q, D::Db>,
    for<'q> Option<D::Stamp>: Encode<'q, D::Db>,
    for<'q> Option<D::Span>: Encode<'q, D::Db>,
{
    fn arguments<'q>(params: &[Param<'q>]) -> Result<Args<'q, Self>, sqlx::Error> {
        let mut arguments = Args::<'q, D>::default();
        for param in params {
            let added = match *param {
                Param::Row(row) => arguments
                    .add(row.tenant_id)
                    .and_then(|()| arguments.add(row.user_id)),
                Param::Text(text) => arguments.add(text),
                Param::MaybeText(text) => arguments.add(text),
                Param::Bytes(bytes) => arguments.add(bytes),
                Param::BigInt(number) => arguments.add(number),
                Param::Int(number) => arguments.add(number),
                Param::MaybeInt(number) => arguments.add(number),
                Param::Bool(flag) => arguments.add(flag),
                Param::Seconds(seconds) => arguments.add(seconds),
                Param::Time(time) => arguments.add(D::stamp(time)),
                Param::EventTime(time) => arguments.add(time.map(D::event_stamp)),
                Param::Span(span) => arguments.add(D::span(span)),
                Param::SpanBack(span) => arguments.add(span.map(D::span_back)),
            };
            added.map_err(sqlx::Error::Encode)?;
        }
        Ok(arguments)
    }

    async fn execute(
        conn: &mut Conn<Self>,
        statement: &'static str,
        params: &[Param<'_>],
    ) -> Result<u64, sqlx::Error> {
        let query = sqlx::query_with(statement, D::arguments(params)?);
        let call = telemetry::client::start_query(D::SYSTEM, statement);
        let done = query.execute(conn).await;
        finish_query(call, &done);
        Ok(D::rows_affected(&done?))
    }

    async fn all<O>(
        conn: &mut Conn<Self>,
        statement: &'static str,
        params: &[Param<'_>],
    ) -> Result<Vec<O>, sqlx::Error>
    where
        Self: Reads<O>,
    {
        let query = sqlx::query_with(statement, D::arguments(params)?);
        let call = telemetry::client::start_query(D::SYSTEM, statement);
        let rows = query.fetch_all(conn).await;
        finish_query(call, &rows);
        rows?.iter().map(D::read).collect()
    }
}

/// Ends a statement's client span, if the call is traced.
fn finish_query<T>(call: Option<ClientCall>, outcome: &Result<T, sqlx::Error>) {
    if let Some(call) = call {
        call.finish_query(outcome.as_ref().err().map(query_error_type));
    }
}

/// A fixed, secret-free `error.type` for a failed statement (never the driver's message,
/// which can quote a value).
fn query_error_type(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::Database(_) => "database",
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "io",
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => "pool",
        sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => "decode",
        _ => "other",
    }
}

/// Decodes a row of the dialect's driver as `O`.
pub(crate) trait Reads<O>: Dialect {
    /// One row.
    fn read(row: &Row<Self>) -> Result<O, sqlx::Error>;
}

impl<D, O> Reads<O> for D
where
    D: Dialect,
    O: for<'r> FromRow<'r, Row<D>>,
{
    fn read(row: &Row<D>) -> Result<O, sqlx::Error> {
        O::from_row(row)
    }
}

/// A dialect the store and the outbox run on: its statements run, and every row shape they
/// read decodes. Implemented (empty) by each backend; the compiler checks the list.
pub(crate) trait StoreBackend:
    Exec
    + Reads<RawRecord<Self>>
    + Reads<RawAccess<Self>>
    + Reads<Summary<Self>>
    + Reads<(String,)>
    + Reads<(String, i64)>
    + Reads<(String, String, i64)>
    + Reads<Now<Self>>
    + Reads<Counts<Self>>
    + Reads<PendingRow>
    + Reads<DroppedRow>
{
}
