//! Helpers shared by the emulator tests: a Stack, a client that trusts its CA, token endpoint
//! calls and JWT payload decoding.

use std::time::Duration;

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use emulators::{Stack, StackOptions, UserTokenSpec};
use serde_json::Value;

pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub(crate) const USER: &str = "4f6a3c2e-1b7d-4e8f-9a0b-1c2d3e4f5a6b";

pub(crate) async fn stack() -> Stack {
    Stack::start(StackOptions::default())
        .await
        .expect("stack starts")
}

/// A client trusting only the Stack's CA, with a short overall timeout.
pub(crate) fn client(stack: &Stack) -> reqwest::Client {
    client_with_timeout(stack, Duration::from_secs(10))
}

pub(crate) fn client_with_timeout(stack: &Stack, timeout: Duration) -> reqwest::Client {
    let pem = std::fs::read(stack.ca_pem_path()).expect("ca.pem");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA certificate")])
        .timeout(timeout)
        .build()
        .expect("client")
}

pub(crate) fn home_tenant(stack: &Stack) -> String {
    stack.options().tenant_id.clone()
}

/// A valid user token for the app, for the default test user.
pub(crate) fn user_token(stack: &Stack) -> String {
    stack
        .entra
        .mint_user_token(&UserTokenSpec::new(home_tenant(stack), USER))
}

pub(crate) fn downstream_scopes(stack: &Stack) -> String {
    format!(
        "{}/.default offline_access openid profile",
        stack.options().downstream_resource
    )
}

/// POSTs a form to the home tenant's token endpoint with the app's client secret.
pub(crate) async fn token_call(
    client: &reqwest::Client,
    stack: &Stack,
    fields: &[(&str, &str)],
) -> reqwest::Result<reqwest::Response> {
    let mut form: Vec<(&str, &str)> = vec![
        ("client_id", stack.entra.client_id()),
        ("client_secret", stack.entra.client_secret()),
    ];
    form.extend_from_slice(fields);
    client
        .post(stack.entra.token_endpoint(&home_tenant(stack)))
        .form(&form)
        .send()
        .await
}

pub(crate) async fn obo(
    client: &reqwest::Client,
    stack: &Stack,
    assertion: &str,
    scope: &str,
) -> (u16, Value) {
    let response = token_call(
        client,
        stack,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", assertion),
            ("scope", scope),
            ("requested_token_use", "on_behalf_of"),
        ],
    )
    .await
    .expect("token endpoint answers");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON body"),
    )
}

pub(crate) async fn refresh(
    client: &reqwest::Client,
    stack: &Stack,
    refresh_token: &str,
) -> (u16, Value) {
    let scope = downstream_scopes(stack);
    let response = token_call(
        client,
        stack,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("scope", &scope),
        ],
    )
    .await
    .expect("token endpoint answers");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON body"),
    )
}

/// The claims of a JWT, unverified.
pub(crate) fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

/// The header of a JWT.
pub(crate) fn header(token: &str) -> Value {
    let part = token.split('.').next().expect("JWT header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// Asserts Entra's error shape and returns (error, first error code).
pub(crate) fn entra_error(body: &Value) -> (String, u64) {
    let error = body["error"].as_str().expect("error").to_owned();
    let code = body["error_codes"][0].as_u64().expect("error_codes");
    let description = body["error_description"]
        .as_str()
        .expect("error_description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    (error, code)
}
