//! do-work and the row's lease: a grant found dead while the user reconnects is not reported
//! as dead, and a lease taken by do-work outlives its slow work.

use std::time::{Duration, Instant};

use chrono::Utc;
use emulators::{Fault, FaultKind};
use obo_vault::usecase::refresh_all::{self, RunOptions};
use serde_json::Value;

use crate::helpers::{do_work_request, spawn_app_with, Backend, TestApp};

/// do-work redeems a revoked grant while setup connects the user again: its reauth mark does
/// not apply (the row moved on), so it uses the new grant and answers 200, not 409.
async fn a_grant_replaced_while_found_dead_is_used_not_reported(app: TestApp) {
    let oid = app.connected_user().await;
    app.stack.entra.revoke_user(&app.tenant(), &oid);
    // do-work's redeem is the next token request: it waits 2 s, then finds the token revoked.
    app.stack
        .entra
        .inject(Fault::once(FaultKind::Delay(Duration::from_secs(2))));
    let work = {
        let (client, address, token) = (
            app.client.clone(),
            app.address.clone(),
            app.workload_token(),
        );
        let body = serde_json::json!({"tenantId": app.tenant(), "userId": oid});
        tokio::spawn(async move {
            do_work_request(&client, &address, &token, &body)
                .send()
                .await
                .unwrap()
        })
    };
    // Reconnect once do-work holds the lease and waits for Entra.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.row(&oid).await.unwrap().lease_owner.is_none() {
        assert!(Instant::now() < deadline, "do-work never took the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let setup = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(setup.status(), 200, "{}", setup.text().await.unwrap());

    let response = work.await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], 200, "{body}");
    let row = app.row(&oid).await.unwrap();
    assert_eq!(row.status.as_str(), "active");
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

crate::on_both_backends!(a_grant_replaced_while_found_dead_is_used_not_reported);

/// A 1 s Entra timeout allows a 7 s lease, shorter than the 8 s pause below.
const SHORT_LEASE: &[(&str, &str)] = &[("OBOVAULT_ENTRA_TIMEOUT", "1s"), ("OBOVAULT_LEASE", "7s")];

/// Rows queued behind a tenant's 8 s pause outlive the 7 s lease their claim stamped. Another
/// instance's do-work takes one of them over meanwhile; when the run gets to its rows, it
/// re-checks each lease first: it renews the untouched ones and leaves the one that moved on,
/// so Entra (strict single-use) never sees a refresh token redeemed twice.
async fn queued_rows_recheck_their_lease_before_redeeming(backend: Backend) {
    let Some(app) = spawn_app_with(backend, SHORT_LEASE).await else {
        return;
    };
    let old = Utc::now() - chrono::Duration::hours(48);
    let mut users = Vec::new();
    for age in (0..4).rev() {
        users.extend(
            app.seed_users(1, old - chrono::Duration::minutes(age))
                .await,
        );
    }
    let other_address = app.second_instance(SHORT_LEASE).await;
    let token = app.workload_token();
    app.stack.entra.set_strict_single_use(true);
    app.stack.entra.reset_stats();
    app.stack
        .entra
        .inject(Fault::once(FaultKind::TooManyRequests {
            retry_after_secs: 8,
        }));
    let options = RunOptions {
        reseal_only: false,
        time_budget: Duration::from_secs(60),
        concurrency: 1,
    };
    let run = refresh_all::run(&app.app.deps, options, &|_| {});
    let taken_over = async {
        // Once the first row got its 429, the three others wait in the run's queue.
        let deadline = Instant::now() + Duration::from_secs(10);
        while app.stack.entra.stats().failed_grants == 0 {
            assert!(Instant::now() < deadline, "no 429 seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let body = serde_json::json!({"tenantId": app.tenant(), "userId": users[3]});
        do_work_request(&app.client, &other_address, &token, &body)
            .send()
            .await
            .unwrap()
    };
    let (summary, work) = tokio::join!(run, taken_over);
    let summary = summary.expect("the run answers");
    assert_eq!(work.status(), 200);
    let stats = app.stack.entra.stats();
    assert_eq!(
        stats.failed_grants, 1,
        "only the injected 429; a second redemption would be refused: {stats:?} {summary:?}"
    );
    for oid in &users {
        let row = app.row(oid).await.unwrap();
        assert_eq!(row.status.as_str(), "active");
        app.assert_holds_the_latest_refresh_token(oid).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_rows_recheck_their_lease_before_redeeming_sqlite() {
    queued_rows_recheck_their_lease_before_redeeming(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_rows_recheck_their_lease_before_redeeming_postgres() {
    queued_rows_recheck_their_lease_before_redeeming(Backend::Postgres).await;
}
