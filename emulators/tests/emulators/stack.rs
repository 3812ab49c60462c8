//! The Stack: CA file, settings for the service, shutdown on drop.

use emulators::{Stack, StackOptions};

use crate::common::*;

#[tokio::test]
async fn service_env_points_at_the_emulators() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stack = Stack::start(StackOptions {
        ca_dir: Some(dir.path().join("ca")),
        ..StackOptions::default()
    })
    .await
    .expect("stack");
    assert_eq!(stack.ca_pem_path(), dir.path().join("ca").join("ca.pem"));
    let pem = std::fs::read_to_string(stack.ca_pem_path()).expect("ca.pem");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));

    let env: std::collections::HashMap<String, String> = stack.service_env().into_iter().collect();
    let o = stack.options();
    let expected = [
        ("OBOVAULT_TENANT_ID", o.tenant_id.clone()),
        ("OBOVAULT_CLIENT_ID", o.client_id.clone()),
        ("OBOVAULT_CLIENT_SECRET", o.client_secret.clone()),
        ("OBOVAULT_AUTHORITY_HOST", stack.entra.authority_host()),
        ("OBOVAULT_KEY_VAULT_URL", stack.key_vault.vault_url()),
        ("OBOVAULT_KEY_VAULT_EMULATOR", "true".to_owned()),
        ("OBOVAULT_KEY_AUTO_CREATE", "true".to_owned()),
        (
            "OBOVAULT_EXTRA_CA_CERTS",
            stack.ca_pem_path().display().to_string(),
        ),
        ("OBOVAULT_DOWNSTREAM_BASE_URL", stack.downstream.base_url()),
        (
            "OBOVAULT_DOWNSTREAM_SCOPES",
            "https://downstream.obo-vault.test/.default".to_owned(),
        ),
        ("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "/me,/echo".to_owned()),
    ];
    assert_eq!(env.len(), expected.len());
    for (name, value) in expected {
        assert_eq!(env.get(name), Some(&value), "{name}");
    }

    // The certificate is valid for localhost as well as 127.0.0.1.
    let client = client(&stack);
    let localhost = stack
        .entra
        .authority_host()
        .replace("127.0.0.1", "localhost");
    let response = client
        .get(format!(
            "{localhost}/{}/v2.0/.well-known/openid-configuration",
            o.tenant_id
        ))
        .send()
        .await
        .expect("TLS to localhost");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn dropping_the_stack_stops_the_servers() {
    let stack = stack().await;
    let client = client(&stack);
    let url = format!(
        "{}/{}/discovery/v2.0/keys",
        stack.entra.authority_host(),
        home_tenant(&stack)
    );
    assert_eq!(client.get(&url).send().await.expect("answer").status(), 200);
    let temp_ca = stack.ca_pem_path().to_path_buf();
    // A client with no pooled connection, trusting the CA, made before the CA file goes away.
    let fresh = client_with_timeout(&stack, std::time::Duration::from_secs(2));
    drop(stack);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let error = fresh
        .get(&url)
        .send()
        .await
        .expect_err("nothing listens any more");
    assert!(error.is_connect(), "{error}");
    assert!(!temp_ca.exists(), "the temp CA dir goes with the Stack");
}
