//! Soft delete and purge in the Key Vault emulator, with the status codes and bodies of the
//! real service, and the grant-event receiver's signature check.

use serde_json::Value;

use crate::common::*;

async fn call(stack: &emulators::Stack, method: reqwest::Method, path: &str) -> (u16, Value) {
    let response = client(stack)
        .request(
            method,
            format!(
                "{}{path}?api-version=2025-07-01",
                stack.key_vault.vault_url()
            ),
        )
        .bearer_auth("dummy")
        .header("content-type", "application/json")
        .body(r#"{"value":"again"}"#)
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn delete_then_purge_answer_as_key_vault_does() {
    let stack = stack().await;
    let version = stack.key_vault.create_key("obo-vault-t1");
    let (status, deleted) = call(&stack, reqwest::Method::DELETE, "secrets/obo-vault-t1").await;
    assert_eq!(status, 200, "{deleted}");
    assert!(
        deleted.get("value").is_none(),
        "a deleted bundle has no value"
    );
    assert_eq!(
        deleted["recoveryId"],
        format!("{}deletedsecrets/obo-vault-t1", stack.key_vault.vault_url())
    );
    assert!(deleted["id"].as_str().unwrap().ends_with(&version));
    let deleted_date = deleted["deletedDate"].as_i64().unwrap();
    assert_eq!(
        deleted["scheduledPurgeDate"].as_i64().unwrap(),
        deleted_date + 90 * 86_400
    );
    assert_eq!(
        deleted["attributes"]["recoveryLevel"],
        "Recoverable+Purgeable"
    );

    // Gone for readers, but the name is taken until purged.
    let (status, _) = call(&stack, reqwest::Method::GET, "secrets/obo-vault-t1").await;
    assert_eq!(status, 404);
    let (status, conflict) = call(&stack, reqwest::Method::PUT, "secrets/obo-vault-t1").await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "Conflict");
    let (status, again) = call(&stack, reqwest::Method::GET, "deletedsecrets/obo-vault-t1").await;
    assert_eq!(
        (status, &again["recoveryId"]),
        (200, &deleted["recoveryId"])
    );

    let (status, _) = call(
        &stack,
        reqwest::Method::DELETE,
        "deletedsecrets/obo-vault-t1",
    )
    .await;
    assert_eq!(status, 204);
    assert!(!stack.key_vault.exists("obo-vault-t1"));
    let (status, _) = call(
        &stack,
        reqwest::Method::DELETE,
        "deletedsecrets/obo-vault-t1",
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = call(&stack, reqwest::Method::DELETE, "secrets/obo-vault-t1").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &Value::from("SecretNotFound"))
    );
    // The name is free again.
    let (status, _) = call(&stack, reqwest::Method::PUT, "secrets/obo-vault-t1").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn purge_protection_forbids_the_purge() {
    let stack = stack().await;
    stack.key_vault.set_purge_protection(true);
    stack.key_vault.create_key("obo-vault-t2");
    let (status, deleted) = call(&stack, reqwest::Method::DELETE, "secrets/obo-vault-t2").await;
    assert_eq!(status, 200);
    assert_eq!(deleted["attributes"]["recoveryLevel"], "Recoverable");
    let (status, body) = call(
        &stack,
        reqwest::Method::DELETE,
        "deletedsecrets/obo-vault-t2",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "Forbidden");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("purge protection is enabled"));
    assert!(stack.key_vault.is_deleted("obo-vault-t2"));
}

#[tokio::test]
async fn the_event_receiver_checks_signatures() {
    let stack = stack().await;
    let post = |signature: &str| {
        client(&stack)
            .post(stack.events.url())
            .header("webhook-id", "msg_1")
            .header(
                "webhook-timestamp",
                chrono::Utc::now().timestamp().to_string(),
            )
            .header("webhook-signature", signature.to_owned())
            .body(r#"{"type":"grant.connected"}"#)
            .send()
    };
    let answer = post("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(!stack.events.received()[0].verified);
    assert!(stack.events.accepted().is_empty());
}
