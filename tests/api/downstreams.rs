//! Several downstream APIs from one grant (`OBOVAULT_DOWNSTREAMS`): routing by name, per-API
//! path rules, access tokens per user and downstream with one redemption per user, consent per
//! resource, and least-privilege app roles per downstream.

use emulators::{AppTokenSpec, GrantKind, Stack, StackOptions, DEFAULT_DOWNSTREAM_RESOURCE};
use serde_json::{json, Value};

use crate::helpers::{do_work_request, Backend, TestApp};

/// The second API's resource (audience).
pub(crate) const CRM_RESOURCE: &str = "https://crm.obo-vault.test";
const WORKLOAD: &str = "7e57c0de-0000-4000-8000-00000000a11e";

/// The service with `graph` (the stack's downstream) and `crm-api` (a second API emulator),
/// each allowing `/me`, `/echo` and `/status`, plus `only` paths of its own, and `extra`
/// settings.
pub(crate) async fn spawn_two(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    let options = StackOptions {
        extra_downstreams: vec![CRM_RESOURCE.to_owned()],
        ..StackOptions::default()
    };
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    crate::helpers::spawn_app_on_stack(backend, options, move |stack: &Stack| {
        let mut env: Vec<(String, String)> = [
            "OBOVAULT_DOWNSTREAM_BASE_URL",
            "OBOVAULT_DOWNSTREAM_SCOPES",
            "OBOVAULT_DOWNSTREAM_ALLOWED_PATHS",
        ]
        .iter()
        .map(|name| ((*name).to_owned(), String::new()))
        .collect();
        env.extend(stack.named_downstreams_env(&["graph", "crm-api"], "/me,/echo,/status"));
        for (name, value) in &mut env {
            if name == "OBOVAULT_DOWNSTREAM_GRAPH_ALLOWED_PATHS" {
                value.push_str(",/users");
            }
            if name == "OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS" {
                value.push_str(",/accounts");
            }
        }
        env.extend(extra);
        env
    })
    .await
}

/// A workload token with `roles`.
fn workload(app: &TestApp, roles: &[&str]) -> String {
    app.stack.entra.mint_app_token(&AppTokenSpec::new(
        app.tenant(),
        WORKLOAD,
        roles.iter().map(|r| (*r).to_owned()).collect(),
    ))
}

/// do-work for `oid` naming `downstream` (none: the default) with `request`.
pub(crate) async fn call(
    app: &TestApp,
    token: &str,
    oid: &str,
    downstream: Option<&str>,
    request: Value,
) -> reqwest::Response {
    let mut body = json!({"tenantId": app.tenant(), "userId": oid});
    if let Some(name) = downstream {
        body["downstream"] = json!(name);
    }
    if !request.is_null() {
        body["request"] = request;
    }
    app.do_work_body(token, &body).await
}

fn crm(app: &TestApp) -> &emulators::DownstreamEmulator {
    &app.stack.extra_downstreams[0]
}

/// Resets every counter the scenarios compare.
fn reset(app: &TestApp) {
    app.stack.entra.reset_stats();
    app.stack.downstream.reset_stats();
    crm(app).reset_stats();
}

/// The resources of the successful refresh grants, in order.
fn refreshed_resources(app: &TestApp) -> Vec<String> {
    app.stack
        .entra
        .grant_log()
        .iter()
        .filter(|g| g.grant == GrantKind::RefreshToken && g.succeeded)
        .map(|g| {
            let resource = g.scope.split_whitespace().next().unwrap_or_default();
            resource.rsplit_once('/').map_or("", |(r, _)| r).to_owned()
        })
        .collect()
}

