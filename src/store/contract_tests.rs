//! One contract, two backends: every test runs the same assertions against a fresh SQLite file
//! and a fresh Postgres database (see `harness`). Row life cycle: connect, compare-and-set,
//! leases, re-authentication, access history.

use chrono::Duration;

use super::harness::*;
use super::*;

#[tokio::test]
async fn connect_creates_then_reconnects() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        let first = s
            .connect(&user(1), &grant("first", "v1"), "User.Read", t0())
            .await
            .unwrap();
        assert!(first.created, "{}", b.name);
        let r = first.record.revision;
        assert_eq!(first.record.status, TokenStatus::Active);
        assert_eq!(
            (first.record.created_at, first.record.refreshed_at),
            (t0(), t0())
        );
        assert_eq!(first.record.sealed_refresh_token, b"first");

        // Dirty every piece of bookkeeping a reconnect must reset.
        assert!(fail(s, 1, r, "timer", "temporarily_unavailable", HOUR).await);
        assert!(matches!(
            s.acquire_lease(&user(1), &lease("a", HOUR)).await.unwrap(),
            LeaseAttempt::Acquired(_)
        ));
        assert!(s
            .mark_reauth_required(&user(1), r, "invalid_grant", "other")
            .await
            .unwrap());

        let again = s
            .connect(
                &user(1),
                &grant("second", "v2"),
                "User.Read Mail.Read",
                t0() + hours(2),
            )
            .await
            .unwrap();
        assert!(!again.created, "{}", b.name);
        let row = get(s, 1).await;
        assert_eq!(row.revision, r + 2);
        assert_eq!(row.created_at, t0(), "created_at is kept");
        assert_eq!(row.refreshed_at, t0() + hours(2));
        assert_eq!(row.status, TokenStatus::Active);
        assert_eq!(
            (row.status_reason, row.last_error, row.next_attempt_at),
            (None, None, None)
        );
        assert_eq!(row.failure_count, 0);
        assert_eq!((row.lease_owner, row.lease_until), (None, None));
        assert_eq!(row.sealed_refresh_token, b"second");
        assert_eq!(
            (row.key_version.as_str(), row.scopes.as_str()),
            ("v2", "User.Read Mail.Read")
        );
    })
    .await;
}

#[tokio::test]
async fn writes_are_compare_and_set_on_the_revision() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        let r = get(s, 1).await.revision;
        assert!(fail(s, 1, r, "a", "timeout", HOUR).await);
        assert!(
            !fail(s, 1, r - 1, "a", "timeout", HOUR).await,
            "{}: a failure at an old revision is refused",
            b.name
        );
        assert_eq!(get(s, 1).await.failure_count, 1);
        assert_eq!(
            get(s, 1).await.revision,
            r,
            "a failure does not touch the token"
        );

        stale_writes_change_nothing_and_a_re_seal_keeps_the_age(&b, r).await;
        a_refresh_moves_on_the_revision(&b, r).await;
        revisions_are_not_reused_after_a_reconnect(&b, r).await;
    })
    .await;
}

/// Writes at another revision are refused; a re-seal at the row's revision keeps its age.
async fn stale_writes_change_nothing_and_a_re_seal_keeps_the_age(b: &Backend, r: i64) {
    let s = b.store.as_ref();
    let stale = grant("stale", "v2");
    assert!(!s
        .save_refreshed(&user(1), r - 1, &stale, t0() + hours(1), "a")
        .await
        .unwrap());
    assert!(!s.save_resealed(&user(1), r + 1, &stale, "a").await.unwrap());
    assert!(!s
        .mark_reauth_required(&user(1), r + 5, "invalid_grant", "a")
        .await
        .unwrap());
    let row = get(s, 1).await;
    assert_eq!(
        (row.sealed_refresh_token.as_slice(), row.revision),
        (&b"rt"[..], r),
        "stale writes change nothing"
    );

    assert!(s
        .save_resealed(&user(1), r, &grant("resealed", "v2"), "a")
        .await
        .unwrap());
    let row = get(s, 1).await;
    assert_eq!(
        (row.revision, row.refreshed_at, row.failure_count),
        (r + 1, t0(), 1),
        "re-seal keeps age and failures"
    );
    assert_eq!(
        (
            row.sealed_refresh_token.as_slice(),
            row.key_version.as_str()
        ),
        (&b"resealed"[..], "v2")
    );
}

