//! Faults of every dependency, on every path: Entra 429/5xx/timeouts/hangs/dropped connections
//! during setup, do-work and the timer; Key Vault 429/5xx/dropped connections/hangs; a dropped
//! downstream connection. Each case checks the answer (status, `Retry-After`), that nothing is
//! lost (with Entra's strict single-use mode the stored token is still the one Entra would
//! accept next) and that nothing is half-written (row unchanged, lease released, failure
//! bookkeeping only on the timer path).
//!
//! (Covered elsewhere and not repeated: Entra 429 and Key Vault 429 during a first setup in
//! `setup.rs`; Entra 429/503/500 during do-work and a hanging downstream API in `do_work.rs`;
//! Entra 503 back-off in `timer.rs`.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use emulators::{Fault, FaultKind};
use obo_vault::app::App;
use obo_vault::store::TokenRecord;
use obo_vault::usecase::refresh_all::{self, RunOptions};
use serde_json::Value;

use crate::helpers::{new_user, summary_count, TestApp};

/// Entra timeout of these tests (the harness default is 5 s).
const ENTRA_TIMEOUT: &str = "2s";
const SETTINGS: &[(&str, &str)] = &[("OBOVAULT_ENTRA_TIMEOUT", ENTRA_TIMEOUT)];
/// How long a faulted call may take: the Entra timeout plus slack for a loaded machine.
const ENTRA_BOUND: Duration = Duration::from_secs(6);
/// The Key Vault client's overall timeout (10 s) plus slack.
const KEY_VAULT_BOUND: Duration = Duration::from_secs(15);

/// Faults injected by every test of this binary so far.
static INJECTED: AtomicU64 = AtomicU64::new(0);

/// Injects faults and counts them; prints this test's count and the running total on drop.
struct Injector<'a> {
    app: &'a TestApp,
    name: &'static str,
    count: AtomicU64,
}

impl<'a> Injector<'a> {
    fn new(app: &'a TestApp, name: &'static str) -> Self {
        Self {
            app,
            name,
            count: AtomicU64::new(0),
        }
    }

    fn counted(&self, times: u32) {
        self.count.fetch_add(u64::from(times), Ordering::Relaxed);
        INJECTED.fetch_add(u64::from(times), Ordering::Relaxed);
    }

    fn entra(&self, kind: FaultKind, times: u32) {
        self.app.stack.entra.inject(Fault { kind, times });
        self.counted(times);
    }

    fn vault(&self, kind: FaultKind, times: u32) {
        self.app.stack.key_vault.inject(Fault { kind, times });
        self.counted(times);
    }

    fn downstream(&self, kind: FaultKind, times: u32) {
        self.app.stack.downstream.inject(Fault { kind, times });
        self.counted(times);
    }

    /// Lets the next Key Vault request through (a queued no-op), so a fault behind it lands
    /// on the request after. Not counted.
    fn vault_pass_one(&self) {
        self.app.stack.key_vault.inject(Fault {
            kind: FaultKind::Delay(Duration::ZERO),
            times: 1,
        });
    }
}

impl Drop for Injector<'_> {
    fn drop(&mut self) {
        eprintln!(
            "faults injected by {} ({:?}): {}; total in this binary so far: {}",
            self.name,
            self.app.backend,
            self.count.load(Ordering::Relaxed),
            INJECTED.load(Ordering::Relaxed)
        );
    }
}

/// Another service instance over the same emulators and database, with cold key caches.
struct Instance {
    app: Arc<App>,
    address: String,
}

async fn cold_instance(test: &TestApp) -> Instance {
    let app = crate::helpers::build_app(&test.stack, &test.database.url, SETTINGS).await;
    let application = obo_vault::startup::Application::bind(0, app.clone())
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", application.port());
    tokio::spawn(application.run_until(std::future::pending()));
    Instance { app, address }
}

async fn setup_at(test: &TestApp, address: &str, oid: &str) -> reqwest::Response {
    test.client
        .post(format!("{address}/api/setup"))
        .bearer_auth(test.user_token(oid))
        .send()
        .await
        .unwrap()
}

async fn do_work_at(test: &TestApp, address: &str, oid: &str) -> reqwest::Response {
    test.client
        .post(format!("{address}/api/do-work"))
        .bearer_auth(test.workload_token())
        .json(&serde_json::json!({ "tenantId": test.tenant(), "userId": oid }))
        .send()
        .await
        .unwrap()
}

