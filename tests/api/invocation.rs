//! The Functions host protocol: readiness, JSON invocations, the timer envelope, routing and
//! body limits.

use serde_json::{json, Value};

use crate::helpers::{new_user, TestApp};

async fn invoke(app: &TestApp, function: &str, req: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/{function}", app.address))
        .header(
            "X-Azure-Functions-InvocationId",
            "2f3c1b8e-1111-4222-8333-444455556666",
        )
        .json(&json!({ "Data": { "req": req }, "Metadata": { "sys": { "MethodName": function } } }))
        .send()
        .await
        .unwrap()
}

async fn json_invocations_behave_like_forwarded_requests(app: TestApp) {
    let oid = new_user();
    let req = json!({
        "Url": format!("https://obo.example/api/setup?code=function-key"),
        "Method": "POST",
        "Query": {"code": "function-key"},
        "Headers": {"Authorization": [format!("Bearer {}", app.user_token(&oid))], "Content-Length": ["0"]},
        "Params": {},
        "Identities": []
    });
    let response = invoke(&app, "setup", req).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let answer: Value = response.json().await.unwrap();
    let res = &answer["Outputs"]["res"];
    assert_eq!(res["statusCode"], 201, "{answer}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["userId"], oid);
    assert_eq!(answer["ReturnValue"], Value::Null);
    assert!(answer["Logs"].is_array());

    let work = json!({"tenantId": app.tenant(), "userId": oid}).to_string();
    let req = json!({
        "Url": "https://obo.example/api/do-work",
        "Method": "POST",
        "Query": {},
        "Headers": {"authorization": [format!("Bearer {}", app.workload_token())], "content-type": ["application/json"]},
        "Params": {},
        "Identities": [],
        "Body": work
    });
    let answer: Value = invoke(&app, "do-work", req).await.json().await.unwrap();
    let res = &answer["Outputs"]["res"];
    assert_eq!(res["statusCode"], 200, "{answer}");
    assert!(res["headers"]["content-type"].is_string());
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["body"]["oid"], oid);

    // Errors travel inside Outputs.res too.
    let req = json!({"Url": "https://obo.example/api/setup", "Method": "GET", "Headers": {}});
    let answer: Value = invoke(&app, "setup", req).await.json().await.unwrap();
    assert_eq!(answer["Outputs"]["res"]["statusCode"], 401);
    assert_eq!(
        answer["Outputs"]["res"]["headers"]["www-authenticate"],
        "Bearer"
    );
}

async fn malformed_envelopes_get_400(app: TestApp) {
    for body in [
        "",
        "[]",
        "{\"Data\": 1}",
        "{\"Data\": {\"req\": {\"Method\": 5}}}",
        "{\"Data\": {\"req\": {\"Method\": \"GET\", \"Headers\": {\"x\": [1]}}}}",
    ] {
        let response = app
            .client
            .post(format!("{}/setup", app.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

async fn the_timer_answers_the_host_contract_even_with_odd_envelopes(app: TestApp) {
    for body in [
        json!({"Data": {"timer": {"Schedule": {"AdjustForDST": true}, "ScheduleStatus": {"Last": "2026-12-02T10:00:00", "Next": "2026-12-02T10:30:00.1234567+00:00", "LastUpdated": "x"}, "IsPastDue": true}}, "Metadata": {}}),
        json!({}),
    ] {
        let response = app
            .client
            .post(format!("{}/refresh-tokens", app.address))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["Outputs"], json!({}));
        assert!(answer["Logs"][0].as_str().unwrap().starts_with("refresh-tokens: examined=0 refreshed=0 resealed=0 reauth_required=0 failed=0 skipped=0"));
    }
}

async fn routing_readiness_and_limits(app: TestApp) {
    let ready = app
        .client
        .get(format!("{}/", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let response = app
        .client
        .get(format!("{}/api/nothing", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let response = app
        .client
        .put(format!("{}/api/setup", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    let response = app
        .client
        .get(format!("{}/api/do-work", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let huge = "x".repeat(300 * 1024);
    let response = app
        .client
        .post(format!("{}/api/do-work", app.address))
        .bearer_auth(app.workload_token())
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");
}

crate::on_both_backends!(
    json_invocations_behave_like_forwarded_requests,
    malformed_envelopes_get_400,
    the_timer_answers_the_host_contract_even_with_odd_envelopes,
    routing_readiness_and_limits,
);
