//! What telemetry costs on the warm do-work path, measured side by side: a service with no
//! exporter and one with an exporter run at the same time on the same CPU (with `--pin`), both
//! under load, in one-second slices. Each slice gives the exporter's excess of CPU per call
//! over the other service's in the same second, so whatever the host does meanwhile (another
//! tenant's load, the hypervisor taking the core), which moves the sequential point's figures
//! (`telemetry`) by ±10 % from one service's run to the next, lands on both alike. Loading
//! them in alternating half-second slices instead was tried and left as much spread as the
//! sequential point (quartiles of the control −13 to +8 %). CPU is each service's threads' run
//! time from `/proc/<pid>/task/*/schedstat` (nanoseconds), not the 10 ms ticks of
//! `/proc/<pid>/stat`; the ticks, summed over every slice, split it into user and system time.
//! Each variant runs four pairs of services one after another, six slices each: one pair's
//! median moves by a point or two from one start to the next. The same run measures `none`
//! against a second `none`: that control shows the method's own error.
//!
//! Two services share the core, so each call costs more than in the sequential point (each
//! evicts the other's caches): the excess is a share of that dearer call.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Ctx;
use crate::load::{median, round, Until};
use crate::proc::Service;

/// Slices per variant.
const SLICES: usize = 24;
/// Slices of a `--quick` run.
const QUICK_SLICES: usize = 4;
/// Pairs of services per variant, started one after another; the slices are shared out
/// among them.
const PAIRS_OF_SERVICES: usize = 4;
/// Pairs of services of a `--quick` run.
const QUICK_PAIRS_OF_SERVICES: usize = 1;
/// One slice's load.
const SLICE: Duration = Duration::from_secs(1);

impl Ctx {
    /// The paired telemetry-cost point: do-work warm at concurrency 8, SQLite.
    pub(super) async fn telemetry_paired(&self) -> anyhow::Result<Value> {
        let (base, bodies) = self.telemetry_users("paired.db").await?;
        let dead_port = crate::proc::free_port()?;
        let (slices, pairs_of_services) = if self.sizes.quick {
            (QUICK_SLICES, QUICK_PAIRS_OF_SERVICES)
        } else {
            (SLICES, PAIRS_OF_SERVICES)
        };
        let concurrency = 8;
        // Both services of a pair on the same CPU, so both halves of a pair ran where the
        // other did; the bench and its stand-ins on the others.
        let wrapper = if self.args.pin {
            super::telemetry::pin_apart().await?
        } else {
            Vec::new()
        };
        let start = |extra: Vec<(String, String)>| {
            let mut env = base.clone();
            env.extend(extra);
            let wrapper = wrapper.clone();
            async move { Service::start_wrapped(&wrapper, &env, &self.client).await }
        };
        let mut variants = Vec::new();
        // The sequential point's variants export metrics every second; Application Insights
        // once more at the SDK's default minute, as deployed: its export then falls outside
        // the slices, and the minute's export spread over a minute's calls is a sixtieth of
        // what the one-second variant shows for it.
        let as_deployed = (
            "app_insights_default_metrics_every_minute",
            vec![(
                "APPLICATIONINSIGHTS_CONNECTION_STRING".to_owned(),
                self.stack
                    .telemetry
                    .connection_string(super::telemetry::BENCH_INSTRUMENTATION_KEY),
            )],
        );
        // OTLP with Microsoft's rate-limited sampler (about five traces a second), which
        // OTLP-only deployments can name too: the OTLP point above traces every call.
        let otlp_sampled = (
            "otlp_collector_rate_limited_metrics_every_minute",
            vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    self.stack.telemetry.otlp_endpoint(),
                ),
                (
                    "OTEL_TRACES_SAMPLER".to_owned(),
                    "microsoft.rate_limited".to_owned(),
                ),
            ],
        );
        let settings = super::telemetry::variants(self, dead_port)
            .into_iter()
            .chain([as_deployed, otlp_sampled]);
        for (name, extra) in settings {
            // `none` against `none`: the control.
            let name = if name == "none" {
                "none (control)"
            } else {
                name
            };
            self.step(format!("do-work warm, telemetry {name} paired with none"));
            let mut excesses = Vec::with_capacity(slices);
            let mut per_call = [Vec::new(), Vec::new()];
            // Each half's user and system seconds and calls, over every slice.
            let mut split = [Split::default(), Split::default()];
            // Each pair of services is a new draw of what differs from one start to the next
            // (addresses, hash seeds, where the allocator puts things), which moves a pair's
            // figures by a point or two: several pairs, and the median over all their slices.
            let mut by_pair = Vec::with_capacity(pairs_of_services);
            for _ in 0..pairs_of_services {
                let mut this_pair = Vec::new();
                let services = [start(Vec::new()).await?, start(extra.clone()).await?];
                for service in &services {
                    self.do_work_load(service, &bodies, 1, Until::Calls(bodies.len()), true)
                        .await?;
                    self.do_work_load(service, &bodies, concurrency, Until::Elapsed(SLICE), false)
                        .await?;
                }
                for _ in 0..slices / pairs_of_services {
                    // A slice in which a thread ended (taking its run time with it) does not
                    // count.
                    if let Some(slice) = self
                        .side_by_side(&services, &bodies, concurrency, &mut split)
                        .await?
                    {
                        let excess = (slice[1] / slice[0] - 1.0) * 100.0;
                        excesses.push(excess);
                        this_pair.push(excess);
                        per_call[0].push(slice[0]);
                        per_call[1].push(slice[1]);
                    }
                }
                for service in services {
                    service.stop().await?;
                }
                by_pair.push(round(median(&this_pair), 1));
            }
            variants.push(summary(name, &excesses, &by_pair, &per_call, &split));
        }
        Ok(json!({
            "backend": "sqlite",
            "concurrency": concurrency,
            "slices": slices,
            "pairs_of_services": pairs_of_services,
            "slice_ms": SLICE.as_millis(),
            "pinned": self.args.pin,
            "variants": variants,
        }))
    }

    /// One slice: both `services` under load at once. Returns each one's CPU µs per call,
    /// `None` when a thread of either ended within the slice; adds each one's user and system
    /// seconds and calls to `split`.
    async fn side_by_side(
        &self,
        services: &[Service; 2],
        bodies: &Arc<Vec<String>>,
        concurrency: usize,
        split: &mut [Split; 2],
    ) -> anyhow::Result<Option<[f64; 2]>> {
        let load =
            |service| self.do_work_load(service, bodies, concurrency, Until::Elapsed(SLICE), false);
        let before = [snapshot(&services[0])?, snapshot(&services[1])?];
        let (none, exporter) = tokio::try_join!(load(&services[0]), load(&services[1]))?;
        let after = [snapshot(&services[0])?, snapshot(&services[1])?];
        let mut slice = [0.0; 2];
        for (which, requests) in [none.requests, exporter.requests].into_iter().enumerate() {
            let (before, after) = (&before[which], &after[which]);
            split[which].user += after.user_system[0] - before.user_system[0];
            split[which].system += after.user_system[1] - before.user_system[1];
            split[which].calls += requests;
            slice[which] = if after.run_ns > before.run_ns && requests > 0 {
                (after.run_ns - before.run_ns) as f64 / 1e3 / requests as f64
            } else {
                f64::NAN
            };
        }
        Ok(slice.iter().all(|s| s.is_finite()).then_some(slice))
    }
}