/// A 503 `unavailable` problem with a usable `Retry-After` (`expected` seconds if given).
async fn assert_unavailable(response: reqwest::Response, expected: Option<u64>, what: &str) {
    assert_eq!(response.status(), 503, "{what}");
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After"))
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{what}: Retry-After {retry_after}");
    if let Some(expected) = expected {
        assert_eq!(retry_after, expected, "{what}");
    }
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unavailable", "{what}: {body}");
    assert_eq!(body["status"], 503, "{what}");
}

/// Nothing half-written: the row is exactly as before, active, not leased, and carries no
/// failure bookkeeping (that belongs to the timer).
async fn assert_untouched(app: &TestApp, oid: &str, before: &TokenRecord, what: &str) {
    let after = app.row(oid).await.expect("the row is still there");
    assert_eq!(
        after.sealed_refresh_token, before.sealed_refresh_token,
        "{what}"
    );
    assert_eq!(after.revision, before.revision, "{what}");
    assert_eq!(after.key_version, before.key_version, "{what}");
    assert_eq!(after.refreshed_at, before.refreshed_at, "{what}");
    assert_eq!(after.status.as_str(), "active", "{what}");
    assert!(
        after.lease_owner.is_none(),
        "{what}: the lease was released"
    );
    assert_eq!(after.failure_count, 0, "{what}");
    assert!(after.next_attempt_at.is_none(), "{what}");
    assert!(after.last_error.is_none(), "{what}");
}

/// Nothing lost: the stored token opens and is the newest one Entra issued (with strict
/// single-use on, the only one Entra still accepts).
async fn assert_token_alive(app: &TestApp, oid: &str, what: &str) {
    assert_eq!(
        Some(app.stored_refresh_token(oid).await),
        app.stack.entra.latest_refresh_token(&app.tenant(), oid),
        "{what}"
    );
}

// ---------------------------------------------------------------------------------------------
// setup

/// Entra failing the OBO exchange: 503 with `Retry-After` (502 when Entra refuses our own
/// credentials), no row for a new user, the previous grant kept for a returning one.
async fn setup_entra_faults_keep_the_previous_grant(app: TestApp) {
    let faults = Injector::new(&app, "setup_entra_faults");
    let returning = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    let before = app.row(&returning).await.unwrap();
    let cases = [
        (FaultKind::Status(500), Some(5)),
        (FaultKind::Status(502), Some(5)),
        (FaultKind::Status(503), Some(5)),
        (FaultKind::Status(504), Some(5)),
        (
            FaultKind::TooManyRequests {
                retry_after_secs: 11,
            },
            Some(11),
        ),
        (FaultKind::Hang, None),
        (FaultKind::Unreachable, None),
    ];
    for (kind, retry_after) in cases {
        for oid in [new_user(), returning.clone()] {
            let what = format!("{kind:?} for {oid}");
            faults.entra(kind, 1);
            let started = Instant::now();
            let response = app.post_setup(&app.user_token(&oid)).await;
            assert!(
                started.elapsed() < ENTRA_BOUND,
                "{what}: {:?}",
                started.elapsed()
            );
            assert_unavailable(response, retry_after, &what).await;
            if oid == returning {
                assert_untouched(&app, &oid, &before, &what).await;
                assert_token_alive(&app, &oid, &what).await;
            } else {
                assert!(app.row(&oid).await.is_none(), "{what}");
            }
        }
    }
    // Entra refusing the service's own credentials is an operator problem, not a retry.
    let oid = new_user();
    faults.entra(FaultKind::InvalidClient, 1);
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upstream_error");
    assert!(app.row(&oid).await.is_none());

    assert_eq!(app.post_setup(&app.user_token(&oid)).await.status(), 201);
    assert_eq!(
        app.post_setup(&app.user_token(&returning)).await.status(),
        200
    );
    assert_token_alive(&app, &returning, "after the faults").await;
    assert_eq!(app.do_work(&returning, Value::Null).await.status(), 200);
}

