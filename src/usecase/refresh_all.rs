//! refresh-tokens: keep every grant alive and move every row to its key's latest version.
//!
//! A run asks Key Vault for each key's latest version once, then claims due rows in batches
//! (the claim stamps a lease, so other instances and do-work skip them), works on them with
//! bounded concurrency and saves each by compare-and-set. A row due only because of its key
//! version is re-sealed without calling Entra. An Entra 429 pauses every worker of the run.
//! No rows are claimed once the time budget is spent; claimed rows that were not started are
//! released for the next run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt as _;
use rand::Rng as _;
use serde::Serialize;

use super::refused_rows::RefusedRows;
use super::{custody, FlowError};
use crate::app::App;
use crate::idp::IdpError;
use crate::keys::VersionedKey;
use crate::store::{DueClaim, GrantSave, Lease, SealedGrant, TokenRecord};

/// Longest back-off after repeated transient failures of one row.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// Most rows saved in one transaction.
const SAVE_BATCH: usize = 128;

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

/// What a run did (SPEC §3).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Rows claimed by this run.
    pub examined: u64,
    /// Rows redeemed at Entra and saved (also re-sealed if they were on an old key).
    pub refreshed: u64,
    /// Rows only re-sealed under the latest key version.
    pub resealed: u64,
    /// Rows whose grant turned out dead in this run.
    pub reauth_required: u64,
    /// Rows that failed transiently and now back off.
    pub failed: u64,
    /// Rows claimed but left for the next run (budget spent, or changed meanwhile).
    pub skipped: u64,
    /// Wall time of the run.
    pub duration_ms: u64,
}

impl Summary {
    /// The one-line summary for the timer's `Logs` and the CLI.
    pub fn line(&self) -> String {
        format!(
            "refresh-tokens: examined={} refreshed={} resealed={} reauth_required={} failed={} skipped={} duration_ms={}",
            self.examined, self.refreshed, self.resealed, self.reauth_required, self.failed, self.skipped, self.duration_ms
        )
    }
}