async fn each_call_reaches_only_the_downstream_it_names(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    reset(&app);
    let response = call(
        &app,
        &token,
        &oid,
        Some("crm-api"),
        json!({"path": "/accounts/7"}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    // The API accepts only tokens for its own audience: a 200 is a token for crm-api.
    assert_eq!(body["status"], 200, "{body}");
    assert_eq!(body["body"]["path"], "/accounts/7");
    assert_eq!(body["body"]["oid"], oid);
    assert_eq!(
        (
            crm(&app).stats().requests,
            app.stack.downstream.stats().requests
        ),
        (1, 0)
    );
    assert_eq!(refreshed_resources(&app), [CRM_RESOURCE]);

    let response = call(&app, &token, &oid, None, json!({"path": "/users/1"})).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 200, "naming none reaches the first: {body}");
    assert_eq!(
        (
            crm(&app).stats().requests,
            app.stack.downstream.stats().requests
        ),
        (1, 1)
    );
    assert_eq!(
        refreshed_resources(&app),
        [CRM_RESOURCE, DEFAULT_DOWNSTREAM_RESOURCE]
    );
}

async fn an_unknown_name_or_another_downstreams_path_redeems_nothing(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    let before = app.stored_refresh_token(&oid).await;
    reset(&app);
    let cases = [
        (
            Some("sharepoint"),
            json!({"path": "/me"}),
            "invalid_request",
        ),
        (Some("Graph"), Value::Null, "invalid_request"),
        (
            Some("crm-api"),
            json!({"path": "/users/1"}),
            "path_not_allowed",
        ),
        (None, json!({"path": "/accounts"}), "path_not_allowed"),
        (
            Some("graph"),
            json!({"path": "/accounts"}),
            "path_not_allowed",
        ),
    ];
    for (downstream, request, error) in cases {
        let response = call(&app, &token, &oid, downstream, request).await;
        assert_eq!(response.status(), 400, "{downstream:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{downstream:?}: {body}");
    }
    let numeric = app
        .do_work_body(
            &token,
            &json!({"tenantId": app.tenant(), "userId": oid, "downstream": 1}),
        )
        .await;
    assert_eq!(numeric.status(), 400);
    assert_eq!(app.stack.entra.stats().refresh_grants, 0);
    assert_eq!(app.stack.entra.stats().failed_grants, 0);
    assert_eq!(
        crm(&app).stats().requests + app.stack.downstream.stats().requests,
        0
    );
    assert_eq!(app.stored_refresh_token(&oid).await, before);
}

async fn alternating_warm_calls_redeem_once_per_downstream(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    reset(&app);
    for i in 0..12 {
        let name = if i % 2 == 0 { "graph" } else { "crm-api" };
        let response = call(&app, &token, &oid, Some(name), Value::Null).await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 200, "{name}: {body}");
    }
    assert_eq!(app.stack.entra.stats().refresh_grants, 2);
    assert_eq!(
        refreshed_resources(&app),
        [DEFAULT_DOWNSTREAM_RESOURCE, CRM_RESOURCE],
        "each with its downstream's scopes"
    );
    assert_eq!(
        (
            crm(&app).stats().requests,
            app.stack.downstream.stats().requests
        ),
        (6, 6)
    );
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

async fn concurrent_cold_calls_to_both_downstreams_redeem_one_at_a_time(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    app.stack.entra.set_strict_single_use(true);
    app.stack
        .entra
        .set_latency(std::time::Duration::from_millis(100));
    reset(&app);
    let calls = (0..20).map(|i| {
        let name = if i % 2 == 0 { "graph" } else { "crm-api" };
        call(&app, &token, &oid, Some(name), Value::Null)
    });
    for response in futures::future::join_all(calls).await {
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 200, "{body}");
    }
    let stats = app.stack.entra.stats();
    assert_eq!(
        (stats.refresh_grants, stats.failed_grants),
        (2, 0),
        "{stats:?}"
    );
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

async fn two_instances_calling_both_downstreams_never_double_redeem(app: TestApp) {
    let oid = app.connected_user().await;
    app.stack.entra.set_strict_single_use(true);
    app.stack
        .entra
        .set_latency(std::time::Duration::from_millis(100));
    reset(&app);
    let env: Vec<(String, String)> = [
        "OBOVAULT_DOWNSTREAM_BASE_URL",
        "OBOVAULT_DOWNSTREAM_SCOPES",
        "OBOVAULT_DOWNSTREAM_ALLOWED_PATHS",
    ]
    .iter()
    .map(|n| ((*n).to_owned(), String::new()))
    .chain(
        app.stack
            .named_downstreams_env(&["graph", "crm-api"], "/me"),
    )
    .collect();
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let second_address = app.second_instance(&pairs).await;
    let token = app.workload_token();
    let calls = (0..20).map(|i| {
        let address = if i % 4 < 2 {
            &app.address
        } else {
            &second_address
        };
        let name = if i % 2 == 0 { "graph" } else { "crm-api" };
        let body = json!({"tenantId": app.tenant(), "userId": oid, "downstream": name});
        do_work_request(&app.client, address, &token, &body).send()
    });
    for response in futures::future::join_all(calls).await {
        let response = response.unwrap();
        assert_eq!(response.status(), 200);
    }
    let stats = app.stack.entra.stats();
    assert_eq!(
        stats.failed_grants, 0,
        "no refresh token was redeemed twice"
    );
    // At most one redemption per downstream per instance (each has its own cache).
    assert!((2..=4).contains(&stats.refresh_grants), "{stats:?}");
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

async fn missing_consent_for_one_downstream_leaves_the_other_working(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    app.stack
        .entra
        .withhold_consent(&app.tenant(), &oid, CRM_RESOURCE);
    let before = app.stored_refresh_token(&oid).await;
    let response = call(&app, &token, &oid, Some("crm-api"), Value::Null).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "consent_required", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("crm-api"));
    let row = app.row(&oid).await.unwrap();
    assert_eq!(row.status, obo_vault::domain::TokenStatus::Active);
    assert_eq!(
        app.stored_refresh_token(&oid).await,
        before,
        "nothing rotated"
    );
    let response = call(&app, &token, &oid, Some("graph"), Value::Null).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["status"], 200,
        "the first downstream still works: {body}"
    );
    // Once consent is given, the second works too, with the same grant.
    app.stack
        .entra
        .grant_consent(&app.tenant(), &oid, CRM_RESOURCE);
    let body: Value = call(&app, &token, &oid, Some("crm-api"), Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], 200, "{body}");
}

