//! One key's rows through a run. Every row is a task of its own, so the rows' network reads,
//! parsing and sealing spread over the runtime's workers instead of queueing behind each other
//! in one task; this loop only hands out rows and takes in what finished. Claims are pipelined
//! and run ahead: the next batch is claimed while a whole batch still waits in the queue, so
//! no worker waits for the slowest row of a batch or for a claim. Saves are batched: one
//! transaction at a time takes every row sealed meanwhile, so a worker moves on to its next
//! row instead of waiting for its own commit.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::Instrument as _;

use super::backoff::error_code;
use super::row::Worked;
use super::{HeldLease, Leased, Outcome, Run, Sealed, Summary};
use crate::keys::VersionedKey;
use crate::store::{Claimed, DueClaim, GrantSave};
use crate::usecase::{custody, FlowError};

/// Most rows saved in one transaction.
const SAVE_BATCH: usize = 128;
/// How long after a tenant's pause ends the rows it deferred are claimed again: their next
/// attempt was stamped by the database a round trip after the pause began.
const AFTER_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// What one of a key's concurrent tasks finished.
enum Done {
    /// A row's work up to its save.
    Row(Worked),
    /// A batch of due rows was claimed (and when the claim left), or the claim failed.
    Claimed(Result<(Claimed, tokio::time::Instant), FlowError>),
    /// A batch of saves was committed, or failed as a whole.
    Saved(Vec<Sealed>, Result<Vec<bool>, FlowError>),
}

/// Where the claims of a key stand.
#[derive(Clone, Copy, Eq, PartialEq)]
enum Claims {
    /// Another claim may start.
    Idle,
    /// A claim is running.
    Running,
    /// Nothing was due, but rows deferred by a tenant's pause come due at this time, within
    /// the run's budget: claim again then.
    After(std::time::Instant),
    /// The last claim found nothing due while claimed rows still waited or ran (claims run
    /// ahead): once every claimed row has finished, the pauses they met decide
    /// (`Run::after_pauses`). Waiting for the last row, not only for its start, makes the
    /// decision the same whatever order the answers came in: a 429 still in flight when the
    /// claim came back empty is known by then, and its row is claimed again after the pause.
    Dry,
    /// No more rows are due, or a claim failed: no more claims for this key.
    Exhausted,
}

/// The tasks of one key and what waits between them.
struct Pipeline {
    /// Dropping the set (the run's future dropped) aborts every task, as dropping the futures
    /// of one task would: no row outlives its run.
    tasks: JoinSet<Done>,
    /// Claimed rows not started yet.
    queue: VecDeque<Leased>,
    /// Sealed rows waiting for a save; no new row starts while too many wait.
    sealed: Vec<Sealed>,
    /// Row tasks running.
    working: usize,
    claims: Claims,
    /// A batch save is running.
    saving: bool,
    /// The first claim failure; the rows claimed before it are still worked on.
    failed: Option<FlowError>,
    /// The pause end an empty claim already waited for (see `Run::after_pauses`).
    waited_for: Option<std::time::Instant>,
    /// Rows worked on at once.
    concurrency: usize,
    /// Rows asked for in one claim; the next claim starts while fewer wait in the queue.
    claim_size: usize,
    /// Sealed rows waiting at most.
    max_sealed: usize,
}

impl Pipeline {
    fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            tasks: JoinSet::new(),
            queue: VecDeque::new(),
            sealed: Vec::new(),
            working: 0,
            claims: Claims::Idle,
            saving: false,
            failed: None,
            waited_for: None,
            concurrency,
            claim_size: concurrency * 4,
            max_sealed: (concurrency * 4).max(SAVE_BATCH),
        }
    }

    /// Starts a task under the run's span and trace context, so its logs, store statements
    /// and Entra calls belong to the invocation as when they were futures of the run's task.
    fn spawn(&mut self, task: impl std::future::Future<Output = Done> + Send + 'static) {
        self.tasks
            .spawn(crate::telemetry::carry(task.in_current_span()));
    }

    /// The next task to finish; `None` when none is left. A task that panicked panics the
    /// run, as it did when the tasks were futures of the run's own.
    async fn next(&mut self) -> Option<Done> {
        loop {
            match self.tasks.join_next().await? {
                Ok(done) => return Some(done),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                // Cancelled: only when the runtime shuts down, taking the run with it.
                Err(_) => {}
            }
        }
    }
}

impl Run {
    /// Works on every due row of `latest`'s key until none is left, the budget is spent or a
    /// claim fails (the first claim failure is the answer, after the claimed rows are done).
    pub(super) async fn key(
        self: &Arc<Self>,
        latest: Arc<VersionedKey>,
        progress: &(dyn Fn(&Summary) + Sync),
    ) -> Result<(), FlowError> {
        let mut pipeline = Pipeline::new(self.options.concurrency);
        loop {
            self.start_rows(&mut pipeline, &latest);
            self.start_save(&mut pipeline);
            self.start_claim(&mut pipeline, &latest);
            let Some(done) = pipeline.next().await else {
                break;
            };
            self.finish(&mut pipeline, done, progress);
        }
        pipeline.failed.map_or(Ok(()), Err)
    }

    /// Starts queued rows while workers are free and the sealed rows are not too many.
    fn start_rows(self: &Arc<Self>, pipeline: &mut Pipeline, latest: &Arc<VersionedKey>) {
        while pipeline.working < pipeline.concurrency && pipeline.sealed.len() < pipeline.max_sealed
        {
            let Some(row) = pipeline.queue.pop_front() else {
                break;
            };
            pipeline.working += 1;
            let (run, latest) = (Arc::clone(self), Arc::clone(latest));
            pipeline.spawn(async move { Done::Row(run.work(row, &latest).await) });
        }
    }

