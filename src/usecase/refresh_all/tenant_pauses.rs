//! Entra throttles per tenant: the tenants one timer run leaves alone, and until when.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::TenantId;

/// Pauses of one run, per tenant.
#[derive(Default)]
pub(crate) struct TenantPauses {
    until: Mutex<HashMap<TenantId, Instant>>,
}

impl TenantPauses {
    /// Pauses `tenant` for `retry_after` from now (a longer pause already running stays).
    pub(crate) fn pause(&self, tenant: &TenantId, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut paused = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let current = paused.entry(tenant.clone()).or_insert(until);
        if *current <= until {
            tracing::warn!(
                retry_after_s = retry_after.as_secs(),
                "Entra throttles this tenant; pausing its rows"
            );
            *current = until;
        }
    }

    /// The end of `tenant`'s pause and how long it still runs; `None` when it is not paused.
    pub(crate) fn left(&self, tenant: &TenantId) -> Option<(Instant, Duration)> {
        let until = *self
            .until
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some((until, left))
    }

    /// When the last pause of the run ends or ended; `None` when no tenant was paused.
    pub(crate) fn last_end(&self) -> Option<Instant> {
        let paused = self.until.lock().unwrap_or_else(|p| p.into_inner());
        paused.values().copied().max()
    }
}