#[derive(Default)]
struct Counters {
    examined: AtomicU64,
    refreshed: AtomicU64,
    resealed: AtomicU64,
    reauth_required: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

impl Counters {
    fn snapshot(&self, started: Instant) -> Summary {
        Summary {
            examined: self.examined.load(Ordering::Relaxed),
            refreshed: self.refreshed.load(Ordering::Relaxed),
            resealed: self.resealed.load(Ordering::Relaxed),
            reauth_required: self.reauth_required.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}

/// What one of a key's concurrent tasks finished.
enum Done {
    /// A row's work up to its save.
    Row(Worked),
    Claimed(Result<Vec<TokenRecord>, FlowError>),
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

enum Outcome {
    Failed,
    Reauth,
    Refreshed,
    Resealed,
    Skipped,
}

struct Run<'a> {
    app: &'a Arc<App>,
    options: RunOptions,
    owner: String,
    started: Instant,
    deadline: Instant,
    refreshed_before: DateTime<Utc>,
    counters: Counters,
    /// Entra asked us to slow down until then (shared by every worker).
    paused_until: Mutex<Option<Instant>>,
    /// Set when Entra's pause outlasts the budget: claiming more rows would only spin.
    stopped: AtomicBool,
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
    let refreshed_before = if options.reseal_only {
        DateTime::<Utc>::UNIX_EPOCH
    } else {
        Utc::now() - app.refresh.after
    };
    let run = Run {
        app,
        owner: format!("{}/timer/{}", app.instance_id, uuid::Uuid::new_v4()),
        started,
        deadline: started + options.time_budget,
        refreshed_before,
        options,
        counters: Counters::default(),
        paused_until: Mutex::new(None),
        stopped: AtomicBool::new(false),
        refused: RefusedRows::default(),
    };
    let mut first_error = None;
    for key_name in app.store.key_names().await? {
        if Instant::now() >= run.deadline || run.stopped.load(Ordering::Relaxed) {
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
        let mut queue: VecDeque<TokenRecord> = VecDeque::new();
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
                && !self.stopped.load(Ordering::Relaxed)
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
                            (false, _) => Outcome::Skipped,
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
                Some(Done::Claimed(Ok(rows))) => {
                    claiming = false;
                    exhausted = rows.is_empty();
                    queue.extend(rows);
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
    async fn work(&self, row: TokenRecord, latest: &VersionedKey) -> Worked {
        self.counters.examined.fetch_add(1, Ordering::Relaxed);
        self.row(row, latest).await
    }

    fn count(&self, outcome: Outcome, progress: &(dyn Fn(&Summary) + Sync)) {
        let counter = match outcome {
            Outcome::Failed => &self.counters.failed,
            Outcome::Reauth => &self.counters.reauth_required,
            Outcome::Refreshed => &self.counters.refreshed,
            Outcome::Resealed => &self.counters.resealed,
            Outcome::Skipped => &self.counters.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
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

    /// Claims up to `limit` due rows of `latest`'s key, stamping this run's lease on them.
    async fn claim(
        &self,
        latest: &VersionedKey,
        limit: i64,
    ) -> Result<Vec<TokenRecord>, FlowError> {
        let now = Utc::now();
        let claim = DueClaim {
            key_name: latest.name.clone(),
            latest_version: latest.version.clone(),
            refreshed_before: self.refreshed_before,
            now,
            lease: Lease {
                owner: self.owner.clone(),
                until: now + self.app.lease,
            },
            limit,
        };
        Ok(self.app.store.claim_due(&claim).await?)
    }

    #[tracing::instrument(skip_all, fields(tenant.id = %row.key.tenant_id, user.id = %row.key.user_id))]
    async fn row(&self, row: TokenRecord, latest: &VersionedKey) -> Worked {
        let due_by_age = row.refreshed_at < self.refreshed_before;
        if Instant::now() >= self.deadline || (due_by_age && !self.wait_for_entra().await) {
            self.release(&row).await;
            return Worked::Finished(Outcome::Skipped);
        }
        let result = if due_by_age {
            self.refresh(&row, latest).await
        } else {
            custody::open_stored(self.app, &row)
                .await
                .and_then(|(stored, current)| {
                    custody::seal_with(custody::newest(latest, &current), &row.key, &stored)
                })
                .map(|grant| (grant, None))
        };
        let error = match result {
            Ok((grant, refreshed_at)) => {
                return Worked::Sealed(Box::new(Sealed {
                    row,
                    grant,
                    refreshed_at,
                }))
            }
            Err(error) => error,
        };
        Worked::Finished(match error {
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
            error => {
                if let FlowError::Idp(IdpError::Throttled { retry_after }) = &error {
                    self.pause(retry_after.unwrap_or(Duration::from_secs(5)));
                }
                self.back_off(&row, &error_code(&error)).await;
                Outcome::Failed
            }
        })
    }

    /// Redeems the row's grant and seals the new one under the latest key.
    async fn refresh(
        &self,
        row: &TokenRecord,
        latest: &VersionedKey,
    ) -> Result<(SealedGrant, Option<DateTime<Utc>>), FlowError> {
        let (stored, current) = custody::open_stored(self.app, row).await?;
        let (_set, next) = custody::redeem(self.app, &row.key, stored).await?;
        let grant = custody::seal_with(custody::newest(latest, &current), &row.key, &next)?;
        Ok((grant, Some(Utc::now())))
    }

    /// Waits out an Entra pause; `false` when it outlasts the budget.
    async fn wait_for_entra(&self) -> bool {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        match until {
            Some(until) if until >= self.deadline => {
                self.stopped.store(true, Ordering::Relaxed);
                false
            }
            Some(until) if until > Instant::now() => {
                tokio::time::sleep_until(until.into()).await;
                true
            }
            _ => true,
        }
    }

    fn pause(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut paused = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if paused.is_none_or(|current| current < until) {
            tracing::warn!(
                retry_after_s = retry_after.as_secs(),
                "Entra throttles; pausing the run"
            );
            *paused = Some(until);
        }
    }

    async fn back_off(&self, row: &TokenRecord, code: &str) {
        let exponent = row.failure_count.clamp(0, 16) as u32;
        let delay = FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF);
        // ±20 % jitter so rows that failed together do not come back together.
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        let next_attempt_at = Utc::now() + delay.mul_f64(jitter);
        tracing::warn!(error.code = %code, failures = row.failure_count + 1, "refresh failed; backing off");
        if let Err(error) = self
            .app
            .store
            .record_failure(&row.key, &self.owner, code, next_attempt_at)
            .await
        {
            tracing::error!(error = %error, "failed to record the failure; the lease will expire");
        }
    }

    async fn release(&self, row: &TokenRecord) {
        if let Err(error) = self.app.store.release_lease(&row.key, &self.owner).await {
            tracing::warn!(error = %error, "failed to release a lease; it will expire");
        }
    }
}

/// The machine code recorded on a row that failed with `error`.
fn error_code(error: &FlowError) -> String {
    match error {
        FlowError::Idp(idp) => idp.code(),
        FlowError::Keys(_) => "key_vault".to_owned(),
        FlowError::Store(_) => "database".to_owned(),
        FlowError::Crypto(_) => "does_not_open".to_owned(),
        _ => "error".to_owned(),
    }
}
