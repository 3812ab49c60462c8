//! refresh-tokens: keep every grant alive and move every row to its key's latest version.
//!
//! A run asks Key Vault for each key's latest version once, then claims due rows in batches
//! (the claim stamps a lease, so other instances and do-work skip them), works on them with
//! bounded concurrency and saves each by compare-and-set. A row due only because of its key
//! version is re-sealed without calling Entra. No rows are claimed once the time budget is
//! spent; claimed rows that were not started are released for the next run.
//!
//! No row or tenant starves the rest: a row that cannot be read is backed off and reported,
//! and an Entra 429 pauses the throttled tenant's rows only (Entra throttles per tenant). A
//! refusal of the service's own credential is the deployment's fault, not a row's: the run
//! stops at the first one and leaves every row as it was.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt as _;

use super::backoff::{backoff, error_code};
use super::leases::HeldLease;
pub use super::refresh_summary::Summary;
use super::refresh_summary::{Counters, Outcome};
use super::refused_rows::RefusedRows;
use super::tenant_pauses::TenantPauses;
use super::{custody, FlowError};
use crate::app::App;
use crate::idp::IdpError;
use crate::keys::VersionedKey;
use crate::store::{Claimed, CorruptRow, DueClaim, Failure, GrantSave, Lease, RowId};
use crate::store::{SealedGrant, TokenRecord};

/// Most rows saved in one transaction.
const SAVE_BATCH: usize = 128;
/// A tenant's pause at most this long is waited out by its rows; a longer one defers them to
/// the end of the pause, so they hold no worker meanwhile.
const SHORT_PAUSE: Duration = Duration::from_secs(10);
/// Pause after a 429 without a usable Retry-After.
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);

/// How a run is bounded.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Only re-seal rows on old key versions; never call Entra.
    pub reseal_only: bool,
    /// Stop claiming rows after this.
    pub time_budget: Duration,
    /// Rows worked on at once.
    pub concurrency: usize,
}

/// A claimed row and the lease the claim stamped on it.
struct Leased {
    row: TokenRecord,
    lease: HeldLease,
}

/// What one of a key's concurrent tasks finished.
enum Done {
    /// A row's work up to its save.
    Row(Worked),
    Claimed(Result<(Claimed, tokio::time::Instant), FlowError>),
    /// A batch of saves was committed, or failed as a whole.
    Saved(Vec<Sealed>, Result<Vec<bool>, FlowError>),
}

/// Where a row stands after its work.
enum Worked {
    Finished(Outcome),
    /// Sealed under the latest key; waits for the next batch save.
    Sealed(Box<Sealed>),
}

/// A row whose new grant is sealed and not saved yet. Until the batch commits, the row keeps
/// its old grant (still valid at Entra) and this run's lease.
struct Sealed {
    row: TokenRecord,
    grant: SealedGrant,
    /// `Some` for a redeemed grant, `None` for a re-seal.
    refreshed_at: Option<DateTime<Utc>>,
}

struct Run<'a> {
    app: &'a Arc<App>,
    options: RunOptions,
    owner: String,
    started: Instant,
    deadline: Instant,
    /// Rows older than this are due for a refresh; `None`: re-seals only.
    refresh_after: Option<Duration>,
    counters: Counters,
    /// Tenants Entra asked us to leave alone, until when.
    paused: TenantPauses,
    /// Set at the first refusal of the service's own credential: nothing more is tried.
    credential_refused: AtomicBool,
    /// Rows whose key version Key Vault refuses, held until the run ends.
    refused: RefusedRows,
}

