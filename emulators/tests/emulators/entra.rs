//! The Entra emulator over HTTPS: discovery, JWKS, grants, error shapes, test controls, faults.

use std::time::{Duration, Instant};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use emulators::{AppTokenSpec, Fault, FaultKind, SignWith, TokenVersion, UserTokenSpec};
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn discovery_and_jwks_have_entra_shapes() {
    let stack = stack().await;
    let client = client(&stack);
    let host = stack.entra.authority_host();
    assert!(host.starts_with("https://127.0.0.1:") && !host.ends_with('/'));
    let tid = "11111111-2222-4333-8444-555555555555";

    let v2: Value = client
        .get(format!(
            "{host}/{tid}/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .expect("v2 discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(v2["issuer"], format!("{host}/{tid}/v2.0"));
    assert_eq!(v2["jwks_uri"], format!("{host}/{tid}/discovery/v2.0/keys"));
    assert_eq!(
        v2["token_endpoint"],
        format!("{host}/{tid}/oauth2/v2.0/token")
    );
    assert_eq!(
        v2["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );

    let v1: Value = client
        .get(format!("{host}/{tid}/.well-known/openid-configuration"))
        .send()
        .await
        .expect("v1 discovery")
        .json()
        .await
        .expect("json");
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{tid}/"));
    assert_eq!(v1["jwks_uri"], format!("{host}/{tid}/discovery/keys"));

    for uri in [&v2["jwks_uri"], &v1["jwks_uri"]] {
        let jwks: Value = client
            .get(uri.as_str().expect("uri"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], stack.entra.current_kid());
        assert!(key["x5t"].is_string());
        assert_eq!(key["issuer"], format!("{host}/{tid}/v2.0"));
        let n = key["n"].as_str().expect("n");
        assert_eq!(key["e"], "AQAB");
        assert_eq!(n.len(), 342, "2048-bit modulus, base64url without padding");
        assert!(!n.contains(['=', '+', '/']));
    }

    let bad = client
        .get(format!(
            "{host}/not-a-tenant/v2.0/.well-known/openid-configuration"
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);

    let stats = stack.entra.stats();
    assert_eq!((stats.discovery_requests, stats.jwks_requests), (2, 2));
}

#[tokio::test]
async fn obo_with_offline_access_and_openid_returns_refresh_and_id_tokens() {
    let stack = stack().await;
    let client = client(&stack);
    let tid = home_tenant(&stack);
    let (status, body) = obo(
        &client,
        &stack,
        &user_token(&stack),
        &downstream_scopes(&stack),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let resource = &stack.options().downstream_resource;
    assert_eq!(
        body["scope"],
        format!("{resource}/User.Read offline_access openid profile")
    );

    let access = body["access_token"].as_str().expect("access_token");
    let at = claims(access);
    assert_eq!(at["aud"], resource.as_str());
    assert_eq!(at["iss"], stack.entra.issuer(&tid));
    assert_eq!(
        (at["tid"].as_str(), at["oid"].as_str()),
        (Some(tid.as_str()), Some(USER))
    );
    assert_eq!(at["scp"], "User.Read");
    assert_eq!(at["ver"], "1.0");
    let iat = at["iat"].as_i64().expect("iat");
    assert_eq!(at["nbf"].as_i64(), Some(iat));
    assert_eq!(at["exp"].as_i64(), Some(iat + 3600));
    assert!(at["uti"].is_string());
    assert_eq!(header(access)["alg"], "RS256");
    assert_eq!(header(access)["kid"], stack.entra.current_kid());

    let id = claims(body["id_token"].as_str().expect("id_token"));
    assert_eq!(id["aud"], stack.entra.client_id());
    assert_eq!(id["iss"], stack.entra.issuer(&tid));
    assert_eq!(
        (id["tid"].as_str(), id["oid"].as_str()),
        (Some(tid.as_str()), Some(USER))
    );
    assert_eq!(id["ver"], "2.0");
    assert!(id["sub"].is_string() && id["sub"] != USER);

    let rt = body["refresh_token"].as_str().expect("refresh_token");
    assert!(rt.starts_with("1.AX") && rt.len() == 124, "{rt}");
    assert_eq!(
        stack.entra.latest_refresh_token(&tid, USER).as_deref(),
        Some(rt)
    );

    // Without offline_access and openid: neither a refresh token nor an id token.
    let (status, body) = obo(
        &client,
        &stack,
        &user_token(&stack),
        &format!("{resource}/.default"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none() && body.get("id_token").is_none());

    let stats = stack.entra.stats();
    assert_eq!((stats.obo_grants, stats.failed_grants), (2, 0));
    let secrets = stack.issued_secrets();
    for secret in [access, rt, stack.entra.client_secret()] {
        assert!(secrets.iter().any(|s| s == secret));
    }
}

#[tokio::test]
async fn obo_rejects_bad_assertions_and_scopes() {
    let stack = stack().await;
    let client = client(&stack);
    let tid = home_tenant(&stack);
    let entra = &stack.entra;
    let scopes = downstream_scopes(&stack);
    let spec = || UserTokenSpec::new(tid.clone(), USER);
    let valid_claims = claims(&user_token(&stack));

    let cases: Vec<(&str, String, &str, u64)> = vec![
        (
            "expired",
            entra.mint_user_token(&UserTokenSpec {
                lifetime_secs: -60,
                ..spec()
            }),
            "invalid_grant",
            500133,
        ),
        (
            "not yet valid",
            entra.mint_user_token(&UserTokenSpec {
                not_before_offset_secs: 600,
                ..spec()
            }),
            "invalid_grant",
            500133,
        ),
        (
            "wrong audience",
            entra.mint_user_token(&UserTokenSpec {
                aud: Some("api://someone-else".into()),
                ..spec()
            }),
            "invalid_grant",
            50013,
        ),
        (
            "other tenant",
            entra.mint_user_token(&UserTokenSpec::new(
                "99999999-8888-4777-8666-555555555555",
                USER,
            )),
            "invalid_grant",
            50013,
        ),
        (
            "app token",
            entra.mint_app_token(&AppTokenSpec::new(
                tid.clone(),
                "a-workload",
                vec!["OboVault.Act".into()],
            )),
            "invalid_grant",
            50013,
        ),
        (
            "foreign key",
            entra.sign_raw(json!({}), valid_claims.clone(), SignWith::Foreign),
            "invalid_grant",
            50013,
        ),
        (
            "alg none",
            entra.sign_raw(json!({}), valid_claims.clone(), SignWith::NoneAlg),
            "invalid_grant",
            50013,
        ),
        (
            "hs256",
            entra.sign_raw(
                json!({}),
                valid_claims.clone(),
                SignWith::Hs256WithPublicKey,
            ),
            "invalid_grant",
            50013,
        ),
        ("garbage", "not.a.jwt".to_owned(), "invalid_grant", 50013),
    ];
    for (name, assertion, error, code) in cases {
        let (status, body) = obo(&client, &stack, &assertion, &scopes).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(entra_error(&body), (error.to_owned(), code), "{name}");
    }

    // An id token is not an access token.
    let (_, ok) = obo(&client, &stack, &user_token(&stack), &scopes).await;
    let (status, body) = obo(
        &client,
        &stack,
        ok["id_token"].as_str().expect("id"),
        &scopes,
    )
    .await;
    assert_eq!((status, entra_error(&body).1), (400, 240002));

    // v1 tokens with the App ID URI audience are fine.
    let v1 = entra.mint_user_token(&UserTokenSpec {
        version: TokenVersion::V1,
        aud: Some(format!("api://{}", entra.client_id())),
        ..spec()
    });
    assert_eq!(
        claims(&v1)["iss"],
        format!("https://sts.windows.net/{tid}/")
    );
    assert_eq!(obo(&client, &stack, &v1, &scopes).await.0, 200);

    for bad_scope in [
        "openid profile offline_access",
        "https://a.test/.default https://b.test/.default",
        "User.Read",
    ] {
        let (status, body) = obo(&client, &stack, &user_token(&stack), bad_scope).await;
        assert_eq!(status, 400, "{bad_scope}");
        assert_eq!(entra_error(&body), ("invalid_scope".to_owned(), 70011));
    }
}

#[tokio::test]
async fn client_authentication() {
    let stack = stack().await;
    let client = client(&stack);
    let url = stack.entra.token_endpoint(&home_tenant(&stack));
    let client_id = stack.entra.client_id().to_owned();
    let scope = format!("api://{client_id}/.default");
    let send = |form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let response = client.post(url).form(&form).send().await.expect("answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };

    let (status, body) = send(vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", client_id.clone()),
        ("client_secret", "wrong".into()),
        ("scope", scope.clone()),
    ])
    .await;
    assert_eq!(status, 401);
    assert_eq!(entra_error(&body), ("invalid_client".to_owned(), 7000215));

    let (status, body) = send(vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", "00000000-0000-0000-0000-000000000001".into()),
        ("client_secret", stack.entra.client_secret().into()),
        ("scope", scope.clone()),
    ])
    .await;
    assert_eq!((status, entra_error(&body).1), (400, 700016));

    // A self-signed assertion must name a certificate registered on the app and be signed by
    // it (the full rules are in client_credentials.rs).
    let assertion = stack.entra.sign_raw(
        json!({}),
        json!({"iss": client_id, "sub": client_id, "aud": url, "jti": "x", "exp": 4_000_000_000_i64}),
        SignWith::Foreign,
    );
    let (status, body) = send(vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", client_id.clone()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ),
        ("client_assertion", assertion),
        ("scope", scope.clone()),
    ])
    .await;
    assert_eq!(
        (status, entra_error(&body)),
        (401, ("invalid_client".to_owned(), 700027))
    );

    let wrong_issuer = stack.entra.sign_raw(
        json!({}),
        json!({"iss": "x", "sub": "x"}),
        SignWith::Current,
    );
    let (status, body) = send(vec![
        ("grant_type", "client_credentials".into()),
        ("client_id", client_id.clone()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
        ),
        ("client_assertion", wrong_issuer),
        ("scope", scope.clone()),
    ])
    .await;
    // Another issuer's token is a federated assertion; the app trusts no issuer "x".
    assert_eq!(
        (status, entra_error(&body)),
        (401, ("invalid_client".to_owned(), 700211))
    );

    // HTTP Basic client authentication, with the app's roles in its own token.
    stack
        .entra
        .set_app_roles(&client_id, vec!["Self.Role".into()]);
    let response = client
        .post(&url)
        .basic_auth(&client_id, Some(stack.entra.client_secret()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let app = claims(body["access_token"].as_str().expect("token"));
    assert_eq!(app["aud"], client_id);
    assert_eq!(app["roles"], json!(["Self.Role"]));
    assert_eq!(app["idtyp"], "app");
    assert!(app.get("scp").is_none());

    let (status, body) = send(vec![
        ("grant_type", "password".into()),
        ("client_id", client_id.clone()),
        ("client_secret", stack.entra.client_secret().into()),
    ])
    .await;
    assert_eq!(
        (status, entra_error(&body).0.as_str()),
        (400, "unsupported_grant_type")
    );

    let stats = stack.entra.stats();
    assert_eq!(
        (stats.client_credentials_grants, stats.failed_grants),
        (1, 5)
    );
}

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

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid() {
    let stack = stack().await;
    let client = client(&stack);
    let old_token = user_token(&stack);
    let old_kid = stack.entra.current_kid();
    stack.entra.rotate_signing_key();
    let new_token = user_token(&stack);
    assert_ne!(header(&new_token)["kid"], old_kid);
    assert_eq!(header(&new_token)["kid"], stack.entra.current_kid());
    let jwks = stack.entra.jwks(&home_tenant(&stack));
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    for token in [old_token, new_token] {
        assert_eq!(
            obo(&client, &stack, &token, &downstream_scopes(&stack))
                .await
                .0,
            200
        );
    }
}

#[tokio::test]
async fn dev_token_helpers_and_hostile_requests() {
    let stack = stack().await;
    let client = client(&stack);
    let host = stack.entra.authority_host();
    let body: Value = client
        .get(format!(
            "{host}/_dev/user-token?oid={USER}&scp=access_as_user"
        ))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let user = claims(body["access_token"].as_str().expect("token"));
    assert_eq!(
        (user["oid"].as_str(), user["tid"].as_str()),
        (Some(USER), Some(stack.options().tenant_id.as_str()))
    );
    assert_eq!(user["scp"], "access_as_user");

    let body: Value = client
        .get(format!(
            "{host}/_dev/app-token?app_id=w1&roles=OboVault.Act,Other"
        ))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let app = claims(body["access_token"].as_str().expect("token"));
    assert_eq!(app["roles"], json!(["OboVault.Act", "Other"]));
    assert_eq!(app["azp"], "w1");
    assert_eq!(
        client
            .get(format!("{host}/_dev/user-token?tid=nope"))
            .send()
            .await
            .expect("answer")
            .status(),
        400
    );

    // Hostile token-endpoint input gets 4xx answers and the server stays up.
    let token_url = stack.entra.token_endpoint(&home_tenant(&stack));
    let long = "x".repeat(100_000);
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"%%%%&&&==".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        format!("grant_type={long}&client_id={long}").into_bytes(),
        b"grant_type=refresh_token&client_id=a&client_id=b".to_vec(),
    ];
    for body in bodies {
        let response = client
            .post(&token_url)
            .body(body)
            .send()
            .await
            .expect("answer");
        assert!(response.status().is_client_error(), "{}", response.status());
    }
    for path in [
        "/common/oauth2/v2.0/token",
        "/%FF/oauth2/v2.0/token",
        "/x/oauth2/v2.0/token",
    ] {
        let response = client
            .post(format!("{host}{path}"))
            .body("grant_type=x")
            .send()
            .await
            .expect("answer");
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }
    assert_eq!(
        obo(
            &client,
            &stack,
            &user_token(&stack),
            &downstream_scopes(&stack)
        )
        .await
        .0,
        200
    );
}
