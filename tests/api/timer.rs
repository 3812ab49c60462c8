//! refresh-tokens: keeping grants alive, rotating keys, budgets, several instances.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use obo_vault::usecase::refresh_all::{self, RunOptions};

use crate::helpers::{summary_count, Backend, TestApp};

async fn a_rotation_reaches_every_row_and_only_old_rows_call_entra(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let stale = app.seed_users(400, old).await;
    let fresh = app.seed_users(600, Utc::now()).await;
    let rotated = app.app.keys.rotate(&app.key_name()).await.unwrap();
    app.stack.entra.reset_stats();
    app.stack.key_vault.reset_stats();
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "examined"), 1000, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 400, "{line}");
    assert_eq!(summary_count(&line, "resealed"), 600, "{line}");
    assert_eq!(summary_count(&line, "failed"), 0, "{line}");
    assert_eq!(app.stack.entra.stats().refresh_grants, 400);
    let kv = app.stack.key_vault.stats();
    // One latest per key, one GET per old version (two versions in play), plus slack.
    assert!(kv.get_latest + kv.get_version <= 2 * 2 + 2, "{kv:?}");
    for oid in stale.iter().chain(&fresh).step_by(50) {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.key_version, rotated.version);
        assert!(row.lease_owner.is_none());
        app.stored_refresh_token(oid).await;
    }
    let report = app.store.status_report().await.unwrap();
    assert_eq!(
        report.by_key_version.iter().filter(|k| k.rows > 0).count(),
        1,
        "{report:?}"
    );
    // Nothing is due any more.
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "examined"), 0, "{line}");
}

async fn revoked_grants_become_reauth_required_and_stay_out(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(6, old).await;
    for oid in &users[..2] {
        app.stack.entra.revoke_user(&app.tenant(), oid);
    }
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "reauth_required"), 2, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 4, "{line}");
    for oid in &users[..2] {
        assert_eq!(
            app.row(oid).await.unwrap().status.as_str(),
            "reauth_required"
        );
    }
    app.app.keys.rotate(&app.key_name()).await.unwrap();
    app.stack.entra.reset_stats();
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "resealed"), 4, "{line}");
    let stats = app.stack.entra.stats();
    assert_eq!(stats.refresh_grants + stats.failed_grants, 0);
}

async fn transient_failures_back_off_without_touching_the_token(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(3, old).await;
    let before = app.row(&users[0]).await.unwrap();
    app.stack.entra.inject(emulators::Fault {
        kind: emulators::FaultKind::Status(503),
        times: 100,
    });
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "failed"), 3, "{line}");
    let after = app.row(&users[0]).await.unwrap();
    assert_eq!(after.sealed_refresh_token, before.sealed_refresh_token);
    assert_eq!(after.failure_count, 1);
    assert!(after.next_attempt_at.is_some_and(|t| t > Utc::now()));
    assert!(after.lease_owner.is_none());
    app.stack.entra.clear_faults();
    // Backing off: the next run does not pick them.
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "examined"), 0, "{line}");
}