/// Runs the timer's work once. `progress` is called after every row (the CLI's progress bar).
pub async fn run(
    app: &Arc<App>,
    options: RunOptions,
    progress: &(dyn Fn(&Summary) + Sync),
) -> Result<Summary, FlowError> {
    let started = Instant::now();
    let refresh_after = (!options.reseal_only).then_some(app.refresh.after);
    let run = Run {
        app,
        owner: format!("{}/timer/{}", app.instance_id, uuid::Uuid::new_v4()),
        started,
        deadline: started + options.time_budget,
        refresh_after,
        options,
        counters: Counters::default(),
        paused: TenantPauses::default(),
        credential_refused: AtomicBool::new(false),
        refused: RefusedRows::default(),
    };
    let mut first_error = None;
    for key_name in app.store.key_names().await? {
        if Instant::now() >= run.deadline || run.credential_refused.load(Ordering::Relaxed) {
            break;
        }
        // Once per key and run: a rotation reaches every row in the next run.
        match app.keys.fresh_latest(&key_name).await {
            Ok(latest) => run.key(&latest, progress).await?,
            Err(error) => {
                tracing::error!(key.name = %key_name, error = %error, "cannot read the latest key; its rows wait");
                first_error.get_or_insert(FlowError::Keys(error));
            }
        }
    }
    run.refused.release_all(app, &run.owner).await;
    let summary = run.counters.snapshot(started);
    tracing::info!(
        examined = summary.examined,
        refreshed = summary.refreshed,
        resealed = summary.resealed,
        reauth_required = summary.reauth_required,
        failed = summary.failed,
        skipped = summary.skipped,
        duration_ms = summary.duration_ms,
        "{}",
        summary.line()
    );
    match first_error {
        Some(error) if summary.examined == 0 => Err(error),
        _ => Ok(summary),
    }
}

