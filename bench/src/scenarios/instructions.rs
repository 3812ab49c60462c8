//! What telemetry costs on the warm do-work path, counted in instructions instead of CPU
//! seconds. The service runs under `valgrind --tool=callgrind`, which counts from
//! `callgrind_control -i on` to a dump: a fixed number of warm calls one after another, then a
//! wait longer than the span processor's export delay, so that the export of every span those
//! calls made is counted too (all of the service's threads). Each variant runs on a database
//! of its own, seeded alike. For one binary and one input the count repeats to about ±1 %
//! (the SQLite statements and the runtime's wake-ups differ with timing), where CPU time on
//! this shared 2-core host moves ±10 % between samples of the same binary, more than the 5 %
//! being judged; each variant is counted in three rounds and the median reported.
//!
//! What it leaves out: the kernel's share (about half of a warm call's CPU time here) and how
//! many instructions a cycle runs; telemetry's excess in CPU time has been larger than in
//! instructions (docs/PERFORMANCE.md), so the count complements the CPU point rather than
//! replacing it. Valgrind hides SHA-NI from the program, so the workload token's
//! cache key is hashed in software: the same in every variant. Needs valgrind; runs only when
//! named (`--only telemetry-instructions`), in about twelve minutes (three rounds of seven
//! variants; one round with `--quick`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use super::Ctx;
use crate::load::{median, round, Until};
use crate::proc::{self, Service};

/// Rounds of every variant in a full run: a variant's ±1 % is a fifth of the 5 % being
/// judged, and the median of three rounds is steadier than one count.
const ROUNDS: usize = 3;

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
    /// Instructions per warm do-work call (SQLite, one call at a time) for each variant, over
    /// [`ROUNDS`] rounds (one when quick), each visiting the variants from a different one.
    pub(super) async fn telemetry_instructions(&self) -> anyhow::Result<Value> {
        let (calls, rounds) = if self.sizes.quick {
            (200, 1)
        } else {
            (2000, ROUNDS)
        };
        let dead_port = proc::free_port()?;
        let variants = variants(self, dead_port);
        let mut counted: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        for round in 0..rounds {
            for index in (0..variants.len()).map(|i| (i + round) % variants.len()) {
                let (name, extra) = &variants[index];
                let per_call = self.count_variant(name, extra, calls, round).await?;
                counted[index].push(per_call);
            }
        }
        let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
        Ok(summary(&names, &counted, calls))
    }

    /// One variant's instructions per call, counted once.
    async fn count_variant(
        &self,
        name: &str,
        extra: &[(String, String)],
        calls: usize,
        round: usize,
    ) -> anyhow::Result<f64> {
        // A database of its own: the calls' access history grows it, and a shared one would
        // charge each variant for the ones before it.
        let (base, bodies) = self
            .telemetry_users(&format!("instructions-{name}-{round}.db"))
            .await?;
        self.step(format!(
            "do-work warm under callgrind, telemetry {name}, round {}",
            round + 1
        ));
        let out = self.temp.path().join(format!("callgrind.{name}.{round}"));
        let wrapper = [
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            "--instr-atstart=no".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let mut env = base;
        env.extend(extra.iter().cloned());
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
        Ok(instructions as f64 / calls as f64)
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

/// Per variant: the median of its rounds' instructions per call, the excess of that median
/// over `none`'s, and each round's count.
fn summary(names: &[&str], counted: &[Vec<f64>], calls: usize) -> Value {
    let medians: Vec<f64> = counted.iter().map(|rounds| median(rounds)).collect();
    let none = names
        .iter()
        .position(|name| *name == "none")
        .map_or(1.0, |index| medians[index]);
    let variants: Vec<Value> = names
        .iter()
        .zip(counted)
        .zip(&medians)
        .map(|((name, rounds), per_call)| {
            json!({
                "exporter": name,
                "instructions_per_call": per_call.round(),
                "overhead_percent": round((per_call / none.max(1.0) - 1.0) * 100.0, 1),
                "rounds": rounds.iter().map(|n| n.round()).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "backend": "sqlite",
        "concurrency": 1,
        "calls": calls,
        "rounds": counted.first().map_or(0, Vec::len),
        "variants": variants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_excess_is_of_medians_over_the_rounds() {
        let names = ["none", "otlp_collector"];
        let counted = vec![vec![400.0, 410.0, 390.0], vec![500.0, 420.0, 440.0]];
        let summary = summary(&names, &counted, 10);
        let variants = summary["variants"].as_array().unwrap();
        assert_eq!(variants[0]["instructions_per_call"], 400.0);
        assert_eq!(variants[1]["instructions_per_call"], 440.0);
        assert_eq!(variants[1]["overhead_percent"], 10.0);
        assert_eq!(variants[1]["rounds"], json!([500.0, 420.0, 440.0]));
        assert_eq!(summary["rounds"], 3);
    }
}
