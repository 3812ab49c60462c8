//! Tests of the validator against a fake Entra: one tenant's metadata, claims, refetches.

use std::sync::atomic::Ordering;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::fake_entra::*;
use super::keys::Timings;
use super::*;

#[tokio::test]
async fn v2_user_tokens_are_accepted_with_their_claims() {
    let entra = entra().await;
    let token = validator(&entra)
        .validate(&mint("k1", &v2_user_claims(&entra)))
        .await
        .unwrap();
    assert_eq!(token.tenant_id.as_str(), TENANT);
    assert_eq!(token.object_id.as_ref().map(UserId::as_str), Some(USER));
    assert_eq!(token.app_id.as_deref(), Some(CALLER_APP));
    assert_eq!(token.scopes, vec!["access_as_user", "User.Read"]);
    assert!(!token.app_only && token.roles.is_empty());
    assert!((token.expires_at.timestamp() - (now() + 3600)).abs() <= 5);
    assert_eq!(entra.requests(), (1, 1));
}

#[tokio::test]
async fn v1_app_only_tokens_with_the_app_id_uri_audience_are_accepted() {
    let entra = entra().await;
    let claims = json!({
        "aud": format!("api://{CLIENT_ID}"), "iss": format!("https://sts.windows.net/{TENANT}/"), "tid": TENANT,
        "oid": USER, "sub": USER, "appid": CALLER_APP, "roles": ["OboVault.Act"], "ver": "1.0", "exp": now() + 600,
    });
    let token = validator(&entra)
        .validate(&mint("k1", &claims))
        .await
        .unwrap();
    assert!(token.app_only);
    assert_eq!(token.roles, vec!["OboVault.Act"]);
    assert_eq!(token.app_id.as_deref(), Some(CALLER_APP));
    assert!(token.scopes.is_empty());
    let marked = with(v2_user_claims(&entra), json!({"idtyp": "app", "scp": null}));
    assert!(
        validator(&entra)
            .validate(&mint("k1", &marked))
            .await
            .unwrap()
            .app_only
    );
}

#[tokio::test]
async fn wrong_audiences_and_issuers_are_refused() {
    let (entra, validator) = entra_and_validator().await;
    let base = v2_user_claims(&entra);
    let cases = [
        (
            json!({"aud": "00000003-0000-0000-c000-000000000000"}),
            TokenError::WrongAudience,
        ),
        (json!({"aud": null}), TokenError::WrongAudience),
        (
            json!({"iss": format!("{}/{OTHER_TENANT}/v2.0", entra.base())}),
            TokenError::WrongIssuer,
        ),
        (
            json!({"iss": format!("https://sts.windows.net/{OTHER_TENANT}/")}),
            TokenError::WrongIssuer,
        ),
        (json!({"iss": null}), TokenError::WrongIssuer),
    ];
    assert_refused(&validator, &base, cases).await;
}

#[tokio::test]
async fn lifetime_is_checked_with_five_minutes_of_skew() {
    let (entra, validator) = entra_and_validator().await;
    let base = v2_user_claims(&entra);
    let within_skew = mint(
        "k1",
        &with(
            base.clone(),
            json!({"exp": now() - 200, "nbf": now() + 200}),
        ),
    );
    assert!(validator.validate(&within_skew).await.is_ok());
    let cases = [
        (json!({"exp": now() - 400}), TokenError::Expired),
        (json!({"nbf": now() + 400}), TokenError::NotYetValid),
        (json!({"exp": null}), TokenError::Malformed),
    ];
    assert_refused(&validator, &base, cases).await;
}

#[tokio::test]
async fn unsigned_and_symmetric_tokens_are_refused_before_any_request() {
    let (entra, validator) = entra_and_validator().await;
    let claims = v2_user_claims(&entra);
    let none = unsigned(json!({"alg": "none", "typ": "JWT", "kid": "k1"}), &claims);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(b"public key as secret"),
    )
    .unwrap();
    let ps256 = unsigned(json!({"alg": "PS256", "kid": "k1"}), &claims);
    let tokens = [none, hs256, ps256];
    assert_each_refused(&validator, tokens, TokenError::UnsupportedAlgorithm).await;
    assert_eq!(entra.requests(), (0, 0));
}

