//! One claimed row's work: redeem its grant when it is due by age, else only re-seal it under
//! the latest key version; then seal the new grant for the batch save.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};

use super::{Leased, Outcome, Run, Sealed};
use crate::keys::VersionedKey;
use crate::store::{SealedGrant, TokenRecord};
use crate::usecase::leases::HeldLease;
use crate::usecase::{custody, FlowError};

/// Where a row stands after its work.
pub(super) enum Worked {
    Finished(Outcome),
    /// Sealed under the latest key; waits for the next batch save.
    Sealed(Box<Sealed>),
}

/// A row's new grant, and when it was redeemed (`None`: re-sealed only).
type NewGrant = (SealedGrant, Option<DateTime<Utc>>);

impl Run {
    /// Works on one claimed row up to its save.
    pub(super) async fn work(&self, leased: Leased, latest: &VersionedKey) -> Worked {
        self.counters.examined.fetch_add(1, Ordering::Relaxed);
        self.row(leased, latest).await
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %leased.row.key.tenant_id, user.id = %leased.row.key.user_id))]
    async fn row(&self, leased: Leased, latest: &VersionedKey) -> Worked {
        let Leased { row, mut lease } = leased;
        let due_by_age = self.due_by_age(&row, latest);
        if self.stopped() {
            self.release(&row).await;
            return Worked::Finished(Outcome::Skipped);
        }
        if due_by_age {
            if let Some(outcome) = self.wait_for_tenant(&row).await {
                return Worked::Finished(outcome);
            }
        }
        let result = if due_by_age {
            self.refresh(&row, &mut lease, latest).await
        } else {
            self.reseal(&row, latest).await.map(Some)
        };
        match result {
            Ok(Some((grant, refreshed_at))) => Worked::Sealed(Box::new(Sealed {
                row,
                grant,
                refreshed_at,
            })),
            // The lease could not be renewed: the row moved on or is someone else's now.
            Ok(None) => Worked::Finished(Outcome::Skipped),
            Err(error) => Worked::Finished(self.failed(&row, error).await),
        }
    }

    /// Whether a claimed row is to be redeemed (due by age) or only re-sealed. The claim
    /// judged by the database's clock; a row already on the latest version can only have been
    /// claimed for its age, whatever this instance's clock says (re-sealing it would change
    /// nothing and leave it due: the next claim would take it again).
    fn due_by_age(&self, row: &TokenRecord, latest: &VersionedKey) -> bool {
        let Some(after) = self.refresh_after else {
            return false;
        };
        row.key_version == latest.version
            || chrono::Duration::from_std(after)
                .is_ok_and(|after| row.refreshed_at < self.deps.clock.now() - after)
    }

    /// Re-seals the row's grant under the latest key (or the row's own version, if newer).
    async fn reseal(
        &self,
        row: &TokenRecord,
        latest: &VersionedKey,
    ) -> Result<NewGrant, FlowError> {
        let (stored, current) = custody::open_stored(&self.deps, row).await?;
        let grant = custody::seal_with(custody::newest(latest, &current), &row.key, &stored)?;
        Ok((grant, None))
    }

    /// Redeems the row's grant and seals the new one under the latest key. `Ok(None)` when the
    /// row's lease could not be renewed before the redeem.
    async fn refresh(
        &self,
        row: &TokenRecord,
        lease: &mut HeldLease,
        latest: &VersionedKey,
    ) -> Result<Option<NewGrant>, FlowError> {
        let (stored, current) = custody::open_stored(&self.deps, row).await?;
        // A row that waited in the queue (behind a pause, a slow Key Vault) may be near the end
        // of the lease its claim stamped. The lease must outlive the redeem and the save, or
        // another instance could redeem the same token meanwhile: renew it unless it still
        // runs for the Entra timeout plus the lease's margin (at least 5 s) over two timeouts.
        let policy = &self.deps.policy;
        let needed = policy.lease.saturating_sub(policy.entra_timeout);
        if !lease.ensure(self.deps.store.as_ref(), needed).await? {
            tracing::info!("the row moved on or changed hands while queued; leaving it");
            return Ok(None);
        }
        let (_set, next) = custody::redeem(&self.deps, &row.key, stored).await?;
        let grant = custody::seal_with(custody::newest(latest, &current), &row.key, &next)?;
        Ok(Some((grant, Some(self.deps.clock.now()))))
    }
}
