//! Claims challenges (CAE) and client capabilities: a downstream's `insufficient_claims`
//! challenge is answered with one redemption carrying its claims and one retry; Entra refusing
//! it ends in 409 with the claims; `OBOVAULT_CLIENT_CAPABILITIES=cp1` declares `xms_cc` on
//! every grant.

use emulators::GrantKind;
use serde_json::{json, Value};

use crate::downstreams::call;
use crate::helpers::TestApp;

const CAE: &[(&str, &str)] = &[
    ("OBOVAULT_CLIENT_CAPABILITIES", "cp1"),
    ("OBOVAULT_REFRESH_AFTER", "1s"),
];

/// The claims of the refresh grants since the last reset: (succeeded, claims).
fn refresh_claims(app: &TestApp) -> Vec<(bool, Value)> {
    app.stack
        .entra
        .grant_log()
        .into_iter()
        .filter(|g| g.grant == GrantKind::RefreshToken)
        .map(|g| (g.succeeded, g.claims.unwrap_or(Value::Null)))
        .collect()
}

async fn a_claims_challenge_is_answered_with_one_redemption_and_one_retry(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    let body: Value = call(&app, &token, &oid, None, Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], 200, "{body}");
    // A critical event: the API now refuses the cached token with a claims challenge.
    app.stack.downstream.revoke_sessions(&app.tenant(), &oid);
    app.stack.entra.reset_stats();
    app.stack.downstream.reset_stats();
    let response = call(&app, &token, &oid, None, Value::Null).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 200, "the retried call succeeds: {body}");
    let stats = app.stack.downstream.stats();
    assert_eq!(
        (stats.requests, stats.unauthorized),
        (2, 1),
        "one challenge, one retry"
    );
    let grants = refresh_claims(&app);
    assert_eq!(grants.len(), 1, "{grants:?}");
    let (succeeded, claims) = &grants[0];
    assert!(succeeded);
    let nbf = &claims["access_token"]["nbf"];
    assert_eq!(nbf["essential"], true, "the challenge's claims: {claims}");
    assert!(nbf["value"].as_str().unwrap().parse::<i64>().is_ok());
    assert_eq!(claims["access_token"]["xms_cc"]["values"], json!(["cp1"]));
    // The new token is cached: the next call neither redeems nor is challenged.
    app.stack.entra.reset_stats();
    let body: Value = call(&app, &token, &oid, None, Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], 200);
    assert_eq!(app.stack.entra.stats().refresh_grants, 0);
    app.assert_holds_the_latest_refresh_token(&oid).await;
}

async fn a_challenge_entra_refuses_is_409_with_the_claims_and_no_second_retry(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.workload_token();
    let body: Value = call(&app, &token, &oid, Some("crm-api"), Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], 200, "{body}");
    let crm = &app.stack.extra_downstreams[0];
    crm.revoke_sessions(&app.tenant(), &oid);
    let mfa = r#"{"access_token":{"capolids":{"essential":true,"values":["c1"]}}}"#;
    app.stack
        .entra
        .require_interaction(&app.tenant(), &oid, mfa);
    app.stack.entra.reset_stats();
    crm.reset_stats();
    let response = call(&app, &token, &oid, Some("crm-api"), Value::Null).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "reauth_required", "{body}");
    assert_eq!(body["claims"], mfa, "Entra's claims are passed back");
    assert_eq!(crm.stats().requests, 1, "no second call");
    let grants = refresh_claims(&app);
    assert_eq!(grants.len(), 1, "one redemption: {grants:?}");
    assert!(!grants[0].0);
    assert_eq!(grants[0].1["access_token"]["nbf"]["essential"], true);
    assert_eq!(
        app.row(&oid).await.unwrap().status,
        obo_vault::domain::TokenStatus::ReauthRequired
    );
}

async fn every_obo_and_refresh_grant_declares_the_client_capability(app: TestApp) {
    app.stack.entra.reset_stats();
    let oid = app.connected_user().await;
    let token = app.workload_token();
    for downstream in ["graph", "crm-api"] {
        let body: Value = call(&app, &token, &oid, Some(downstream), Value::Null)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], 200, "{downstream}: {body}");
    }
    // The timer's keep-alive too (rows are due after 1s here).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let summary = app.timer_summary().await;
    assert_eq!(
        crate::helpers::summary_count(&summary, "refreshed"),
        1,
        "{summary}"
    );
    let log = app.stack.entra.grant_log();
    let kinds: Vec<GrantKind> = log.iter().map(|g| g.grant).collect();
    assert_eq!(
        kinds,
        [
            GrantKind::OnBehalfOf,
            GrantKind::RefreshToken,
            GrantKind::RefreshToken,
            GrantKind::RefreshToken
        ]
    );
    for grant in &log {
        assert!(grant.succeeded);
        assert_eq!(
            grant.claims,
            Some(json!({"access_token": {"xms_cc": {"values": ["cp1"]}}})),
            "{grant:?}"
        );
    }
    // The timer keeps the grant alive with the first downstream's scopes.
    assert!(log[3]
        .scope
        .starts_with(emulators::DEFAULT_DOWNSTREAM_RESOURCE));
}

// Scenarios with two named downstreams and `cp1`, on both backends.
crate::on_both_backends!(
    spawn = |backend| crate::downstreams::spawn_two(backend, crate::claims::CAE);
    a_claims_challenge_is_answered_with_one_redemption_and_one_retry,
    a_challenge_entra_refuses_is_409_with_the_claims_and_no_second_retry,
    every_obo_and_refresh_grant_declares_the_client_capability,
);
