//! The timer's side of the contract, on both backends: back-off, claiming due rows, concurrent
//! claimers, operator counts.

use std::collections::HashSet;

use chrono::Duration;

use super::harness::*;
use super::*;

#[tokio::test]
async fn a_failure_backs_the_row_off_without_touching_the_token() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        let first_revision = get(s, 1).await.revision;
        let now = t0() + hours(48);
        assert_eq!(
            s.claim_due(&claim("v1", now, "run1", 10))
                .await
                .unwrap()
                .len(),
            1
        );
        s.record_failure(&user(1), "run1", "temporarily_unavailable", now + hours(1))
            .await
            .unwrap();
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

        assert!(
            s.claim_due(&claim("v1", now, "run2", 10))
                .await
                .unwrap()
                .is_empty(),
            "{}: backing off",
            b.name
        );
        assert!(
            s.claim_due(&claim("v2", now, "run2", 10))
                .await
                .unwrap()
                .is_empty(),
            "also for a re-seal"
        );
        let retry = s
            .claim_due(&claim("v1", now + hours(1), "run3", 10))
            .await
            .unwrap();
        assert_eq!(
            retry.len(),
            1,
            "{}: due again once next_attempt_at is reached",
            b.name
        );
    })
    .await;
}

#[tokio::test]
async fn claim_due_takes_rows_old_or_on_another_key_version_oldest_first() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        let now = t0() + hours(100);
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
            s.acquire_lease(&user(9), &lease("do-work", now + hours(1)), now)
                .await
                .unwrap(),
            LeaseAttempt::Acquired(_)
        ));

        let first = s.claim_due(&claim("v5", now, "run", 3)).await.unwrap();
        assert_eq!(
            user_numbers(&first),
            ["5", "6", "2"],
            "{}: oldest first, limit kept",
            b.name
        );
        assert!(first
            .iter()
            .all(|row| row.lease_owner.as_deref() == Some("run")
                && row.lease_until == Some(now + Duration::minutes(5))));
        let second = s.claim_due(&claim("v5", now, "run", 10)).await.unwrap();
        assert_eq!(
            user_numbers(&second),
            ["4", "3"],
            "{}: claimed rows are leased",
            b.name
        );
        assert!(s
            .claim_due(&claim("v5", now, "run", 10))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.key_names().await.unwrap(), [KEY, "other-key"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_never_share_a_row() {
    on_both(|b: Backend| async move {
        let now = t0() + hours(100);
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
            let (claim_a, claim_c) = (claim("new", now, "a", 7), claim("new", now, "c", 7));
            let (a, c) = tokio::join!(one.claim_due(&claim_a), two.claim_due(&claim_c));
            let (a, c) = (a.expect("claim a"), c.expect("claim c"));
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
        let now = t0() + hours(10);
        assert!(s.status_report(now).await.unwrap().by_status.is_empty());
        seed(s, 1, "v1", t0() + hours(1)).await;
        seed(s, 2, "v2", t0() + hours(2)).await;
        seed(s, 3, "v2", t0()).await;
        assert!(s
            .mark_reauth_required(&user(3), get(s, 3).await.revision, "invalid_grant", "x")
            .await
            .unwrap());
        s.acquire_lease(&user(1), &lease("a", now + hours(1)), now)
            .await
            .unwrap();
        s.record_failure(&user(2), "x", "timeout", now + hours(1))
            .await
            .unwrap();

        let report = s.status_report(now).await.unwrap();
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
        let later = s.status_report(now + hours(2)).await.unwrap();
        assert_eq!(
            (later.leased, later.backing_off),
            (0, 0),
            "{}: expired leases and back-offs",
            b.name
        );
    })
    .await;
}
