//! Client authentication as Entra checks it: certificate assertions (thumbprint, algorithm,
//! signature, audience, issuer/subject, `jti`, validity) and federated assertions from the
//! managed-identity endpoint (issuer, subject, audience, signature, app-only, validity), and
//! the managed-identity endpoint's own protocol.

use base64::{
    engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD},
    Engine as _,
};
use emulators::{
    ClientCertificate, ServiceCredential, SignWith, Stack, StackOptions,
    DEFAULT_MANAGED_IDENTITY_CLIENT_ID, DEFAULT_MANAGED_IDENTITY_OBJECT_ID,
    TOKEN_EXCHANGE_AUDIENCE,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::common::*;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client-credentials grant for the app itself, authenticated by `assertion`.
async fn with_assertion(client: &reqwest::Client, stack: &Stack, assertion: &str) -> (u16, Value) {
    let client_id = stack.entra.client_id();
    let scope = format!("api://{client_id}/.default");
    let response = client
        .post(stack.entra.token_endpoint(&home_tenant(stack)))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion),
            ("scope", scope.as_str()),
        ])
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

fn certificate_der(certificate: &ClientCertificate) -> Vec<u8> {
    let pem = &certificate.certificate_pem;
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("DER")
}

fn sha1(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

/// Signs `claims` with the certificate's key under a header naming it.
fn sign(
    certificate: &ClientCertificate,
    algorithm: Algorithm,
    x5t: Option<String>,
    x5t_s256: Option<String>,
    claims: &Value,
) -> String {
    let mut header = Header::new(algorithm);
    header.x5t = x5t;
    header.x5t_s256 = x5t_s256;
    let key =
        EncodingKey::from_rsa_pem(certificate.key_and_certificate_pem.as_bytes()).expect("RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("signed")
}

fn assertion_claims(stack: &Stack) -> Value {
    let now = chrono::Utc::now().timestamp();
    let client_id = stack.entra.client_id();
    json!({
        "aud": stack.entra.token_endpoint(&home_tenant(stack)),
        "iss": client_id,
        "sub": client_id,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 600,
    })
}

#[tokio::test]
async fn certificate_assertions_are_checked_as_entra_does() {
    let stack = stack().await;
    let client = client(&stack);
    let (registered, other) = tokio::task::spawn_blocking(|| {
        (
            ClientCertificate::generate("registered").expect("certificate"),
            ClientCertificate::generate("other").expect("certificate"),
        )
    })
    .await
    .expect("keygen");
    stack
        .entra
        .register_certificate(&registered.certificate_pem)
        .expect("registered");
    let der = certificate_der(&registered);
    let x5t = URL_SAFE_NO_PAD.encode(sha1(&der));
    let x5t_padded = URL_SAFE.encode(sha1(&der));
    let x5t_s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(&der));
    assert!(x5t_padded.ends_with('='), "SHA-1 thumbprints pad in base64");
    let claims = assertion_claims(&stack);

    // Accepted: RS256 + x5t (azure_identity), PS256 + x5t#S256 (current docs), padded x5t
    // (MSAL Python).
    for assertion in [
        sign(
            &registered,
            Algorithm::RS256,
            Some(x5t.clone()),
            None,
            &claims,
        ),
        sign(
            &registered,
            Algorithm::PS256,
            None,
            Some(x5t_s256.clone()),
            &claims,
        ),
        sign(
            &registered,
            Algorithm::RS256,
            Some(x5t_padded),
            None,
            &claims,
        ),
    ] {
        let (status, body) = with_assertion(&client, &stack, &assertion).await;
        assert_eq!(status, 200, "{body}");
    }

    let expect = |(status, body): (u16, Value), code: u64| {
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            entra_error(&body),
            ("invalid_client".to_owned(), code),
            "{body}"
        );
        body
    };
    // A certificate not registered on the app, by either thumbprint.
    let other_der = certificate_der(&other);
    let unregistered = sign(
        &other,
        Algorithm::RS256,
        Some(URL_SAFE_NO_PAD.encode(sha1(&other_der))),
        Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&other_der))),
        &claims,
    );
    let body = expect(with_assertion(&client, &stack, &unregistered).await, 700027);
    assert!(body["error_description"]
        .as_str()
        .expect("description")
        .contains("The key was not found."));
    // The registered thumbprint over another key's signature.
    let forged = sign(&other, Algorithm::RS256, Some(x5t.clone()), None, &claims);
    expect(with_assertion(&client, &stack, &forged).await, 700027);
    // No thumbprint at all.
    let anonymous = sign(&registered, Algorithm::RS256, None, None, &claims);
    expect(with_assertion(&client, &stack, &anonymous).await, 700027);
    // An algorithm Entra does not take for assertions.
    let hs256 = stack.entra.sign_raw(
        json!({"x5t": x5t}),
        claims.clone(),
        SignWith::Hs256WithPublicKey,
    );
    expect(with_assertion(&client, &stack, &hs256).await, 50027);

    let with = |change: &dyn Fn(&mut Value)| {
        let mut changed = claims.clone();
        change(&mut changed);
        sign(
            &registered,
            Algorithm::RS256,
            Some(x5t.clone()),
            None,
            &changed,
        )
    };
    let other_tenant_endpoint = stack
        .entra
        .token_endpoint("11111111-2222-4333-8444-555555555555");
    for (assertion, code) in [
        (with(&|c| c["aud"] = json!(other_tenant_endpoint)), 50027),
        (
            with(&|c| c["aud"] = json!(stack.entra.authority_host())),
            50027,
        ),
        (with(&|c| c["sub"] = json!("someone-else")), 50048),
        (
            with(&|c| {
                c.as_object_mut().expect("object").remove("jti");
            }),
            50027,
        ),
        (
            with(&|c| c["exp"] = json!(c["nbf"].as_i64().expect("nbf") - 1)),
            700024,
        ),
        (
            with(&|c| {
                c.as_object_mut().expect("object").remove("exp");
            }),
            700024,
        ),
        (
            with(&|c| c["nbf"] = json!(c["exp"].as_i64().expect("exp") - 60)),
            700024,
        ),
    ] {
        expect(with_assertion(&client, &stack, &assertion).await, code);
    }
    let stats = stack.entra.stats();
    assert_eq!(stats.client_credentials_grants, 3);
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{url}?{query}")
}

