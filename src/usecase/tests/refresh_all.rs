//! refresh-tokens on fakes: due rows redeemed and rotated, old key versions re-sealed without
//! Entra, a dead grant marked, throttling and transient failures backed off, a refused
//! credential stopping the run, a refused key version left active.

use std::time::Duration;

use super::fakes::invalid_grant;
use super::{World, REFRESH_AFTER};
use crate::domain::TokenStatus;
use crate::idp::IdpError;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A world with `users` connected users whose grants are due by age.
async fn due_world(users: u8) -> World {
    let world = World::new();
    let deps = world.instance();
    for n in 1..=users {
        world.connect(&deps, &World::user(n)).await;
    }
    world.clock.advance(REFRESH_AFTER + Duration::from_secs(1));
    world
}

#[tokio::test]
async fn due_grants_are_redeemed_and_their_rotated_tokens_saved() {
    let world = due_world(5).await;
    let deps = world.instance();
    let before = world.stored_token(&World::user(1)).await;
    let summary = world.run_timer(&deps, false).await;
    assert_eq!(
        (summary.examined, summary.refreshed, summary.failed),
        (5, 5, 0)
    );
    for n in 1..=5 {
        let user = World::user(n);
        let row = world.store.row(&user);
        assert_eq!(
            row.refreshed_at,
            world.clock_now(),
            "refreshed at the instance's now"
        );
        assert!(row.lease_owner.is_none());
        assert!(world.entra.is_live(&world.stored_token(&user).await));
    }
    assert!(!world.entra.is_live(&before));
    // Nothing is due any more.
    let again = world.run_timer(&deps, false).await;
    assert_eq!(again.examined, 0);
}

#[tokio::test]
async fn a_rotated_key_re_seals_every_row_without_calling_entra() {
    let world = World::new();
    let deps = world.instance();
    for n in 1..=3 {
        world.connect(&deps, &World::user(n)).await;
    }
    let name = world.store.row(&World::user(1)).key_name;
    let token = world.stored_token(&World::user(1)).await;
    world.keys.rotate(&name);
    let summary = world.run_timer(&deps, true).await;
    assert_eq!((summary.examined, summary.resealed), (3, 3));
    assert!(world.entra.presented().is_empty());
    assert_eq!(world.store.row(&World::user(1)).key_version, "v2");
    assert_eq!(
        world.stored_token(&World::user(1)).await,
        token,
        "same grant, new key"
    );
}

#[tokio::test]
async fn a_dead_grant_is_marked_and_the_other_rows_refreshed() {
    let world = due_world(3).await;
    let deps = world.instance();
    world.entra.fail_next(invalid_grant());
    let summary = world.run_timer(&deps, false).await;
    assert_eq!((summary.refreshed, summary.reauth_required), (2, 1));
    let statuses: Vec<_> = (1..=3)
        .map(|n| world.store.row(&World::user(n)).status)
        .collect();
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == TokenStatus::ReauthRequired)
            .count(),
        1
    );
    assert_eq!(
        world.run_timer(&deps, false).await.examined,
        0,
        "a marked row is not claimed"
    );
}

#[tokio::test]
async fn a_transient_failure_backs_the_row_off_and_throttling_only_pauses_it() {
    let world = due_world(2).await;
    let deps = world.instance();
    world
        .entra
        .fail_next(IdpError::Unavailable { retry_after: None });
    world.entra.fail_next(IdpError::Throttled {
        retry_after: Some(Duration::from_secs(3600)),
    });
    let summary = world.run_timer(&deps, false).await;
    assert_eq!((summary.examined, summary.failed), (2, 2));
    let rows: Vec<_> = (1..=2).map(|n| world.store.row(&World::user(n))).collect();
    let backed_off = rows
        .iter()
        .find(|r| r.last_error.as_deref() == Some("unavailable"))
        .unwrap();
    assert_eq!(backed_off.failure_count, 1);
    let paused = rows
        .iter()
        .find(|r| r.last_error.as_deref() == Some("throttled"))
        .unwrap();
    assert_eq!(paused.failure_count, 0, "throttling is not the row's fault");
    assert!(rows
        .iter()
        .all(|r| r.status == TokenStatus::Active && r.lease_owner.is_none()));
    assert_eq!(world.run_timer(&deps, false).await.examined, 0, "both wait");
    world.clock.advance(DAY);
    let later = world.run_timer(&deps, false).await;
    assert_eq!((later.examined, later.refreshed), (2, 2));
}

#[tokio::test]
async fn a_refused_service_credential_stops_the_run_and_punishes_no_row() {
    let world = due_world(10).await;
    let deps = world.instance();
    for _ in 0..10 {
        world.entra.fail_next(IdpError::Misconfigured {
            error: "invalid_client".into(),
            code: Some(7_000_222),
        });
    }
    let summary = world.run_timer(&deps, false).await;
    assert_eq!(
        summary.refreshed + summary.failed + summary.reauth_required,
        0,
        "{summary:?}"
    );
    assert!(
        world.entra.presented().len() <= 4,
        "no row started after the refusal"
    );
    for n in 1..=10 {
        let row = world.store.row(&World::user(n));
        assert_eq!((row.failure_count, row.lease_owner.is_none()), (0, true));
        assert_eq!(row.status, TokenStatus::Active);
    }
}

#[tokio::test]
async fn a_refused_key_version_leaves_its_rows_active_and_unpunished() {
    let world = due_world(2).await;
    let deps = world.instance();
    world.keys.refuse("v1");
    let summary = world.run_timer(&deps, false).await;
    assert_eq!((summary.examined, summary.failed), (2, 2));
    for n in 1..=2 {
        let row = world.store.row(&World::user(n));
        assert_eq!(row.status, TokenStatus::Active);
        assert_eq!((row.failure_count, row.lease_owner.is_none()), (0, true));
    }
    assert!(world.entra.presented().is_empty());
}