/// Key Vault failing while setup looks up the tenant's latest key (a cold instance): 503 with
/// `Retry-After`, the previous grant kept, within a bound even when Key Vault hangs.
async fn setup_key_vault_faults_keep_the_previous_grant(app: TestApp) {
    let faults = Injector::new(&app, "setup_key_vault_faults");
    let returning = app.connected_user().await;
    let before = app.row(&returning).await.unwrap();
    let cold = cold_instance(&app).await;
    let cases = [
        (
            FaultKind::TooManyRequests {
                retry_after_secs: 13,
            },
            Some(13),
        ),
        (FaultKind::Status(500), Some(5)),
        (FaultKind::Status(503), Some(5)),
        (FaultKind::Unreachable, Some(5)),
    ];
    for (kind, retry_after) in cases {
        for oid in [new_user(), returning.clone()] {
            let what = format!("{kind:?} for {oid}");
            faults.vault(kind, 1);
            let response = setup_at(&app, &cold.address, &oid).await;
            assert_unavailable(response, retry_after, &what).await;
            if oid == returning {
                assert_untouched(&app, &oid, &before, &what).await;
            } else {
                assert!(app.row(&oid).await.is_none(), "{what}");
            }
        }
    }
    // The OBO exchange ran before the key lookup failed; Entra's new token was never stored,
    // and the previous one still works.
    assert_eq!(app.do_work(&returning, Value::Null).await.status(), 200);
    assert_eq!(
        setup_at(&app, &cold.address, &new_user()).await.status(),
        201
    );
}

// ---------------------------------------------------------------------------------------------
// do-work

/// Entra hanging, dropping the connection or failing with gateway errors while do-work
/// redeems: 503 with `Retry-After` within the Entra timeout, the row untouched, the token
/// still the one Entra accepts.
async fn do_work_entra_hangs_and_drops_leave_the_row_untouched(app: TestApp) {
    let faults = Injector::new(&app, "do_work_entra_hangs");
    let oid = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    let before = app.row(&oid).await.unwrap();
    for kind in [
        FaultKind::Hang,
        FaultKind::Unreachable,
        FaultKind::Status(502),
        FaultKind::Status(504),
    ] {
        let what = format!("{kind:?}");
        faults.entra(kind, 1);
        let started = Instant::now();
        let response = app.do_work(&oid, Value::Null).await;
        assert!(
            started.elapsed() < ENTRA_BOUND,
            "{what}: {:?}",
            started.elapsed()
        );
        assert_unavailable(response, None, &what).await;
        assert_untouched(&app, &oid, &before, &what).await;
        assert_token_alive(&app, &oid, &what).await;
    }
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    assert_token_alive(&app, &oid, "after the faults").await;
}

/// Entra answering only after our timeout: it rotated the token but the answer was lost.
/// Real Entra keeps the previous refresh token valid, so the stored one still works.
async fn do_work_entra_answering_too_late_keeps_the_previous_token(app: TestApp) {
    let faults = Injector::new(&app, "do_work_entra_too_late");
    let oid = app.connected_user().await;
    let before = app.row(&oid).await.unwrap();
    faults.entra(FaultKind::Delay(Duration::from_secs(3)), 1);
    let started = Instant::now();
    let response = app.do_work(&oid, Value::Null).await;
    assert!(started.elapsed() < ENTRA_BOUND, "{:?}", started.elapsed());
    assert_unavailable(response, None, "late answer").await;
    assert_untouched(&app, &oid, &before, "late answer").await;
    // Let the late grant finish at Entra, then the stored (older) token still redeems.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    assert_token_alive(&app, &oid, "after the late answer").await;
}

/// Key Vault failing while do-work opens the stored token (cold key cache): 503 with
/// `Retry-After`, Entra never called, the row untouched.
async fn do_work_key_vault_faults_answer_503_before_redeeming(app: TestApp) {
    let faults = Injector::new(&app, "do_work_key_vault_faults");
    let oid = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    let before = app.row(&oid).await.unwrap();
    let cold = cold_instance(&app).await;
    app.stack.entra.reset_stats();
    for (kind, retry_after) in [
        (
            FaultKind::TooManyRequests {
                retry_after_secs: 17,
            },
            Some(17),
        ),
        (FaultKind::Status(500), Some(5)),
        (FaultKind::Status(502), Some(5)),
        (FaultKind::Status(503), Some(5)),
        (FaultKind::Unreachable, Some(5)),
    ] {
        let what = format!("{kind:?}");
        faults.vault(kind, 1);
        let response = do_work_at(&app, &cold.address, &oid).await;
        assert_unavailable(response, retry_after, &what).await;
        assert_untouched(&app, &oid, &before, &what).await;
    }
    let stats = app.stack.entra.stats();
    assert_eq!(stats.refresh_grants + stats.failed_grants, 0, "{stats:?}");
    assert_eq!(do_work_at(&app, &cold.address, &oid).await.status(), 200);
    assert_token_alive(&app, &oid, "after the faults").await;
}