/// A refresh at the re-sealed revision; later writes at the old one are refused.
async fn a_refresh_moves_on_the_revision(b: &Backend, r: i64) {
    let s = b.store.as_ref();
    let refreshed_at = t0() + hours(3);
    assert!(s
        .save_refreshed(
            &user(1),
            r + 1,
            &grant("refreshed", "v2"),
            refreshed_at,
            "a"
        )
        .await
        .unwrap());
    let row = get(s, 1).await;
    assert_eq!(
        (row.revision, row.refreshed_at, row.failure_count),
        (r + 2, refreshed_at, 0)
    );
    assert_eq!((row.next_attempt_at, row.last_error), (None, None));
    let late = grant("late", "v2");
    assert!(
        !s.save_refreshed(&user(1), r + 1, &late, t0() + hours(4), "b")
            .await
            .unwrap(),
        "{}",
        b.name
    );
    assert!(
        !s.save_refreshed(&user(9), r, &late, t0(), "a")
            .await
            .unwrap(),
        "missing row"
    );
}

/// A user who disconnects and connects again gets revisions no old writer holds.
async fn revisions_are_not_reused_after_a_reconnect(b: &Backend, r: i64) {
    let s = b.store.as_ref();
    let late = grant("late", "v2");
    // Disconnect and connect again: a writer still holding an old revision must not
    // overwrite the new grant, nor mark it reauth_required.
    assert!(s.delete(&user(1)).await.unwrap());
    let again = s
        .connect(&user(1), &grant("new", "v2"), "User.Read", t0() + hours(5))
        .await
        .unwrap();
    assert!(again.created);
    for old in r..=r + 2 {
        assert!(
            !s.save_refreshed(&user(1), old, &late, t0() + hours(6), "a")
                .await
                .unwrap(),
            "{}: revision {old} reused",
            b.name
        );
        assert!(!s
            .mark_reauth_required(&user(1), old, "invalid_grant", "a")
            .await
            .unwrap());
    }
    assert_eq!(get(s, 1).await.sealed_refresh_token, b"new");
}

#[tokio::test]
async fn a_batch_of_saves_is_compare_and_set_row_by_row() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        four_leased_rows_two_of_them_failed(&b).await;
        let revision = |n| async move { get(s, n).await.revision };
        let (r1, r2, r3) = (revision(1).await, revision(2).await, revision(3).await);
        let (refreshed, resealed, stale) =
            (grant("new1", "v2"), grant("new2", "v2"), grant("x", "v2"));
        let (u1, u2, u3, u9) = (user(1), user(2), user(3), user(9));
        let saves = [
            GrantSave {
                key: &u1,
                expected_revision: r1,
                grant: &refreshed,
                refreshed_at: Some(t0() + hours(2)),
            },
            GrantSave {
                key: &u2,
                expected_revision: r2,
                grant: &resealed,
                refreshed_at: None,
            },
            GrantSave {
                key: &u3,
                expected_revision: r3 - 1,
                grant: &stale,
                refreshed_at: Some(t0() + hours(2)),
            },
            GrantSave {
                key: &u9,
                expected_revision: 1,
                grant: &stale,
                refreshed_at: None,
            },
        ];
        let saved = s.save_grants(&saves, "timer").await.unwrap();
        assert_eq!(saved, [true, true, false, false], "{}", b.name);

        only_the_saves_at_their_revision_were_made(&b, (r1, r2, r3)).await;
        assert_eq!(get(s, 4).await.revision, revision(4).await);
        assert!(s.save_grants(&[], "timer").await.unwrap().is_empty());
    })
    .await;
}

/// Rows 1 to 4 leased by `timer`; rows 1 and 2 with a failure it recorded.
async fn four_leased_rows_two_of_them_failed(b: &Backend) {
    let s = b.store.as_ref();
    for n in 1..=4 {
        seed(s, n, "v1", t0()).await;
        s.acquire_lease(&user(n), &lease("timer", HOUR))
            .await
            .unwrap();
    }
    for n in 1..=2 {
        let revision = get(s, n).await.revision;
        assert!(
            !fail(s, n, revision, "other", "timeout", HOUR).await,
            "{}: another owner's lease guards the row",
            b.name
        );
        assert!(fail(s, n, revision, "timer", "timeout", HOUR).await);
        s.acquire_lease(&user(n), &lease("timer", HOUR))
            .await
            .unwrap();
    }
}