#[tokio::test]
async fn tampered_tokens_fail_the_signature() {
    let entra = entra().await;
    let good = mint("k1", &v2_user_claims(&entra));
    let other = mint(
        "k1",
        &with(
            v2_user_claims(&entra),
            json!({"oid": "00000000-0000-4000-8000-000000000000"}),
        ),
    );
    let [header, _, signature] = good.split('.').collect::<Vec<_>>()[..] else {
        unreachable!()
    };
    let payload = other.split('.').nth(1).unwrap();
    let forged = format!("{header}.{payload}.{signature}");
    // The genuine token, verified a moment ago, lends nothing to one carrying its signature.
    let validator = validator(&entra);
    assert!(validator.validate(&good).await.is_ok());
    assert_eq!(
        validator.validate(&forged).await.unwrap_err(),
        TokenError::BadSignature
    );
    assert!(validator.validate(&good).await.is_ok());
}

#[tokio::test]
async fn foreign_tenants_and_junk_are_refused_without_a_request() {
    let (entra, validator) = entra_and_validator().await;
    let tenants = [
        (json!({"tid": OTHER_TENANT}), TokenError::TenantNotAllowed),
        (json!({"tid": "common"}), TokenError::Malformed),
        (json!({"tid": null}), TokenError::Malformed),
    ];
    assert_refused(&validator, &v2_user_claims(&entra), tenants).await;
    let oversized = format!("{}.{}.sig", "a".repeat(8 * 1024), "b".repeat(8 * 1024));
    let junk = ["", "abc", "a.b.c", "a.b.c.d.e", "eyJ.eyJ.x", &oversized];
    assert_each_refused(&validator, junk, TokenError::Malformed).await;
    assert_eq!(entra.requests(), (0, 0));
}

#[tokio::test]
async fn unknown_kids_cause_at_most_one_refetch_per_interval() {
    let entra = entra().await;
    let interval = Duration::from_millis(1500);
    let validator = with_refetch_interval(&entra, interval);
    let claims = v2_user_claims(&entra);
    validator.validate(&mint("k1", &claims)).await.unwrap();
    // Keys fetched just now are current: no refetch.
    assert_eq!(
        validator
            .validate(&mint("garbage", &claims))
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(entra.requests(), (1, 1));
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    for _ in 0..3 {
        assert_eq!(
            validator
                .validate(&mint("garbage", &claims))
                .await
                .unwrap_err(),
            TokenError::UnknownKey
        );
    }
    assert_eq!(entra.requests(), (1, 2), "one refetch, then the gate holds");
    // A rotated-in key is found by the next allowed refetch.
    entra.publish("k2", None);
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert!(validator.validate(&mint("k2", &claims)).await.is_ok());
    assert_eq!(entra.requests(), (1, 3));
    assert!(validator.validate(&mint("k1", &claims)).await.is_ok());
    assert_eq!(entra.requests(), (1, 3));
}

#[tokio::test]
async fn concurrent_misses_for_a_tenant_share_one_fetch() {
    let (entra, validator) = entra_and_validator().await;
    let token = mint("k1", &v2_user_claims(&entra));
    let results = futures::future::join_all((0..8).map(|_| validator.validate(&token))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(entra.requests(), (1, 1));
}

#[tokio::test]
async fn first_fetch_failures_are_unavailable_and_retried_after_a_pause() {
    let entra = entra().await;
    let retry = Duration::from_secs(2);
    let validator = validator_with(
        &entra,
        AllowedTenants::Only(vec![TenantId::parse(TENANT).unwrap()]),
        Timings {
            first_fetch_retry: retry,
            ..Timings::default()
        },
    );
    let token = mint("k1", &v2_user_claims(&entra));
    entra.down.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(
            validator.validate(&token).await.unwrap_err(),
            TokenError::MetadataUnavailable
        );
    }
    assert_eq!(
        entra.requests(),
        (1, 0),
        "one attempt per pause, however many tokens"
    );
    entra.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(retry + Duration::from_millis(100)).await;
    assert!(validator.validate(&token).await.is_ok());
    assert_eq!(entra.requests(), (2, 1));
}

/// A validator for `TENANT` whose unknown-`kid` refetches wait `interval`.
fn with_refetch_interval(entra: &Entra, interval: Duration) -> TokenValidator {
    validator_with(
        entra,
        AllowedTenants::Only(vec![TenantId::parse(TENANT).unwrap()]),
        Timings {
            refetch_interval: interval,
            ..Timings::default()
        },
    )
}

#[test]
fn error_texts_are_for_clients() {
    assert_eq!(TokenError::Expired.to_string(), "the token has expired");
    assert_eq!(
        TokenError::TenantNotAllowed.to_string(),
        "the token's tenant is not allowed to use this service"
    );
}
