//! Several APIs with their own audiences, per-resource consent, the `claims` parameter and
//! CAE claims challenges.

use base64::{engine::general_purpose::STANDARD, Engine as _};
use emulators::{GrantKind, Stack, StackOptions};
use serde_json::{json, Value};

use crate::common::*;

const CRM: &str = "https://crm.obo-vault.test";
const CP1: &str = r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#;

async fn two_apis() -> Stack {
    Stack::start(StackOptions {
        extra_downstreams: vec![CRM.to_owned()],
        ..StackOptions::default()
    })
    .await
    .expect("stack starts")
}

/// A refresh grant for `resource` with optional `claims`: (status, body).
async fn redeem(
    client: &reqwest::Client,
    stack: &Stack,
    refresh_token: &str,
    resource: &str,
    claims: Option<&str>,
) -> (u16, Value) {
    let scope = format!("{resource}/.default offline_access");
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("scope", scope.as_str()),
    ];
    if let Some(claims) = claims {
        fields.push(("claims", claims));
    }
    let response = token_call(client, stack, &fields).await.expect("answers");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON"),
    )
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("answers")
}

#[tokio::test]
async fn each_api_accepts_only_its_own_audience_and_consent_is_per_resource() {
    let stack = two_apis().await;
    let client = client(&stack);
    let crm = &stack.extra_downstreams[0];
    assert_eq!(crm.resource(), CRM);
    assert_ne!(crm.base_url(), stack.downstream.base_url());
    let tid = home_tenant(&stack);
    let refresh_token = stack
        .entra
        .issue_refresh_tokens(&tid, &[USER.to_owned()])
        .remove(0);
    let (status, crm_set) = redeem(&client, &stack, &refresh_token, CRM, None).await;
    assert_eq!(status, 200, "{crm_set}");
    let crm_token = crm_set["access_token"].as_str().unwrap();
    assert_eq!(claims(crm_token)["aud"], CRM);
    let me = |base: String| format!("{base}/me");
    assert_eq!(
        get(&client, &me(crm.base_url()), crm_token).await.status(),
        200
    );
    assert_eq!(
        get(&client, &me(stack.downstream.base_url()), crm_token)
            .await
            .status(),
        401,
        "a token for another audience is refused"
    );

    stack.entra.withhold_consent(&tid, USER, CRM);
    let next = crm_set["refresh_token"].as_str().unwrap();
    let (status, body) = redeem(&client, &stack, next, CRM, None).await;
    assert_eq!(status, 400);
    assert_eq!(entra_error(&body), ("invalid_grant".to_owned(), 65001));
    assert_eq!(body["suberror"], "consent_required");
    // The same grant still serves the consented resource.
    let resource = stack.options().downstream_resource.clone();
    let (status, body) = redeem(&client, &stack, next, &resource, None).await;
    assert_eq!(status, 200, "{body}");
    let log = stack.entra.grant_log();
    let outcomes: Vec<(GrantKind, bool)> = log.iter().map(|g| (g.grant, g.succeeded)).collect();
    assert_eq!(
        outcomes,
        [
            (GrantKind::RefreshToken, true),
            (GrantKind::RefreshToken, false),
            (GrantKind::RefreshToken, true)
        ]
    );
}

#[tokio::test]
async fn client_capabilities_and_claims_challenges_round_trip() {
    let stack = stack().await;
    let client = client(&stack);
    let tid = home_tenant(&stack);
    let resource = stack.options().downstream_resource.clone();
    let me = format!("{}/me", stack.downstream.base_url());
    let refresh_token = stack
        .entra
        .issue_refresh_tokens(&tid, &[USER.to_owned()])
        .remove(0);

    // Without the capability: no xms_cc, and a revocation does not challenge the token.
    let (_, plain) = redeem(&client, &stack, &refresh_token, &resource, None).await;
    let plain_token = plain["access_token"].as_str().unwrap().to_owned();
    assert!(claims(&plain_token).get("xms_cc").is_none());
    let (_, cae) = redeem(&client, &stack, &refresh_token, &resource, Some(CP1)).await;
    let cae_token = cae["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&cae_token)["xms_cc"], json!(["cp1"]));
    assert_eq!(get(&client, &me, &cae_token).await.status(), 200);

    stack.downstream.revoke_sessions(&tid, USER);
    assert_eq!(get(&client, &me, &plain_token).await.status(), 200);
    let challenged = get(&client, &me, &cae_token).await;
    assert_eq!(challenged.status(), 401);
    let header = challenged.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.starts_with("Bearer realm=\"\""), "{header}");
    assert!(header.contains("error=\"insufficient_claims\""), "{header}");
    let encoded = header
        .split("claims=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("claims");
    let challenge: Value = serde_json::from_slice(&STANDARD.decode(encoded).unwrap()).unwrap();
    let nbf = &challenge["access_token"]["nbf"];
    assert_eq!(nbf["essential"], true);
    let at: i64 = nbf["value"].as_str().unwrap().parse().unwrap();

    // A token issued in answer to the challenge (claims merged with the capability) passes.
    let mut answer = challenge.clone();
    answer["access_token"]["xms_cc"] = json!({"values": ["cp1"]});
    let (status, fresh) = redeem(
        &client,
        &stack,
        &refresh_token,
        &resource,
        Some(&answer.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{fresh}");
    let fresh_token = fresh["access_token"].as_str().unwrap();
    assert!(claims(fresh_token)["nbf"].as_i64().unwrap() >= at);
    assert_eq!(get(&client, &me, fresh_token).await.status(), 200);
    assert_eq!(
        get(&client, &me, &cae_token).await.status(),
        401,
        "still revoked"
    );
    let recorded = stack.entra.grant_log().pop().expect("logged");
    assert_eq!(recorded.claims, Some(answer));

    let (status, body) = redeem(&client, &stack, &refresh_token, &resource, Some("[1]")).await;
    assert_eq!(status, 400);
    assert_eq!(entra_error(&body).0, "invalid_request");
}
