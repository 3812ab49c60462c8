//! do-work on fakes: one redemption per user however many calls race, across instances too;
//! the rotated refresh token saved and the old one never presented again; the clock passing
//! the access token's expiry; a dead grant; a claims challenge.

use std::collections::HashSet;
use std::time::Duration;

use super::fakes::{invalid_grant, ACCESS_TOKEN_LIFETIME};
use super::World;
use crate::access_tokens::EXPIRY_MARGIN;
use crate::domain::TokenStatus;
use crate::idp::IdpError;
use crate::usecase::FlowError;

#[tokio::test]
async fn concurrent_calls_for_one_user_redeem_once() {
    let (world, deps, user) = World::with_connected_user().await;
    *world.entra.latency.lock().unwrap() = Duration::from_millis(30);
    let calls = (0..8).map(|_| world.do_work(&deps, &user));
    let done = futures::future::join_all(calls).await;
    let refreshed = done
        .iter()
        .filter(|d| d.as_ref().unwrap().refreshed)
        .count();
    assert_eq!(
        refreshed, 1,
        "one call redeemed, the others waited for its token"
    );
    assert_eq!(world.entra.presented().len(), 1);
    assert!(done
        .iter()
        .all(|d| d.as_ref().unwrap().response.status == 200));
}

#[tokio::test]
async fn two_instances_racing_for_one_user_never_present_one_token_twice() {
    let world = World::new();
    let (a, b) = (world.instance(), world.instance());
    let user = World::user(1);
    world.connect(&a, &user).await;
    *world.entra.latency.lock().unwrap() = Duration::from_millis(40);
    let (first, second) = tokio::join!(world.do_work(&a, &user), world.do_work(&b, &user));
    assert!(first.unwrap().refreshed && second.unwrap().refreshed);
    let presented = world.entra.presented();
    assert_eq!(presented.len(), 2);
    assert_ne!(
        presented[0], presented[1],
        "the lease made the second wait for the rotation"
    );
    let row = world.store.row(&user);
    assert_eq!(row.status, TokenStatus::Active);
    assert!(row.lease_owner.is_none());
    assert!(world.entra.is_live(&world.stored_token(&user).await));
}

#[tokio::test]
async fn the_rotated_token_is_saved_and_the_old_one_is_never_presented_again() {
    let (world, deps, user) = World::with_connected_user().await;
    let mut seen = HashSet::new();
    for _ in 0..4 {
        let before = world.stored_token(&user).await;
        assert!(world.do_work(&deps, &user).await.unwrap().refreshed);
        let after = world.stored_token(&user).await;
        assert_ne!(before, after, "the rotated refresh token is on the row");
        assert!(seen.insert(before));
        // Past the access token's usable life: the next call redeems the stored token.
        world.clock.advance(ACCESS_TOKEN_LIFETIME);
    }
    let presented = world.entra.presented();
    let distinct: HashSet<_> = presented.iter().collect();
    assert_eq!(
        distinct.len(),
        presented.len(),
        "no refresh token was presented twice"
    );
    assert_eq!(world.store.row(&user).status, TokenStatus::Active);
}

#[tokio::test]
async fn the_access_token_is_reused_until_the_clock_passes_its_margin() {
    let (world, deps, user) = World::with_connected_user().await;
    assert!(world.do_work(&deps, &user).await.unwrap().refreshed);
    world
        .clock
        .advance(ACCESS_TOKEN_LIFETIME - EXPIRY_MARGIN - Duration::from_secs(1));
    assert!(
        !world.do_work(&deps, &user).await.unwrap().refreshed,
        "still usable"
    );
    world.clock.advance(Duration::from_secs(2));
    assert!(
        world.do_work(&deps, &user).await.unwrap().refreshed,
        "the clock jumped past it"
    );
    let tokens = world.work.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens[0], tokens[1]);
    assert_ne!(tokens[1], tokens[2]);
}

#[tokio::test]
async fn a_dead_grant_is_marked_once_and_never_redeemed_again() {
    let (world, deps, user) = World::with_connected_user().await;
    world.entra.revoke_all();
    let error = world.do_work(&deps, &user).await.unwrap_err();
    let FlowError::ReauthRequired { reason, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(reason.as_deref(), Some("invalid_grant:70008"));
    let row = world.store.row(&user);
    assert_eq!(row.status, TokenStatus::ReauthRequired);
    assert_eq!(row.status_reason.as_deref(), Some("invalid_grant:70008"));
    assert!(row.lease_owner.is_none(), "the mark released the lease");
    let again = world.do_work(&deps, &user).await.unwrap_err();
    assert!(
        matches!(again, FlowError::ReauthRequired { .. }),
        "{again:?}"
    );
    assert_eq!(
        world.entra.presented().len(),
        1,
        "a marked row is not redeemed again"
    );
}

#[tokio::test]
async fn waiters_on_a_failed_refresh_all_get_its_error_and_the_row_is_untouched() {
    let (world, deps, user) = World::with_connected_user().await;
    let before = world.store.row(&user);
    world
        .entra
        .fail_next(IdpError::Unavailable { retry_after: None });
    *world.entra.latency.lock().unwrap() = Duration::from_millis(30);
    let calls = (0..4).map(|_| world.do_work(&deps, &user));
    for done in futures::future::join_all(calls).await {
        let error = done.unwrap_err();
        assert!(
            matches!(error, FlowError::Idp(IdpError::Unavailable { .. })),
            "{error:?}"
        );
    }
    assert_eq!(world.entra.presented().len(), 1);
    let after = world.store.row(&user);
    assert_eq!(after.revision, before.revision);
    assert!(after.lease_owner.is_none(), "the lease was given back");
}

#[tokio::test]
async fn a_claims_challenge_is_answered_with_one_redemption_carrying_its_claims() {
    let (world, deps, user) = World::with_connected_user().await;
    world.do_work(&deps, &user).await.unwrap();
    let challenge = "{\"access_token\":{\"nbf\":{\"essential\":true,\"value\":\"1\"}}}";
    world.work.challenge_next(challenge);
    let done = world.do_work(&deps, &user).await.unwrap();
    assert_eq!(done.response.status, 200);
    assert!(done.refreshed);
    assert_eq!(world.entra.claims(), vec![None, Some(challenge.to_owned())]);
    // A dead grant found while answering the challenge hands the challenge to the next sign-in.
    world.work.challenge_next(challenge);
    world.entra.fail_next(invalid_grant());
    let error = world.do_work(&deps, &user).await.unwrap_err();
    let FlowError::ReauthRequired { claims, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(claims.as_deref(), Some(challenge));
}

#[tokio::test]
async fn missing_consent_for_a_downstream_leaves_the_grant_active() {
    let (world, deps, user) = World::with_connected_user().await;
    world.entra.fail_next(IdpError::Reauth {
        error: "invalid_grant".into(),
        code: Some(65001),
        suberror: Some("consent_required".into()),
        claims: None,
    });
    let error = world.do_work(&deps, &user).await.unwrap_err();
    assert!(
        matches!(error, FlowError::ConsentRequired { .. }),
        "{error:?}"
    );
    let row = world.store.row(&user);
    assert_eq!(row.status, TokenStatus::Active);
    assert!(row.lease_owner.is_none());
}
