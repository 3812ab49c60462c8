//! The Entra emulator's refresh-token grant: rotation, revocation, strict single use, omitted
//! refresh tokens, interaction required; and injected faults.

use std::time::{Duration, Instant};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use emulators::{Fault, FaultKind, UserTokenSpec};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn refresh_rotates_the_refresh_token_and_revocation_kills_it() {
    let stack = stack().await;
    let client = client(&stack);
    let tid = home_tenant(&stack);
    let (_, first) = obo(
        &client,
        &stack,
        &user_token(&stack),
        &downstream_scopes(&stack),
    )
    .await;
    let rt1 = first["refresh_token"].as_str().expect("rt").to_owned();

    let (status, second) = refresh(&client, &stack, &rt1).await;
    assert_eq!(status, 200, "{second}");
    let rt2 = second["refresh_token"].as_str().expect("rt").to_owned();
    assert_ne!(rt1, rt2);
    assert!(second["id_token"].is_string());
    assert_eq!(
        claims(second["access_token"].as_str().expect("at"))["oid"],
        USER
    );
    assert_eq!(
        stack.entra.latest_refresh_token(&tid, USER),
        Some(rt2.clone())
    );
    // Like real Entra, the old refresh token stays valid.
    assert_eq!(refresh(&client, &stack, &rt1).await.0, 200);

    // Without a scope the original grant's scopes apply; client_info=1 returns the user's ids.
    let response = token_call(
        &client,
        &stack,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &rt2),
            ("client_info", "1"),
        ],
    )
    .await
    .expect("answer");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert!(body["id_token"].is_string());
    let info = URL_SAFE_NO_PAD
        .decode(body["client_info"].as_str().expect("client_info"))
        .expect("b64");
    assert_eq!(
        serde_json::from_slice::<Value>(&info).expect("json"),
        json!({"uid": USER, "utid": tid})
    );

    let (status, body) = refresh(&client, &stack, "1.AXunknown").await;
    assert_eq!(
        (status, entra_error(&body)),
        (400, ("invalid_grant".to_owned(), 70008))
    );

    stack.entra.revoke_user(&tid, USER);
    for rt in [&rt1, &rt2] {
        let (status, body) = refresh(&client, &stack, rt).await;
        assert_eq!(
            (status, entra_error(&body)),
            (400, ("invalid_grant".to_owned(), 50173))
        );
    }
    // Signing in again (a new OBO) gives a working refresh token.
    let (_, again) = obo(
        &client,
        &stack,
        &user_token(&stack),
        &downstream_scopes(&stack),
    )
    .await;
    assert_eq!(
        refresh(
            &client,
            &stack,
            again["refresh_token"].as_str().expect("rt")
        )
        .await
        .0,
        200
    );

    let stats = stack.entra.stats();
    assert_eq!(
        (stats.obo_grants, stats.refresh_grants, stats.failed_grants),
        (2, 4, 3)
    );
}

#[tokio::test]
async fn strict_single_use_omitted_refresh_tokens_and_interaction_required() {
    let stack = stack().await;
    let client = client(&stack);
    let tid = home_tenant(&stack);
    let users: Vec<String> = (0..3)
        .map(|i| format!("00000000-0000-4000-8000-00000000000{i}"))
        .collect();
    let rts = stack.entra.issue_refresh_tokens(&tid, &users);
    assert_eq!(rts.len(), 3);
    assert_eq!(
        stack.entra.latest_refresh_token(&tid, &users[2]).as_ref(),
        Some(&rts[2])
    );

    stack.entra.set_strict_single_use(true);
    let (status, body) = refresh(&client, &stack, &rts[0]).await;
    assert_eq!(status, 200);
    let (status, again) = refresh(&client, &stack, &rts[0]).await;
    assert_eq!(
        (status, entra_error(&again)),
        (400, ("invalid_grant".to_owned(), 70008))
    );
    assert_eq!(
        refresh(&client, &stack, body["refresh_token"].as_str().expect("rt"))
            .await
            .0,
        200
    );

    stack.entra.omit_refresh_token_next(1);
    let (status, body) = refresh(&client, &stack, &rts[1]).await;
    assert_eq!(status, 200);
    assert!(body.get("refresh_token").is_none());
    // Not used up: it was answered without a replacement.
    let (status, body) = refresh(&client, &stack, &rts[1]).await;
    assert_eq!(status, 200);
    assert!(body["refresh_token"].is_string());

    let challenge = r#"{"access_token":{"acrs":{"essential":true,"value":"c1"}}}"#;
    stack.entra.require_interaction(&tid, &users[2], challenge);
    let (status, body) = refresh(&client, &stack, &rts[2]).await;
    assert_eq!(status, 400);
    assert_eq!(
        entra_error(&body),
        ("interaction_required".to_owned(), 50079)
    );
    assert_eq!(body["suberror"], "basic_action");
    assert_eq!(body["claims"], challenge);
    let user_token = stack
        .entra
        .mint_user_token(&UserTokenSpec::new(tid.clone(), users[2].clone()));
    let (status, body) = obo(&client, &stack, &user_token, &downstream_scopes(&stack)).await;
    assert_eq!(
        (status, entra_error(&body).0.as_str()),
        (400, "interaction_required")
    );
    stack.entra.clear_interaction(&tid, &users[2]);
    assert_eq!(refresh(&client, &stack, &rts[2]).await.0, 200);
}

