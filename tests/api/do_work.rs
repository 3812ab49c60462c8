//! do-work: the downstream call on a user's behalf, caching, single flight, dead grants and
//! faults.

use std::time::Duration;

use emulators::{Fault, FaultKind};
use serde_json::{json, Value};

use crate::helpers::{do_work_request, new_user, TestApp};

async fn a_connected_user_gets_the_downstream_echo_and_the_token_rotates(app: TestApp) {
    let oid = app.connected_user().await;
    let before = app.stored_refresh_token(&oid).await;
    let response = app
        .do_work(&oid, json!({"method": "GET", "path": "/me", "query": {"$select": "displayName"}, "headers": {"ConsistencyLevel": "eventual"}}))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 200);
    assert!(body["headers"]["content-type"]
        .as_str()
        .unwrap()
        .contains("json"));
    assert_eq!(body["body"]["oid"], oid);
    assert_eq!(body["body"]["tid"], app.tenant());
    assert_eq!(body["body"]["query"]["$select"], "displayName");
    assert_eq!(body["body"]["headers"]["consistencylevel"], "eventual");
    let after = app.stored_refresh_token(&oid).await;
    assert_ne!(after, before, "the rotated refresh token is saved");
    assert_eq!(
        Some(after),
        app.stack.entra.latest_refresh_token(&app.tenant(), &oid)
    );
    assert!(!body.to_string().contains(&before));
}

async fn the_default_request_is_a_get_of_the_first_allowed_path(app: TestApp) {
    let oid = app.connected_user().await;
    let body: Value = app.do_work(&oid, Value::Null).await.json().await.unwrap();
    assert_eq!(body["body"]["path"], "/me");
    assert_eq!(body["body"]["method"], "GET");
}

async fn sequential_calls_reuse_the_cached_access_token(app: TestApp) {
    let oid = app.connected_user().await;
    app.stack.entra.reset_stats();
    for _ in 0..20 {
        assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    }
    assert_eq!(app.stack.entra.stats().refresh_grants, 1);
}

async fn a_disconnected_user_is_never_acted_for_even_with_a_warm_cache(app: TestApp) {
    let oid = app.connected_user().await;
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    assert_eq!(app.delete_setup(&app.user_token(&oid)).await.status(), 204);
    let response = app.do_work(&oid, Value::Null).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_connected");
    let body: Value = app
        .do_work(&new_user(), Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"], "not_connected");
}

async fn concurrent_cold_calls_cause_exactly_one_refresh(app: TestApp) {
    let oid = app.connected_user().await;
    // Real Entra keeps used refresh tokens valid; strict mode turns any second redemption of
    // the same token into a failure, so a race would show.
    app.stack.entra.set_strict_single_use(true);
    app.stack.entra.reset_stats();
    let calls = (0..50).map(|_| app.do_work(&oid, Value::Null));
    let responses = futures::future::join_all(calls).await;
    for response in responses {
        assert_eq!(response.status(), 200);
    }
    let stats = app.stack.entra.stats();
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.failed_grants, 0);
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

async fn two_instances_share_one_refresh_through_the_lease(app: TestApp) {
    let users = [
        app.connected_user().await,
        app.connected_user().await,
        app.connected_user().await,
    ];
    app.stack.entra.set_strict_single_use(true);
    app.stack.entra.set_latency(Duration::from_millis(200));
    app.stack.entra.reset_stats();
    let second_address = app.second_instance(&[]).await;
    let token = app.workload_token();
    let calls = (0..30).map(|i| {
        let address = if i % 2 == 0 {
            &app.address
        } else {
            &second_address
        };
        let body = json!({"tenantId": app.tenant(), "userId": users[i % 3]});
        do_work_request(&app.client, address, &token, &body).send()
    });
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.unwrap().status(), 200);
    }
    let stats = app.stack.entra.stats();
    assert_eq!(
        stats.failed_grants, 0,
        "no refresh token was redeemed twice"
    );
    // At most one refresh per user per instance (each keeps its own access-token cache).
    assert!(stats.refresh_grants <= 6, "{stats:?}");
    for oid in &users {
        app.assert_holds_the_latest_refresh_token(oid).await;
    }
}

async fn users_see_which_workload_acted_for_them(app: TestApp) {
    let oid = app.connected_user().await;
    assert_eq!(
        app.do_work(&oid, json!({"path": "/me"})).await.status(),
        200
    );
    let mut seen = Value::Null;
    for _ in 0..50 {
        let body: Value = app
            .get_setup(&app.user_token(&oid))
            .await
            .json()
            .await
            .unwrap();
        if body["recentAccess"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        {
            seen = body["recentAccess"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen["callerAppId"], "7e57c0de-0000-4000-8000-00000000a11e",
        "{seen}"
    );
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/me");
    assert_eq!(seen["downstreamStatus"], 200);
    assert_eq!(seen["refreshed"], true);
    assert!(seen["at"].is_string());
}

async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one(app: TestApp) {
    let oid = app.connected_user().await;
    let before = app.stored_refresh_token(&oid).await;
    let refreshed_before = app.row(&oid).await.unwrap().refreshed_at;
    app.stack.entra.omit_refresh_token_next(1);
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    let row = app.row(&oid).await.unwrap();
    assert_eq!(app.stored_refresh_token(&oid).await, before);
    assert!(row.refreshed_at >= refreshed_before);
    // The kept token still works.
    app.app.deps.access_tokens.invalidate(&app.key(&oid)).await;
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
    assert_ne!(app.stored_refresh_token(&oid).await, before);
}

async fn a_revoked_grant_answers_409_and_keeps_the_token(app: TestApp) {
    let oid = app.connected_user().await;
    let sealed = app.row(&oid).await.unwrap().sealed_refresh_token;
    app.stack.entra.revoke_user(&app.tenant(), &oid);
    let response = app.do_work(&oid, Value::Null).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "reauth_required");
    let row = app.row(&oid).await.unwrap();
    assert_eq!(row.status.as_str(), "reauth_required");
    assert_eq!(row.sealed_refresh_token, sealed);
    let status: Value = app
        .get_setup(&app.user_token(&oid))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["status"], "reauth_required");
    app.stack.entra.reset_stats();
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 409);
    assert_eq!(
        app.stack.entra.stats().refresh_grants + app.stack.entra.stats().failed_grants,
        0
    );
    // Setup again brings the user back.
    assert_eq!(app.post_setup(&app.user_token(&oid)).await.status(), 200);
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
}