/// The database refuses every write of a sealed token (a trigger), so each batch save fails.
async fn a_failed_batch_save_keeps_every_old_grant_and_backs_off(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(6, old).await;
    let mut before = Vec::new();
    for user in &users {
        before.push(app.stored_refresh_token(user).await);
    }
    let refuse = match app.backend {
        Backend::Postgres => vec![
            "CREATE FUNCTION refuse_token_writes() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'token writes refused'; END $$",
            "CREATE TRIGGER refuse_token_writes BEFORE UPDATE OF sealed_refresh_token
             ON user_tokens FOR EACH ROW EXECUTE FUNCTION refuse_token_writes()",
        ],
        Backend::Sqlite => vec![
            "CREATE TRIGGER refuse_token_writes BEFORE UPDATE OF sealed_refresh_token
             ON user_tokens BEGIN SELECT RAISE(ABORT, 'token writes refused'); END",
        ],
    };
    app.execute_sql(&refuse).await;

    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "failed"), 6, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 0, "{line}");
    for (user, token) in users.iter().zip(&before) {
        let row = app.row(user).await.unwrap();
        assert_eq!(
            (row.failure_count, row.last_error.as_deref()),
            (1, Some("database"))
        );
        assert!(row.lease_owner.is_none() && row.next_attempt_at.is_some());
        assert_eq!(
            &app.stored_refresh_token(user).await,
            token,
            "the old grant stays"
        );
    }
    // The old grants still redeem (Entra keeps a refresh token valid after rotating it).
    let drop = match app.backend {
        Backend::Postgres => "DROP TRIGGER refuse_token_writes ON user_tokens",
        Backend::Sqlite => "DROP TRIGGER refuse_token_writes",
    };
    app.execute_sql(&[drop]).await;
    let response = app
        .do_work(
            &users[0],
            serde_json::json!({"method": "GET", "path": "/me"}),
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn a_spent_budget_stops_the_run_and_the_next_run_continues(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(40, old).await;
    app.stack.entra.set_latency(Duration::from_millis(400));
    let options = RunOptions {
        reseal_only: false,
        time_budget: Duration::from_secs(2),
        concurrency: 2,
    };
    let started = Instant::now();
    let first = refresh_all::run(&app.app.deps, options.clone(), &|_| {})
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    assert!(first.refreshed > 0 && first.refreshed < 40, "{first:?}");
    app.stack.entra.set_latency(Duration::ZERO);
    let mut total = first.refreshed;
    for _ in 0..5 {
        total += refresh_all::run(&app.app.deps, options.clone(), &|_| {})
            .await
            .unwrap()
            .refreshed;
    }
    assert_eq!(total, 40);
    for oid in &users {
        assert!(app.row(oid).await.unwrap().lease_owner.is_none());
    }
}

async fn two_instances_running_at_once_refresh_each_row_once(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    app.seed_users(100, old).await;
    app.stack.entra.set_strict_single_use(true);
    app.stack.entra.set_latency(Duration::from_millis(5));
    app.stack.entra.reset_stats();
    let second = crate::helpers::build_app(&app.stack, &app.database.url, &[]).await;
    let options = RunOptions {
        reseal_only: false,
        time_budget: Duration::from_secs(60),
        concurrency: 8,
    };
    let (a, b) = tokio::join!(
        refresh_all::run(&app.app.deps, options.clone(), &|_| {}),
        refresh_all::run(&second.deps, options.clone(), &|_| {})
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.refreshed + b.refreshed, 100, "{a:?} {b:?}");
    assert_eq!(a.failed + b.failed, 0);
    let stats = app.stack.entra.stats();
    assert_eq!(stats.refresh_grants, 100);
    assert_eq!(stats.failed_grants, 0);
    drop(Arc::clone(&second));
}

async fn reseal_only_rotates_without_calling_entra(app: TestApp) {
    let old = Utc::now() - chrono::Duration::hours(48);
    let users = app.seed_users(300, old).await;
    let rotated = app.app.keys.rotate(&app.key_name()).await.unwrap();
    app.stack.entra.reset_stats();
    let options = RunOptions {
        reseal_only: true,
        time_budget: Duration::from_secs(120),
        concurrency: 16,
    };
    let summary = refresh_all::run(&app.app.deps, options, &|_| {})
        .await
        .unwrap();
    assert_eq!(summary.resealed, 300, "{summary:?}");
    assert_eq!(summary.refreshed, 0);
    let stats = app.stack.entra.stats();
    assert_eq!(stats.refresh_grants + stats.failed_grants, 0);
    let row = app.row(&users[0]).await.unwrap();
    assert_eq!(row.key_version, rotated.version);
    assert!(
        row.refreshed_at < Utc::now() - chrono::Duration::hours(47),
        "a re-seal keeps refreshed_at"
    );
}

crate::on_both_backends!(
    a_rotation_reaches_every_row_and_only_old_rows_call_entra,
    revoked_grants_become_reauth_required_and_stay_out,
    transient_failures_back_off_without_touching_the_token,
    a_failed_batch_save_keeps_every_old_grant_and_backs_off,
    a_spent_budget_stops_the_run_and_the_next_run_continues,
    two_instances_running_at_once_refresh_each_row_once,
    reseal_only_rotates_without_calling_entra,
);
