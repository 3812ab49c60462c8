//! refresh-tokens: keep every grant alive and move every row to its key's latest version.
//!
//! A run asks Key Vault for each key's latest version once, then claims due rows in batches
//! (the claim stamps a lease, so other instances and do-work skip them), works on them with
//! bounded concurrency and saves each by compare-and-set (`pipeline`). A row due only because
//! of its key version is re-sealed without calling Entra (`row`). No rows are claimed once
//! the time budget is spent; claimed rows that were not started are released for the next
//! run.
//!
//! No row or tenant starves the rest: a row that cannot be read is backed off and reported,
//! and an Entra 429 pauses the throttled tenant's rows only (Entra throttles per tenant). A
//! refusal of the service's own credential is the deployment's fault, not a row's: the run
//! stops at the first one and leaves every row as it was (`failures`).

mod backoff;
mod failures;
mod pipeline;
mod refused_rows;
mod row;
mod summary;
mod tenant_pauses;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::leases::HeldLease;
use super::{Deps, FlowError};
use crate::store::{Lease, SealedGrant, TokenRecord};
use refused_rows::RefusedRows;
pub use summary::Summary;
use summary::{Counters, Outcome};
use tenant_pauses::TenantPauses;

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

/// A row whose new grant is sealed and not saved yet. Until the batch commits, the row keeps
/// its old grant (still valid at Entra) and this run's lease.
struct Sealed {
    row: TokenRecord,
    grant: SealedGrant,
    /// `Some` for a redeemed grant, `None` for a re-seal.
    refreshed_at: Option<DateTime<Utc>>,
}

/// One run's state, shared by its concurrent tasks (each row is a task of its own, so the
/// rows' network reads, parsing and sealing spread over the runtime's workers).
struct Run {
    deps: Arc<Deps>,
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
    deps: &Arc<Deps>,
    options: RunOptions,
    progress: &(dyn Fn(&Summary) + Sync),
) -> Result<Summary, FlowError> {
    let started = Instant::now();
    let run = Arc::new(Run {
        deps: Arc::clone(deps),
        owner: format!("{}/timer/{}", deps.policy.instance_id, uuid::Uuid::new_v4()),
        started,
        deadline: started + options.time_budget,
        refresh_after: (!options.reseal_only).then_some(deps.policy.refresh_after),
        options,
        counters: Counters::default(),
        paused: TenantPauses::default(),
        credential_refused: AtomicBool::new(false),
        refused: RefusedRows::default(),
    });
    let mut first_error = None;
    for key_name in deps.store.key_names().await? {
        if run.stopped() {
            break;
        }
        // Once per key and run: a rotation reaches every row in the next run.
        match deps.keys.fresh_latest(&key_name).await {
            Ok(latest) => run.key(Arc::new(latest), progress).await?,
            Err(error) => {
                tracing::error!(key.name = %key_name, error = %error, "cannot read the latest key; its rows wait");
                first_error.get_or_insert(FlowError::Keys(error));
            }
        }
    }
    run.refused
        .release_all(deps.store.as_ref(), &run.owner)
        .await;
    let summary = run.counters.snapshot(started);
    summary.log();
    match first_error {
        Some(error) if summary.examined == 0 => Err(error),
        _ => Ok(summary),
    }
}

impl Run {
    /// Whether the run takes no more rows: its time budget is spent, or Entra refused the
    /// service's own credential.
    fn stopped(&self) -> bool {
        Instant::now() >= self.deadline || self.credential_refused.load(Ordering::Relaxed)
    }

    /// The lease every claim and renewal of this run asks for.
    fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            duration: self.deps.policy.lease,
        }
    }

    fn count(&self, outcome: Outcome, progress: &(dyn Fn(&Summary) + Sync)) {
        self.counters.count(outcome);
        progress(&self.counters.snapshot(self.started));
    }
}