/// A token from the managed-identity endpoint, as `azure_identity` asks for it.
pub(crate) async fn identity_token(stack: &Stack, resource: &str, client_id: &str) -> (u16, Value) {
    let url = with_query(
        &stack.managed_identity.endpoint(),
        &[
            ("api-version", "2019-08-01"),
            ("resource", resource),
            ("client_id", client_id),
        ],
    );
    let response = reqwest::Client::new()
        .get(url)
        .header(
            "X-IDENTITY-HEADER",
            stack.managed_identity.identity_header(),
        )
        .header("metadata", "true")
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn the_managed_identity_endpoint_speaks_the_app_service_protocol() {
    let stack = stack().await;
    let endpoint = stack.managed_identity.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");

    let (status, body) = identity_token(
        &stack,
        TOKEN_EXCHANGE_AUDIENCE,
        DEFAULT_MANAGED_IDENTITY_CLIENT_ID,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], TOKEN_EXCHANGE_AUDIENCE);
    assert_eq!(body["client_id"], DEFAULT_MANAGED_IDENTITY_CLIENT_ID);
    let expires_on: i64 = body["expires_on"]
        .as_str()
        .expect("expires_on is a string")
        .parse()
        .expect("unix seconds");
    assert!(expires_on > chrono::Utc::now().timestamp());
    let token = claims(body["access_token"].as_str().expect("token"));
    assert_eq!(token["iss"], stack.entra.issuer(&home_tenant(&stack)));
    assert_eq!(token["sub"], DEFAULT_MANAGED_IDENTITY_OBJECT_ID);
    assert_eq!(token["aud"], TOKEN_EXCHANGE_AUDIENCE);
    assert_eq!(token["idtyp"], "app");

    // Any resource: Azure Database for PostgreSQL, for one.
    let postgres = "https://ossrdbms-aad.database.windows.net";
    let (status, body) = identity_token(&stack, postgres, DEFAULT_MANAGED_IDENTITY_CLIENT_ID).await;
    assert_eq!((status, &body["resource"]), (200, &json!(postgres)));

    // An identity not assigned to the app, and the (absent) system-assigned identity.
    let (status, body) =
        identity_token(&stack, postgres, "00000000-0000-0000-0000-0000000000aa").await;
    assert_eq!((status, body["statusCode"].as_u64()), (400, Some(400)));
    let missing_header = reqwest::Client::new()
        .get(with_query(
            &endpoint,
            &[("api-version", "2019-08-01"), ("resource", postgres)],
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(missing_header.status(), 401);
    let old_protocol = reqwest::Client::new()
        .get(with_query(
            &endpoint,
            &[("api-version", "2017-09-01"), ("resource", postgres)],
        ))
        .header(
            "X-IDENTITY-HEADER",
            stack.managed_identity.identity_header(),
        )
        .send()
        .await
        .expect("answer");
    assert_eq!(old_protocol.status(), 400);

    let issued = stack.managed_identity.issued();
    let resources: Vec<&str> = issued.iter().map(|t| t.resource.as_str()).collect();
    assert_eq!(resources, [TOKEN_EXCHANGE_AUDIENCE, postgres]);
    assert_eq!(stack.managed_identity.refused(), 3);
}

#[tokio::test]
async fn federated_assertions_must_match_a_federated_credential() {
    let stack = stack().await;
    let client = client(&stack);
    let (status, body) = identity_token(
        &stack,
        TOKEN_EXCHANGE_AUDIENCE,
        DEFAULT_MANAGED_IDENTITY_CLIENT_ID,
    )
    .await;
    assert_eq!(status, 200);
    let identity = body["access_token"].as_str().expect("token").to_owned();
    let (status, body) = with_assertion(&client, &stack, &identity).await;
    assert_eq!(status, 200, "{body}");

    let expect = |(status, body): (u16, Value), code: u64| {
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            entra_error(&body),
            ("invalid_client".to_owned(), code),
            "{body}"
        );
    };
    // The identity's token for another resource: right issuer and subject, wrong audience.
    let (_, body) = identity_token(
        &stack,
        "https://vault.azure.net",
        DEFAULT_MANAGED_IDENTITY_CLIENT_ID,
    )
    .await;
    let vault_token = body["access_token"].as_str().expect("token").to_owned();
    expect(with_assertion(&client, &stack, &vault_token).await, 70021);

    let now = chrono::Utc::now().timestamp();
    let issuer = stack.entra.issuer(&home_tenant(&stack));
    let base = json!({
        "iss": issuer, "sub": DEFAULT_MANAGED_IDENTITY_OBJECT_ID,
        "aud": TOKEN_EXCHANGE_AUDIENCE, "idtyp": "app", "nbf": now, "exp": now + 600,
    });
    let with = |change: &dyn Fn(&mut Value), how: SignWith| {
        let mut claims = base.clone();
        change(&mut claims);
        stack.entra.sign_raw(json!({}), claims, how)
    };
    for (assertion, code) in [
        (
            with(
                &|c| c["iss"] = json!("https://token.actions.githubusercontent.com"),
                SignWith::Current,
            ),
            700211,
        ),
        (
            with(
                &|c| c["sub"] = json!(uuid::Uuid::new_v4().to_string()),
                SignWith::Current,
            ),
            700213,
        ),
        (with(&|_| {}, SignWith::Foreign), 700027),
        (with(&|_| {}, SignWith::NoneAlg), 700027),
        (
            with(&|c| c["scp"] = json!("User.Read"), SignWith::Current),
            700229,
        ),
        (
            with(&|c| c["exp"] = json!(now - 60), SignWith::Current),
            700024,
        ),
    ] {
        expect(with_assertion(&client, &stack, &assertion).await, code);
    }
    // Sanity: the same hand-made claims, correctly signed, pass.
    let (status, body) = with_assertion(&client, &stack, &with(&|_| {}, SignWith::Current)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_stack_sets_the_service_up_for_each_credential() {
    let certificate = Stack::start(StackOptions {
        credential: ServiceCredential::Certificate,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    let env: std::collections::HashMap<String, String> =
        certificate.service_env().into_iter().collect();
    let path = certificate.certificate_path().expect("certificate file");
    assert_eq!(
        env["OBOVAULT_CLIENT_CERTIFICATE_PATH"],
        path.display().to_string()
    );
    assert!(!env.contains_key("OBOVAULT_CLIENT_SECRET"));
    let pem = std::fs::read_to_string(path).expect("file");
    assert!(
        pem.contains("-----BEGIN PRIVATE KEY-----") && pem.contains("-----BEGIN CERTIFICATE-----")
    );

    let identity = Stack::start(StackOptions {
        credential: ServiceCredential::ManagedIdentity,
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    let env: std::collections::HashMap<String, String> =
        identity.service_env().into_iter().collect();
    assert_eq!(env["OBOVAULT_CLIENT_ASSERTION"], "managed-identity");
    assert_eq!(env["AZURE_CLIENT_ID"], DEFAULT_MANAGED_IDENTITY_CLIENT_ID);
    assert_eq!(
        env["IDENTITY_ENDPOINT"],
        identity.managed_identity.endpoint()
    );
    assert_eq!(
        env["IDENTITY_HEADER"],
        identity.managed_identity.identity_header()
    );
    assert!(!env.contains_key("OBOVAULT_CLIENT_SECRET"));
}
