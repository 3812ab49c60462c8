//! The timer's side of the contract, on both backends: back-off, claiming due rows, concurrent
//! claimers, operator counts. Every time is the database's clock: rows are seeded relative to
//! the real time, and time passes by short spans and sleeps.

use std::collections::HashSet;
use std::time::Duration as Span;

use chrono::{Duration, Utc};

use super::harness::*;
use super::*;

#[tokio::test]
async fn a_failure_backs_the_row_off_without_touching_the_token() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        seed(s, 2, "v1", t0()).await;
        let first_revision = get(s, 1).await.revision;
        assert_eq!(
            s.claim_due(&claim("v1", "run1", 10))
                .await
                .unwrap()
                .rows
                .len(),
            2
        );
        assert!(
            fail(
                s,
                1,
                first_revision,
                "run1",
                "temporarily_unavailable",
                HOUR
            )
            .await
        );
        let revision = get(s, 2).await.revision;
        assert!(fail(s, 2, revision, "run1", "timeout", Span::ZERO).await);
        let row = get(s, 1).await;
        assert_eq!(
            (row.failure_count, row.last_error.as_deref()),
            (1, Some("temporarily_unavailable"))
        );
        assert_eq!(
            (row.revision, row.sealed_refresh_token.as_slice()),
            (first_revision, &b"rt"[..])
        );
        assert_eq!(
            row.lease_owner, None,
            "the failing owner released its lease"
        );

        row_1_backs_off_and_row_2_is_due_again(&b).await;
    })
    .await;
}

/// After the failures: row 1 (an hour away) is not claimed again, row 2 (no wait) is.
async fn row_1_backs_off_and_row_2_is_due_again(b: &Backend) {
    let s = b.store.as_ref();
    tick().await;
    let retry = s.claim_due(&claim("v1", "run2", 10)).await.unwrap();
    assert_eq!(
        user_numbers(&retry.rows),
        ["2"],
        "{}: 1 backs off, 2 is due again once next_attempt_at is reached",
        b.name
    );
    assert!(
        s.claim_due(&claim("v2", "run3", 10))
            .await
            .unwrap()
            .rows
            .is_empty(),
        "{}: backing off also for a re-seal",
        b.name
    );
}

#[tokio::test]
async fn claim_due_takes_rows_old_or_on_another_key_version_oldest_first() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        let now = Utc::now();
        seed_rows_of_every_kind(&b, now).await;

        let before = Utc::now();
        let first = s.claim_due(&claim("v5", "run", 3)).await.unwrap().rows;
        let after = Utc::now();
        assert_eq!(
            user_numbers(&first),
            ["5", "6", "2"],
            "{}: oldest first, limit kept",
            b.name
        );
        // Stamped by the database: its clock (here the same machine's) plus five minutes.
        let five = Duration::minutes(5);
        let slack = Duration::milliseconds(5);
        assert!(first
            .iter()
            .all(|row| row.lease_owner.as_deref() == Some("run")
                && row
                    .lease_until
                    .is_some_and(|t| t >= before + five - slack && t <= after + five + slack)));
        let second = s.claim_due(&claim("v5", "run", 10)).await.unwrap().rows;
        assert_eq!(
            user_numbers(&second),
            ["4", "3"],
            "{}: claimed rows are leased",
            b.name
        );
        assert!(s
            .claim_due(&claim("v5", "run", 10))
            .await
            .unwrap()
            .rows
            .is_empty());
        let reseal_only = DueClaim {
            refresh_after: None,
            ..claim("v5", "other", 10)
        };
        s.release_lease(&user(5), "run").await.unwrap();
        s.release_lease(&user(6), "run").await.unwrap();
        assert_eq!(
            user_numbers(&s.claim_due(&reseal_only).await.unwrap().rows),
            ["6"],
            "{}: without refresh_after only other versions are due",
            b.name
        );
        assert_eq!(s.key_names().await.unwrap(), [KEY, "other-key"]);
    })
    .await;
}

