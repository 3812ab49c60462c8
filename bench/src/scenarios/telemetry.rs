//! What telemetry costs on the warm do-work path: service CPU per call with no exporter, with
//! an OTLP exporter sending to the stand-in collector, and with one pointed at a port where
//! nothing listens. The three services run one after another on the same SQLite database and
//! users, in rounds (none, collector, dead port, again), so the machine's drift spreads over
//! all three. On a shared 2-core host one sample of a variant moves by ±10 % against the next,
//! more than the 5 % being judged, so a full run takes six rounds and reports, besides the
//! excess of the means, the median of each round's excess over that round's `none`: the
//! variants of one round ran seconds apart, on the same machine state.
//! `--pin` runs the service on a CPU of its own and the bench on the others: the bench's load
//! then no longer lands on the service's core, which was most of a sample's spread here.

use std::sync::Arc;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::Ctx;
use crate::load::{median, round, Until};
use crate::proc::{self, Service};

/// The variants, by report name: the telemetry settings each adds.
pub(super) fn variants(ctx: &Ctx, dead_port: u16) -> [(&'static str, Vec<(String, String)>); 4] {
    // Metrics every second instead of every minute, so their export falls inside the point.
    let exporter = |variable: &str, value: String| {
        vec![
            (variable.to_owned(), value),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "1000".to_owned()),
        ]
    };
    let otlp = |endpoint| exporter("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    [
        ("none", Vec::new()),
        ("otlp_collector", otlp(ctx.stack.telemetry.otlp_endpoint())),
        (
            "otlp_dead_port",
            otlp(format!("https://127.0.0.1:{dead_port}")),
        ),
        // Its exporters' default sampler: about five traces a second.
        (
            "app_insights_default",
            exporter(
                "APPLICATIONINSIGHTS_CONNECTION_STRING",
                ctx.stack
                    .telemetry
                    .connection_string(BENCH_INSTRUMENTATION_KEY),
            ),
        ),
    ]
}

/// The instrumentation key of the stand-in Application Insights resource.
pub(super) const BENCH_INSTRUMENTATION_KEY: &str = "0e5c0de0-0000-4000-8000-0000000be7c0";

impl Ctx {
    /// The telemetry-cost point: do-work warm at concurrency 8, SQLite.
    pub(super) async fn telemetry_cost(&self) -> anyhow::Result<Value> {
        let (base, bodies) = self.telemetry_users("telemetry.db").await?;
        let dead_port = proc::free_port()?;
        let rounds = if self.sizes.quick { 1 } else { 6 };
        let concurrency = 8;
        // No wrapper (the service run as it is) unless pinned.
        let wrapper = if self.args.pin {
            pin_apart().await?
        } else {
            Vec::new()
        };
        let mut samples: Vec<Sample> = Vec::new();
        for round_number in 1..=rounds {
            // Each round starts with another variant: a variant that always ran first (or
            // last) in its round would carry whatever that position costs.
            let mut order = variants(self, dead_port);
            let first = (round_number - 1) % order.len();
            order.rotate_left(first);
            for (name, extra) in order {
                self.step(format!(
                    "do-work warm, telemetry {name}, round {round_number}"
                ));
                let mut env = base.clone();
                env.extend(extra);
                let service = Service::start_wrapped(&wrapper, &env, &self.client).await?;
                self.do_work_load(&service, &bodies, 1, Until::Calls(bodies.len()), true)
                    .await?;
                let point = self.sizes.point;
                let warmup = Until::Elapsed(
                    point
                        .mul_f64(0.2)
                        .min(std::time::Duration::from_millis(500)),
                );
                self.do_work_load(&service, &bodies, concurrency, warmup, false)
                    .await?;
                let cpu = service.cpu_seconds();
                let load = self
                    .do_work_load(&service, &bodies, concurrency, Until::Elapsed(point), false)
                    .await?;
                let cpu = service.cpu_seconds() - cpu;
                service.stop().await?;
                let per_call = cpu * 1e6 / load.requests.max(1) as f64;
                samples.push(Sample {
                    round: round_number,
                    variant: name,
                    cpu_us_per_call: per_call,
                    p50_ms: load.ms(0.5),
                });
            }
        }
        let names = variants(self, dead_port).map(|(name, _)| name);
        let mut summary = summary(&samples, &names, concurrency);
        summary["pinned"] = json!(self.args.pin);
        Ok(summary)
    }
}

