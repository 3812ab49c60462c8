//! The rate-limited sampler's percentage: an exponentially decaying window of recent root
//! spans (adaptation time 0.1 s) whose count and length give the share of traces to keep so
//! that about `traces_per_second` are kept. The algorithm of ApplicationInsights-Java's
//! `RateLimitedSamplingPercentage`, as azure-sdk-for-python ports it
//! (`_rate_limited_sampling.py`), with its rounding down to `100 / n` (`_round_down_to_nearest`)
//! so that every kept trace stands for a whole number of traces.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// How fast the window forgets: Microsoft's fixed 0.1 s.
const ADAPTATION_SECONDS: f64 = 0.1;

/// The window, shared by the clones the SDK makes of its sampler.
#[derive(Debug, Clone)]
pub(super) struct RateWindow {
    traces_per_second: f64,
    started: Instant,
    state: Arc<Mutex<State>>,
}

/// Decayed count of spans seen and decayed length of the window, in seconds, at `last`
/// (seconds since `started`).
#[derive(Debug, Clone, Copy)]
struct State {
    count: f64,
    seconds: f64,
    last: f64,
}

impl RateWindow {
    pub(super) fn new(traces_per_second: f64) -> Self {
        Self {
            traces_per_second,
            started: Instant::now(),
            state: Arc::new(Mutex::new(State {
                count: 0.0,
                seconds: 0.0,
                last: 0.0,
            })),
        }
    }

    /// The percentage of traces to keep for a root span starting now.
    pub(super) fn percentage(&self) -> f64 {
        self.percentage_at(self.started.elapsed().as_secs_f64())
    }

    /// The percentage for a root span starting `now` seconds after the window was made.
    pub(super) fn percentage_at(&self, now: f64) -> f64 {
        let state = {
            // A panic elsewhere while holding this lock leaves three plain numbers: still usable.
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            *state = state.after(now);
            *state
        };
        let probability = state.seconds * self.traces_per_second / state.count;
        round_down(100.0 * probability.min(1.0))
    }
}

impl State {
    /// The window with one more span at `now`.
    fn after(self, now: f64) -> Self {
        if now <= self.last {
            return Self {
                count: self.count + 1.0,
                ..self
            };
        }
        let elapsed = now - self.last;
        let decay = (-elapsed / ADAPTATION_SECONDS).exp();
        Self {
            count: self.count * decay + 1.0,
            seconds: self.seconds * decay + elapsed,
            last: now,
        }
    }
}

/// `percentage` rounded down to `100 / n` for a whole `n`; 0 when `n` would not fit an `i32`.
fn round_down(percentage: f64) -> f64 {
    if percentage <= 0.0 {
        return 0.0;
    }
    let items = 100.0 / percentage;
    if !items.is_finite() || items >= f64::from(i32::MAX) {
        return 0.0;
    }
    100.0 / items.ceil()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_service_keeps_every_trace() {
        let window = RateWindow::new(5.0);
        // One root span a second: far under five a second.
        for second in 1..=10 {
            assert_eq!(window.percentage_at(f64::from(second)), 100.0);
        }
    }

    #[test]
    fn a_busy_service_keeps_about_the_limit() {
        let window = RateWindow::new(5.0);
        // 1,000 root spans a second for 10 s; the kept share settles at 5 in 1,000.
        let mut kept = 0.0;
        for span in 1..=10_000 {
            let percentage = window.percentage_at(f64::from(span) / 1_000.0);
            kept += percentage / 100.0;
        }
        assert!((45.0..=60.0).contains(&kept), "{kept} traces kept in 10 s");
        let settled = window.percentage_at(10.0001);
        assert!((0.4..=0.6).contains(&settled), "{settled} %");
    }

    #[test]
    fn percentages_are_whole_fractions() {
        assert_eq!(round_down(100.0), 100.0);
        assert_eq!(round_down(60.0), 50.0);
        assert_eq!(round_down(0.5), 0.5);
        assert_eq!(round_down(0.3), 100.0 / 334.0);
        assert_eq!(round_down(0.0), 0.0);
        assert_eq!(round_down(1e-12), 0.0);
        let none = RateWindow::new(0.0);
        assert_eq!(none.percentage_at(1.0), 0.0);
    }
}
