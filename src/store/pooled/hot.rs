//! One connection kept back from the pool for the next read of a row.
//!
//! sqlx pings every connection it takes back (`PoolConnection`'s drop spawns a task that sends
//! the ping and waits for the answer), so each statement on a pooled connection costs two
//! round trips to the database and a hand-off to another task. The warm do-work call reads one
//! row and nothing else: at concurrency 1 the ping was a third of the call's CPU (a database
//! wake-up, a service wake-up and the task on the runtime's other worker; docs/PERFORMANCE.md,
//! "Late night 2026-12-06"). A connection whose statement just succeeded is as fresh as one
//! that just answered a ping, so the read keeps it for the next read instead.
//!
//! What keeps this as safe as the pool's own checks:
//! - only a connection whose statement completed comes back (an error or a dropped future
//!   releases it to sqlx, which pings it and closes it if it does not answer);
//! - it is used again only within [`TRUSTED_IDLE`] of its last statement, the bound within
//!   which the pool hands out connections unpinged too, and only if no connection was seen
//!   lost since (`losses.rs`); else it goes back to sqlx;
//! - after [`HELD_AT_MOST`] out of the pool it goes back to sqlx, so the pool's lifetime and
//!   idle checks still see every connection;
//! - it is kept only while the pool could serve another caller without it (an idle connection
//!   or room for a new one), so no caller waits on the pool for the connection kept here.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use super::{connection, losses, TRUSTED_IDLE};
use crate::store::StoreError;

/// How long one connection may go from read to read without passing through the pool.
const HELD_AT_MOST: Duration = Duration::from_secs(10);

/// The connection kept back from a pool, if any.
pub(crate) struct HotConnection<DB: Database> {
    kept: Mutex<Option<Kept<DB>>>,
}

/// A connection out of the pool, with when it left the pool and when it was last used.
pub(crate) struct Kept<DB: Database> {
    conn: PoolConnection<DB>,
    taken_at: Instant,
    used_at: Instant,
}

impl<DB: Database> std::ops::Deref for Kept<DB> {
    type Target = PoolConnection<DB>;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<DB: Database> std::ops::DerefMut for Kept<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<DB: Database> Default for HotConnection<DB> {
    fn default() -> Self {
        Self {
            kept: Mutex::new(None),
        }
    }
}

impl<DB: Database> Drop for HotConnection<DB> {
    /// sqlx hands a connection back through a spawned task, which panics without a runtime (a
    /// store dropped after the runtime that ran it ended, as at a process's exit); then the kept
    /// connection is taken out of the pool, which is going away with its runtime, and closed.
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_ok() {
            return;
        }
        if let Some(kept) = self.kept.get_mut().ok().and_then(Option::take) {
            drop(kept.conn.leak());
        }
    }
}

impl<DB: Database> HotConnection<DB> {
    /// The kept connection if it was used within [`TRUSTED_IDLE`], else one of `pool`'s.
    pub(crate) async fn take(&self, pool: &Pool<DB>) -> Result<Kept<DB>, StoreError> {
        let kept = self.kept.lock().ok().and_then(|mut kept| kept.take());
        // A stale or suspect one goes back to the pool here (dropped), which pings it.
        if let Some(kept) =
            kept.filter(|k| k.used_at.elapsed() < TRUSTED_IDLE && !losses::seen_since(k.used_at))
        {
            return Ok(kept);
        }
        let now = Instant::now();
        Ok(Kept {
            conn: connection(pool).await?,
            taken_at: now,
            used_at: now,
        })
    }

    /// Keeps `conn`, whose statement succeeded, for the next read; or lets the pool have it
    /// back when it has been out too long, another is kept already, or the pool has nothing
    /// else to give a caller.
    pub(crate) fn keep(&self, mut conn: Kept<DB>, pool: &Pool<DB>) {
        let spare = pool.num_idle() > 0 || pool.size() < pool.options().get_max_connections();
        if !spare || conn.taken_at.elapsed() >= HELD_AT_MOST {
            return;
        }
        conn.used_at = Instant::now();
        if let Ok(mut kept) = self.kept.lock() {
            if kept.is_none() {
                *kept = Some(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests;
