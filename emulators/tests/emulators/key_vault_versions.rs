//! Key Vault versions as the real service has them: "latest" is the newest version even when
//! it is disabled (403 `SecretDisabled`), and the list of versions is paged with `nextLink`.
//! Over REST and through the official SDK's pager.

use std::collections::HashSet;
use std::sync::Arc;

use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    error::{ErrorKind, ErrorResponse},
    http::{ClientOptions, StatusCode, Transport},
};
use azure_security_keyvault_secrets::{ResourceExt as _, SecretClient, SecretClientOptions};
use futures::TryStreamExt as _;
use serde_json::{json, Value};

use crate::common::*;

const API: &str = "api-version=2025-07-01";

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client
        .get(url)
        .bearer_auth("t")
        .send()
        .await
        .expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn latest_is_the_newest_version_even_when_disabled() {
    let stack = stack().await;
    let client = client(&stack);
    let vault = stack.key_vault.vault_url();
    let v1 = stack.key_vault.create_key("k");
    let v2 = stack.key_vault.create_key("k");
    assert!(stack.key_vault.disable_version("k", &v2));

    for path in ["secrets/k", "secrets/k/"] {
        let (status, body) = get(&client, &format!("{vault}{path}?{API}")).await;
        assert_eq!(
            status, 403,
            "{path}: an enabled older version is no fallback"
        );
        assert_eq!(
            body,
            json!({"error": {"code": "Forbidden", "message": "Operation get is not allowed on a disabled secret.", "innererror": {"code": "SecretDisabled"}}})
        );
    }
    let (status, _) = get(&client, &format!("{vault}secrets/k/{v1}?{API}")).await;
    assert_eq!(status, 200, "the older version is still readable by id");
    assert_eq!(stack.key_vault.newest_enabled_version("k"), Some(v1));

    // The operator's tool re-enables it with PATCH, as `az keyvault secret set-attributes`.
    let response = client
        .patch(format!("{vault}secrets/k/{v2}?{API}"))
        .bearer_auth("t")
        .json(&json!({"attributes": {"enabled": true}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let (status, body) = get(&client, &format!("{vault}secrets/k?{API}")).await;
    assert_eq!(status, 200);
    assert!(body["id"].as_str().unwrap().ends_with(&v2));
}

#[tokio::test]
async fn versions_are_listed_in_pages_joined_by_next_link() {
    let stack = stack().await;
    let client = client(&stack);
    let vault = stack.key_vault.vault_url();
    let created: HashSet<String> = (0..30).map(|_| stack.key_vault.create_key("k")).collect();
    let disabled = created.iter().next().unwrap().clone();
    stack.key_vault.disable_version("k", &disabled);

    let (status, first) = get(&client, &format!("{vault}secrets/k/versions?{API}")).await;
    assert_eq!(status, 200);
    let page = first["value"].as_array().unwrap();
    assert_eq!(page.len(), 25, "25 per page by default");
    let next = first["nextLink"].as_str().expect("nextLink");
    assert!(next.starts_with(&format!(
        "{vault}secrets/k/versions?api-version=2025-07-01&$skiptoken="
    )));
    assert!(next.ends_with("&maxresults=25"));
    let (status, second) = get(&client, next).await;
    assert_eq!(status, 200);
    assert_eq!(second["value"].as_array().unwrap().len(), 5);
    assert!(second["nextLink"].is_null());

    let items: Vec<&Value> = page
        .iter()
        .chain(second["value"].as_array().unwrap())
        .collect();
    let ids: Vec<String> = items
        .iter()
        .map(|item| {
            item["id"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), created);
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by id, not by creation");
    for item in &items {
        assert!(item.get("value").is_none(), "a list never carries values");
        assert!(item["attributes"]["created"].is_i64());
        let id = item["id"].as_str().unwrap();
        assert_eq!(item["attributes"]["enabled"], !id.ends_with(&disabled));
    }

    let (status, small) = get(
        &client,
        &format!("{vault}secrets/k/versions?{API}&maxresults=7"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(small["value"].as_array().unwrap().len(), 7);
    assert!(small["nextLink"]
        .as_str()
        .unwrap()
        .ends_with("&maxresults=7"));
    for bad in ["maxresults=0", "maxresults=26", "$skiptoken=garbage"] {
        let (status, body) = get(&client, &format!("{vault}secrets/k/versions?{API}&{bad}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("BadParameter")),
            "{bad}"
        );
    }
    assert_eq!(stack.key_vault.stats().list_versions, 6);
}

#[derive(Debug)]
struct DummyCredential;

#[async_trait::async_trait]
impl TokenCredential for DummyCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            "dummy",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}

#[tokio::test]
async fn the_official_sdk_pages_versions_and_reads_the_disabled_answer() {
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
    let created: HashSet<String> = (0..27).map(|_| stack.key_vault.create_key("k")).collect();
    let newest = stack.key_vault.latest_version("k").unwrap();
    stack.key_vault.disable_version("k", &newest);

    let listed: Vec<_> = sdk
        .list_secret_properties_versions("k", None)
        .expect("pager")
        .try_collect()
        .await
        .expect("every page");
    let ids: HashSet<String> = listed
        .iter()
        .map(|p| p.resource_id().unwrap().version.unwrap())
        .collect();
    assert_eq!(ids, created);
    let enabled = listed
        .iter()
        .filter(|p| p.attributes.as_ref().and_then(|a| a.enabled) == Some(true))
        .count();
    assert_eq!(enabled, 26);
    assert!(listed
        .iter()
        .all(|p| p.attributes.as_ref().and_then(|a| a.created).is_some()));
    assert_eq!(stack.key_vault.stats().list_versions, 2);

    let error = sdk.get_secret("k", None).await.expect_err("disabled");
    let ErrorKind::HttpResponse { status, .. } = error.kind() else {
        panic!("{error:?}");
    };
    assert_eq!(*status, StatusCode::Forbidden);
    let body = ErrorResponse::try_from(error).expect("error body");
    let inner = body.error.and_then(|e| e.inner_error).and_then(|i| i.code);
    assert_eq!(inner.as_deref(), Some("SecretDisabled"));
}