/// A hanging Key Vault: setup and do-work both answer 503 within the Key Vault client's
/// timeout, and leave nothing half-written.
async fn a_hanging_key_vault_answers_503_within_a_bound(app: TestApp) {
    let faults = Injector::new(&app, "key_vault_hang");
    let oid = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    let before = app.row(&oid).await.unwrap();
    let newcomer = new_user();
    // Two cold instances, so each request makes its own Key Vault call.
    let (first, second) = tokio::join!(cold_instance(&app), cold_instance(&app));
    faults.vault(FaultKind::Hang, 2);
    let started = Instant::now();
    let (work, setup) = tokio::join!(
        do_work_at(&app, &first.address, &oid),
        setup_at(&app, &second.address, &newcomer)
    );
    assert!(
        started.elapsed() < KEY_VAULT_BOUND,
        "{:?}",
        started.elapsed()
    );
    assert_unavailable(work, Some(5), "do-work").await;
    assert_unavailable(setup, Some(5), "setup").await;
    assert_untouched(&app, &oid, &before, "do-work").await;
    assert_token_alive(&app, &oid, "do-work").await;
    assert!(app.row(&newcomer).await.is_none());
    assert_eq!(do_work_at(&app, &first.address, &oid).await.status(), 200);
    assert_token_alive(&app, &oid, "after the hang").await;
}

/// Key Vault failing after Entra rotated the token (the latest-key lookup before the save):
/// the rotated token must still be saved, or the grant is lost with a single-use STS.
async fn do_work_key_vault_fault_after_the_redeem_still_saves_the_new_token(app: TestApp) {
    let faults = Injector::new(&app, "do_work_key_vault_after_redeem");
    let oid = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    for kind in [
        FaultKind::Status(503),
        FaultKind::TooManyRequests {
            retry_after_secs: 2,
        },
        FaultKind::Unreachable,
    ] {
        let what = format!("{kind:?}");
        let before = app.row(&oid).await.unwrap();
        // A cold instance makes two Key Vault calls: the row's version, then the latest.
        let cold = cold_instance(&app).await;
        faults.vault_pass_one();
        faults.vault(kind, 1);
        let response = do_work_at(&app, &cold.address, &oid).await;
        assert_eq!(response.status(), 200, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 200, "{what}");
        assert_token_alive(&app, &oid, &what).await;
        let after = app.row(&oid).await.unwrap();
        assert!(after.revision > before.revision, "{what}");
        assert!(after.lease_owner.is_none(), "{what}");
        assert_eq!(after.failure_count, 0, "{what}");
    }
    // The next do-work (a cache miss on a fresh instance) redeems what was saved.
    let cold = cold_instance(&app).await;
    assert_eq!(do_work_at(&app, &cold.address, &oid).await.status(), 200);
    assert_token_alive(&app, &oid, "after the faults").await;
}

/// The downstream API dropping the connection: 502, and the rotated token is saved anyway.
async fn a_dropped_downstream_connection_is_502_and_the_token_is_saved(app: TestApp) {
    let faults = Injector::new(&app, "downstream_drop");
    let oid = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    let before = app.row(&oid).await.unwrap();
    faults.downstream(FaultKind::Unreachable, 1);
    let response = app.do_work(&oid, Value::Null).await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upstream_error");
    let after = app.row(&oid).await.unwrap();
    assert!(after.revision > before.revision);
    assert!(after.lease_owner.is_none());
    assert_token_alive(&app, &oid, "after the drop").await;
    // A downstream that throttles is reported inside the envelope, not as our 503.
    faults.downstream(
        FaultKind::TooManyRequests {
            retry_after_secs: 4,
        },
        1,
    );
    let response = app.do_work(&oid, Value::Null).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 429);
}

// ---------------------------------------------------------------------------------------------
// refresh-tokens

