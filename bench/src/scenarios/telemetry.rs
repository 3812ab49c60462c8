//! What telemetry costs on the warm do-work path: service CPU per call with no exporter, with
//! an OTLP exporter sending to the stand-in collector, and with one pointed at a port where
//! nothing listens. The three services run one after another on the same SQLite database and
//! users, in rounds (none, collector, dead port, again), so the machine's drift spreads over
//! all three.

use serde_json::{json, Value};

use super::Ctx;
use crate::load::{round, Until};
use crate::proc::Service;

/// The variants, by report name: the telemetry settings each adds.
fn variants(ctx: &Ctx, dead_port: u16) -> [(&'static str, Vec<(String, String)>); 3] {
    // Metrics every second instead of every minute, so their export falls inside the point.
    let otlp = |endpoint: String| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "1000".to_owned()),
        ]
    };
    [
        ("none", Vec::new()),
        ("otlp_collector", otlp(ctx.stack.telemetry.otlp_endpoint())),
        (
            "otlp_dead_port",
            otlp(format!("https://127.0.0.1:{dead_port}")),
        ),
    ]
}

impl Ctx {
    /// The telemetry-cost point: do-work warm at concurrency 8, SQLite.
    pub(super) async fn telemetry_cost(&self) -> anyhow::Result<Value> {
        self.step("SQLite, telemetry cost: seeding");
        let url = format!(
            "sqlite://{}?mode=rwc",
            self.temp.path().join("telemetry.db").display()
        );
        let base = self.env(&url);
        let app = self.app(&url).await?;
        let users = self
            .seed(&app, self.sizes.warm_users, chrono::Utc::now())
            .await?;
        drop(app);
        let bodies = self.do_work_bodies(&users);
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let rounds = if self.sizes.quick { 1 } else { 2 };
        let concurrency = 8;
        let mut samples: Vec<(&str, f64, f64)> = Vec::new();
        for round_number in 1..=rounds {
            for (name, extra) in variants(self, dead_port) {
                self.step(format!(
                    "do-work warm, telemetry {name}, round {round_number}"
                ));
                let mut env = base.clone();
                env.extend(extra);
                let service = Service::start(&env, &self.client).await?;
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
                samples.push((name, per_call, load.ms(0.5)));
            }
        }
        Ok(summary(&samples, concurrency))
    }
}

/// Per variant: every sample, the mean, and the mean's excess over `none`.
fn summary(samples: &[(&str, f64, f64)], concurrency: usize) -> Value {
    let mean = |name: &str, pick: fn(&(&str, f64, f64)) -> f64| {
        let values: Vec<f64> = samples.iter().filter(|s| s.0 == name).map(pick).collect();
        values.iter().sum::<f64>() / values.len().max(1) as f64
    };
    let baseline = mean("none", |s| s.1);
    let variants: Vec<Value> = ["none", "otlp_collector", "otlp_dead_port"]
        .iter()
        .map(|name| {
            let cpu = mean(name, |s| s.1);
            json!({
                "exporter": name,
                "service_cpu_us_per_call": round(cpu, 1),
                "samples_us_per_call": samples.iter().filter(|s| s.0 == *name).map(|s| round(s.1, 1)).collect::<Vec<_>>(),
                "p50_ms": round(mean(name, |s| s.2), 3),
                "overhead_percent": round((cpu / baseline.max(0.001) - 1.0) * 100.0, 1),
            })
        })
        .collect();
    json!({ "backend": "sqlite", "concurrency": concurrency, "variants": variants })
}