async fn entra_faults_answer_503_and_leave_the_row_untouched(app: TestApp) {
    let oid = app.connected_user().await;
    let before = app.row(&oid).await.unwrap();
    for kind in [
        FaultKind::TooManyRequests {
            retry_after_secs: 9,
        },
        FaultKind::Status(503),
        FaultKind::Status(500),
    ] {
        app.stack.entra.inject(Fault { kind, times: 1 });
        let response = app.do_work(&oid, Value::Null).await;
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let after = app.row(&oid).await.unwrap();
        assert_eq!(after.sealed_refresh_token, before.sealed_refresh_token);
        assert_eq!(after.status.as_str(), "active");
        assert!(after.lease_owner.is_none(), "the lease was released");
    }
    assert_eq!(app.do_work(&oid, Value::Null).await.status(), 200);
}

async fn downstream_statuses_are_reported_inside_the_envelope(app: TestApp) {
    let oid = app.connected_user().await;
    for code in [404, 500] {
        let response = app
            .do_work(&oid, json!({"path": format!("/status/{code}")}))
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], code);
    }
}

async fn bad_paths_and_bodies_are_refused_and_call_nothing(app: TestApp) {
    let oid = app.connected_user().await;
    app.stack.entra.reset_stats();
    let cases = [
        (json!({"path": "//evil.example/me"}), "path_not_allowed"),
        (json!({"path": "/me/../admin"}), "path_not_allowed"),
        (json!({"path": "/me/%2e%2e/admin"}), "path_not_allowed"),
        (
            json!({"path": "https://evil.example/me"}),
            "path_not_allowed",
        ),
        (json!({"path": "/me@evil.example"}), "path_not_allowed"),
        (json!({"path": "/me\\..\\x"}), "path_not_allowed"),
        (json!({"path": "/admin"}), "path_not_allowed"),
        (json!({"method": "TRACE"}), "invalid_request"),
        (
            json!({"headers": {"Authorization": "Bearer x"}}),
            "invalid_request",
        ),
        (json!({"path": 7}), "invalid_request"),
        (json!({"unknown": true}), "invalid_request"),
    ];
    for (request, code) in cases {
        let response = app.do_work(&oid, request.clone()).await;
        assert_eq!(response.status(), 400, "{request}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], code, "{request}");
    }
    let bad_ids = app
        .do_work_body(
            &app.workload_token(),
            &json!({"tenantId": "common", "userId": oid}),
        )
        .await;
    assert_eq!(bad_ids.status(), 400);
    assert_eq!(app.stack.entra.stats().refresh_grants, 0);
    assert_eq!(app.stack.downstream.stats().requests, 0);
}

async fn only_workloads_with_the_role_may_call(app: TestApp) {
    let oid = app.connected_user().await;
    let user = app.user_token(&oid);
    let no_role = app
        .stack
        .entra
        .mint_app_token(&emulators::AppTokenSpec::new(
            app.tenant(),
            "0000aaaa-0000-4000-8000-000000000001",
            vec![],
        ));
    for token in [user.as_str(), no_role.as_str()] {
        let response = app.do_work_as(token, &oid, Value::Null).await;
        assert_eq!(response.status(), 403);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_role");
    }
    let response = app
        .client
        .post(format!("{}/api/do-work", app.address))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

async fn a_hanging_downstream_api_gets_504_within_the_timeout(app: TestApp) {
    let oid = app.connected_user().await;
    app.stack.downstream.inject(Fault {
        kind: FaultKind::Hang,
        times: 1,
    });
    let started = std::time::Instant::now();
    let response = app.do_work(&oid, Value::Null).await;
    assert_eq!(response.status(), 504);
    // The harness sets OBOVAULT_DOWNSTREAM_TIMEOUT=3s.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "upstream_timeout");
    // The refresh that ran before the hang was still saved.
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

crate::on_both_backends!(
    a_connected_user_gets_the_downstream_echo_and_the_token_rotates,
    the_default_request_is_a_get_of_the_first_allowed_path,
    sequential_calls_reuse_the_cached_access_token,
    a_disconnected_user_is_never_acted_for_even_with_a_warm_cache,
    concurrent_cold_calls_cause_exactly_one_refresh,
    two_instances_share_one_refresh_through_the_lease,
    users_see_which_workload_acted_for_them,
    a_refresh_without_a_new_refresh_token_keeps_the_old_one,
    a_revoked_grant_answers_409_and_keeps_the_token,
    entra_faults_answer_503_and_leave_the_row_untouched,
    downstream_statuses_are_reported_inside_the_envelope,
    bad_paths_and_bodies_are_refused_and_call_nothing,
    only_workloads_with_the_role_may_call,
    a_hanging_downstream_api_gets_504_within_the_timeout,
);
