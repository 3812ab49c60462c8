//! Closed-loop load: `concurrency` tasks each send one request after another until the time or
//! the work runs out; every latency is kept and percentiles are picked from the sorted list.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

/// Latencies of one load point.
#[derive(Clone, Debug)]
pub(crate) struct Load {
    pub(crate) concurrency: usize,
    pub(crate) requests: usize,
    pub(crate) elapsed: Duration,
    /// Sorted, microseconds.
    latencies_us: Vec<u64>,
}

impl Load {
    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`-quantile (0..=1) in milliseconds.
    pub(crate) fn ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((p * self.latencies_us.len() as f64).ceil() as usize).max(1) - 1;
        self.latencies_us[rank.min(self.latencies_us.len() - 1)] as f64 / 1000.0
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "concurrency": self.concurrency,
            "requests": self.requests,
            "seconds": round(self.elapsed.as_secs_f64(), 3),
            "rps": round(self.throughput(), 1),
            "p50_ms": round(self.ms(0.50), 3),
            "p90_ms": round(self.ms(0.90), 3),
            "p99_ms": round(self.ms(0.99), 3),
            "max_ms": round(self.ms(1.0), 3),
        })
    }
}

pub(crate) fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// The median of `values` (the mean of the middle two for an even count; 0 when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// How long or how much.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Until {
    Elapsed(Duration),
    /// Exactly this many calls in all.
    Calls(usize),
}

/// Runs `call(worker, n)` from `concurrency` spawned tasks (`n` counts calls across tasks).
/// Any error fails the load point.
pub(crate) async fn run<F, Fut>(concurrency: usize, until: Until, call: F) -> anyhow::Result<Load>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = Arc::new(call);
    let counter = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = match until {
        Until::Elapsed(duration) => Some(started + duration),
        Until::Calls(_) => None,
    };
    let limit = match until {
        Until::Calls(n) => n,
        Until::Elapsed(_) => usize::MAX,
    };
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let call = Arc::clone(&call);
        let counter = Arc::clone(&counter);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                let sent = Instant::now();
                call(worker, n).await?;
                latencies.push(sent.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(latencies) => all.extend(latencies),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(error) = first_error {
        bail!("a request failed at concurrency {concurrency}: {error:#}");
    }
    all.sort_unstable();
    Ok(Load {
        concurrency,
        requests: all.len(),
        elapsed,
        latencies_us: all,
    })
}
