//! do-work warm with two named downstreams (`OBOVAULT_DOWNSTREAMS=graph,crm-api`): every user's
//! calls alternate between the two APIs, each with its own cached access token. One point at
//! the smallest concurrency, on SQLite, next to the single-downstream points.

use serde_json::{json, Value};

use super::Ctx;
use crate::load::{round, Until};
use crate::proc::Service;

/// The second API's audience.
pub(super) const CRM_RESOURCE: &str = "https://crm.obo-vault.test";

impl Ctx {
    /// The two-downstream warm point.
    pub(super) async fn two_downstreams(&self) -> anyhow::Result<Value> {
        self.step("SQLite, two downstreams: seeding");
        let url = format!(
            "sqlite://{}?mode=rwc",
            self.temp.path().join("two-downstreams.db").display()
        );
        let mut env = self.env(&url);
        env.retain(|(name, _)| {
            !name.starts_with("OBOVAULT_DOWNSTREAM_") || name == "OBOVAULT_DOWNSTREAM_TIMEOUT"
        });
        env.extend(
            self.stack
                .named_downstreams_env(&["graph", "crm-api"], "/me"),
        );
        let settings = obo_vault::config::Settings::from_env(&obo_vault::config::Env::from_pairs(
            env.clone(),
        ))?;
        let app = obo_vault::app::App::build(settings).await?;
        let users = self
            .seed(&app, self.sizes.warm_users, chrono::Utc::now())
            .await?;
        let service = Service::start(&env, &self.client).await?;
        let bodies = std::sync::Arc::new(
            users
                .iter()
                .flat_map(|oid| {
                    ["graph", "crm-api"].map(|downstream| {
                        json!({
                            "tenantId": self.tenant,
                            "userId": oid,
                            "downstream": downstream,
                            "request": { "method": "GET", "path": "/me" }
                        })
                        .to_string()
                    })
                })
                .collect::<Vec<_>>(),
        );
        // Warm every (user, downstream) token.
        self.do_work_load(&service, &bodies, 1, Until::Calls(bodies.len()), true)
            .await?;
        let concurrency = self.sizes.concurrency.first().copied().unwrap_or(1);
        self.step(format!(
            "do-work warm, two downstreams, concurrency {concurrency}"
        ));
        let point = self.sizes.point;
        let warmup = Until::Elapsed(
            point
                .mul_f64(0.2)
                .min(std::time::Duration::from_millis(500)),
        );
        self.do_work_load(&service, &bodies, concurrency, warmup, false)
            .await?;
        let entra = self.stack.entra.stats().refresh_grants;
        let cpu = service.cpu_seconds();
        // By call: consecutive calls alternate between the two downstreams.
        let ours = self
            .do_work_load(&service, &bodies, concurrency, Until::Elapsed(point), true)
            .await?;
        let cpu = service.cpu_seconds() - cpu;
        let entra = self.stack.entra.stats().refresh_grants - entra;
        service.stop().await?;
        drop(app);
        Ok(json!({
            "backend": "sqlite",
            "downstreams": 2,
            "concurrency": concurrency,
            "ours": ours.json(),
            "service_cpu_us_per_call": round(cpu * 1e6 / ours.requests.max(1) as f64, 0),
            "entra_calls": entra,
        }))
    }
}
