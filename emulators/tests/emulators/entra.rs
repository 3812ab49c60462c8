//! The Entra emulator over HTTPS: discovery, JWKS, key rotation, dev token helpers and hostile
//! requests. Grants, client authentication and faults have their own files (`entra_*.rs`).

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