/// One half's user and system CPU seconds and its calls, summed over a variant's slices.
#[derive(Default)]
struct Split {
    user: f64,
    system: f64,
    calls: usize,
}

impl Split {
    /// User and system µs per call (from 10 ms ticks: coarse for one slice, fine summed over
    /// two dozen).
    fn us_per_call(&self) -> [f64; 2] {
        let calls = self.calls.max(1) as f64;
        [
            round(self.user * 1e6 / calls, 1),
            round(self.system * 1e6 / calls, 1),
        ]
    }
}

/// One variant's figures: the median excess of its slices and their quartiles, each pair of
/// services' median, the median CPU per call of each half, and each half's user and system
/// CPU per call over all its slices.
fn summary(
    name: &str,
    excesses: &[f64],
    by_pair: &[f64],
    per_call: &[Vec<f64>; 2],
    split: &[Split; 2],
) -> Value {
    json!({
        "exporter": name,
        "slices_counted": excesses.len(),
        "median_excess_percent_by_pair_of_services": by_pair,
        "median_excess_percent": round(median(excesses), 1),
        "quartiles_percent": [round(quantile(excesses, 0.25), 1), round(quantile(excesses, 0.75), 1)],
        "none_cpu_us_per_call": round(median(&per_call[0]), 1),
        "exporter_cpu_us_per_call": round(median(&per_call[1]), 1),
        "none_user_system_us_per_call": split[0].us_per_call(),
        "exporter_user_system_us_per_call": split[1].us_per_call(),
    })
}

/// The `q` quantile of `values`, the nearest rank (0 when empty).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n - 1) as f64 * q).round() as usize],
    }
}

/// A service's CPU so far: its live threads' run time, and its user and system seconds.
struct Snapshot {
    run_ns: u64,
    user_system: [f64; 2],
}

fn snapshot(service: &Service) -> anyhow::Result<Snapshot> {
    let pid = service.pid;
    Ok(Snapshot {
        run_ns: run_time_ns(pid)?,
        user_system: crate::proc::user_system_seconds(pid)
            .ok_or_else(|| anyhow::anyhow!("no /proc/{pid}/stat"))?,
    })
}

/// The run time of every live thread of `pid`, in nanoseconds (the first field of each
/// thread's `schedstat`).
fn run_time_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        // A thread may end between the listing and the read: it no longer counts.
        let Ok(stat) = std::fs::read_to_string(task?.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_ranks() {
        let values = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&values, 0.25), 2.0);
        assert_eq!(quantile(&values, 0.5), 3.0);
        assert_eq!(quantile(&values, 0.75), 4.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn this_process_has_run_time() {
        let spent = run_time_ns(std::process::id()).unwrap();
        assert!(spent > 0);
    }
}
