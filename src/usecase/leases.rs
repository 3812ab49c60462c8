//! Leases that outlive the work they guard.
//!
//! The database stamps a lease as "its clock + the lease duration", so instances that drift
//! agree on when it ends. The holder cannot read that clock, but it can bound the lease from
//! below with its own monotonic clock: the stamp was made after the request left, so the lease
//! runs at least `duration` from the moment the request was sent. [`HeldLease`] keeps that
//! bound and renews the lease (in the database, at the revision the holder read) before it
//! could run out under the work: the timer renews a row that waited in its queue before
//! redeeming it, do-work renews in the background for as long as its refresh runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::domain::UserKey;
use crate::store::{Lease, StoreError, TokenStore};

/// A lease this instance holds on a row it read at `revision`.
#[derive(Clone, Debug)]
pub(crate) struct HeldLease {
    key: UserKey,
    revision: i64,
    lease: Lease,
    /// The lease runs at least until then (monotonic clock, a lower bound).
    runs_until: Instant,
}

impl HeldLease {
    /// A lease whose request (claim or acquire) left at `requested_at`.
    pub(crate) fn new(key: UserKey, revision: i64, lease: Lease, requested_at: Instant) -> Self {
        let runs_until = requested_at + lease.duration;
        Self {
            key,
            revision,
            lease,
            runs_until,
        }
    }

    /// How long the lease surely still runs.
    pub(crate) fn remaining(&self) -> Duration {
        self.runs_until.saturating_duration_since(Instant::now())
    }

    /// Makes sure at least `needed` of the lease remains, renewing it in the database when
    /// less does. `Ok(false)`: the row moved on or someone else holds it now; the token read
    /// at `revision` must not be redeemed.
    pub(crate) async fn ensure(
        &mut self,
        store: &dyn TokenStore,
        needed: Duration,
    ) -> Result<bool, StoreError> {
        if self.remaining() >= needed {
            return Ok(true);
        }
        self.renew(store).await
    }

    /// Renews the lease for its full duration from now.
    pub(crate) async fn renew(&mut self, store: &dyn TokenStore) -> Result<bool, StoreError> {
        let requested_at = Instant::now();
        let renewed = store
            .extend_lease(&self.key, self.revision, &self.lease)
            .await?;
        if renewed {
            self.runs_until = requested_at + self.lease.duration;
        }
        Ok(renewed)
    }

    /// Renews the lease in the background, each time a third of it is left, until the
    /// returned guard is dropped or the row moves on (a save or a mark by the holder bumps
    /// the revision, which ends the renewals by itself).
    pub(crate) fn keep_alive(mut self, store: Arc<dyn TokenStore>) -> KeepAlive {
        // The renewals' statements belong to the invocation that holds the lease.
        let task = tokio::spawn(crate::telemetry::carry(async move {
            loop {
                let renew_at = self.runs_until.checked_sub(self.lease.duration / 3);
                tokio::time::sleep_until(renew_at.unwrap_or_else(Instant::now)).await;
                match self.renew(store.as_ref()).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => {
                        // Try again soon: the lease still runs for a while.
                        tracing::warn!(error = %error, "failed to renew a lease");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }));
        KeepAlive(task)
    }
}

/// Stops [`HeldLease::keep_alive`]'s renewals when dropped.
#[derive(Debug)]
pub(crate) struct KeepAlive(JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}
