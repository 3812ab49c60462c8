//! Taking a connection (or a transaction) from a backend's pool. The pool opens a new
//! connection when it has no idle one, so a failure here is a failure to connect, and is
//! judged as one ([`StoreError::connecting`]); what fails after, on the connection, is a
//! statement's failure (`From<sqlx::Error>`). Every store and outbox operation takes its
//! connection through here rather than handing the pool to sqlx, which would blur the two.

use std::time::Duration;

use sqlx::pool::{PoolConnection, PoolOptions};
use sqlx::{Connection as _, Database, Pool, Transaction};

use super::dialect::Param;
use super::exec::Exec;
use super::StoreError;

/// How long a connection may sit idle and still be handed out without a ping first. sqlx
/// pings every connection as it goes back to the pool, so one released this recently answered
/// a moment ago; one idle for longer (a database restart or a dropped network flow may lie in
/// between) is pinged before use, and replaced if it does not answer.
pub(crate) const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// `options` with a ping before a connection is handed out only when it sat idle for
/// [`TRUSTED_IDLE`] or more, or was released before a connection was last seen lost
/// ([`losses`]), instead of before every use (sqlx's `test_before_acquire`).
/// Under load a connection is back in use within microseconds of its release, and the ping
/// before each statement was one of the warm do-work call's three round trips to Postgres
/// (one more wake-up of a sleeping reader on each side).
pub(crate) fn ping_when_idle<DB: Database>(options: PoolOptions<DB>) -> PoolOptions<DB> {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                let released = std::time::Instant::now().checked_sub(meta.idle_for);
                if meta.idle_for >= TRUSTED_IDLE || released.is_none_or(losses::seen_since) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

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

mod hot;
pub(super) mod losses;
pub(crate) use hot::HotConnection;

#[cfg(test)]
mod tests;
