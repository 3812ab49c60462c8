//! When a connection to the database was last seen lost, so that every connection released
//! before then is pinged before its next use.
//!
//! The pool hands out a connection released within [`TRUSTED_IDLE`](super::TRUSTED_IDLE)
//! without a ping, and the read of a row reuses its own (`hot.rs`): it answered a moment ago.
//! That stops holding when the database or the network in between cuts every connection at
//! once (a restart, a failover, a flow a load balancer dropped): the first statement that fails
//! on a lost connection tells that any connection released before it may be lost too. From
//! then on each of those is pinged before use, and replaced if it does not answer, however
//! recently it was released; connections opened or released after the loss are trusted again.
//! Without this, a service that saw the database go and come back within the second failed one
//! more call for each lost connection still idle in the pool.
//!
//! One record per process, not per pool: a process's pools all talk to the one database, and
//! a suspicion that turns out needless costs one ping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds from [`epoch`] to the last loss seen, plus one; 0 while none was seen.
static LAST_LOSS: AtomicU64 = AtomicU64::new(0);

/// The instant the record counts from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// `at` on the record's scale (0 for any instant before the epoch).
fn nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Records that a connection was seen lost now (`StoreError` judges which failures say so).
pub(crate) fn record() {
    LAST_LOSS.fetch_max(nanos(Instant::now()).saturating_add(1), Ordering::Relaxed);
}

/// Whether a loss was seen at or after `released`, so that a connection last used then may be
/// lost too.
pub(crate) fn seen_since(released: Instant) -> bool {
    let last = LAST_LOSS.load(Ordering::Relaxed);
    last != 0 && last > nanos(released)
}
