//! Leases on both backends: one owner at a time, stamped and compared with the database's
//! clock, renewed only at the revision their owner read.

use std::time::Duration as Span;

use chrono::Duration;

use super::harness::*;
use super::*;

#[tokio::test]
async fn a_lease_has_one_owner_until_released_or_expired() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        let thirty = Span::from_secs(30);
        let before = chrono::Utc::now();
        let LeaseAttempt::Acquired(row) = s
            .acquire_lease(&user(1), &lease("a", thirty))
            .await
            .unwrap()
        else {
            panic!("{}: a free lease is taken", b.name);
        };
        let until = row.lease_until.expect("stamped");
        assert_eq!(row.lease_owner.as_deref(), Some("a"));
        assert!(
            until >= before + Duration::seconds(30) - Duration::milliseconds(5),
            "{}: the database's clock plus the span",
            b.name
        );
        match s
            .acquire_lease(&user(1), &lease("b", thirty))
            .await
            .unwrap()
        {
            LeaseAttempt::Held(held_until) => assert_eq!(held_until, until),
            other => panic!("{}: b must wait, got {other:?}", b.name),
        }
        assert!(
            matches!(
                s.acquire_lease(&user(1), &lease("a", thirty))
                    .await
                    .unwrap(),
                LeaseAttempt::Acquired(_)
            ),
            "the owner may renew"
        );

        only_the_owner_releases_the_lease(&b).await;

        a_zero_lease_runs_out_at_once(&b).await;
    })
    .await;
}

/// Row 1 leased by `a`: `b` cannot release it, and only `a`'s own write does.
async fn only_the_owner_releases_the_lease(b: &Backend) {
    let s = b.store.as_ref();
    s.release_lease(&user(1), "b").await.unwrap();
    assert_eq!(
        get(s, 1).await.lease_owner.as_deref(),
        Some("a"),
        "only the owner releases"
    );
    // A CAS write by someone else keeps the owner's lease.
    let r = get(s, 1).await.revision;
    assert!(s
        .save_resealed(&user(1), r, &grant("x", "v2"), "b")
        .await
        .unwrap());
    assert_eq!(get(s, 1).await.lease_owner.as_deref(), Some("a"));
    assert!(s
        .save_resealed(&user(1), r + 1, &grant("y", "v2"), "a")
        .await
        .unwrap());
    assert_eq!(
        get(s, 1).await.lease_owner,
        None,
        "the owner's write releases it"
    );
}

/// A lease of zero runs out the moment it is stamped.
async fn a_zero_lease_runs_out_at_once(b: &Backend) {
    let s = b.store.as_ref();
    let LeaseAttempt::Acquired(_) = s
        .acquire_lease(&user(1), &lease("b", Span::ZERO))
        .await
        .unwrap()
    else {
        panic!("{}: a released lease is free", b.name);
    };
    tick().await;
    let LeaseAttempt::Acquired(row) = s.acquire_lease(&user(1), &lease("a", HOUR)).await.unwrap()
    else {
        panic!("{}: an expired lease is taken over", b.name);
    };
    assert_eq!(row.lease_owner.as_deref(), Some("a"));
}

#[tokio::test]
async fn a_lease_is_extended_only_at_the_revision_its_owner_read() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        let LeaseAttempt::Acquired(row) = s
            .acquire_lease(&user(1), &lease("a", Span::ZERO))
            .await
            .unwrap()
        else {
            panic!("{}: lease", b.name);
        };
        let r = row.revision;
        tick().await;
        assert!(
            s.extend_lease(&user(1), r, &lease("a", HOUR))
                .await
                .unwrap(),
            "{}: an expired lease nobody took is taken again",
            b.name
        );
        assert!(
            !s.extend_lease(&user(1), r, &lease("b", HOUR))
                .await
                .unwrap(),
            "{}: not while someone else's runs",
            b.name
        );
        assert!(s
            .extend_lease(&user(1), r, &lease("a", HOUR))
            .await
            .unwrap());
        let leased = get(s, 1).await;
        assert_eq!(leased.lease_owner.as_deref(), Some("a"));
        assert!(leased.lease_until > row.lease_until);
        assert!(
            !s.extend_lease(&user(1), r - 1, &lease("a", HOUR))
                .await
                .unwrap(),
            "{}: not at another revision",
            b.name
        );
        a_lease_taken_over_and_saved_is_not_renewed(&b, r).await;
    })
    .await;
}

/// Taken over after it ran out and saved by the new owner: the old owner's token is stale,
/// so its lease is not renewed.
async fn a_lease_taken_over_and_saved_is_not_renewed(b: &Backend, r: i64) {
    let s = b.store.as_ref();
    s.acquire_lease(&user(1), &lease("a", Span::ZERO))
        .await
        .unwrap();
    tick().await;
    let LeaseAttempt::Acquired(taken) = s.acquire_lease(&user(1), &lease("c", HOUR)).await.unwrap()
    else {
        panic!("{}: take over", b.name);
    };
    assert!(s
        .save_resealed(&user(1), taken.revision, &grant("x", "v2"), "c")
        .await
        .unwrap());
    assert!(!s
        .extend_lease(&user(1), r, &lease("a", HOUR))
        .await
        .unwrap());
}

#[tokio::test]
async fn missing_and_reauth_required_rows_are_not_leased() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        assert!(matches!(
            s.acquire_lease(&user(1), &lease("a", HOUR)).await.unwrap(),
            LeaseAttempt::Missing
        ));
        seed(s, 1, "v1", t0()).await;
        let LeaseAttempt::Acquired(row) =
            s.acquire_lease(&user(1), &lease("a", HOUR)).await.unwrap()
        else {
            panic!("{}: lease", b.name);
        };
        assert!(s
            .mark_reauth_required(&user(1), row.revision, "invalid_grant:70008", "a")
            .await
            .unwrap());
        match s.acquire_lease(&user(1), &lease("b", HOUR)).await.unwrap() {
            LeaseAttempt::NotActive(row) => {
                assert_eq!(row.status, TokenStatus::ReauthRequired);
                assert_eq!(row.status_reason.as_deref(), Some("invalid_grant:70008"));
                assert_eq!(row.sealed_refresh_token, b"rt", "the sealed token is kept");
                assert_eq!(row.lease_owner, None, "the owner's lease was released");
            }
            other => panic!("{}: expected NotActive, got {other:?}", b.name),
        }
        assert!(s
            .claim_due(&claim("v2", "timer", 10))
            .await
            .unwrap()
            .rows
            .is_empty());
    })
    .await;
}