impl Run<'_> {
    async fn key(
        &self,
        latest: &VersionedKey,
        progress: &(dyn Fn(&Summary) + Sync),
    ) -> Result<(), FlowError> {
        let batch = (self.options.concurrency * 4) as i64;
        let concurrency = self.options.concurrency.max(1);
        // Sealed rows waiting for a save; no new row starts while this many wait.
        let max_sealed = (concurrency * 4).max(SAVE_BATCH);
        // Claims are pipelined: the next batch is claimed while the current one is still being
        // worked on, so no worker waits for the slowest row of a batch (or for the claim).
        // Saves are batched: one transaction at a time takes every row sealed meanwhile, so a
        // worker moves on to its next row instead of waiting for its own commit.
        let mut tasks: FuturesUnordered<BoxFuture<'_, Done>> = FuturesUnordered::new();
        let mut queue: VecDeque<Leased> = VecDeque::new();
        let mut sealed: Vec<Sealed> = Vec::new();
        let (mut working, mut claiming, mut saving, mut exhausted) = (0usize, false, false, false);
        let mut failed = None;
        loop {
            while working < concurrency && sealed.len() < max_sealed {
                let Some(row) = queue.pop_front() else { break };
                working += 1;
                tasks.push(Box::pin(
                    async move { Done::Row(self.work(row, latest).await) },
                ));
            }
            if !saving && !sealed.is_empty() {
                saving = true;
                let batch: Vec<Sealed> = sealed.drain(..sealed.len().min(SAVE_BATCH)).collect();
                tasks.push(Box::pin(async move {
                    let saved = self.save(&batch).await;
                    Done::Saved(batch, saved)
                }));
            }
            if !claiming
                && !exhausted
                && queue.len() < concurrency
                && Instant::now() < self.deadline
                && !self.credential_refused.load(Ordering::Relaxed)
            {
                claiming = true;
                tasks.push(Box::pin(async move {
                    Done::Claimed(self.claim(latest, batch).await)
                }));
            }
            match tasks.next().await {
                None => break,
                Some(Done::Row(worked)) => {
                    working -= 1;
                    match worked {
                        Worked::Finished(outcome) => self.count(outcome, progress),
                        Worked::Sealed(row) => sealed.push(*row),
                    }
                }
                Some(Done::Saved(batch, Ok(saved))) => {
                    saving = false;
                    for (row, saved) in batch.iter().zip(saved) {
                        let outcome = match (saved, row.refreshed_at) {
                            (false, _) => {
                                tracing::info!(
                                    tenant.id = %row.row.key.tenant_id,
                                    user.id = %row.row.key.user_id,
                                    "the row changed while this run worked on it (a new setup, a \
                                     delete, or another writer): the stored row was left as that \
                                     writer made it, and this run's token was not stored"
                                );
                                Outcome::Skipped
                            }
                            (true, Some(_)) => Outcome::Refreshed,
                            (true, None) => Outcome::Resealed,
                        };
                        self.count(outcome, progress);
                    }
                }
                Some(Done::Saved(batch, Err(error))) => {
                    saving = false;
                    // Every row of the batch keeps its old grant; each backs off.
                    let code = error_code(&error);
                    for row in batch {
                        let code = code.clone();
                        tasks.push(Box::pin(async move {
                            self.back_off(&row.row, &code).await;
                            Done::Row(Worked::Finished(Outcome::Failed))
                        }));
                        working += 1;
                    }
                }
                Some(Done::Claimed(Ok((batch, requested_at)))) => {
                    claiming = false;
                    exhausted = batch.rows.is_empty() && batch.corrupt.is_empty();
                    queue.extend(batch.rows.into_iter().map(|row| Leased {
                        lease: HeldLease::new(
                            row.key.clone(),
                            row.revision,
                            self.lease(),
                            requested_at,
                        ),
                        row,
                    }));
                    for corrupt in batch.corrupt {
                        working += 1;
                        tasks.push(Box::pin(async move {
                            Done::Row(Worked::Finished(self.corrupt(&corrupt).await))
                        }));
                    }
                }
                Some(Done::Claimed(Err(error))) => {
                    // Rows already claimed are still worked on; no new claims.
                    claiming = false;
                    exhausted = true;
                    failed.get_or_insert(error);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Works on one claimed row up to its save.
    async fn work(&self, leased: Leased, latest: &VersionedKey) -> Worked {
        self.counters.examined.fetch_add(1, Ordering::Relaxed);
        self.row(leased, latest).await
    }

    /// A claimed row that cannot be read: backed off like a failed one, so it does not come
    /// first in every later claim, and reported by its raw ids.
    async fn corrupt(&self, row: &CorruptRow) -> Outcome {
        self.counters.examined.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            alert = true,
            tenant.id = ?row.tenant_id,
            user.id = ?row.user_id,
            reason = %row.reason,
            "a stored row cannot be read; backing it off: an operator must repair or delete it"
        );
        self.record_failure(
            RowId::from(row),
            row.revision,
            row.failure_count,
            "corrupt_row",
        )
        .await;
        Outcome::Failed
    }

    /// The lease every claim and renewal of this run asks for.
    fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            duration: self.app.lease,
        }
    }

    fn count(&self, outcome: Outcome, progress: &(dyn Fn(&Summary) + Sync)) {
        self.counters.count(outcome);
        progress(&self.counters.snapshot(self.started));
    }

    /// Saves a batch of sealed rows in one transaction.
    async fn save(&self, batch: &[Sealed]) -> Result<Vec<bool>, FlowError> {
        let saves: Vec<GrantSave<'_>> = batch
            .iter()
            .map(|sealed| GrantSave {
                key: &sealed.row.key,
                expected_revision: sealed.row.revision,
                grant: &sealed.grant,
                refreshed_at: sealed.refreshed_at,
            })
            .collect();
        custody::save_batch(self.app, &saves, &self.owner).await
    }

    /// Claims up to `limit` due rows of `latest`'s key, stamping this run's lease on them;
    /// also says when the claim left (the leases run at least the lease duration from then).
    async fn claim(
        &self,
        latest: &VersionedKey,
        limit: i64,
    ) -> Result<(Claimed, tokio::time::Instant), FlowError> {
        let claim = DueClaim {
            key_name: latest.name.clone(),
            latest_version: latest.version.clone(),
            refresh_after: self.refresh_after,
            lease: self.lease(),
            limit,
        };
        let requested_at = tokio::time::Instant::now();
        Ok((self.app.store.claim_due(&claim).await?, requested_at))
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %leased.row.key.tenant_id, user.id = %leased.row.key.user_id))]
    async fn row(&self, leased: Leased, latest: &VersionedKey) -> Worked {
        let Leased { row, mut lease } = leased;
        let due_by_age = self.due_by_age(&row, latest);
        if Instant::now() >= self.deadline || self.credential_refused.load(Ordering::Relaxed) {
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
            custody::open_stored(self.app, &row)
                .await
                .and_then(|(stored, current)| {
                    custody::seal_with(custody::newest(latest, &current), &row.key, &stored)
                })
                .map(|grant| Some((grant, None)))
        };
        let error = match result {
            Ok(Some((grant, refreshed_at))) => {
                return Worked::Sealed(Box::new(Sealed {
                    row,
                    grant,
                    refreshed_at,
                }))
            }
            // The lease could not be renewed: the row moved on or is someone else's now.
            Ok(None) => return Worked::Finished(Outcome::Skipped),
            Err(error) => error,
        };
        Worked::Finished(self.failed(&row, error).await)
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
                .is_ok_and(|after| row.refreshed_at < Utc::now() - after)
    }

    /// What happens to a row whose work failed with `error`.
    async fn failed(&self, row: &TokenRecord, error: FlowError) -> Outcome {
        match error {
            FlowError::Idp(IdpError::Reauth { error, code, .. }) => {
                let reason = code.map_or(error.clone(), |code| format!("{error}:{code}"));
                tracing::warn!(reason = %reason, "grant is dead; marking reauth_required");
                match self
                    .app
                    .store
                    .mark_reauth_required(&row.key, row.revision, &reason, &self.owner)
                    .await
                {
                    Ok(true) => Outcome::Reauth,
                    Ok(false) => Outcome::Skipped,
                    Err(error) => {
                        tracing::error!(error = %error, "failed to mark reauth_required");
                        Outcome::Failed
                    }
                }
            }
            // No back-off: the operator's doing, not the row's (see `refused_rows`).
            FlowError::KeyVersionUnavailable { .. } if self.refused.hold(&row.key) => {
                Outcome::Failed
            }
            FlowError::KeyVersionUnavailable { .. } => Outcome::Skipped,
            FlowError::Idp(error) if error.refuses_the_service() => {
                // The deployment's fault: every other row would get the same answer.
                if !self.credential_refused.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        alert = true,
                        entra.error = %error.code(),
                        "Entra ID refuses the service's own credential: the refresh run stops and leaves every row as it was; fix the app registration's secret, certificate or federated credential"
                    );
                }
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

    /// Redeems the row's grant and seals the new one under the latest key. `Ok(None)` when the
    /// row's lease could not be renewed before the redeem.
    async fn refresh(
        &self,
        row: &TokenRecord,
        lease: &mut HeldLease,
        latest: &VersionedKey,
    ) -> Result<Option<(SealedGrant, Option<DateTime<Utc>>)>, FlowError> {
        let (stored, current) = custody::open_stored(self.app, row).await?;
        // A row that waited in the queue (behind a pause, a slow Key Vault) may be near the end
        // of the lease its claim stamped. The lease must outlive the redeem and the save, or
        // another instance could redeem the same token meanwhile: renew it unless it still
        // runs for the Entra timeout plus the lease's margin (at least 5 s) over two timeouts.
        let needed = self
            .app
            .lease
            .saturating_sub(self.app.entra_settings.timeout);
        if !lease.ensure(self.app.store.as_ref(), needed).await? {
            tracing::info!("the row moved on or changed hands while queued; leaving it");
            return Ok(None);
        }
        let (_set, next) = custody::redeem(self.app, &row.key, stored).await?;
        let grant = custody::seal_with(custody::newest(latest, &current), &row.key, &next)?;
        Ok(Some((grant, Some(Utc::now()))))
    }

    /// Before a row of a throttled tenant calls Entra: waits out a short pause, defers the
    /// row to the end of a long one. `Some` when the row is done for this run.
    async fn wait_for_tenant(&self, row: &TokenRecord) -> Option<Outcome> {
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
        if let Err(error) = self.app.store.record_failure(&failure).await {
            tracing::error!(error = %error, "failed to defer the row; the lease will expire");
        }
    }

    async fn back_off(&self, row: &TokenRecord, code: &str) {
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
        match self.app.store.record_failure(&failure).await {
            Ok(true) => {}
            Ok(false) => tracing::info!("the row moved on meanwhile; no back-off recorded"),
            Err(error) => {
                tracing::error!(error = %error, "failed to record the failure; the lease will expire")
            }
        }
    }

    async fn release(&self, row: &TokenRecord) {
        if let Err(error) = self.app.store.release_lease(&row.key, &self.owner).await {
            tracing::warn!(error = %error, "failed to release a lease; it will expire");
        }
    }
}
