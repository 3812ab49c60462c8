//! Taking a connection (or a transaction) from a backend's pool. The pool opens a new
//! connection when it has no idle one, so a failure here is a failure to connect, and is
//! judged as one ([`StoreError::connecting`]); what fails after, on the connection, is a
//! statement's failure (`From<sqlx::Error>`). Every store and outbox operation takes its
//! connection through here rather than handing the pool to sqlx, which would blur the two.

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};

use super::dialect::Param;
use super::exec::Exec;
use super::StoreError;

/// A connection of `pool`, opened now if none is idle.
pub(crate) async fn connection<DB: Database>(
    pool: &Pool<DB>,
) -> Result<PoolConnection<DB>, StoreError> {
    pool.acquire().await.map_err(StoreError::connecting)
}

/// A transaction begun on a connection of `pool`.
pub(crate) async fn transaction<DB: Database>(
    pool: &Pool<DB>,
) -> Result<Transaction<'static, DB>, StoreError> {
    let conn = connection(pool).await?;
    Ok(Transaction::begin(conn, None).await?)
}

/// Runs a statement on a pooled connection, outside any transaction; how many rows it
/// changed.
pub(crate) async fn execute_pooled<D: Exec>(
    pool: &Pool<D::Db>,
    statement: &'static str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let mut conn = connection(pool).await?;
    Ok(D::execute(&mut conn, statement, params).await?)
}

#[cfg(test)]
mod tests;