/// Entra hanging, dropping, failing or answering too late for some rows of a run: those rows
/// fail and back off with their token untouched, the others are refreshed, and the run ends
/// within the Entra timeout.
async fn timer_entra_faults_back_off_only_the_failed_rows(app: TestApp) {
    let faults = Injector::new(&app, "timer_entra_faults");
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(8, old).await;
    app.stack.entra.set_strict_single_use(true);
    let before: Vec<TokenRecord> = futures::future::join_all(users.iter().map(|u| app.row(u)))
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    faults.entra(FaultKind::Hang, 2);
    faults.entra(FaultKind::Unreachable, 1);
    faults.entra(FaultKind::Status(500), 1);
    faults.entra(
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    app.stack.entra.reset_stats();
    let started = Instant::now();
    let line = app.timer_summary().await;
    assert!(started.elapsed() < ENTRA_BOUND, "{:?}", started.elapsed());
    assert_eq!(summary_count(&line, "examined"), 8, "{line}");
    assert_eq!(summary_count(&line, "failed"), 5, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 3, "{line}");
    let mut failed = 0;
    for (oid, before) in users.iter().zip(&before) {
        let after = app.row(oid).await.unwrap();
        assert_eq!(after.status.as_str(), "active");
        assert!(after.lease_owner.is_none(), "lease released");
        if after.revision == before.revision {
            failed += 1;
            assert_eq!(after.sealed_refresh_token, before.sealed_refresh_token);
            assert_eq!(after.refreshed_at, before.refreshed_at);
            // A 429 is the tenant's pause, not the row's failure: it waits for the
            // Retry-After without counting a failure.
            let throttled = after.last_error.as_deref() == Some("throttled");
            assert_eq!(after.failure_count, if throttled { 0 } else { 1 });
            assert!(after.next_attempt_at.is_some());
            assert!(after.last_error.is_some());
        } else {
            assert_eq!(after.failure_count, 0);
            assert!(after.next_attempt_at.is_none());
        }
        assert_token_alive(&app, oid, "after the run").await;
    }
    assert_eq!(failed, 5);
    // Only the throttled row may come back this soon (its Retry-After was 1 s).
    let line = app.timer_summary().await;
    assert!(summary_count(&line, "examined") <= 1, "{line}");
    assert_eq!(summary_count(&line, "failed"), 0, "{line}");
}

/// An Entra 429 pauses the tenant's rows for its `Retry-After`: a short pause is waited out, a
/// long one defers them to its end, unleased and without a failure counted, and the run goes on.
async fn timer_entra_throttling_pauses_only_the_tenant_s_rows(app: TestApp) {
    let faults = Injector::new(&app, "timer_entra_429");
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(4, old).await;
    app.stack.entra.set_strict_single_use(true);
    let one_at_a_time = |budget| RunOptions {
        reseal_only: false,
        time_budget: budget,
        concurrency: 1,
    };
    faults.entra(
        FaultKind::TooManyRequests {
            retry_after_secs: 1,
        },
        1,
    );
    let started = Instant::now();
    let summary = refresh_all::run(
        &app.app.deps,
        one_at_a_time(Duration::from_secs(60)),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the run paused"
    );
    // The throttled row waits for its Retry-After and is refreshed later in the same run.
    assert_eq!(
        (summary.examined, summary.failed, summary.refreshed),
        (5, 1, 4),
        "{summary:?}"
    );

    let more = app.seed_users(4, old).await;
    faults.entra(
        FaultKind::TooManyRequests {
            retry_after_secs: 600,
        },
        1,
    );
    let started = Instant::now();
    let summary = refresh_all::run(
        &app.app.deps,
        one_at_a_time(Duration::from_secs(20)),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a long pause is not waited out: {:?}",
        started.elapsed()
    );
    assert_eq!((summary.failed, summary.skipped), (1, 3), "{summary:?}");
    let latest = Utc::now() + chrono::Duration::seconds(600);
    for oid in &more {
        let row = app.row(oid).await.unwrap();
        assert!(row.lease_owner.is_none());
        assert_eq!(row.status.as_str(), "active");
        assert_eq!(
            (row.failure_count, row.last_error.as_deref()),
            (0, Some("throttled"))
        );
        assert!(row
            .next_attempt_at
            .is_some_and(|t| t > Utc::now() + chrono::Duration::seconds(500) && t <= latest));
        assert_token_alive(&app, oid, "throttled run").await;
    }
    for oid in &users {
        assert_token_alive(&app, oid, "first run").await;
    }
}

/// Key Vault failing when the run asks for the latest key: the run cannot start, answers 500
/// (so the host records a failed invocation and retries), claims no row and writes no failure
/// bookkeeping.
async fn timer_key_vault_faults_at_the_start_leave_every_row_alone(app: TestApp) {
    let faults = Injector::new(&app, "timer_key_vault_start");
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(5, old).await;
    let before = app.row(&users[0]).await.unwrap();
    app.stack.entra.reset_stats();
    for kind in [
        FaultKind::TooManyRequests {
            retry_after_secs: 3,
        },
        FaultKind::Status(500),
        FaultKind::Status(503),
        FaultKind::Unreachable,
    ] {
        faults.vault(kind, 1);
        let answer = app.post_timer().await;
        assert_eq!(answer.status(), 500, "{kind:?}");
        assert_eq!(
            answer.headers()["content-type"],
            "application/problem+json",
            "{kind:?}"
        );
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(problem["error"], "run_not_started", "{kind:?}: {problem}");
        for oid in &users {
            let row = app.row(oid).await.unwrap();
            assert!(row.lease_owner.is_none());
            assert_eq!(row.failure_count, 0);
        }
        assert_untouched(&app, &users[0], &before, &format!("{kind:?}")).await;
    }
    let stats = app.stack.entra.stats();
    assert_eq!(stats.refresh_grants + stats.failed_grants, 0);
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "refreshed"), 5, "{line}");
}

