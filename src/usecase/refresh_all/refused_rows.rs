//! The rows of one timer run whose key version Key Vault refuses (disabled, deleted,
//! forbidden).
//!
//! Such a row is the operator's doing, not the row's: it stays `active`, gets no back-off and
//! is counted `failed` (the key cache logs one alert line per version). Its lease is kept
//! until the run ends, so the run does not claim it again and again, and released then, so
//! the first run after the operator restores the version handles it.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::domain::UserKey;
use crate::store::TokenStore;

/// Rows held by a run because their key version is refused.
#[derive(Default)]
pub(crate) struct RefusedRows {
    rows: Mutex<HashSet<UserKey>>,
}

impl RefusedRows {
    /// Holds `row` until the run ends; `false` when this run already counted it (its lease
    /// ran out during a long run and it was claimed again).
    pub(crate) fn hold(&self, row: &UserKey) -> bool {
        self.rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(row.clone())
    }

    /// Releases the leases `owner` holds on every held row.
    pub(crate) async fn release_all(&self, store: &dyn TokenStore, owner: &str) {
        let rows: Vec<UserKey> = self
            .rows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain()
            .collect();
        for row in rows {
            if let Err(error) = store.release_lease(&row, owner).await {
                tracing::warn!(error = %error, "failed to release a lease; it will expire");
            }
        }
    }
}
