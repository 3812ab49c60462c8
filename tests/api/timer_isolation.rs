//! refresh-tokens: no row, tenant or deployment fault starves the rest. A corrupt row is
//! skipped and reported, a throttled tenant pauses only its own rows, and a refused service
//! credential stops the run without punishing any row.

use std::time::{Duration, Instant};

use chrono::Utc;
use emulators::{Fault, FaultKind};
use obo_vault::domain::{TenantId, UserId, UserKey};
use obo_vault::store::TokenRecord;
use obo_vault::usecase::refresh_all::{self, RunOptions};

use crate::helpers::{summary_count, Backend, TestApp, LOGS};

/// A tenant whose key name sorts after the home tenant's, so the home tenant's rows come first.
const OTHER_TENANT: &str = "f0e1d2c3-b4a5-4697-8899-aabbccddeeff";

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

async fn row_of(app: &TestApp, tid: &str, oid: &str) -> TokenRecord {
    let key = UserKey {
        tenant_id: TenantId::parse(tid).unwrap(),
        user_id: UserId::parse(oid).unwrap(),
    };
    app.store.find(&key).await.unwrap().expect("row exists")
}

/// A row with non-GUID ids, a garbage sealed value and the oldest `refreshed_at` among 30 due
/// rows: the run refreshes the 30, backs the bad one off and names it in an alert line.
async fn a_corrupt_row_is_skipped_and_reported(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let bad = app
        .seed_users(1, old - chrono::Duration::hours(24))
        .await
        .remove(0);
    let users = app.seed_users(30, old).await;
    let marker = format!("corrupt-{}", uuid::Uuid::new_v4().simple());
    let garbage = match app.backend {
        Backend::Postgres => "'\\xdeadbeef'::bytea",
        Backend::Sqlite => "x'deadbeef'",
    };
    app.execute_sql(&[&format!(
        "UPDATE user_tokens SET tenant_id = 'not-a-tenant', user_id = '{marker}', \
         sealed_refresh_token = {garbage} WHERE user_id = '{bad}'"
    )])
    .await;
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "examined"), 31, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 30, "{line}");
    assert_eq!(summary_count(&line, "failed"), 1, "{line}");
    let logs = logs();
    let alert = logs
        .lines()
        .find(|l| l.contains(&marker))
        .expect("an alert line names the corrupt row");
    assert!(alert.contains("\"alert\":true"), "{alert}");
    for oid in &users {
        let row = app.row(oid).await.unwrap();
        assert!(row.lease_owner.is_none() && row.failure_count == 0);
    }
    // Backed off: the next run does not stop on it again, nor claim it.
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "examined"), 0, "{line}");
}

/// Entra throttles the home tenant for an hour: the same run refreshes every due row of
/// another tenant, and the throttled tenant's rows stay active, with no failure counted and no
/// back-off beyond the Retry-After.
async fn a_throttled_tenant_pauses_only_its_own_rows(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let home = app.tenant();
    let throttled = app.seed_users(10, old).await;
    let healthy = app.seed_users_of(OTHER_TENANT, 10, old).await;
    app.stack.entra.throttle_tenant(&home, 3600);
    app.stack.entra.set_strict_single_use(true);
    let started = Instant::now();
    let line = app.timer_summary().await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the pause was not waited out: {:?}",
        started.elapsed()
    );
    assert_eq!(summary_count(&line, "examined"), 20, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 10, "{line}");
    let latest = Utc::now() + chrono::Duration::seconds(3600);
    for oid in &healthy {
        let row = row_of(&app, OTHER_TENANT, oid).await;
        assert!(
            row.refreshed_at > old && row.next_attempt_at.is_none(),
            "{row:?}"
        );
    }
    for oid in &throttled {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        assert!(
            row.refreshed_at < old + chrono::Duration::seconds(1),
            "not refreshed"
        );
        assert_eq!(
            (row.failure_count, row.last_error.as_deref()),
            (0, Some("throttled"))
        );
        assert!(row.lease_owner.is_none());
        assert!(
            row.next_attempt_at
                .is_some_and(|t| t <= latest && t > latest - chrono::Duration::seconds(120)),
            "{:?}",
            row.next_attempt_at
        );
    }
    app.stack.entra.clear_tenant_throttling(&home);
}

/// The service's own credential refused (a changed secret): a run over 120 due rows at
/// concurrency 8 sends at most 16 grants, changes no row, and alerts; do-work and setup answer
/// 502; the next run after the fix refreshes all 120.
async fn a_refused_service_credential_stops_the_run_and_punishes_no_row(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let connected = app.connected_user().await;
    let users = app.seed_users(120, old).await;
    let before: Vec<TokenRecord> = futures::future::join_all(users.iter().map(|oid| app.row(oid)))
        .await
        .into_iter()
        .map(Option::unwrap)
        .collect();
    app.stack
        .entra
        .inject(Fault::always(FaultKind::InvalidClient));
    app.stack.entra.reset_stats();
    let options = RunOptions {
        reseal_only: false,
        time_budget: Duration::from_secs(120),
        concurrency: 8,
    };
    let summary = refresh_all::run(&app.app.deps, options.clone(), &|_| {})
        .await
        .expect("a run that started answers with its summary");
    let stats = app.stack.entra.stats();
    assert!(
        stats.failed_grants + stats.refresh_grants <= 16,
        "{stats:?} {summary:?}"
    );
    assert_eq!((summary.refreshed, summary.failed), (0, 0), "{summary:?}");
    for (oid, before) in users.iter().zip(&before) {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        assert_eq!(row.revision, before.revision);
        assert_eq!(
            (
                row.failure_count,
                row.next_attempt_at,
                row.last_error.as_deref()
            ),
            (0, None, None),
            "no back-off"
        );
        assert!(row.lease_owner.is_none(), "lease released");
    }
    assert!(logs().contains("refuses the service's own credential"));
    let work = app.do_work(&connected, serde_json::Value::Null).await;
    assert_eq!(work.status(), 502);
    let setup = app.post_setup(&app.user_token(&connected)).await;
    assert_eq!(setup.status(), 502);

    app.stack.entra.clear_faults();
    let summary = refresh_all::run(&app.app.deps, options, &|_| {})
        .await
        .unwrap();
    assert_eq!(summary.refreshed, 120, "{summary:?}");
}

crate::on_both_backends!(
    a_corrupt_row_is_skipped_and_reported,
    a_throttled_tenant_pauses_only_its_own_rows,
    a_refused_service_credential_stops_the_run_and_punishes_no_row,
);
