//! One key's rows through a run. Claims are pipelined: the next batch is claimed while the
//! current one is still being worked on, so no worker waits for the slowest row of a batch
//! (or for the claim). Saves are batched: one transaction at a time takes every row sealed
//! meanwhile, so a worker moves on to its next row instead of waiting for its own commit.

use std::collections::VecDeque;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt as _;

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
    /// No more rows are due, or a claim failed: no more claims for this key.
    Exhausted,
}

/// The tasks of one key and what waits between them.
struct Pipeline<'r> {
    tasks: FuturesUnordered<BoxFuture<'r, Done>>,
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
    /// Rows asked for in one claim.
    claim_size: i64,
    /// Sealed rows waiting at most.
    max_sealed: usize,
}

impl<'r> Pipeline<'r> {
    fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            tasks: FuturesUnordered::new(),
            queue: VecDeque::new(),
            sealed: Vec::new(),
            working: 0,
            claims: Claims::Idle,
            saving: false,
            failed: None,
            waited_for: None,
            concurrency,
            claim_size: i64::try_from(concurrency * 4).unwrap_or(i64::MAX),
            max_sealed: (concurrency * 4).max(SAVE_BATCH),
        }
    }

    fn push(&mut self, task: impl std::future::Future<Output = Done> + Send + 'r) {
        self.tasks.push(Box::pin(task));
    }
}

impl Run<'_> {
    /// Works on every due row of `latest`'s key until none is left, the budget is spent or a
    /// claim fails (the first claim failure is the answer, after the claimed rows are done).
    pub(super) async fn key<'r>(
        &'r self,
        latest: &'r VersionedKey,
        progress: &(dyn Fn(&Summary) + Sync),
    ) -> Result<(), FlowError> {
        let mut pipeline = Pipeline::new(self.options.concurrency);
        loop {
            self.start_rows(&mut pipeline, latest);
            self.start_save(&mut pipeline);
            self.start_claim(&mut pipeline, latest);
            let Some(done) = pipeline.tasks.next().await else {
                break;
            };
            self.finish(&mut pipeline, done, progress);
        }
        pipeline.failed.map_or(Ok(()), Err)
    }

    /// Starts queued rows while workers are free and the sealed rows are not too many.
    fn start_rows<'r>(&'r self, pipeline: &mut Pipeline<'r>, latest: &'r VersionedKey) {
        while pipeline.working < pipeline.concurrency && pipeline.sealed.len() < pipeline.max_sealed
        {
            let Some(row) = pipeline.queue.pop_front() else {
                break;
            };
            pipeline.working += 1;
            pipeline.push(async move { Done::Row(self.work(row, latest).await) });
        }
    }

    /// Starts a batch save of the sealed rows, unless one is running.
    fn start_save<'r>(&'r self, pipeline: &mut Pipeline<'r>) {
        if pipeline.saving || pipeline.sealed.is_empty() {
            return;
        }
        pipeline.saving = true;
        let take = pipeline.sealed.len().min(SAVE_BATCH);
        let batch: Vec<Sealed> = pipeline.sealed.drain(..take).collect();
        pipeline.push(async move {
            let saved = self.save(&batch).await;
            Done::Saved(batch, saved)
        });
    }

    /// Claims the next batch when the queue runs low, unless the run stopped.
    fn start_claim<'r>(&'r self, pipeline: &mut Pipeline<'r>, latest: &'r VersionedKey) {
        let wait_until = match pipeline.claims {
            Claims::Idle => None,
            Claims::After(until) => Some(until),
            Claims::Running | Claims::Exhausted => return,
        };
        if pipeline.queue.len() >= pipeline.concurrency || self.stopped() {
            return;
        }
        pipeline.claims = Claims::Running;
        let limit = pipeline.claim_size;
        pipeline.push(async move {
            if let Some(until) = wait_until {
                tokio::time::sleep_until(until.into()).await;
            }
            Done::Claimed(self.claim(latest, limit).await)
        });
    }

    /// Takes in what a task finished.
    fn finish<'r>(
        &'r self,
        pipeline: &mut Pipeline<'r>,
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
    fn claimed<'r>(
        &'r self,
        pipeline: &mut Pipeline<'r>,
        batch: Claimed,
        requested_at: tokio::time::Instant,
    ) {
        let exhausted = batch.rows.is_empty() && batch.corrupt.is_empty();
        pipeline.claims = if exhausted {
            self.after_pauses(pipeline.waited_for)
        } else {
            Claims::Idle
        };
        if let Claims::After(until) = pipeline.claims {
            pipeline.waited_for = Some(until);
        }
        pipeline
            .queue
            .extend(batch.rows.into_iter().map(|row| Leased {
                lease: HeldLease::new(row.key.clone(), row.revision, self.lease(), requested_at),
                row,
            }));
        for corrupt in batch.corrupt {
            pipeline.working += 1;
            pipeline.push(async move { Done::Row(Worked::Finished(self.corrupt(&corrupt).await)) });
        }
    }

    /// What follows a claim that found nothing due: one more claim after the last tenant pause
    /// of this run (the throttled rows it deferred come due then) if that is within the budget
    /// and was not waited for already; else the key is done.
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
    fn save_failed<'r>(
        &'r self,
        pipeline: &mut Pipeline<'r>,
        batch: Vec<Sealed>,
        error: &FlowError,
    ) {
        let code = error_code(error);
        for row in batch {
            let code = code.clone();
            pipeline.working += 1;
            pipeline.push(async move {
                self.back_off(&row.row, &code).await;
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
        custody::save_batch(self.deps, &saves, &self.owner).await
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
