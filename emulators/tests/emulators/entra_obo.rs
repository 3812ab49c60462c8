//! The Entra emulator's On-Behalf-Of grant: what it issues and which assertions and scopes it
//! refuses.

use emulators::{AppTokenSpec, SignWith, TokenVersion, UserTokenSpec};
use serde_json::json;

use crate::common::*;

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
