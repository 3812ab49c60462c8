//! Faults during a refresh-tokens run: Entra failing or throttling some rows, Key Vault failing
//! at the start or on old key versions.

use super::*;

/// Entra hanging, dropping, failing or answering too late for some rows of a run: those rows
/// fail and back off with their token untouched, the others are refreshed, and the run ends
/// within the Entra timeout. The throttled row waits for its tenant's Retry-After (1 s, well
/// within the hanging rows' timeout) and is claimed again and refreshed in the same run.
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
    assert_eq!(summary_count(&line, "examined"), 9, "{line}");
    assert_eq!(summary_count(&line, "failed"), 5, "{line}");
    assert_eq!(summary_count(&line, "refreshed"), 4, "{line}");
    let mut failed = 0;
    for (oid, before) in users.iter().zip(&before) {
        let after = app.row(oid).await.unwrap();
        assert_eq!(after.status.as_str(), "active");
        assert!(after.lease_owner.is_none(), "lease released");
        if after.revision == before.revision {
            failed += 1;
            assert_eq!(after.sealed_refresh_token, before.sealed_refresh_token);
            assert_eq!(after.refreshed_at, before.refreshed_at);
            assert_eq!(after.failure_count, 1);
            assert!(after.next_attempt_at.is_some());
            assert!(after.last_error.is_some());
        } else {
            assert_eq!(after.failure_count, 0);
            assert!(after.next_attempt_at.is_none());
        }
        assert_token_alive(&app, oid, "after the run").await;
    }
    assert_eq!(failed, 4);
    // Every failed row backs off: none comes back this soon.
    let line = app.timer_summary().await;
    assert_eq!(summary_count(&line, "examined"), 0, "{line}");
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

crate::on_both_backends!(
    spawn = crate::faults::spawn;
    timer_entra_faults_back_off_only_the_failed_rows,
    timer_entra_throttling_pauses_only_the_tenant_s_rows,
    timer_key_vault_faults_at_the_start_leave_every_row_alone,
    timer_key_vault_faults_on_old_versions_back_off_the_rows,
);