/// Tries of `taskset` over this process's threads before `--pin` gives up.
const PIN_TRIES: usize = 5;

/// Moves every thread of this process (the bench and its stand-ins) off the last CPU, and
/// returns the wrapper that starts the service on it.
pub(super) async fn pin_apart() -> anyhow::Result<Vec<String>> {
    let cpus = std::thread::available_parallelism()?.get();
    anyhow::ensure!(
        cpus >= 2,
        "--pin needs two CPUs or more, this machine has {cpus}"
    );
    let last = cpus - 1;
    let others = if last == 1 {
        "0".to_owned()
    } else {
        format!("0-{}", last - 1)
    };
    // `-a`: every thread; threads started later inherit their starter's affinity. A thread
    // that ends between taskset's listing and its call (the runtime's blocking pool lets idle
    // threads go) fails the whole call with "No such process": the next try lists them again.
    for tried in 1.. {
        let status = tokio::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &others, &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .context("running taskset (util-linux) for --pin")?;
        if status.success() {
            break;
        }
        anyhow::ensure!(
            tried < PIN_TRIES,
            "taskset could not pin the bench in {PIN_TRIES} tries: {status}"
        );
    }
    Ok(vec![
        "taskset".to_owned(),
        "-c".to_owned(),
        last.to_string(),
    ])
}

impl Ctx {
    /// A SQLite database of warm users for the telemetry points: the service settings for
    /// it, and one do-work body per user.
    pub(super) async fn telemetry_users(
        &self,
        file: &str,
    ) -> anyhow::Result<(Vec<(String, String)>, Arc<Vec<String>>)> {
        self.step("SQLite, telemetry cost: seeding");
        let url = format!(
            "sqlite://{}?mode=rwc",
            self.temp.path().join(file).display()
        );
        let app = self.app(&url).await?;
        let users = self
            .seed(&app, self.sizes.warm_users, chrono::Utc::now())
            .await?;
        drop(app);
        Ok((self.env(&url), self.do_work_bodies(&users)))
    }
}

/// One variant's point in one round.
struct Sample {
    round: usize,
    variant: &'static str,
    cpu_us_per_call: f64,
    p50_ms: f64,
}

/// Per variant (`names`, in the order `variants` gives them): every sample, the mean, the
/// mean's excess over `none`, and the median of the rounds' excesses over their own `none`.
fn summary(samples: &[Sample], names: &[&str], concurrency: usize) -> Value {
    let mean = |name: &str, pick: fn(&Sample) -> f64| {
        let values: Vec<f64> = of(samples, name).map(pick).collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let baseline = mean("none", |s| s.cpu_us_per_call);
    let variants: Vec<Value> = names
        .iter()
        .map(|name| {
            let cpu = mean(name, |s| s.cpu_us_per_call);
            let rounds = round_excesses(samples, name);
            json!({
                "exporter": name,
                "service_cpu_us_per_call": round(cpu, 1),
                "samples_us_per_call": of(samples, name).map(|s| round(s.cpu_us_per_call, 1)).collect::<Vec<_>>(),
                "p50_ms": round(mean(name, |s| s.p50_ms), 3),
                "overhead_percent": round((cpu / baseline.max(0.001) - 1.0) * 100.0, 1),
                "round_overheads_percent": rounds.iter().map(|e| round(*e, 1)).collect::<Vec<_>>(),
                "median_round_overhead_percent": round(median(&rounds), 1),
            })
        })
        .collect();
    json!({ "backend": "sqlite", "concurrency": concurrency, "variants": variants })
}

/// The samples of variant `name`, round by round.
fn of<'a>(samples: &'a [Sample], name: &'a str) -> impl Iterator<Item = &'a Sample> {
    samples.iter().filter(move |s| s.variant == name)
}

/// Each round's excess of `name` over the same round's `none`, in percent.
fn round_excesses(samples: &[Sample], name: &str) -> Vec<f64> {
    of(samples, name)
        .filter_map(|s| {
            let none = of(samples, "none")
                .find(|n| n.round == s.round)?
                .cpu_us_per_call;
            Some((s.cpu_us_per_call / none.max(0.001) - 1.0) * 100.0)
        })
        .collect()
}