/// Key Vault failing while a run opens rows sealed under an old key version (cold cache): the
/// rows back off with `key_vault`, untouched; Entra is not called for them.
async fn timer_key_vault_faults_on_old_versions_back_off_the_rows(app: TestApp) {
    let faults = Injector::new(&app, "timer_key_vault_versions");
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(6, old).await;
    app.app.keys.rotate(&app.key_name()).await.unwrap();
    app.stack.entra.set_strict_single_use(true);
    let cold = cold_instance(&app).await;
    // The run's first call (the latest version) passes; the old version's fetch fails.
    faults.vault_pass_one();
    faults.vault(FaultKind::Status(503), 1);
    let summary = refresh_all::run(
        &cold.app.deps,
        RunOptions {
            reseal_only: false,
            time_budget: Duration::from_secs(60),
            concurrency: 16,
        },
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(summary.examined, 6, "{summary:?}");
    assert!(summary.failed >= 1, "{summary:?}");
    assert_eq!(summary.failed + summary.refreshed, 6, "{summary:?}");
    let mut failed = 0;
    for oid in &users {
        let row = app.row(oid).await.unwrap();
        assert!(row.lease_owner.is_none());
        assert_eq!(row.status.as_str(), "active");
        if row.failure_count > 0 {
            failed += 1;
            assert_eq!(row.last_error.as_deref(), Some("key_vault"));
            assert!(row.refreshed_at < Utc::now() - chrono::Duration::hours(47));
        }
        assert_token_alive(&app, oid, "after the run").await;
    }
    assert_eq!(failed, summary.failed);
}

/// Like `on_both_backends!`, with this file's settings (a 2 s Entra timeout).
macro_rules! on_both_backends_with_settings {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::helpers::Backend::Sqlite;
                    if let Some(app) = $crate::helpers::spawn_app_with(backend, super::SETTINGS).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $crate::helpers::Backend::Postgres;
                    if let Some(app) = $crate::helpers::spawn_app_with(backend, super::SETTINGS).await {
                        super::$name(app).await;
                    }
                }
            )*
        }
    };
}

on_both_backends_with_settings!(
    setup_entra_faults_keep_the_previous_grant,
    setup_key_vault_faults_keep_the_previous_grant,
    do_work_entra_hangs_and_drops_leave_the_row_untouched,
    do_work_entra_answering_too_late_keeps_the_previous_token,
    do_work_key_vault_faults_answer_503_before_redeeming,
    a_hanging_key_vault_answers_503_within_a_bound,
    do_work_key_vault_fault_after_the_redeem_still_saves_the_new_token,
    a_dropped_downstream_connection_is_502_and_the_token_is_saved,
    timer_entra_faults_back_off_only_the_failed_rows,
    timer_entra_throttling_pauses_only_the_tenant_s_rows,
    timer_key_vault_faults_at_the_start_leave_every_row_alone,
    timer_key_vault_faults_on_old_versions_back_off_the_rows,
);
