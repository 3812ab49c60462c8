//! setup: connect, reconnect, inspect, disconnect, and every refusal.

use emulators::{Fault, FaultKind, UserTokenSpec};
use serde_json::Value;

use crate::helpers::{new_user, TestApp};

async fn first_setup_stores_the_newest_refresh_token_sealed(app: TestApp) {
    let oid = new_user();
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tenantId"], app.tenant());
    assert_eq!(body["userId"], oid);
    assert_eq!(body["status"], "active");
    assert!(body["scopes"].as_array().is_some_and(|s| !s.is_empty()));
    for field in ["keyName", "keyVersion", "connectedAt", "refreshedAt"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    let issued = app
        .stack
        .entra
        .latest_refresh_token(&app.tenant(), &oid)
        .expect("Entra issued an RT");
    assert_eq!(app.stored_refresh_token(&oid).await, issued);
    let row = app.row(&oid).await.unwrap();
    assert!(!row
        .sealed_refresh_token
        .windows(issued.len())
        .any(|w| w == issued.as_bytes()));
    assert_eq!(body["keyVersion"], row.key_version);
    assert!(!body.to_string().contains(&issued));
}

async fn connecting_again_answers_200_and_replaces_the_token(app: TestApp) {
    let oid = new_user();
    assert_eq!(app.post_setup(&app.user_token(&oid)).await.status(), 201);
    let first = app.stored_refresh_token(&oid).await;
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 200);
    assert_ne!(app.stored_refresh_token(&oid).await, first);
}

async fn get_shows_the_row_and_delete_removes_it(app: TestApp) {
    let oid = app.connected_user().await;
    let token = app.user_token(&oid);
    let response = app.get_setup(&token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "active");
    assert_eq!(app.delete_setup(&token).await.status(), 204);
    assert_eq!(app.delete_setup(&token).await.status(), 204);
    assert!(app.row(&oid).await.is_none());
    let response = app.get_setup(&token).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_connected");
}

async fn bad_tokens_are_refused_with_the_right_challenge(app: TestApp) {
    let response = app
        .client
        .post(format!("{}/api/setup", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");

    let oid = new_user();
    let expired = app.stack.entra.mint_user_token(&UserTokenSpec {
        lifetime_secs: -600,
        ..UserTokenSpec::new(app.tenant(), &oid)
    });
    let wrong_audience = app.stack.entra.mint_user_token(&UserTokenSpec {
        aud: Some("api://someone-else".into()),
        ..UserTokenSpec::new(app.tenant(), &oid)
    });
    for token in [expired.as_str(), wrong_audience.as_str(), "not-a-jwt"] {
        let response = app.post_setup(token).await;
        assert_eq!(response.status(), 401, "{token}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer error=\"invalid_token\""),
            "{challenge}"
        );
    }
    assert!(app.row(&oid).await.is_none());
}

async fn tokens_without_the_scope_or_from_other_tenants_get_403(app: TestApp) {
    let oid = new_user();
    let no_scope = app.stack.entra.mint_user_token(&UserTokenSpec {
        scp: "User.Read".into(),
        ..UserTokenSpec::new(app.tenant(), &oid)
    });
    let body: Value = app.post_setup(&no_scope).await.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    let body: Value = app
        .post_setup(&app.workload_token())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"], "insufficient_scope");
    let foreign = app.stack.entra.mint_user_token(&UserTokenSpec::new(
        "99999999-9999-4999-8999-999999999999",
        &oid,
    ));
    let response = app.post_setup(&foreign).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "tenant_not_allowed");
    assert!(app.row(&oid).await.is_none());
}

async fn interaction_required_passes_the_claims_challenge_back(app: TestApp) {
    let oid = new_user();
    let claims = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
    app.stack
        .entra
        .require_interaction(&app.tenant(), &oid, claims);
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("interaction_required") && challenge.contains("claims="),
        "{challenge}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "interaction_required");
    assert_eq!(body["claims"], claims);
    assert!(app.row(&oid).await.is_none());
}

async fn throttled_dependencies_answer_503_with_retry_after(app: TestApp) {
    let oid = new_user();
    app.stack.entra.inject(Fault {
        kind: FaultKind::TooManyRequests {
            retry_after_secs: 7,
        },
        times: 1,
    });
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "7");
    assert!(app.row(&oid).await.is_none());

    app.stack.key_vault.inject(Fault {
        kind: FaultKind::TooManyRequests {
            retry_after_secs: 3,
        },
        times: 1,
    });
    let response = app.post_setup(&app.user_token(&oid)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
    assert!(app.row(&oid).await.is_none());

    assert_eq!(app.post_setup(&app.user_token(&oid)).await.status(), 201);
}

async fn bodies_other_than_empty_or_an_empty_object_are_refused(app: TestApp) {
    let oid = new_user();
    let token = app.user_token(&oid);
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(format!("{}/api/setup", app.address))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    assert_eq!(send("[]", "application/json").await.unwrap().status(), 400);
    assert_eq!(
        send("{\"a\":1}", "application/json")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(send("{", "application/json").await.unwrap().status(), 400);
    assert_eq!(send("{}", "text/plain").await.unwrap().status(), 415);
    assert!(app.row(&oid).await.is_none());
    assert_eq!(send("{}", "application/json").await.unwrap().status(), 201);
}

crate::on_both_backends!(
    first_setup_stores_the_newest_refresh_token_sealed,
    connecting_again_answers_200_and_replaces_the_token,
    get_shows_the_row_and_delete_removes_it,
    bad_tokens_are_refused_with_the_right_challenge,
    tokens_without_the_scope_or_from_other_tenants_get_403,
    interaction_required_passes_the_claims_challenge_back,
    throttled_dependencies_answer_503_with_retry_after,
    bodies_other_than_empty_or_an_empty_object_are_refused,
);