/// Rows 1 to 6 fresh, old or on other versions of `KEY`; 7 on another key; 8 in
/// `reauth_required`; 9 leased.
async fn seed_rows_of_every_kind(b: &Backend, now: chrono::DateTime<Utc>) {
    let s = b.store.as_ref();
    seed(s, 1, "v5", now - hours(1)).await; // fresh, latest: not due
    seed(s, 2, "v5", now - hours(30)).await; // old
    seed(s, 3, "v3", now - hours(2)).await; // older version
    seed(s, 4, "v9", now - hours(3)).await; // a version sorting after the latest
    seed(s, 5, "v5", now - hours(50)).await; // oldest
    seed(s, 6, "v3", now - hours(40)).await; // old and on an old version
    s.connect(
        &user(7),
        &SealedGrant {
            key_name: "other-key".into(),
            ..grant("rt", "v1")
        },
        "s",
        t0(),
    )
    .await
    .unwrap();
    seed(s, 8, "v3", t0()).await;
    assert!(s
        .mark_reauth_required(&user(8), get(s, 8).await.revision, "invalid_grant", "x")
        .await
        .unwrap());
    seed(s, 9, "v3", t0()).await;
    assert!(matches!(
        s.acquire_lease(&user(9), &lease("do-work", HOUR))
            .await
            .unwrap(),
        LeaseAttempt::Acquired(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_row() {
    on_both(|b: Backend| async move {
        let now = Utc::now();
        for n in 0..60 {
            // Half due by age, half only by key version.
            let (version, refreshed_at) = if n % 2 == 0 {
                ("old", now - hours(1))
            } else {
                ("new", t0())
            };
            seed(
                b.store.as_ref(),
                n,
                version,
                refreshed_at + Duration::minutes(n.into()),
            )
            .await;
        }
        let (one, two) = (b.store.clone(), b.another().await);
        let mut seen = HashSet::new();
        loop {
            let (claim_a, claim_c) = (claim("new", "a", 7), claim("new", "c", 7));
            let (a, c) = tokio::join!(one.claim_due(&claim_a), two.claim_due(&claim_c));
            let (a, c) = (a.expect("claim a").rows, c.expect("claim c").rows);
            if a.is_empty() && c.is_empty() {
                break;
            }
            for row in a.iter().chain(&c) {
                assert!(
                    seen.insert(row.key.clone()),
                    "{}: {:?} claimed twice",
                    b.name,
                    row.key
                );
            }
        }
        assert_eq!(seen.len(), 60, "{}: every due row claimed once", b.name);
    })
    .await;
}

#[tokio::test]
async fn status_report_counts_rows() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        assert!(s.status_report().await.unwrap().by_status.is_empty());
        seed(s, 1, "v1", t0() + hours(1)).await;
        seed(s, 2, "v2", t0() + hours(2)).await;
        seed(s, 3, "v2", t0()).await;
        assert!(s
            .mark_reauth_required(&user(3), get(s, 3).await.revision, "invalid_grant", "x")
            .await
            .unwrap());
        s.acquire_lease(&user(1), &lease("a", HOUR)).await.unwrap();
        assert!(fail(s, 2, get(s, 2).await.revision, "x", "timeout", HOUR).await);

        let report = s.status_report().await.unwrap();
        assert_eq!(
            report.by_status,
            [("active".to_owned(), 2), ("reauth_required".to_owned(), 1)],
            "{}",
            b.name
        );
        let versions: Vec<_> = report
            .by_key_version
            .iter()
            .map(|k| (k.key_version.as_str(), k.rows))
            .collect();
        assert_eq!(versions, [("v1", 1), ("v2", 2)]);
        assert_eq!(
            report.oldest_refreshed_at,
            Some(t0() + hours(1)),
            "only active rows"
        );
        assert_eq!((report.leased, report.backing_off), (1, 1));
        // Spans of zero: running out the moment they are stamped.
        s.acquire_lease(&user(1), &lease("a", Span::ZERO))
            .await
            .unwrap();
        assert!(fail(s, 2, get(s, 2).await.revision, "x", "timeout", Span::ZERO).await);
        tick().await;
        let later = s.status_report().await.unwrap();
        assert_eq!(
            (later.leased, later.backing_off),
            (0, 0),
            "{}: expired leases and back-offs",
            b.name
        );
    })
    .await;
}

#[tokio::test]
async fn a_corrupt_row_is_claimed_apart_and_backed_off_by_its_raw_ids() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        for n in 1..=3 {
            seed(s, n, "v1", t0() + hours(n.into())).await;
        }
        // The oldest row gets ids that are not GUIDs.
        b.execute(&format!(
            "UPDATE user_tokens SET tenant_id = 'tenant?', user_id = 'not-a-guid' \
             WHERE user_id = '{}'",
            user(1).user_id.as_str()
        ))
        .await;
        let batch = s.claim_due(&claim("v1", "run", 10)).await.unwrap();
        assert_eq!(user_numbers(&batch.rows), ["2", "3"], "{}", b.name);
        let [corrupt] = batch.corrupt.as_slice() else {
            panic!("{}: one corrupt row, got {:?}", b.name, batch.corrupt);
        };
        assert_eq!(
            (corrupt.tenant_id.as_str(), corrupt.user_id.as_str()),
            ("tenant?", "not-a-guid")
        );
        let failure = Failure {
            row: RowId::from(corrupt),
            expected_revision: corrupt.revision,
            owner: "run",
            error_code: "corrupt_row",
            retry_in: HOUR,
            counts: true,
        };
        assert!(s.record_failure(&failure).await.unwrap(), "{}", b.name);
        for n in 2..=3 {
            s.release_lease(&user(n), "run").await.unwrap();
        }
        let again = s.claim_due(&claim("v1", "run2", 10)).await.unwrap();
        assert_eq!(
            (user_numbers(&again.rows), again.corrupt.len()),
            (vec!["2".to_owned(), "3".to_owned()], 0),
            "{}: the corrupt row backs off",
            b.name
        );
    })
    .await;
}
