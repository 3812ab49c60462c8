//! Crash tests: the real `obo-vault` binary as a child process, killed with SIGKILL in the
//! middle of setup, of do-work and of a timer run, then restarted. Afterwards every stored
//! token still opens and works, no row stays leased past its lease, and the next timer run
//! finishes the work. Emulators and the test database are in process (see `api/helpers.rs`);
//! the in-process service of the harness is only used to seed and inspect rows.

#[allow(dead_code, unreachable_pub)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/service_process.rs"]
mod service_process;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::{json, Value};

use helpers::{new_user, spawn_app_with, summary_count, Backend, TestApp};
use service_process::ServiceProcess;

/// Short leases keep the tests fast: `OBOVAULT_ENTRA_TIMEOUT=1s` allows a 7 s lease.
const ENTRA_TIMEOUT: &str = "1s";
const LEASE: Duration = Duration::from_secs(7);
const SETTINGS: &[(&str, &str)] = &[
    ("OBOVAULT_ENTRA_TIMEOUT", ENTRA_TIMEOUT),
    ("OBOVAULT_LEASE", "7s"),
];

/// The `obo-vault` binary serving on a port of its own.
struct Service(ServiceProcess);

impl Service {
    /// Starts `obo-vault serve` against the harness's emulators and database and waits until
    /// `GET /` answers.
    async fn start(app: &TestApp) -> Self {
        let settings = SETTINGS
            .iter()
            .copied()
            .chain([("OBOVAULT_DOWNSTREAM_TIMEOUT", "5s")]);
        Self(ServiceProcess::start(app, settings).await)
    }

    /// SIGKILL: no graceful shutdown, no drain. Returns when the process is gone.
    fn kill(&mut self) -> DateTime<Utc> {
        self.0.kill();
        Utc::now()
    }
}

impl std::ops::Deref for Service {
    type Target = ServiceProcess;

    fn deref(&self) -> &ServiceProcess {
        &self.0
    }
}

/// The harness (emulators, a fresh database, an in-process service for seeding and reading
/// rows) and the first child process; `None` when Postgres is not available here.
async fn start(backend: Backend) -> Option<(TestApp, Service)> {
    let mut app = spawn_app_with(backend, SETTINGS).await?;
    let service = Service::start(&app).await;
    // Every call of the harness now goes to the child process.
    app.address = service.address.clone();
    Some((app, service))
}

/// Sends a call after `delay`, as a request the crash may cut: `None` when no answer came.
async fn later(delay: Duration, call: reqwest::RequestBuilder) -> Option<u16> {
    tokio::time::sleep(delay).await;
    match call.timeout(Duration::from_secs(20)).send().await {
        Ok(response) => Some(response.status().as_u16()),
        Err(_) => None,
    }
}

/// No row is leased beyond what the killed process could have taken.
async fn assert_leases_bounded(app: &TestApp, users: &[String], killed_at: DateTime<Utc>) -> usize {
    let limit = killed_at + LEASE + chrono::Duration::milliseconds(500);
    let mut leased = 0;
    for oid in users {
        if let Some(row) = app.row(oid).await {
            if let Some(until) = row.lease_until.filter(|_| row.lease_owner.is_some()) {
                assert!(
                    until <= limit,
                    "{oid} leased until {until}, killed at {killed_at}"
                );
                if until > Utc::now() {
                    leased += 1;
                }
            }
        }
    }
    leased
}

async fn sleep_until_leases_end(killed_at: DateTime<Utc>) {
    let end = killed_at + LEASE + chrono::Duration::milliseconds(300);
    if let Ok(left) = (end - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
}

fn timer_call(app: &TestApp) -> reqwest::RequestBuilder {
    app.client
        .post(format!("{}/refresh-tokens", app.address))
        .json(&json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}))
}

