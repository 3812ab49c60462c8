//! How long a row that failed waits before the timer tries it again, and the code recorded.

use std::time::Duration;

use rand::Rng as _;

use crate::usecase::FlowError;

/// Longest back-off after repeated transient failures of one row.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
const FIRST_BACKOFF: Duration = Duration::from_secs(60);

/// The back-off after `failures` earlier failures: doubling from a minute up to a day, with
/// ±20 % jitter so rows that failed together do not come back together.
pub(crate) fn backoff(failures: i32) -> Duration {
    let exponent = failures.clamp(0, 16) as u32;
    let delay = FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF);
    delay.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
}

/// The machine code recorded on a row that failed with `error`.
pub(crate) fn error_code(error: &FlowError) -> String {
    match error {
        FlowError::Idp(idp) => idp.code(),
        FlowError::Keys(_) => "key_vault".to_owned(),
        FlowError::Store(_) => "database".to_owned(),
        FlowError::Crypto(_) => "does_not_open".to_owned(),
        _ => "error".to_owned(),
    }
}
