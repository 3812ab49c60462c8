//! The Key Vault emulator over HTTPS: the SDK's challenge round trip, versions, errors, faults.

use emulators::{Fault, FaultKind, KeyVaultStats};
use serde_json::{json, Value};

use crate::common::*;

const API: &str = "api-version=2025-07-01";

#[tokio::test]
async fn challenge_then_bearer_reads_latest_and_versions() {
    let stack = stack().await;
    let client = client(&stack);
    let vault = stack.key_vault.vault_url();
    assert!(vault.starts_with("https://127.0.0.1:") && vault.ends_with('/'));
    let v1 = stack.key_vault.create_key("obo-vault-key");

    // The SDK's first request carries no token and expects the challenge.
    let response = client
        .get(format!("{vault}secrets/obo-vault-key/?{API}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            stack.options().tenant_id
        )
        .as_str()
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "Unauthorized");

    let get = |path: String| {
        let client = client.clone();
        async move {
            let response = client
                .get(path)
                .bearer_auth("dummy")
                .send()
                .await
                .expect("answer");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, latest) = get(format!("{vault}secrets/obo-vault-key/?{API}")).await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["id"], format!("{vault}secrets/obo-vault-key/{v1}"));
    assert_eq!(
        latest["value"].as_str(),
        stack
            .key_vault
            .secret_value("obo-vault-key", &v1)
            .as_deref()
    );
    assert_eq!(latest["attributes"]["enabled"], true);
    assert_eq!(
        latest["attributes"]["recoveryLevel"],
        "Recoverable+Purgeable"
    );
    assert!(latest["attributes"]["created"].is_i64());

    // A new version via REST becomes the latest; the old one stays readable by version.
    let response = client
        .put(format!("{vault}secrets/obo-vault-key?{API}"))
        .bearer_auth("dummy")
        .json(&json!({"value": "second", "contentType": "text/plain", "tags": {"k": "v"}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.expect("json");
    let v2 = created["id"]
        .as_str()
        .expect("id")
        .rsplit('/')
        .next()
        .expect("version")
        .to_owned();
    assert_eq!(v2.len(), 32);
    assert_eq!(
        stack.key_vault.latest_version("obo-vault-key"),
        Some(v2.clone())
    );
    let (_, latest) = get(format!("{vault}secrets/obo-vault-key?{API}")).await;
    assert_eq!(
        (latest["value"].as_str(), latest["contentType"].as_str()),
        (Some("second"), Some("text/plain"))
    );
    let (status, old) = get(format!("{vault}secrets/obo-vault-key/{v1}?{API}")).await;
    assert_eq!(status, 200);
    assert_eq!(old["id"], format!("{vault}secrets/obo-vault-key/{v1}"));

    let (status, list) = get(format!("{vault}secrets/obo-vault-key/versions?{API}")).await;
    assert_eq!(status, 200);
    let items = list["value"].as_array().expect("versions");
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|item| item.get("value").is_none()));

    assert_eq!(
        stack.key_vault.stats(),
        KeyVaultStats {
            get_latest: 2,
            get_version: 1,
            list_versions: 1,
            set: 1,
            challenges: 1
        }
    );
    let secrets = stack.issued_secrets();
    assert!(secrets.iter().any(|s| s == "second"));
}

#[tokio::test]
async fn errors_have_key_vault_shapes() {
    let stack = stack().await;
    let client = client(&stack);
    let vault = stack.key_vault.vault_url();
    let v1 = stack.key_vault.put_secret("k", "one");
    let call = |method: reqwest::Method, path: &str, body: Option<&'static str>| {
        let mut request = client
            .request(method, format!("{vault}{path}"))
            .bearer_auth("t");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        async move {
            let response = request.send().await.expect("answer");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };

    let (status, body) = call(
        reqwest::Method::GET,
        &format!("secrets/missing?{API}"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("SecretNotFound"))
    );
    let (status, body) = call(
        reqwest::Method::GET,
        &format!("secrets/k/{}?{API}", "0".repeat(32)),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("SecretNotFound"))
    );

    assert!(stack.key_vault.disable_version("k", &v1));
    let (status, body) = call(reqwest::Method::GET, &format!("secrets/k/{v1}?{API}"), None).await;
    assert_eq!(status, 403);
    assert_eq!(
        body,
        json!({"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.", "innererror": {"code": "SecretDisabled"}}})
    );
    let (status, _) = call(reqwest::Method::GET, &format!("secrets/k?{API}"), None).await;
    assert_eq!(status, 403, "the only version is disabled");

    for (method, path, body) in [
        (reqwest::Method::GET, "secrets/k".to_owned(), None),
        (
            reqwest::Method::GET,
            format!("secrets/bad_name?{API}"),
            None,
        ),
        (
            reqwest::Method::PUT,
            format!("secrets/k?{API}"),
            Some("{not json"),
        ),
        (
            reqwest::Method::PUT,
            format!("secrets/k?{API}"),
            Some(r#"{"value": 5}"#),
        ),
        (
            reqwest::Method::PUT,
            format!("secrets/k?{API}"),
            Some(r#"{"value": "x", "attributes": []}"#),
        ),
    ] {
        let (status, body) = call(method, &path, body).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("BadParameter")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn injected_faults_hit_authorized_requests() {
    let stack = stack().await;
    let client = client(&stack);
    let vault = stack.key_vault.vault_url();
    stack.key_vault.put_secret("k", "one");
    let url = format!("{vault}secrets/k/?{API}");

    stack
        .key_vault
        .inject(Fault::once(FaultKind::TooManyRequests {
            retry_after_secs: 3,
        }));
    stack.key_vault.inject(Fault::once(FaultKind::Status(503)));
    // The challenge is not affected.
    assert_eq!(client.get(&url).send().await.expect("answer").status(), 401);
    let response = client
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "Throttled");
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("t")
            .send()
            .await
            .expect("answer")
            .status(),
        503
    );
    assert_eq!(
        client
            .get(&url)
            .bearer_auth("t")
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );

    stack.key_vault.inject(Fault::once(FaultKind::Hang));
    let impatient = client_with_timeout(&stack, std::time::Duration::from_millis(300));
    let error = impatient
        .get(&url)
        .bearer_auth("t")
        .send()
        .await
        .expect_err("hangs");
    assert!(error.is_timeout(), "{error}");
    assert_eq!(stack.key_vault.stats().get_latest, 1);
}