    /// Starts a batch save of the sealed rows, unless one is running.
    fn start_save(self: &Arc<Self>, pipeline: &mut Pipeline) {
        if pipeline.saving || pipeline.sealed.is_empty() {
            return;
        }
        pipeline.saving = true;
        let take = pipeline.sealed.len().min(SAVE_BATCH);
        let batch: Vec<Sealed> = pipeline.sealed.drain(..take).collect();
        let run = Arc::clone(self);
        pipeline.spawn(async move {
            let saved = run.save(&batch).await;
            Done::Saved(batch, saved)
        });
    }

    /// Claims the next batch while less than a batch waits in the queue, unless the run
    /// stopped: at 64 rows in flight a claim may take longer than the queue's last rows.
    fn start_claim(self: &Arc<Self>, pipeline: &mut Pipeline, latest: &Arc<VersionedKey>) {
        if pipeline.claims == Claims::Dry && pipeline.queue.is_empty() && pipeline.working == 0 {
            pipeline.claims = self.after_pauses(pipeline.waited_for);
            if let Claims::After(until) = pipeline.claims {
                pipeline.waited_for = Some(until);
            }
        }
        let wait_until = match pipeline.claims {
            Claims::Idle => None,
            Claims::After(until) => Some(until),
            Claims::Running | Claims::Dry | Claims::Exhausted => return,
        };
        if pipeline.queue.len() >= pipeline.claim_size || self.stopped() {
            return;
        }
        pipeline.claims = Claims::Running;
        let limit = i64::try_from(pipeline.claim_size).unwrap_or(i64::MAX);
        let (run, latest) = (Arc::clone(self), Arc::clone(latest));
        pipeline.spawn(async move {
            if let Some(until) = wait_until {
                tokio::time::sleep_until(until.into()).await;
            }
            Done::Claimed(run.claim(&latest, limit).await)
        });
    }

    /// Takes in what a task finished.
    fn finish(
        self: &Arc<Self>,
        pipeline: &mut Pipeline,
        done: Done,
        progress: &(dyn Fn(&Summary) + Sync),
    ) {
        match done {
            Done::Row(worked) => {
                pipeline.working -= 1;
                match worked {
                    Worked::Finished(outcome) => self.count(outcome, progress),
                    Worked::Sealed(row) => pipeline.sealed.push(*row),
                }
            }
            Done::Saved(batch, saved) => {
                pipeline.saving = false;
                match saved {
                    Ok(saved) => self.saved(&batch, saved, progress),
                    Err(error) => self.save_failed(pipeline, batch, &error),
                }
            }
            Done::Claimed(Ok((claimed, requested_at))) => {
                self.claimed(pipeline, claimed, requested_at);
            }
            Done::Claimed(Err(error)) => {
                // Rows already claimed are still worked on; no new claims.
                pipeline.claims = Claims::Exhausted;
                pipeline.failed.get_or_insert(error);
            }
        }
    }

    /// Queues a claimed batch; its unreadable rows are backed off at once.
    fn claimed(
        self: &Arc<Self>,
        pipeline: &mut Pipeline,
        batch: Claimed,
        requested_at: tokio::time::Instant,
    ) {
        let dry = batch.rows.is_empty() && batch.corrupt.is_empty();
        pipeline.claims = if dry { Claims::Dry } else { Claims::Idle };
        pipeline
            .queue
            .extend(batch.rows.into_iter().map(|row| Leased {
                lease: HeldLease::new(row.key.clone(), row.revision, self.lease(), requested_at),
                row,
            }));
        for corrupt in batch.corrupt {
            pipeline.working += 1;
            let run = Arc::clone(self);
            pipeline.spawn(async move { Done::Row(Worked::Finished(run.corrupt(&corrupt).await)) });
        }
    }

    /// What follows a claim that found nothing due, once every claimed row finished: one more
    /// claim after the last tenant pause of this run (the throttled rows it deferred come due
    /// then) if that is within the budget and was not waited for already; else the key is done.
    fn after_pauses(&self, waited_for: Option<std::time::Instant>) -> Claims {
        match self.paused.last_end() {
            Some(end) if Some(end) > waited_for && end + AFTER_PAUSE < self.deadline => {
                Claims::After(end + AFTER_PAUSE)
            }
            _ => Claims::Exhausted,
        }
    }

    /// Counts a committed batch, row by row.
    fn saved(&self, batch: &[Sealed], saved: Vec<bool>, progress: &(dyn Fn(&Summary) + Sync)) {
        for (row, saved) in batch.iter().zip(saved) {
            let outcome = match (saved, row.refreshed_at) {
                (false, _) => {
                    tracing::info!(
                        tenant.id = %row.row.key.tenant_id,
                        user.id = %row.row.key.user_id,
                        "the row changed while this run worked on it (a new setup, a delete, or \
                         another writer): the stored row was left as that writer made it, and \
                         this run's token was not stored"
                    );
                    Outcome::Skipped
                }
                (true, Some(_)) => Outcome::Refreshed,
                (true, None) => Outcome::Resealed,
            };
            self.count(outcome, progress);
        }
    }

    /// A batch that did not commit: every row keeps its old grant, and each backs off.
    fn save_failed(
        self: &Arc<Self>,
        pipeline: &mut Pipeline,
        batch: Vec<Sealed>,
        error: &FlowError,
    ) {
        let code = error_code(error);
        for row in batch {
            let (run, code) = (Arc::clone(self), code.clone());
            pipeline.working += 1;
            pipeline.spawn(async move {
                run.back_off(&row.row, &code).await;
                Done::Row(Worked::Finished(Outcome::Failed))
            });
        }
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
        custody::save_batch(&self.deps, &saves, &self.owner).await
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
        Ok((self.deps.store.claim_due(&claim).await?, requested_at))
    }
}