#[tokio::test]
async fn injected_faults() {
    let stack = stack().await;
    let client = client(&stack);
    let rt = stack
        .entra
        .issue_refresh_tokens(&home_tenant(&stack), &[USER.to_owned()])
        .remove(0);

    stack.entra.inject(Fault::once(FaultKind::TooManyRequests {
        retry_after_secs: 7,
    }));
    stack.entra.inject(Fault::once(FaultKind::Status(503)));
    stack.entra.inject(Fault::once(FaultKind::InvalidClient));
    let response = token_call(
        &client,
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await
    .expect("answer");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let (status, body) = refresh(&client, &stack, &rt).await;
    assert_eq!(
        (status, entra_error(&body).0.as_str()),
        (503, "temporarily_unavailable")
    );
    let (status, body) = refresh(&client, &stack, &rt).await;
    assert_eq!(
        (status, entra_error(&body)),
        (401, ("invalid_client".to_owned(), 7000215))
    );
    assert_eq!(refresh(&client, &stack, &rt).await.0, 200);

    // Hang: the client's timeout fires.
    stack.entra.inject(Fault::once(FaultKind::Hang));
    let impatient = client_with_timeout(&stack, Duration::from_millis(300));
    let error = token_call(
        &impatient,
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await
    .expect_err("hangs");
    assert!(error.is_timeout(), "{error}");

    // Unreachable: the connection is dropped without an answer.
    stack.entra.inject(Fault::once(FaultKind::Unreachable));
    let error = token_call(
        &client,
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await
    .expect_err("dropped");
    assert!(!error.is_timeout() && error.status().is_none(), "{error}");
    // Also over HTTP/1.1, where the connection is closed without a response.
    let pem = std::fs::read(stack.ca_pem_path()).expect("ca.pem");
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA")])
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    stack.entra.inject(Fault::once(FaultKind::Unreachable));
    let error = token_call(
        &http1,
        &stack,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await
    .expect_err("dropped");
    assert!(!error.is_timeout() && error.status().is_none(), "{error}");

    stack
        .entra
        .inject(Fault::once(FaultKind::Delay(Duration::from_millis(200))));
    let started = Instant::now();
    assert_eq!(refresh(&client, &stack, &rt).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    stack.entra.inject(Fault::always(FaultKind::Status(500)));
    assert_eq!(refresh(&client, &stack, &rt).await.0, 500);
    assert_eq!(refresh(&client, &stack, &rt).await.0, 500);
    stack.entra.clear_faults();
    assert_eq!(refresh(&client, &stack, &rt).await.0, 200);

    let stats = stack.entra.stats();
    assert_eq!((stats.refresh_grants, stats.failed_grants), (3, 5));
    assert!(
        stats.token_endpoint_micros >= 200_000 && stats.token_endpoint_micros < 60_000_000,
        "the served time includes the injected delay: {stats:?}"
    );
    stack.entra.reset_stats();
    assert_eq!(stack.entra.stats(), Default::default());
}
