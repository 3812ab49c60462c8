//! The audit of acts on behalf of users: one structured log line per act, and the last
//! accesses kept per user so `GET /api/setup` can show users which workloads acted for them.
//!
//! Records are written by a background task in batches, off the request path; if the database
//! is slow the queue absorbs bursts, and when it is full a record is dropped from the table
//! (never from the log line) rather than slowing do-work down. A process that stops loses the
//! records of its last [`GATHER`] at most; the log line of each act is already written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{AccessRecord, TokenStore};

/// How many accesses are kept per user.
pub const KEPT_PER_USER: i64 = 50;
const QUEUE: usize = 10_000;
const BATCH: usize = 500;
/// How long records gather between two partial batches. Each batch is one transaction (an
/// insert and the trim to [`KEPT_PER_USER`]) and its own database round trips, so a short
/// pause means a transaction every few calls of a lightly loaded instance; a quarter of a
/// second is still far below what a user looking at `GET /api/setup` would notice.
const GATHER: Duration = Duration::from_millis(250);

/// Handle to the audit writer.
#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<AccessRecord>,
}

impl AuditLog {
    /// Starts the writer task on the current runtime.
    pub fn start(store: Arc<dyn TokenStore>) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, receiver));
        Self { sender }
    }

    /// Logs the act and queues it for the user's access history.
    pub fn record(&self, record: AccessRecord) {
        tracing::info!(
            audit = true,
            caller.app_id = %record.caller_app_id,
            caller.tenant_id = record.caller_tenant_id.as_ref().map(|t| t.as_str()),
            tenant.id = %record.key.tenant_id,
            user.id = %record.key.user_id,
            downstream = record.downstream.as_deref(),
            http.method = %record.method,
            downstream.path = %record.path,
            downstream.status = record.downstream_status,
            refreshed = record.refreshed,
            "acted on behalf of a user"
        );
        if self.sender.try_send(record).is_err() {
            tracing::warn!("audit queue full; an access record was not kept");
        }
    }
}

async fn write_batches(store: Arc<dyn TokenStore>, mut receiver: mpsc::Receiver<AccessRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        if let Err(error) = store.record_accesses(&batch, KEPT_PER_USER).await {
            tracing::warn!(error = %error, records = batch.len(), "failed to keep access records");
        }
        let full = batch.len() == BATCH;
        batch.clear();
        // Let calls gather into the next batch instead of one insert per call; a full batch
        // means more are already waiting, and pausing would only fill the queue.
        if !full {
            tokio::time::sleep(GATHER).await;
        }
    }
}