/// Rows 1 (refreshed) and 2 (re-sealed) saved; row 3 (stale) untouched.
async fn only_the_saves_at_their_revision_were_made(b: &Backend, (r1, r2, r3): (i64, i64, i64)) {
    let s = b.store.as_ref();
    let row = get(s, 1).await;
    assert_eq!(
        (
            row.sealed_refresh_token.as_slice(),
            row.key_version.as_str()
        ),
        (&b"new1"[..], "v2")
    );
    assert_eq!(
        (row.revision, row.refreshed_at, row.lease_owner),
        (r1 + 1, t0() + hours(2), None)
    );
    let row = get(s, 2).await;
    assert_eq!(
        (row.sealed_refresh_token.as_slice(), row.revision),
        (&b"new2"[..], r2 + 1)
    );
    assert_eq!(
        (row.refreshed_at, row.lease_owner),
        (t0(), None),
        "a re-seal keeps the age"
    );
    assert_eq!(
        (get(s, 1).await.failure_count, get(s, 1).await.last_error),
        (0, None),
        "a refresh clears the failures"
    );
    let row = get(s, 2).await;
    assert_eq!(
        (row.failure_count, row.last_error.as_deref()),
        (1, Some("timeout")),
        "a re-seal keeps them"
    );
    let row = get(s, 3).await;
    assert_eq!(
        (row.sealed_refresh_token.as_slice(), row.revision),
        (&b"rt"[..], r3),
        "a stale save changes nothing"
    );
    assert_eq!(
        row.lease_owner.as_deref(),
        Some("timer"),
        "nor releases the lease"
    );
}

#[tokio::test]
async fn access_history_is_trimmed_newest_first_and_goes_with_the_row() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        seed(s, 2, "v1", t0()).await;
        let access = |n: u32, minute: i64| AccessRecord {
            key: user(n),
            at: t0() + Duration::minutes(minute),
            caller_app_id: "app".into(),
            caller_tenant_id: (minute != 4).then(|| user(n).tenant_id),
            downstream: (minute != 4).then(|| "crm-api".into()),
            method: "GET".into(),
            path: "/me".into(),
            downstream_status: (minute % 2 == 0).then_some(200),
            refreshed: minute == 3,
        };
        let batch: Vec<_> = [(1, 1), (1, 2), (2, 1), (1, 3), (9, 1)]
            .into_iter()
            .map(|(n, m)| access(n, m))
            .collect();
        s.record_accesses(&batch, 10)
            .await
            .expect("a deleted user is skipped, not an error");
        s.record_accesses(&[access(1, 4), access(1, 5)], 3)
            .await
            .unwrap();

        the_newest_records_of_user_1_are_kept_whole(&b).await;

        assert!(s.delete(&user(1)).await.unwrap());
        assert!(!s.delete(&user(1)).await.unwrap());
        assert!(s.find(&user(1)).await.unwrap().is_none());
        seed(s, 1, "v1", t0()).await;
        assert!(
            s.recent_accesses(&user(1), 10).await.unwrap().is_empty(),
            "{}: history cascaded",
            b.name
        );
    })
    .await;
}

/// User 1 keeps its newest three records, with every field; user 2 its one.
async fn the_newest_records_of_user_1_are_kept_whole(b: &Backend) {
    let s = b.store.as_ref();
    let recent = s.recent_accesses(&user(1), 10).await.unwrap();
    let minutes: Vec<_> = recent.iter().map(|a| (a.at - t0()).num_minutes()).collect();
    assert_eq!(
        minutes,
        [5, 4, 3],
        "{}: newest `keep` kept, newest first",
        b.name
    );
    assert_eq!(
        (
            recent[1].downstream_status,
            recent[2].refreshed,
            recent[0].path.as_str()
        ),
        (Some(200), true, "/me")
    );
    assert_eq!(
        (
            recent[0].caller_tenant_id.as_ref(),
            recent[1].caller_tenant_id.as_ref()
        ),
        (Some(&user(1).tenant_id), None),
        "{}: the caller's tenant is kept, NULL for records without one",
        b.name
    );
    let downstreams: Vec<Option<&str>> = recent.iter().map(|a| a.downstream.as_deref()).collect();
    assert!(
        downstreams.contains(&Some("crm-api")) && downstreams.contains(&None),
        "{}: the downstream is kept, NULL for records without one: {downstreams:?}",
        b.name
    );
    assert_eq!(s.recent_accesses(&user(1), 1).await.unwrap().len(), 1);
    assert_eq!(
        s.recent_accesses(&user(2), 10).await.unwrap().len(),
        1,
        "other users untouched"
    );
}
