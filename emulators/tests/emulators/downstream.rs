//! The downstream API emulator over HTTPS: token checks, the echo, status paths, faults.

use std::time::Duration;

use emulators::{DownstreamStats, Fault, FaultKind, SignWith, UserTokenSpec};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn rejects_bad_tokens_and_echoes_for_a_good_one() {
    let stack = stack().await;
    let client = client(&stack);
    let base = stack.downstream.base_url();
    assert!(base.starts_with("https://127.0.0.1:") && base.ends_with("/v1.0"));
    let tid = home_tenant(&stack);
    let resource = stack.options().downstream_resource.clone();

    let (_, granted) = obo(
        &client,
        &stack,
        &user_token(&stack),
        &downstream_scopes(&stack),
    )
    .await;
    let good = granted["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    let resource_token = |spec: UserTokenSpec| stack.entra.mint_user_token(&spec);
    let bad_tokens = [
        None,
        Some("garbage".to_owned()),
        // A token for the app itself (wrong audience).
        Some(user_token(&stack)),
        Some(resource_token(UserTokenSpec {
            aud: Some(resource.clone()),
            lifetime_secs: -5,
            ..UserTokenSpec::new(tid.clone(), USER)
        })),
        Some(
            stack
                .entra
                .sign_raw(json!({}), claims(&good), SignWith::Foreign),
        ),
        Some(
            stack
                .entra
                .sign_raw(json!({}), claims(&good), SignWith::NoneAlg),
        ),
        Some(
            stack
                .entra
                .sign_raw(json!({}), claims(&good), SignWith::Hs256WithPublicKey),
        ),
    ];
    for token in &bad_tokens {
        let mut request = client.get(format!("{base}/me"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answer");
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    }

    let me: Value = client
        .get(format!("{base}/me?$select=displayName"))
        .bearer_auth(&good)
        .header("ConsistencyLevel", "eventual")
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(me["oid"], USER);
    assert_eq!(me["tid"], tid.as_str());
    assert_eq!(me["scp"], "User.Read");
    assert_eq!(me["method"], "GET");
    assert_eq!(me["path"], "/me");
    assert_eq!(me["query"], json!({"$select": "displayName"}));
    assert_eq!(me["headers"], json!({"consistencylevel": "eventual"}));
    assert_eq!(me["body"], Value::Null);
    assert_eq!(me["displayName"], format!("User {}", &USER[..8]));

    let echo: Value = client
        .post(format!("{base}/echo/deeper"))
        .bearer_auth(&good)
        .header("Prefer", "return=minimal")
        .json(&json!({"hello": [1, 2]}))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo/deeper");
    assert_eq!(echo["body"], json!({"hello": [1, 2]}));
    assert_eq!(echo["headers"], json!({"prefer": "return=minimal"}));
    assert!(echo.get("displayName").is_none());

    let response = client
        .get(format!("{base}/status/404"))
        .bearer_auth(&good)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert!(body["error"]["code"].is_string());
    let response = client
        .get(format!("{base}/status/503"))
        .bearer_auth(&good)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 503);

    assert_eq!(
        stack.downstream.stats(),
        DownstreamStats {
            requests: bad_tokens.len() as u64 + 4,
            unauthorized: bad_tokens.len() as u64
        }
    );
}

#[tokio::test]
async fn injected_faults() {
    let stack = stack().await;
    let client = client(&stack);
    let base = stack.downstream.base_url();
    let (_, granted) = obo(
        &client,
        &stack,
        &user_token(&stack),
        &downstream_scopes(&stack),
    )
    .await;
    let token = granted["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    stack.downstream.inject(Fault::once(FaultKind::Status(502)));
    let response = client
        .get(format!("{base}/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 502);

    stack.downstream.inject(Fault::once(FaultKind::Hang));
    let impatient = client_with_timeout(&stack, Duration::from_millis(300));
    let error = impatient
        .get(format!("{base}/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect_err("hangs");
    assert!(error.is_timeout(), "{error}");

    stack.downstream.set_latency(Duration::from_millis(150));
    let started = std::time::Instant::now();
    let response = client
        .get(format!("{base}/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(stack.downstream.stats().requests, 3);
    stack.downstream.reset_stats();
    assert_eq!(stack.downstream.stats(), DownstreamStats::default());
}
