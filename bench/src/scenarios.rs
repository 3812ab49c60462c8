//! The scenarios: do-work (warm and cold), setup, start-up, refresh-tokens and re-seal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use emulators::{AppTokenSpec, Stack, StackOptions, UserTokenSpec};
use futures::{StreamExt as _, TryStreamExt as _};
use obo_vault::app::App;
use obo_vault::config::{Env, Settings};
use obo_vault::domain::{RefreshToken, TenantId, UserId, UserKey};
use serde_json::{json, Value};

mod instructions;
mod paired;
mod telemetry;
mod two_apis;

use crate::load::{self, median, round, Until};
use crate::package::Packaged;
use crate::proc::{self, Service};
use crate::{report, Args, Sizes};

/// A workload app id with the role (any GUID: the emulator signs what it is asked).
const WORKLOAD_APP_ID: &str = "7e57c0de-0000-4000-8000-0000000be4c4";

struct Ctx {
    args: Args,
    sizes: Sizes,
    stack: Arc<Stack>,
    client: reqwest::Client,
    admin: sqlx::PgPool,
    databases: std::sync::Mutex<Vec<String>>,
    temp: tempfile::TempDir,
    tenant: String,
    workload_token: Arc<str>,
    bar: indicatif::ProgressBar,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let sizes = args.sizes();
    proc::build_service()?;
    proc::service_binary()?;
    let stack = Arc::new(
        Stack::start(StackOptions {
            extra_downstreams: vec![two_apis::CRM_RESOURCE.to_owned()],
            ..StackOptions::default()
        })
        .await?,
    );
    let ca = std::fs::read(stack.ca_pem_path())?;
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca)?)
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(60))
        .build()?;
    let admin = sqlx::PgPool::connect(args.postgres())
        .await
        .with_context(|| format!("Postgres at {} does not answer", args.postgres()))?;
    let tenant = stack.options().tenant_id.clone();
    let workload_token = stack
        .entra
        .mint_app_token(&AppTokenSpec::new(
            &tenant,
            WORKLOAD_APP_ID,
            vec!["OboVault.Act".into()],
        ))
        .into();
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let ctx = Ctx {
        sizes,
        stack,
        client,
        admin,
        databases: std::sync::Mutex::new(Vec::new()),
        temp: tempfile::Builder::new().prefix("obo-bench-").tempdir()?,
        tenant,
        workload_token,
        bar,
        args,
    };
    let result = ctx.all().await;
    ctx.bar.finish_and_clear();
    ctx.drop_databases().await;
    let mut report = result?;
    report::finish(&mut report, &ctx.sizes);
    report::print(&report);
    let path = ctx.args.report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("\nreport written to {}", path.display());
    Ok(())
}

impl Ctx {
    fn step(&self, message: impl Into<String>) {
        let message = message.into();
        if self.bar.is_hidden() {
            eprintln!("obo-bench: {message}");
        }
        self.bar.set_message(message);
    }

    async fn all(&self) -> anyhow::Result<Value> {
        let mut report = json!({
            "generated_at": chrono::Utc::now().to_rfc3339(),
            "mode": if self.sizes.quick { "quick" } else { "full" },
            "machine": proc::machine(),
        });
        let mut warm = Vec::new();
        if self.args.wants("do-work")
            || self.args.wants("cold")
            || self.args.wants("setup")
            || self.args.wants("startup")
        {
            self.postgres_http(&mut report, &mut warm).await?;
        }
        if self.args.wants("do-work") {
            self.sqlite_http(&mut warm).await?;
            report["do_work_warm"] = Value::Array(warm);
            report["do_work_warm_two_downstreams"] = self.two_downstreams().await?;
        }
        if self.args.wants("refresh") || self.args.wants("reseal") {
            self.timer(&mut report).await?;
        }
        if self.args.wants("telemetry") {
            report["do_work_warm_telemetry"] = self.telemetry_cost().await?;
        }
        if self.args.names("telemetry-instructions") {
            report["do_work_warm_telemetry_instructions"] = self.telemetry_instructions().await?;
        }
        if self.args.names("telemetry-paired") {
            report["do_work_warm_telemetry_paired"] = self.telemetry_paired().await?;
        }
        Ok(report)
    }