async fn a_downstream_role_grants_that_downstream_only(app: TestApp) {
    let oid = app.connected_user().await;
    let crm_only = workload(&app, &["OboVault.Act.crm-api"]);
    reset(&app);
    for downstream in [Some("graph"), None] {
        let response = call(&app, &crm_only, &oid, downstream, Value::Null).await;
        assert_eq!(response.status(), 403, "{downstream:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "insufficient_role", "{body}");
    }
    assert_eq!(
        app.stack.entra.stats().refresh_grants,
        0,
        "nothing redeemed"
    );
    assert_eq!(app.stack.downstream.stats().requests, 0, "nothing called");
    let body: Value = call(&app, &crm_only, &oid, Some("crm-api"), Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], 200, "{body}");
    // Another downstream's role, a look-alike, or no role: refused at the door.
    for roles in [&["OboVault.Act.sharepoint"][..], &["OboVault.Actor"], &[]] {
        let response = call(
            &app,
            &workload(&app, roles),
            &oid,
            Some("crm-api"),
            Value::Null,
        )
        .await;
        assert_eq!(response.status(), 403, "{roles:?}");
    }
    let plain = app.workload_token();
    for downstream in ["graph", "crm-api"] {
        let body: Value = call(&app, &plain, &oid, Some(downstream), Value::Null)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], 200, "{downstream}: {body}");
    }
}

async fn the_audit_and_recent_access_name_the_downstream(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    let response = call(&app, &token, &oid, Some("crm-api"), Value::Null).await;
    assert_eq!(response.status(), 200);
    for _ in 0..100 {
        let body: Value = app
            .get_setup(&app.user_token(&oid))
            .await
            .json()
            .await
            .unwrap();
        if let Some(access) = body["recentAccess"].as_array().and_then(|a| a.first()) {
            assert_eq!(access["downstream"], "crm-api", "{access}");
            let logs = String::from_utf8_lossy(&crate::helpers::LOGS.lock().unwrap()).into_owned();
            assert!(logs
                .lines()
                .any(|line| line.contains("acted on behalf of a user")
                    && line.contains(&oid)
                    && line.contains("\"downstream\":\"crm-api\"")));
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no access recorded");
}

// Scenarios with two named downstreams, on both backends.
crate::on_both_backends!(
    spawn = |backend| crate::downstreams::spawn_two(backend, &[]);
    each_call_reaches_only_the_downstream_it_names,
    an_unknown_name_or_another_downstreams_path_redeems_nothing,
    alternating_warm_calls_redeem_once_per_downstream,
    concurrent_cold_calls_to_both_downstreams_redeem_one_at_a_time,
    two_instances_calling_both_downstreams_never_double_redeem,
    missing_consent_for_one_downstream_leaves_the_other_working,
    a_downstream_role_grants_that_downstream_only,
    the_audit_and_recent_access_name_the_downstream,
);
