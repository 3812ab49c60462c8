//! The instance's wall clock. Leases, back-offs and due rows go by the database's clock (the
//! store takes spans of time); this one dates what the instance itself decides: how long an
//! access token may be handed out, when a row was refreshed or an act was done.

use chrono::{DateTime, Utc};

/// Tells the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