    async fn postgres_database(&self) -> anyhow::Result<String> {
        let name = format!("obo_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&self.admin)
            .await?;
        self.databases.lock().unwrap().push(name.clone());
        let base = self
            .args
            .postgres()
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .context("the Postgres URL needs a database path")?;
        Ok(format!("{base}/{name}"))
    }

    async fn drop_databases(&self) {
        let names = std::mem::take(&mut *self.databases.lock().unwrap());
        for name in names {
            if let Err(error) = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&self.admin)
                .await
            {
                eprintln!("obo-bench: could not drop database {name}: {error}");
            }
        }
    }

    /// The service's settings for `database_url`.
    fn env(&self, database_url: &str) -> Vec<(String, String)> {
        let mut env = self.stack.service_env();
        env.retain(|(name, _)| name != "OBOVAULT_DOWNSTREAM_ALLOWED_PATHS");
        env.extend(
            [
                ("DATABASE_URL", database_url),
                ("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "/me"),
                // As under the Functions host: JSON lines on stdout.
                ("OBOVAULT_LOG_FORMAT", "json"),
                ("OBOVAULT_REFRESH_TIME_BUDGET", "1800s"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        if let Ok(filter) = std::env::var("BENCH_SERVICE_LOG") {
            env.push(("RUST_LOG".into(), filter));
        }
        env
    }

    /// The service built in this process, for seeding and key rotation only.
    async fn app(&self, database_url: &str) -> anyhow::Result<Arc<App>> {
        let settings = Settings::from_env(&Env::from_pairs(self.env(database_url)))?;
        App::build(settings).await
    }

    fn owner(&self, oid: &str) -> anyhow::Result<UserKey> {
        Ok(UserKey {
            tenant_id: TenantId::parse(&self.tenant).map_err(|e| anyhow::anyhow!("{e}"))?,
            user_id: UserId::parse(oid).map_err(|e| anyhow::anyhow!("{e}"))?,
        })
    }

    /// Seeds `count` connected users (Entra pre-issues their refresh tokens, the service's own
    /// sealing and store write them), refreshed at `refreshed_at`. Not timed.
    async fn seed(
        &self,
        app: &Arc<App>,
        count: usize,
        refreshed_at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<Vec<String>> {
        let oids: Vec<String> = (0..count)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let tokens = self.stack.entra.issue_refresh_tokens(&self.tenant, &oids);
        let tenant = TenantId::parse(&self.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
        let key = app.keys.latest(&app.key_settings.key_name(&tenant)).await?;
        let done = std::sync::atomic::AtomicUsize::new(0);
        futures::stream::iter(oids.iter().zip(tokens))
            .map(|(oid, token)| {
                let (key, done) = (&key, &done);
                async move {
                    let owner = self.owner(oid)?;
                    let label = obo_vault::crypto::KeyLabel {
                        name: &key.name,
                        version: &key.version,
                    };
                    let sealed = obo_vault::crypto::seal(
                        &RefreshToken::new(token),
                        &owner,
                        label,
                        &key.key,
                    )?;
                    let grant = obo_vault::store::SealedGrant {
                        sealed_refresh_token: sealed,
                        key_name: key.name.clone(),
                        key_version: key.version.clone(),
                    };
                    app.store
                        .connect(&owner, &grant, "User.Read", refreshed_at)
                        .await?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n % 5000 == 0 {
                        self.step(format!("seeding: {n}/{count} rows"));
                    }
                    anyhow::Ok(())
                }
            })
            .buffer_unordered(32)
            .try_collect::<()>()
            .await?;
        Ok(oids)
    }

    /// An access token for the downstream API, as the service would hold it (for the floor).
    async fn downstream_token(&self) -> anyhow::Result<String> {
        let oid = uuid::Uuid::new_v4().to_string();
        let refresh = self
            .stack
            .entra
            .issue_refresh_tokens(&self.tenant, std::slice::from_ref(&oid))
            .remove(0);
        let options = self.stack.options();
        let answer: Value = self
            .client
            .post(self.stack.entra.token_endpoint(&self.tenant))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", options.client_id.as_str()),
                ("client_secret", options.client_secret.as_str()),
                ("refresh_token", refresh.as_str()),
                (
                    "scope",
                    &format!("{}/.default offline_access", options.downstream_resource),
                ),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token from the Entra emulator")
    }

    fn do_work_bodies(&self, users: &[String]) -> Arc<Vec<String>> {
        Arc::new(
            users
                .iter()
                .map(|oid| {
                    json!({
                        "tenantId": self.tenant,
                        "userId": oid,
                        "request": { "method": "GET", "path": "/me" }
                    })
                    .to_string()
                })
                .collect(),
        )
    }

    /// Closed-loop do-work load over `bodies` (worker `w` uses body `w % len`, or call `n`
    /// uses body `n` with `by_call`).
    async fn do_work_load(
        &self,
        service: &Service,
        bodies: &Arc<Vec<String>>,
        concurrency: usize,
        until: Until,
        by_call: bool,
    ) -> anyhow::Result<load::Load> {
        let client = self.client.clone();
        let url: Arc<str> = format!("{}/api/do-work", service.url).into();
        let token = Arc::clone(&self.workload_token);
        let bodies = Arc::clone(bodies);
        load::run(concurrency, until, move |worker, n| {
            let index = if by_call { n } else { worker } % bodies.len();
            let request = client
                .post(&*url)
                .bearer_auth(&*token)
                .header("content-type", "application/json")
                .body(bodies[index].clone());
            async move {
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if status != 200 || !contains(&body, b"\"status\":200") {
                    bail!(
                        "do-work answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                Ok(())
            }
        })
        .await
    }

    /// The floor: the same client calling the downstream emulator directly.
    async fn direct_load(
        &self,
        token: &str,
        concurrency: usize,
        until: Until,
    ) -> anyhow::Result<load::Load> {
        let client = self.client.clone();
        let url: Arc<str> = format!("{}/me", self.stack.downstream.base_url()).into();
        let token: Arc<str> = token.into();
        load::run(concurrency, until, move |_, _| {
            let request = client.get(&*url).bearer_auth(&*token);
            async move {
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if status != 200 {
                    bail!(
                        "downstream answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                Ok(())
            }
        })
        .await
    }

    /// do-work warm at each concurrency, ours next to the floor.
    async fn warm_points(
        &self,
        backend: &str,
        service: &Service,
        users: &[String],
        out: &mut Vec<Value>,
    ) -> anyhow::Result<()> {
        let bodies = self.do_work_bodies(users);
        // Warm every user's access token.
        self.do_work_load(service, &bodies, 1, Until::Calls(bodies.len()), true)
            .await?;
        let direct_token = self.downstream_token().await?;
        let point = self.sizes.point;
        let warmup = Until::Elapsed(point.mul_f64(0.2).min(Duration::from_millis(500)));
        for &concurrency in &self.sizes.concurrency {
            self.step(format!(
                "do-work warm, {backend}, concurrency {concurrency}"
            ));
            self.direct_load(&direct_token, concurrency, warmup).await?;
            let direct = self
                .direct_load(&direct_token, concurrency, Until::Elapsed(point))
                .await?;
            self.do_work_load(service, &bodies, concurrency, warmup, false)
                .await?;
            let cpu = service.cpu_seconds();
            let entra = self.stack.entra.stats().refresh_grants;
            let ours = self
                .do_work_load(service, &bodies, concurrency, Until::Elapsed(point), false)
                .await?;
            let cpu = service.cpu_seconds() - cpu;
            let entra = self.stack.entra.stats().refresh_grants - entra;
            out.push(json!({
                "backend": backend,
                "concurrency": concurrency,
                "direct": direct.json(),
                "ours": ours.json(),
                "overhead_p50_ms": round(ours.ms(0.5) - direct.ms(0.5), 3),
                "overhead_p90_ms": round(ours.ms(0.9) - direct.ms(0.9), 3),
                "overhead_p99_ms": round(ours.ms(0.99) - direct.ms(0.99), 3),
                "ratio_p50": round(ours.ms(0.5) / direct.ms(0.5).max(0.001), 2),
                "ratio_p99": round(ours.ms(0.99) / direct.ms(0.99).max(0.001), 2),
                "service_cpu_us_per_call": round(cpu * 1e6 / ours.requests.max(1) as f64, 0),
                "entra_calls": entra,
            }));
        }
        Ok(())
    }

    /// Postgres: do-work warm, cold vs ours, setup, start-up.
    async fn postgres_http(&self, report: &mut Value, warm: &mut Vec<Value>) -> anyhow::Result<()> {
        self.step("Postgres: seeding");
        let url = self.postgres_database().await?;
        let app = self.app(&url).await?;
        let env = self.env(&url);
        let users = self
            .seed(&app, self.sizes.warm_users, chrono::Utc::now())
            .await?;
        let service = Service::start(&env, &self.client).await?;
        if self.args.wants("do-work") {
            self.warm_points("postgres", &service, &users, warm).await?;
        }
        if self.args.wants("cold") {
            report["do_work_cold"] = self.cold(&app, &service).await?;
        }
        if self.args.wants("setup") {
            report["setup"] = self.setup(&service).await?;
        }
        let rss = service.peak_rss_kib();
        service.stop().await?;
        report["service_peak_rss_mib"] = json!(round(rss as f64 / 1024.0, 1));
        if self.args.wants("startup") {
            report["startup"] = self.startup(&env).await?;
        }
        Ok(())
    }

    async fn sqlite_http(&self, warm: &mut Vec<Value>) -> anyhow::Result<()> {
        self.step("SQLite: seeding");
        let url = format!(
            "sqlite://{}?mode=rwc",
            self.temp.path().join("bench.db").display()
        );
        let app = self.app(&url).await?;
        let users = self
            .seed(&app, self.sizes.warm_users, chrono::Utc::now())
            .await?;
        let service = Service::start(&self.env(&url), &self.client).await?;
        self.warm_points("sqlite", &service, &users, warm).await?;
        service.stop().await?;
        drop(app);
        Ok(())
    }

    /// A refresh on every call (each call names a user with no cached token: what the
    /// original design pays on every call) against ours (one user, cache warm after the first).
    async fn cold(&self, app: &Arc<App>, service: &Service) -> anyhow::Result<Value> {
        let calls = self.sizes.cold_calls;
        let concurrency = 8;
        self.step(format!("do-work cold: {calls} calls"));
        let users = self.seed(app, calls, chrono::Utc::now()).await?;
        let bodies = self.do_work_bodies(&users);
        let before = self.stack.entra.stats().refresh_grants;
        let cold = self
            .do_work_load(service, &bodies, concurrency, Until::Calls(calls), true)
            .await?;
        let cold_entra = self.stack.entra.stats().refresh_grants - before;

        // Always 1,000 calls: the target is per 1,000 calls, and warm calls are cheap.
        let warm_calls = 1000;
        let one = self.seed(app, 1, chrono::Utc::now()).await?;
        let bodies = self.do_work_bodies(&one);
        let before = self.stack.entra.stats().refresh_grants;
        let ours = self
            .do_work_load(
                service,
                &bodies,
                concurrency,
                Until::Calls(warm_calls),
                true,
            )
            .await?;
        let ours_entra = self.stack.entra.stats().refresh_grants - before;
        let per_1000 = |n: u64, calls: usize| round(n as f64 * 1000.0 / calls as f64, 1);
        Ok(json!([
            {
                "case": "refresh on every call (original design)",
                "calls": calls,
                "entra_calls": cold_entra,
                "entra_calls_per_1000": per_1000(cold_entra, calls),
                "load": cold.json(),
            },
            {
                "case": "ours: one user, cache cold at the first call only",
                "calls": warm_calls,
                "entra_calls": ours_entra,
                "entra_calls_per_1000": per_1000(ours_entra, warm_calls),
                "load": ours.json(),
            }
        ]))
    }

    async fn setup(&self, service: &Service) -> anyhow::Result<Value> {
        let calls = self.sizes.setup_calls;
        self.step(format!("setup: {calls} calls"));
        let tokens: Arc<Vec<String>> = Arc::new(
            (0..calls)
                .map(|_| {
                    let oid = uuid::Uuid::new_v4().to_string();
                    self.stack
                        .entra
                        .mint_user_token(&UserTokenSpec::new(&self.tenant, &oid))
                })
                .collect(),
        );
        let client = self.client.clone();
        let url: Arc<str> = format!("{}/api/setup", service.url).into();
        let before = self.stack.entra.stats().obo_grants;
        let cpu = service.cpu_seconds();
        let load = load::run(8, Until::Calls(calls), move |_, n| {
            let request = client.post(&*url).bearer_auth(&tokens[n]);
            async move {
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if status != 201 {
                    bail!(
                        "setup answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                Ok(())
            }
        })
        .await?;
        let cpu = service.cpu_seconds() - cpu;
        Ok(json!({
            "load": load.json(),
            "entra_obo_grants": self.stack.entra.stats().obo_grants - before,
            "service_cpu_us_per_call": round(cpu * 1e6 / calls as f64, 0),
        }))
    }

    /// Spawn to ready of the packaged binary (`scripts/package`, unzipped, started as the host
    /// starts it): on the migrated database of `env`, and on fresh databases.
    async fn startup(&self, env: &[(String, String)]) -> anyhow::Result<Value> {
        let reps = self.sizes.startup_reps;
        self.step("start-up: packaging the service");
        let package = Packaged::build(&proc::service_binary()?)?;
        self.step("start-up");
        let mut migrated = Vec::new();
        let mut fresh = Vec::new();
        for _ in 0..reps {
            let service = Service::start_packaged(&package, env, &self.client).await?;
            migrated.push(service.ready_after.as_secs_f64() * 1000.0);
            service.stop().await?;
            let url = self.postgres_database().await?;
            let service = Service::start_packaged(&package, &self.env(&url), &self.client).await?;
            fresh.push(service.ready_after.as_secs_f64() * 1000.0);
            service.stop().await?;
        }
        let stats = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            json!({
                "runs_ms": v.iter().map(|x| round(*x, 1)).collect::<Vec<_>>(),
                "median_ms": round(median(&v), 1),
                "max_ms": round(v[v.len() - 1], 1),
            })
        };
        Ok(json!({
            "migrated": stats(migrated),
            "fresh": stats(fresh),
            "package": {
                "zip_mib": round(package.zip_bytes as f64 / 1_048_576.0, 1),
                "binary_mib": round(package.binary_bytes as f64 / 1_048_576.0, 1),
            },
        }))
    }

    /// refresh-tokens at each size and concurrency, then re-seal only on the largest. Each size
    /// and concurrency also runs with Entra at zero latency first: what the whole machine can
    /// do, a bound no latency can lift.
    async fn timer(&self, report: &mut Value) -> anyhow::Result<()> {
        let latency = self.sizes.entra_latency;
        let mut runs = Vec::new();
        let mut capacity = Vec::new();
        let mut table_sizes = Vec::new();
        let sizes = if self.args.wants("refresh") {
            self.sizes.refresh_rows.clone()
        } else {
            vec![self.sizes.reseal_rows]
        };
        for rows in sizes {
            self.step(format!("refresh-tokens: seeding {rows} rows"));
            let url = self.postgres_database().await?;
            let app = self.app(&url).await?;
            let mut env = self.env(&url);
            let aged = chrono::Utc::now() - chrono::Duration::hours(48);
            self.seed(&app, rows, aged).await?;
            let pool = sqlx::PgPool::connect(&url).await?;
            sqlx::query("VACUUM ANALYZE user_tokens")
                .execute(&pool)
                .await?;
            // What a row costs on disk (table, TOAST and indexes), for sizing the server.
            let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('user_tokens')")
                .fetch_one(&pool)
                .await?;
            table_sizes.push(json!({
                "rows": rows,
                "total_mib": round(bytes as f64 / 1_048_576.0, 1),
                "bytes_per_row": (bytes as f64 / rows as f64).round(),
            }));
            if self.args.wants("refresh") {
                let mut points = Vec::new();
                if !latency.is_zero() {
                    points.extend(
                        self.sizes
                            .refresh_concurrency
                            .iter()
                            .map(|&c| (c, Duration::ZERO)),
                    );
                }
                points.extend(self.sizes.refresh_concurrency.iter().map(|&c| (c, latency)));
                // Users per second with Entra at zero latency, by concurrency, for this size.
                let mut capacity_at = HashMap::new();
                for (i, (concurrency, latency)) in points.into_iter().enumerate() {
                    if i > 0 {
                        age_every_row(&pool).await?;
                    }
                    let capacity_here = capacity_at.get(&concurrency).copied();
                    let (run, rate) = self
                        .refresh(&mut env, rows, concurrency, latency, capacity_here)
                        .await?;
                    if latency.is_zero() {
                        capacity_at.insert(concurrency, rate);
                        capacity.push(run);
                    } else {
                        runs.push(run);
                    }
                }
            }
            if rows == self.sizes.reseal_rows && self.args.wants("reseal") {
                report["reseal"] = self.reseal(&app, &env, rows).await?;
            }
            pool.close().await;
            drop(app);
        }
        if !runs.is_empty() {
            report["refresh"] = Value::Array(runs);
        }
        if !capacity.is_empty() {
            report["refresh_capacity"] = Value::Array(capacity);
        }
        report["user_tokens_size"] = Value::Array(table_sizes);
        Ok(())
    }

    /// One `obo-vault refresh` over every due row with Entra at `latency`; every row must be
    /// refreshed. Returns the run's report and its users per second; with a latency, the report
    /// sets the rate against the bounds (and against `capacity`, the rate at zero latency).
    async fn refresh(
        &self,
        env: &mut Vec<(String, String)>,
        rows: usize,
        concurrency: usize,
        latency: Duration,
        capacity: Option<f64>,
    ) -> anyhow::Result<(Value, f64)> {
        self.step(format!(
            "refresh-tokens: {rows} rows, concurrency {concurrency}, Entra {} ms",
            latency.as_millis()
        ));
        env.retain(|(k, _)| k != "OBOVAULT_REFRESH_CONCURRENCY");
        env.push((
            "OBOVAULT_REFRESH_CONCURRENCY".into(),
            concurrency.to_string(),
        ));
        let budget = self.args.refresh_time_budget();
        if let Some(budget) = budget {
            env.retain(|(k, _)| k != "OBOVAULT_REFRESH_TIME_BUDGET");
            env.push((
                "OBOVAULT_REFRESH_TIME_BUDGET".into(),
                format!("{}s", budget.as_secs()),
            ));
        }
        self.stack.entra.set_latency(latency);
        self.stack.entra.reset_stats();
        self.stack.key_vault.reset_stats();
        let run = proc::run_cli(env, &["refresh", "--json"]).await;
        self.stack.entra.set_latency(Duration::ZERO);
        let run = run?;
        let summary = &run.summary;
        let refreshed = summary["refreshed"].as_u64().unwrap_or(0);
        // Within a time budget the run may stop early, but never with a failed row.
        let complete = refreshed == rows as u64;
        let cut_short = budget.is_some() && refreshed > 0 && summary["failed"].as_u64() == Some(0);
        if !complete && !cut_short {
            bail!("refresh-tokens over {rows} rows did not refresh them all: {summary}");
        }
        let seconds = summary["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        let rate = refreshed as f64 / seconds.max(0.001);
        let kv = self.stack.key_vault.stats();
        let entra = self.stack.entra.stats();
        // The latency Entra actually served: the configured one, plus what waits for these
        // shared cores added past it.
        let grants = (entra.refresh_grants + entra.failed_grants).max(1);
        let served = entra.token_endpoint_micros as f64 / grants as f64 / 1e6;
        let mut report = json!({
            "rows": rows,
            "concurrency": concurrency,
            "entra_latency_ms": latency.as_millis() as u64,
            "seconds": round(seconds, 2),
            "process_wall_seconds": round(run.wall.as_secs_f64(), 2),
            "users_per_s": round(rate, 0),
            "entra_served_ms": round(served * 1000.0, 2),
            "key_vault_gets": kv.get_latest + kv.get_version,
            "distinct_key_versions": 1,
            "entra_calls": entra.refresh_grants,
            "peak_rss_mib": round(run.peak_rss_kib as f64 / 1024.0, 1),
            "cpu_seconds": round(run.cpu_seconds, 2),
            "summary": summary,
        });
        if let (false, Value::Object(fields)) = (latency.is_zero(), &mut report) {
            let bound = concurrency as f64 / latency.as_secs_f64();
            let served_bound = concurrency as f64 / served.max(1e-6);
            let mut figures = vec![
                ("bound_per_s", round(bound, 0)),
                ("fraction_of_bound", round(rate / bound, 3)),
                ("served_bound_per_s", round(served_bound, 0)),
                ("fraction_of_served_bound", round(rate / served_bound, 3)),
            ];
            if let Some(capacity) = capacity {
                figures.push(("capacity_per_s", round(capacity, 0)));
                figures.push((
                    "fraction_of_reachable_bound",
                    round(rate / bound.min(capacity).max(1e-6), 3),
                ));
            }
            if let Some(budget) = budget {
                // The capacity model: one run refreshes min(due rows, rate × budget), the rate
                // being concurrency ÷ latency unless the machine caps it first.
                let rate = capacity.map_or(bound, |c| bound.min(c));
                let model = (rate * budget.as_secs_f64()).min(rows as f64);
                figures.push(("time_budget_s", budget.as_secs_f64()));
                figures.push(("refreshed", refreshed as f64));
                figures.push(("model_users", round(model, 0)));
                figures.push(("fraction_of_model", round(refreshed as f64 / model, 3)));
            }
            for (name, value) in figures {
                fields.insert(name.into(), json!(value));
            }
        }
        Ok((report, rate))
    }

    async fn reseal(
        &self,
        app: &Arc<App>,
        env: &[(String, String)],
        rows: usize,
    ) -> anyhow::Result<Value> {
        self.step(format!("re-seal only: {rows} rows"));
        let tenant = TenantId::parse(&self.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
        app.keys.rotate(&app.key_settings.key_name(&tenant)).await?;
        self.stack.entra.reset_stats();
        self.stack.key_vault.reset_stats();
        let run = proc::run_cli(env, &["refresh", "--reseal-only", "--json"]).await?;
        let summary = &run.summary;
        if summary["resealed"].as_u64() != Some(rows as u64) {
            bail!("re-seal over {rows} rows did not re-seal them all: {summary}");
        }
        let entra = self.stack.entra.stats();
        if entra.refresh_grants + entra.failed_grants > 0 {
            bail!("re-seal only called Entra: {entra:?}");
        }
        let seconds = summary["duration_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        let kv = self.stack.key_vault.stats();
        Ok(json!({
            "rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows as f64 / seconds.max(0.001), 0),
            "key_vault_gets": kv.get_latest + kv.get_version,
            "distinct_key_versions": 2,
            "peak_rss_mib": round(run.peak_rss_kib as f64 / 1024.0, 1),
            "cpu_seconds": round(run.cpu_seconds, 2),
            "summary": summary,
        }))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Makes every row due again (and clears back-offs) for the next refresh run.
async fn age_every_row(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE user_tokens SET refreshed_at = now() - interval '48 hours', \
         failure_count = 0, next_attempt_at = NULL",
    )
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE user_tokens")
        .execute(pool)
        .await?;
    Ok(())
}
