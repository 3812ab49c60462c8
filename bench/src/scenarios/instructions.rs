//! What telemetry costs on the warm do-work path, counted in instructions instead of CPU
//! seconds. The service runs under `valgrind --tool=callgrind`, which counts from
//! `callgrind_control -i on` to a dump: a fixed number of warm calls one after another, then a
//! wait longer than the span processor's export delay, so that the export of every span those
//! calls made is counted too (all of the service's threads). Each variant runs on a database
//! of its own, seeded alike. For one binary and one input the count repeats to about 0.5 %,
//! where CPU time on this shared 2-core host moves ±10 % between samples of the same binary,
//! more than the 5 % being judged.
//!
//! What it leaves out: the kernel's share (about half of a warm call's CPU time here) and how
//! many instructions a cycle runs; telemetry's excess in CPU time has been larger than in
//! instructions (docs/PERFORMANCE.md), so the count complements the CPU point rather than
//! replacing it. Valgrind hides SHA-NI from the program, so the workload token's
//! cache key is hashed in software: the same in every variant. Needs valgrind; runs only when
//! named (`--only telemetry-instructions`), in about two minutes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::Ctx;
use crate::load::{round, Until};
use crate::proc::{self, Service};

/// Longer than the batch span processor's scheduled delay (5 s by default): the spans of the
/// last counted calls leave within the count.
const EXPORT_WAIT: Duration = Duration::from_secs(6);

/// The variants, by report name: the telemetry settings each adds. Metrics are exported at
/// the SDK's default interval (60 s), as in a deployment.
fn variants(ctx: &Ctx, dead_port: u16) -> Vec<(&'static str, Vec<(String, String)>)> {
    let collector = ctx.stack.telemetry.otlp_endpoint();
    let connection = ctx
        .stack
        .telemetry
        .connection_string(super::telemetry::BENCH_INSTRUMENTATION_KEY);
    let app_insights = |sampler: &[(&str, &str)]| {
        exporter(
            "APPLICATIONINSIGHTS_CONNECTION_STRING",
            &connection,
            sampler,
        )
    };
    let otlp = |endpoint: &str, sampler: &[(&str, &str)]| {
        exporter("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, sampler)
    };
    vec![
        ("none", Vec::new()),
        ("otlp_collector", otlp(&collector, &[])),
        (
            "otlp_collector_one_trace_in_ten",
            otlp(
                &collector,
                &[
                    ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
                ],
            ),
        ),
        (
            "otlp_collector_metrics_only",
            otlp(&collector, &[("OTEL_TRACES_SAMPLER", "always_off")]),
        ),
        (
            "otlp_dead_port",
            otlp(&format!("https://127.0.0.1:{dead_port}"), &[]),
        ),
        // Application Insights with every trace, and with none: its default (about five
        // traces a second) lies between, at the share of calls it keeps. Under callgrind a
        // call takes tens of milliseconds, so five a second would be a large share here and a
        // tiny one at a deployment's rates: the CPU-time point measures the default itself.
        (
            "app_insights_every_trace",
            app_insights(&[
                ("OTEL_TRACES_SAMPLER", "microsoft.fixed_percentage"),
                ("OTEL_TRACES_SAMPLER_ARG", "1"),
            ]),
        ),
        (
            "app_insights_metrics_only",
            app_insights(&[("OTEL_TRACES_SAMPLER", "always_off")]),
        ),
    ]
}

/// `variable=value` and the sampler settings.
fn exporter(variable: &str, value: &str, sampler: &[(&str, &str)]) -> Vec<(String, String)> {
    std::iter::once((variable, value))
        .chain(sampler.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

impl Ctx {
    /// Instructions per warm do-work call (SQLite, one call at a time) for each variant.
    pub(super) async fn telemetry_instructions(&self) -> anyhow::Result<Value> {
        let calls = if self.sizes.quick { 200 } else { 2000 };
        let dead_port = proc::free_port()?;
        let mut counted = Vec::new();
        for (name, extra) in variants(self, dead_port) {
            // A database of its own: the calls' access history grows it, and a shared one
            // would charge each variant for the ones before it.
            let (base, bodies) = self
                .telemetry_users(&format!("instructions-{name}.db"))
                .await?;
            self.step(format!("do-work warm under callgrind, telemetry {name}"));
            let out = self.temp.path().join(format!("callgrind.{name}"));
            let wrapper = [
                "valgrind".to_owned(),
                "--tool=callgrind".to_owned(),
                "--instr-atstart=no".to_owned(),
                format!("--callgrind-out-file={}", out.display()),
            ];
            let mut env = base.clone();
            env.extend(extra);
            let service = Service::start_wrapped(&wrapper, &env, &self.client).await?;
            // Twice over every user: tokens cached, connections open, code paths warm.
            let warm_up = Until::Calls(2 * bodies.len());
            self.do_work_load(&service, &bodies, 1, warm_up, true)
                .await?;
            callgrind_control(&["-i", "on"], service.pid).await?;
            self.do_work_load(&service, &bodies, 1, Until::Calls(calls), true)
                .await?;
            tokio::time::sleep(EXPORT_WAIT).await;
            callgrind_control(&["-d"], service.pid).await?;
            let instructions = dumped_instructions(&out).await?;
            service.stop().await?;
            counted.push((name, instructions as f64 / calls as f64));
        }
        Ok(summary(&counted, calls))
    }
}

/// Runs `callgrind_control <args> <pid>`.
async fn callgrind_control(args: &[&str], pid: u32) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .await
        .context("running callgrind_control (is valgrind installed?)")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The instructions counted in the first dump of `out` (`<out>.1`), once it is written.
async fn dumped_instructions(out: &Path) -> anyhow::Result<u64> {
    let mut dump = PathBuf::from(out);
    dump.as_mut_os_string().push(".1");
    for _ in 0..300 {
        if let Ok(text) = tokio::fs::read_to_string(&dump).await {
            let totals = text.lines().find_map(|line| {
                line.strip_prefix("totals:")
                    .or_else(|| line.strip_prefix("summary:"))
            });
            if let Some(count) = totals {
                return count
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("no instruction count in {}", dump.display()));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("callgrind wrote no dump at {}", dump.display())
}

/// Per variant: instructions per call and the excess over `none`.
fn summary(counted: &[(&str, f64)], calls: usize) -> Value {
    let none = counted
        .iter()
        .find(|(name, _)| *name == "none")
        .map_or(1.0, |(_, per_call)| *per_call);
    let variants: Vec<Value> = counted
        .iter()
        .map(|(name, per_call)| {
            json!({
                "exporter": name,
                "instructions_per_call": per_call.round(),
                "overhead_percent": round((per_call / none.max(1.0) - 1.0) * 100.0, 1),
            })
        })
        .collect();
    json!({
        "backend": "sqlite",
        "concurrency": 1,
        "calls": calls,
        "variants": variants,
    })
}
