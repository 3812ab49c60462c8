//! The Entra emulator's multi-tenant (`common`) metadata, per-tenant metadata counts and
//! metadata outages.

use emulators::{Fault, FaultKind, MetadataRequests};
use serde_json::Value;

use crate::common::*;

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("answer");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn common_metadata_carries_the_tenantid_template_as_entra_does() {
    let stack = stack().await;
    let client = client(&stack);
    let host = stack.entra.authority_host();
    for alias in ["common", "organizations"] {
        let (status, v2) = get_json(
            &client,
            &format!("{host}/{alias}/v2.0/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v2["issuer"], format!("{host}/{{tenantid}}/v2.0"));
        assert_eq!(
            v2["jwks_uri"],
            format!("{host}/{alias}/discovery/v2.0/keys")
        );
        assert_eq!(
            v2["token_endpoint"],
            format!("{host}/{alias}/oauth2/v2.0/token")
        );
        let (status, v1) = get_json(
            &client,
            &format!("{host}/{alias}/.well-known/openid-configuration"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(v1["issuer"], "https://sts.windows.net/{tenantid}/");
        assert_eq!(v1["jwks_uri"], format!("{host}/{alias}/discovery/keys"));
        let (status, jwks) = get_json(&client, v2["jwks_uri"].as_str().unwrap()).await;
        assert_eq!(status, 200);
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys[0]["kid"], stack.entra.current_kid());
        assert_eq!(keys[0]["issuer"], format!("{host}/{{tenantid}}/v2.0"));
    }
    // A tenant's own documents still name the tenant.
    let tid = "11111111-2222-4333-8444-555555555555";
    let (_, jwks) = get_json(&client, &format!("{host}/{tid}/discovery/v2.0/keys")).await;
    assert_eq!(jwks["keys"][0]["issuer"], format!("{host}/{tid}/v2.0"));
}

#[tokio::test]
async fn metadata_requests_are_counted_per_tenant() {
    let stack = stack().await;
    let client = client(&stack);
    let host = stack.entra.authority_host();
    let tid = "11111111-2222-4333-8444-555555555555";
    for path in [
        format!("{host}/common/v2.0/.well-known/openid-configuration"),
        format!("{host}/Common/discovery/v2.0/keys"),
        format!("{host}/common/discovery/keys"),
        format!("{host}/{tid}/v2.0/.well-known/openid-configuration"),
        format!("{host}/not-a-tenant/v2.0/.well-known/openid-configuration"),
    ] {
        client.get(path).send().await.expect("answer");
    }
    let entra = &stack.entra;
    assert_eq!(
        entra.metadata_requests("common"),
        MetadataRequests {
            discovery: 1,
            jwks: 2
        }
    );
    assert_eq!(
        entra.metadata_requests(tid),
        MetadataRequests {
            discovery: 1,
            jwks: 0
        }
    );
    assert_eq!(entra.metadata_requests("not-a-tenant").discovery, 1);
    assert_eq!(
        entra.metadata_requests("22222222-2222-4333-8444-555555555555"),
        MetadataRequests::default()
    );
    assert_eq!(entra.metadata_requests_by_tenant().len(), 3);
    entra.reset_stats();
    assert!(entra.metadata_requests_by_tenant().is_empty());
}

#[tokio::test]
async fn metadata_outages_answer_like_entra_and_end() {
    let stack = stack().await;
    let client = client(&stack);
    let host = stack.entra.authority_host();
    let url = format!("{host}/common/discovery/v2.0/keys");
    stack
        .entra
        .inject_metadata_fault(Fault::new(FaultKind::Status(503), 2));
    for _ in 0..2 {
        let (status, body) = get_json(&client, &url).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    assert_eq!(get_json(&client, &url).await.0, 200);
    assert_eq!(
        stack.entra.metadata_requests("common").jwks,
        3,
        "faulted ones count"
    );
    stack
        .entra
        .inject_metadata_fault(Fault::always(FaultKind::Unreachable));
    assert!(client.get(&url).send().await.is_err());
    stack.entra.clear_metadata_faults();
    assert_eq!(get_json(&client, &url).await.0, 200);
    // The token endpoint is not affected by metadata faults, nor the reverse.
    let stats = stack.entra.stats();
    assert_eq!((stats.jwks_requests, stats.failed_grants), (2, 0));
}
