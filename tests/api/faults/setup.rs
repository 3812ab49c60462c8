//! Faults during setup: Entra failing the OBO exchange, Key Vault failing the key lookup.

use super::*;

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

crate::on_both_backends!(
    spawn = crate::faults::spawn;
    setup_entra_faults_keep_the_previous_grant,
    setup_key_vault_faults_keep_the_previous_grant,
);