fn summary_line(answer: &Value) -> String {
    answer["Logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|l| l.starts_with("refresh-tokens: examined="))
        .expect("summary line")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------

/// Killed while setups are in flight, twice: at 0.6 s every call is either waiting for
/// Entra's OBO answer or has it and waits for the child's first (slow) Key Vault lookup; at
/// 1.0 s some have completed and the rest wait for Entra. Entra is in strict single-use mode
/// throughout.
async fn kill_during_setup(backend: Backend) {
    let Some((mut app, service)) = start(backend).await else {
        return;
    };
    app.app.keys.latest(&app.key_name()).await.unwrap();
    app.stack.entra.set_strict_single_use(true);
    let mut service = Some(service);
    let mut users = Vec::new();
    let mut answers = Vec::new();
    let mut kills = Vec::new();
    for kill_after in [600, 1000] {
        let mut running = match service.take() {
            Some(running) => running,
            None => Service::start(&app).await,
        };
        app.address = running.address.clone();
        app.stack.entra.set_latency(Duration::from_millis(400));
        app.stack.key_vault.set_latency(Duration::from_millis(300));
        let burst: Vec<String> = (0..24).map(|_| new_user()).collect();
        let calls = burst.iter().enumerate().map(|(i, oid)| {
            later(
                Duration::from_millis(40 * i as u64),
                app.client
                    .post(format!("{}/api/setup", app.address))
                    .bearer_auth(app.user_token(oid)),
            )
        });
        let (burst_answers, killed_at) = tokio::join!(join_all(calls), async {
            tokio::time::sleep(Duration::from_millis(kill_after)).await;
            running.kill()
        });
        app.stack.entra.set_latency(Duration::ZERO);
        app.stack.key_vault.set_latency(Duration::ZERO);
        assert!(
            burst_answers.iter().flatten().all(|&s| s == 201),
            "{burst_answers:?}"
        );
        assert_leases_bounded(&app, &burst, killed_at).await;
        kills.push(format!(
            "kill at {kill_after} ms: {} of {} cut",
            burst_answers.iter().filter(|a| a.is_none()).count(),
            burst.len()
        ));
        users.extend(burst);
        answers.extend(burst_answers);
    }
    assert!(
        answers.iter().any(Option::is_none),
        "the kills cut no setup"
    );

    let service = Service::start(&app).await;
    app.address = service.address.clone();
    let mut stored = 0;
    for (oid, answer) in users.iter().zip(&answers) {
        if app.row(oid).await.is_some() {
            stored += 1;
            // The token opens and is the one Entra still accepts.
            app.assert_holds_the_latest_refresh_token(oid).await;
        } else {
            assert!(answer.is_none(), "{oid} got {answer:?} but has no row");
            assert_eq!(app.post_setup(&app.user_token(oid)).await.status(), 201);
        }
    }
    let work = join_all(users.iter().map(|oid| app.do_work(oid, Value::Null))).await;
    assert!(work.iter().all(|r| r.status() == 200));
    for oid in &users {
        app.assert_holds_the_latest_refresh_token(oid).await;
    }
    eprintln!(
        "kill during setup ({backend:?}): {}; {stored} rows stored before the kills; all \
         users work after a restart",
        kills.join(", ")
    );
}

/// Killed while do-work calls are in flight, twice: at 0.9 s calls hold the lease before
/// redeeming, or have redeemed and wait for the save (the child's first latest-key lookup is
/// slow), or wait for the slow downstream API; at 1.5 s most have saved and wait for the
/// downstream API. After a restart every user's do-work answers 200 (once the dead process's leases end).
async fn kill_during_do_work(backend: Backend) {
    let Some((mut app, service)) = start(backend).await else {
        return;
    };
    // Not strict single-use: a token redeemed just before the kill was never replaced on the
    // row, and real Entra keeps it valid; that is what this test relies on and proves.
    let mut service = Some(service);
    let mut users = Vec::new();
    let mut kills = Vec::new();
    let mut cut = 0;
    let mut last_kill = Utc::now();
    for kill_after in [900, 1500] {
        let mut running = match service.take() {
            Some(running) => running,
            None => Service::start(&app).await,
        };
        app.address = running.address.clone();
        let burst = app.seed_users(24, Utc::now()).await;
        app.stack.entra.set_latency(Duration::from_millis(300));
        app.stack.key_vault.set_latency(Duration::from_millis(300));
        app.stack.downstream.set_latency(Duration::from_millis(800));
        let token = app.workload_token();
        let calls = burst.iter().enumerate().map(|(i, oid)| {
            later(
                Duration::from_millis(40 * i as u64),
                app.client
                    .post(format!("{}/api/do-work", app.address))
                    .bearer_auth(&token)
                    .json(&json!({"tenantId": app.tenant(), "userId": oid})),
            )
        });
        let (answers, killed_at) = tokio::join!(join_all(calls), async {
            tokio::time::sleep(Duration::from_millis(kill_after)).await;
            running.kill()
        });
        last_kill = killed_at;
        app.stack.entra.set_latency(Duration::ZERO);
        app.stack.key_vault.set_latency(Duration::ZERO);
        app.stack.downstream.set_latency(Duration::ZERO);
        assert!(answers.iter().flatten().all(|&s| s == 200), "{answers:?}");
        let burst_cut = answers.iter().filter(|a| a.is_none()).count();
        cut += burst_cut;
        let leased = assert_leases_bounded(&app, &burst, killed_at).await;
        let mut unsaved = 0;
        for oid in &burst {
            if Some(app.stored_refresh_token(oid).await)
                != app.stack.entra.latest_refresh_token(&app.tenant(), oid)
            {
                unsaved += 1;
            }
        }
        kills.push(format!(
            "kill at {kill_after} ms: {burst_cut} of {} cut, {leased} rows left leased, \
             {unsaved} redeemed but not saved",
            burst.len()
        ));
        users.extend(burst);
    }
    assert!(cut > 0, "the kills cut no do-work");

    let service = Service::start(&app).await;
    app.address = service.address.clone();
    // Calls for users still leased by the dead process wait for the lease to end.
    let started = Instant::now();
    let work = join_all(users.iter().map(|oid| app.do_work(oid, Value::Null))).await;
    for (oid, response) in users.iter().zip(work) {
        assert_eq!(response.status(), 200, "{oid}");
    }
    assert!(Utc::now() <= last_kill + LEASE + chrono::Duration::seconds(5));
    for oid in &users {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        assert!(row.lease_owner.is_none());
        app.assert_holds_the_latest_refresh_token(oid).await;
    }
    eprintln!(
        "kill during do-work ({backend:?}): {}; all {} users 200 after restart in {:?}",
        kills.join(", "),
        users.len(),
        started.elapsed()
    );
}

/// Killed in the middle of a timer run over 300 due rows with a slow Entra. After the restart
/// the next runs refresh everything that is due, and nothing is left leased or failed.
async fn kill_during_timer(backend: Backend) {
    let Some((mut app, mut service)) = start(backend).await else {
        return;
    };
    const ROWS: usize = 300;
    let seeded_at = Utc::now();
    let users = app
        .seed_users(ROWS, seeded_at - chrono::Duration::hours(48))
        .await;
    app.stack.entra.set_latency(Duration::from_millis(150));
    let run = tokio::spawn(later(Duration::ZERO, timer_call(&app)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = service.kill();
    assert_eq!(run.await.unwrap(), None, "the run finished before the kill");
    app.stack.entra.set_latency(Duration::ZERO);
    let leased = assert_leases_bounded(&app, &users, killed_at).await;
    let mut done_before = 0;
    for oid in &users {
        if app.row(oid).await.unwrap().refreshed_at > seeded_at {
            done_before += 1;
        }
    }
    assert!(done_before < ROWS, "the kill landed after the run");

    let service = Service::start(&app).await;
    app.address = service.address.clone();
    // At once: everything due and not leased by the dead process.
    let first = summary_line(&app.run_timer().await);
    assert_eq!(summary_count(&first, "failed"), 0, "{first}");
    assert_eq!(
        summary_count(&first, "refreshed"),
        summary_count(&first, "examined"),
        "{first}"
    );
    // Once the dead process's leases ended: the rest.
    sleep_until_leases_end(killed_at).await;
    let second = summary_line(&app.run_timer().await);
    assert_eq!(summary_count(&second, "failed"), 0, "{second}");
    let refreshed_after = summary_count(&first, "refreshed") + summary_count(&second, "refreshed");
    assert_eq!(
        done_before as u64 + refreshed_after,
        ROWS as u64,
        "{first} / {second}"
    );
    let third = summary_line(&app.run_timer().await);
    assert_eq!(summary_count(&third, "examined"), 0, "{third}");
    for oid in &users {
        let row = app.row(oid).await.unwrap();
        assert!(row.refreshed_at > seeded_at, "{oid} was not refreshed");
        assert!(row.lease_owner.is_none());
        assert_eq!(row.failure_count, 0);
        assert_eq!(row.status.as_str(), "active");
        app.stored_refresh_token(oid).await;
    }
    let sample = join_all(
        users
            .iter()
            .step_by(30)
            .map(|oid| app.do_work(oid, Value::Null)),
    )
    .await;
    assert!(sample.iter().all(|r| r.status() == 200));
    eprintln!(
        "kill during the timer ({backend:?}): {ROWS} rows, {done_before} refreshed before the kill, \
         {leased} left leased; then {first} / {second}"
    );
}

macro_rules! crash_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

crash_tests!(kill_during_setup, kill_during_do_work, kill_during_timer);
