//! The Key Vault emulator driven by the official Rust SDK 1.x, configured as the service does
//! for an emulator: our reqwest client (trusting the test CA) as transport, the challenge
//! resource check off, and a dummy credential.

use std::sync::Arc;

use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::{ClientOptions, StatusCode, Transport},
};
use azure_security_keyvault_secrets::{
    models::{SecretClientGetSecretOptions, SetSecretParameters},
    ResourceExt as _, SecretClient, SecretClientOptions,
};

use crate::common::*;

/// Hands out a dummy token for the scope the challenge names.
#[derive(Debug)]
struct DummyCredential;

#[async_trait::async_trait]
impl TokenCredential for DummyCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, ["https://vault.azure.net/.default"]);
        Ok(AccessToken::new(
            "dummy",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

fn status_and_code(error: &azure_core::Error) -> (StatusCode, Option<String>) {
    match error.kind() {
        ErrorKind::HttpResponse {
            status, error_code, ..
        } => (*status, error_code.clone()),
        other => panic!("not an HTTP error: {other:?}"),
    }
}

#[tokio::test]
async fn the_official_sdk_reads_and_writes_secrets() {
    let stack = stack().await;
    let options = SecretClientOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(client(&stack)))),
            ..Default::default()
        },
        verify_challenge_resource: Some(false),
        ..Default::default()
    };
    let sdk = SecretClient::new(
        &stack.key_vault.vault_url(),
        Arc::new(DummyCredential),
        Some(options),
    )
    .expect("client");

    let v1 = stack.key_vault.create_key("obo-vault-key");
    let latest = sdk
        .get_secret("obo-vault-key", None)
        .await
        .expect("latest")
        .into_model()
        .expect("model");
    assert_eq!(latest.resource_id().expect("id").version, Some(v1.clone()));
    assert_eq!(
        latest.value,
        stack.key_vault.secret_value("obo-vault-key", &v1)
    );

    let created = sdk
        .set_secret(
            "obo-vault-key",
            SetSecretParameters {
                value: Some("rotated".into()),
                content_type: Some("application/octet-stream".into()),
                ..Default::default()
            }
            .try_into()
            .expect("parameters"),
            None,
        )
        .await
        .expect("set")
        .into_model()
        .expect("model");
    let v2 = created.resource_id().expect("id").version.expect("version");
    assert_eq!(stack.key_vault.latest_version("obo-vault-key"), Some(v2));

    let old = sdk
        .get_secret(
            "obo-vault-key",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(v1.clone()),
                ..Default::default()
            }),
        )
        .await
        .expect("by version")
        .into_model()
        .expect("model");
    assert_eq!(old.resource_id().expect("id").version, Some(v1.clone()));

    let missing = sdk.get_secret("nope", None).await.expect_err("missing");
    assert_eq!(
        status_and_code(&missing),
        (StatusCode::NotFound, Some("SecretNotFound".to_owned()))
    );
    stack.key_vault.disable_version("obo-vault-key", &v1);
    let disabled = sdk
        .get_secret(
            "obo-vault-key",
            Some(SecretClientGetSecretOptions {
                secret_version: Some(v1),
                ..Default::default()
            }),
        )
        .await
        .expect_err("disabled");
    assert_eq!(status_and_code(&disabled).0, StatusCode::Forbidden);

    let stats = stack.key_vault.stats();
    assert!(stats.challenges >= 1, "{stats:?}");
    assert_eq!((stats.get_latest, stats.get_version, stats.set), (2, 2, 1));
}
