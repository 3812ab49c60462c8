//! Faults during do-work: Entra hanging, dropping or answering too late; Key Vault failing
//! before or after the redeem; the downstream API dropping the connection.

use super::*;

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

crate::on_both_backends!(
    spawn = crate::faults::spawn;
    do_work_entra_hangs_and_drops_leave_the_row_untouched,
    do_work_entra_answering_too_late_keeps_the_previous_token,
    do_work_key_vault_faults_answer_503_before_redeeming,
    a_hanging_key_vault_answers_503_within_a_bound,
    do_work_key_vault_fault_after_the_redeem_still_saves_the_new_token,
    a_dropped_downstream_connection_is_502_and_the_token_is_saved,
);
