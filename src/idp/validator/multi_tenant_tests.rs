//! Tests of the validator with `OBOVAULT_ALLOWED_TENANTS=*` (keys and issuer template from the
//! `common` metadata) and of its last-good keys when Entra's metadata fails.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use super::fake_entra::*;
use super::keys::Timings;
use super::*;

fn any_tenant(entra: &Entra, timings: Timings) -> TokenValidator {
    validator_with(entra, AllowedTenants::Any, timings)
}

/// Any tenant, with unknown-`kid` refetches `interval` apart.
fn any_tenant_refetching_after(entra: &Entra, interval: Duration) -> TokenValidator {
    any_tenant(
        entra,
        Timings {
            refetch_interval: interval,
            ..Timings::default()
        },
    )
}

fn only_tenant(entra: &Entra, timings: Timings) -> TokenValidator {
    validator_with(
        entra,
        AllowedTenants::Only(vec![TenantId::parse(TENANT).unwrap()]),
        timings,
    )
}

fn random_tenant() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits (at most 10 s) until the fake Entra has seen `requests`.
async fn wait_for_requests(entra: &Entra, requests: (usize, usize)) {
    for _ in 0..200 {
        if entra.requests() == requests {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(entra.requests(), requests);
}

#[tokio::test]
async fn multi_tenant_tokens_are_checked_against_the_common_metadata() {
    let entra = entra().await;
    let validator = any_tenant(&entra, Timings::default());
    for tenant in [TENANT, OTHER_TENANT] {
        let token = validator
            .validate(&mint("k1", &v2_user_claims_of(&entra, tenant)))
            .await
            .unwrap();
        assert_eq!(token.tenant_id.as_str(), tenant);
    }
    let v1 = json!({
        "aud": format!("api://{CLIENT_ID}"), "iss": format!("https://sts.windows.net/{OTHER_TENANT}/"),
        "tid": OTHER_TENANT, "oid": USER, "sub": USER, "appid": CALLER_APP, "roles": ["OboVault.Act"],
        "ver": "1.0", "exp": now() + 600,
    });
    assert!(validator.validate(&mint("k1", &v1)).await.unwrap().app_only);
    assert_eq!(entra.requests_for("common"), (1, 1));
    assert_eq!(entra.requests(), (1, 1), "no tenant's own metadata");
}

#[tokio::test]
async fn the_issuer_must_be_the_template_filled_with_the_tokens_tenant() {
    let entra = entra().await;
    let validator = any_tenant(&entra, Timings::default());
    let base = entra.base();
    let other = v2_user_claims_of(&entra, OTHER_TENANT);
    let cases = [
        json!({"iss": format!("{base}/{TENANT}/v2.0")}),
        json!({"iss": format!("{base}/{{tenantid}}/v2.0")}),
        json!({"iss": format!("{base}/common/v2.0")}),
        json!({"iss": format!("https://sts.windows.net/{TENANT}/")}),
        json!({"iss": null}),
    ];
    let wrong_issuer = cases.map(|changes| (changes, TokenError::WrongIssuer));
    assert_refused(&validator, &other, wrong_issuer).await;
}

#[tokio::test]
async fn forged_tokens_naming_random_tenants_cost_no_tenant_fetch() {
    let entra = entra().await;
    let interval = Duration::from_millis(1000);
    let validator = any_tenant_refetching_after(&entra, interval);
    assert!(validator
        .validate(&mint("k1", &v2_user_claims(&entra)))
        .await
        .is_ok());
    // Let the refetch gate open, so unknown kids could refetch.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let tenants: Vec<String> = (0..30).map(|_| random_tenant()).collect();
    for (n, tenant) in tenants.iter().enumerate() {
        let claims = v2_user_claims_of(&entra, tenant);
        let (token, expected) = if n % 2 == 0 {
            (forged("k1", &claims), TokenError::BadSignature)
        } else {
            (mint(&random_tenant(), &claims), TokenError::UnknownKey)
        };
        assert_eq!(validator.validate(&token).await.unwrap_err(), expected);
    }
    for tenant in &tenants {
        assert_eq!(entra.requests_for(tenant), (0, 0));
    }
    assert_eq!(
        entra.requests(),
        (1, 2),
        "one key-set refetch for 15 unknown kids"
    );
}

#[tokio::test]
async fn a_key_bound_to_one_tenant_signs_for_that_tenant_only() {
    let entra = entra().await;
    // As the personal-account keys in Entra's common JWKS name their own tenant's issuer.
    entra.publish("bound", Some(format!("{}/{TENANT}/v2.0", entra.base())));
    let validator = any_tenant(&entra, Timings::default());
    assert!(validator
        .validate(&mint("bound", &v2_user_claims_of(&entra, TENANT)))
        .await
        .is_ok());
    assert_eq!(
        validator
            .validate(&mint("bound", &v2_user_claims_of(&entra, OTHER_TENANT)))
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
}

#[tokio::test]
async fn stale_keys_are_refreshed_in_the_background_and_kept_when_that_fails() {
    let entra = entra().await;
    let age = Duration::from_millis(500);
    let validator = only_tenant(
        &entra,
        Timings {
            refresh_after: age,
            refetch_interval: age,
            ..Timings::default()
        },
    );
    // A new token each time: the same one again would be served from the tokens verified a
    // moment ago, without looking at the keys.
    let mut n = 0;
    let mut k1 = || {
        n += 1;
        mint(
            "k1",
            &with(v2_user_claims(&entra), json!({ "jti": n.to_string() })),
        )
    };
    assert!(validator.validate(&k1()).await.is_ok());
    entra.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(age + Duration::from_millis(100)).await;
    // Stale, and the refresh fails: the last good keys still serve.
    assert!(validator.validate(&k1()).await.is_ok());
    wait_for_requests(&entra, (2, 1)).await;
    assert!(validator.validate(&k1()).await.is_ok());
    // Entra is back with a new key: the next refresh takes it.
    entra.down.store(false, Ordering::SeqCst);
    entra.publish("k2", None);
    tokio::time::sleep(age + Duration::from_millis(100)).await;
    let before = entra.requests();
    assert!(validator.validate(&k1()).await.is_ok());
    wait_for_requests(&entra, (before.0 + 1, before.1 + 1)).await;
    let refreshed = entra.requests();
    assert!(validator
        .validate(&mint("k2", &v2_user_claims(&entra)))
        .await
        .is_ok());
    assert_eq!(entra.requests(), refreshed, "k2 came with the refresh");
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_last_good_keys() {
    let entra = entra().await;
    let interval = Duration::from_millis(1000);
    let validator = any_tenant_refetching_after(&entra, interval);
    let claims = v2_user_claims_of(&entra, OTHER_TENANT);
    assert!(validator.validate(&mint("k1", &claims)).await.is_ok());
    entra.down.store(true, Ordering::SeqCst);
    entra.publish("k2", None);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    // A new key cannot be checked while Entra is down; the known one still can (a token not
    // seen before, so the keys are looked at).
    assert_eq!(
        validator.validate(&mint("k2", &claims)).await.unwrap_err(),
        TokenError::MetadataUnavailable
    );
    let another = with(claims.clone(), json!({ "jti": "another" }));
    assert!(validator.validate(&mint("k1", &another)).await.is_ok());
    assert_eq!(entra.requests(), (1, 2));
    entra.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert!(validator.validate(&mint("k2", &claims)).await.is_ok());
    assert_eq!(entra.requests(), (1, 3));
}
