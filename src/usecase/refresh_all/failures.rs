//! What becomes of a timer row that failed: a dead grant is marked, a refused key version
//! holds the row until the run ends, a refusal of the service's own credential stops the run,
//! a throttled tenant's rows wait for its pause, anything else backs the row off.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::backoff::{backoff, error_code};
use super::{Outcome, Run};
use crate::idp::IdpError;
use crate::store::{CorruptRow, Failure, RowId, TokenRecord};
use crate::usecase::dead_grant::DeadGrant;
use crate::usecase::FlowError;

/// A tenant's pause at most this long is waited out by its rows; a longer one defers them to
/// the end of the pause, so they hold no worker meanwhile.
const SHORT_PAUSE: Duration = Duration::from_secs(10);
/// Pause after a 429 without a usable Retry-After.
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);

impl Run {
    /// What happens to a row whose work failed with `error`; logged here, once.
    pub(super) async fn failed(&self, row: &TokenRecord, error: FlowError) -> Outcome {
        if let Some(dead) = DeadGrant::of(&error) {
            return match dead.mark(&self.deps, row, &self.owner).await {
                Ok(true) => Outcome::Reauth,
                Ok(false) => Outcome::Skipped,
                Err(error) => {
                    tracing::error!(error = %error, "failed to mark reauth_required");
                    Outcome::Failed
                }
            };
        }
        match error {
            // No back-off: the operator's doing, not the row's (see `refused_rows`).
            FlowError::KeyVersionUnavailable { .. } if self.refused.hold(&row.key) => {
                Outcome::Failed
            }
            FlowError::KeyVersionUnavailable { .. } => Outcome::Skipped,
            FlowError::Idp(error) if error.refuses_the_service() => {
                self.credential_refused(&error);
                self.release(row).await;
                Outcome::Skipped
            }
            FlowError::Idp(IdpError::Throttled { retry_after }) => {
                let pause = retry_after.unwrap_or(DEFAULT_PAUSE);
                self.paused.pause(&row.key.tenant_id, pause);
                // Not the row's fault: it waits for the end of the pause, no longer.
                self.defer(row, pause, "throttled").await;
                Outcome::Failed
            }
            error => {
                if let FlowError::Crypto(_) = &error {
                    tracing::error!(
                        alert = true,
                        key.name = %row.key_name,
                        key.version = %row.key_version,
                        "a stored token does not open; backing the row off: an operator must look"
                    );
                }
                self.back_off(row, &error_code(&error)).await;
                Outcome::Failed
            }
        }
    }

    /// The deployment's fault: every other row would get the same answer, so the run stops.
    fn credential_refused(&self, error: &IdpError) {
        if !self.credential_refused.swap(true, Ordering::Relaxed) {
            tracing::error!(
                alert = true,
                entra.error = %error.code(),
                "Entra ID refuses the service's own credential: the refresh run stops and leaves every row as it was; fix the app registration's secret, certificate or federated credential"
            );
        }
    }

    /// A claimed row that cannot be read: backed off like a failed one, so it does not come
    /// first in every later claim, and reported by its raw ids.
    pub(super) async fn corrupt(&self, row: &CorruptRow) -> Outcome {
        self.counters.examined.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            alert = true,
            tenant.id = ?row.tenant_id,
            user.id = ?row.user_id,
            reason = %row.reason,
            "a stored row cannot be read; backing it off: an operator must repair or delete it"
        );
        let id = RowId::from(row);
        self.record_failure(id, row.revision, row.failure_count, "corrupt_row")
            .await;
        Outcome::Failed
    }

    /// Before a row of a throttled tenant calls Entra: waits out a short pause, defers the
    /// row to the end of a long one. `Some` when the row is done for this run.
    pub(super) async fn wait_for_tenant(&self, row: &TokenRecord) -> Option<Outcome> {
        let (until, left) = self.paused.left(&row.key.tenant_id)?;
        if left <= SHORT_PAUSE && until < self.deadline {
            tokio::time::sleep_until(until.into()).await;
            return None;
        }
        self.defer(row, left, "throttled").await;
        Some(Outcome::Skipped)
    }

    /// Leaves the row alone until `pause` from now, without counting a failure.
    async fn defer(&self, row: &TokenRecord, pause: Duration, code: &str) {
        let failure = Failure {
            row: RowId::from(&row.key),
            expected_revision: row.revision,
            owner: &self.owner,
            error_code: code,
            retry_in: pause,
            counts: false,
        };
        if let Err(error) = self.deps.store.record_failure(&failure).await {
            tracing::error!(error = %error, "failed to defer the row; the lease will expire");
        }
    }

    /// Counts a failure on the row and backs it off; logged here, once.
    pub(super) async fn back_off(&self, row: &TokenRecord, code: &str) {
        tracing::warn!(error.code = %code, failures = row.failure_count + 1, "refresh failed; backing off");
        self.record_failure(RowId::from(&row.key), row.revision, row.failure_count, code)
            .await;
    }

    /// Counts a failure on the row and backs it off exponentially in its failures.
    async fn record_failure(&self, row: RowId<'_>, revision: i64, failures: i32, code: &str) {
        let failure = Failure {
            row,
            expected_revision: revision,
            owner: &self.owner,
            error_code: code,
            retry_in: backoff(failures),
            counts: true,
        };
        match self.deps.store.record_failure(&failure).await {
            Ok(true) => {}
            Ok(false) => tracing::info!("the row moved on meanwhile; no back-off recorded"),
            Err(error) => {
                tracing::error!(error = %error, "failed to record the failure; the lease will expire")
            }
        }
    }

    /// Gives the row's lease back.
    pub(super) async fn release(&self, row: &TokenRecord) {
        if let Err(error) = self.deps.store.release_lease(&row.key, &self.owner).await {
            tracing::warn!(error = %error, "failed to release a lease; it will expire");
        }
    }
}
