//! How the Entra emulator authenticates the client app: secrets, certificates, federated
//! assertions.

use emulators::SignWith;
use serde_json::{json, Value};

use crate::common::*;

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
