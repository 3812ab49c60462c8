//! The counts of one refresh-tokens run and its one-line summary (SPEC §3).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

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

    /// The run's one log line, with the counts as fields.
    pub(crate) fn log(&self) {
        tracing::info!(
            examined = self.examined,
            refreshed = self.refreshed,
            resealed = self.resealed,
            reauth_required = self.reauth_required,
            failed = self.failed,
            skipped = self.skipped,
            duration_ms = self.duration_ms,
            "{}",
            self.line()
        );
    }
}

/// The run's counts, updated by every worker.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) examined: AtomicU64,
    refreshed: AtomicU64,
    resealed: AtomicU64,
    reauth_required: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
}

impl Counters {
    /// The counts so far.
    pub(crate) fn snapshot(&self, started: Instant) -> Summary {
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

/// What became of one claimed row.
pub(crate) enum Outcome {
    Failed,
    Reauth,
    Refreshed,
    Resealed,
    Skipped,
}

impl Counters {
    /// Counts one row's outcome.
    pub(crate) fn count(&self, outcome: Outcome) {
        let counter = match outcome {
            Outcome::Failed => &self.failed,
            Outcome::Reauth => &self.reauth_required,
            Outcome::Refreshed => &self.refreshed,
            Outcome::Resealed => &self.resealed,
            Outcome::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
