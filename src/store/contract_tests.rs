//! One contract, two backends: every test runs the same assertions against a fresh SQLite file
//! and a fresh Postgres database (see `harness`).

use std::collections::HashSet;

use chrono::{Duration, TimeZone};

use super::harness::{on_both, Backend};
use super::*;
use crate::domain::{TenantId, UserId};

const KEY: &str = "obo-vault-tenant";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().expect("valid time")
}

fn hours(n: i64) -> Duration {
    Duration::hours(n)
}

fn user(n: u32) -> UserKey {
    UserKey {
        tenant_id: TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").expect("guid"),
        user_id: UserId::parse(&format!("00000000-0000-0000-0000-{n:012}")).expect("guid"),
    }
}

fn grant(sealed: &str, version: &str) -> SealedGrant {
    SealedGrant {
        sealed_refresh_token: sealed.as_bytes().to_vec(),
        key_name: KEY.into(),
        key_version: version.into(),
    }
}

fn lease(owner: &str, until: DateTime<Utc>) -> Lease {
    Lease { owner: owner.into(), until }
}

fn claim(version: &str, now: DateTime<Utc>, owner: &str, limit: i64) -> DueClaim {
    DueClaim {
        key_name: KEY.into(),
        latest_version: version.into(),
        refreshed_before: now - hours(24),
        now,
        lease: lease(owner, now + Duration::minutes(5)),
        limit,
    }
}

/// Connects user `n` with a token sealed under `version`, refreshed at `refreshed_at`.
async fn seed(store: &dyn TokenStore, n: u32, version: &str, refreshed_at: DateTime<Utc>) {
    store.connect(&user(n), &grant("rt", version), "User.Read", refreshed_at).await.expect("connect");
}

async fn get(store: &dyn TokenStore, n: u32) -> TokenRecord {
    store.find(&user(n)).await.expect("find").expect("row exists")
}

fn user_numbers(rows: &[TokenRecord]) -> Vec<String> {
    rows.iter().map(|row| row.key.user_id.as_str()[24..].trim_start_matches('0').to_owned()).collect()
}

#[tokio::test]
async fn connect_creates_then_reconnects() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        let first = s.connect(&user(1), &grant("first", "v1"), "User.Read", t0()).await.unwrap();
        assert!(first.created, "{}", b.name);
        assert_eq!(first.record.revision, 1);
        assert_eq!(first.record.status, TokenStatus::Active);
        assert_eq!((first.record.created_at, first.record.refreshed_at), (t0(), t0()));
        assert_eq!(first.record.sealed_refresh_token, b"first");

        // Dirty every piece of bookkeeping a reconnect must reset.
        s.record_failure(&user(1), "timer", "temporarily_unavailable", t0() + hours(1)).await.unwrap();
        assert!(matches!(s.acquire_lease(&user(1), &lease("a", t0() + hours(1)), t0()).await.unwrap(), LeaseAttempt::Acquired(_)));
        assert!(s.mark_reauth_required(&user(1), 1, "invalid_grant", "other").await.unwrap());

        let again = s.connect(&user(1), &grant("second", "v2"), "User.Read Mail.Read", t0() + hours(2)).await.unwrap();
        assert!(!again.created, "{}", b.name);
        let row = get(s, 1).await;
        assert_eq!(row.revision, 3);
        assert_eq!(row.created_at, t0(), "created_at is kept");
        assert_eq!(row.refreshed_at, t0() + hours(2));
        assert_eq!(row.status, TokenStatus::Active);
        assert_eq!((row.status_reason, row.last_error, row.next_attempt_at), (None, None, None));
        assert_eq!(row.failure_count, 0);
        assert_eq!((row.lease_owner, row.lease_until), (None, None));
        assert_eq!(row.sealed_refresh_token, b"second");
        assert_eq!((row.key_version.as_str(), row.scopes.as_str()), ("v2", "User.Read Mail.Read"));
    })
    .await;
}

#[tokio::test]
async fn writes_are_compare_and_set_on_the_revision() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        s.record_failure(&user(1), "a", "timeout", t0() + hours(1)).await.unwrap();

        assert!(!s.save_refreshed(&user(1), 0, &grant("stale", "v2"), t0() + hours(1), "a").await.unwrap());
        assert!(!s.save_resealed(&user(1), 2, &grant("stale", "v2"), "a").await.unwrap());
        assert!(!s.mark_reauth_required(&user(1), 5, "invalid_grant", "a").await.unwrap());
        assert_eq!(get(s, 1).await.sealed_refresh_token, b"rt", "stale writes change nothing");

        assert!(s.save_resealed(&user(1), 1, &grant("resealed", "v2"), "a").await.unwrap());
        let row = get(s, 1).await;
        assert_eq!((row.revision, row.refreshed_at, row.failure_count), (2, t0(), 1), "re-seal keeps age and failures");
        assert_eq!((row.sealed_refresh_token.as_slice(), row.key_version.as_str()), (&b"resealed"[..], "v2"));

        assert!(s.save_refreshed(&user(1), 2, &grant("refreshed", "v2"), t0() + hours(3), "a").await.unwrap());
        let row = get(s, 1).await;
        assert_eq!((row.revision, row.refreshed_at, row.failure_count), (3, t0() + hours(3), 0));
        assert_eq!((row.next_attempt_at, row.last_error), (None, None));
        assert!(!s.save_refreshed(&user(1), 2, &grant("late", "v2"), t0() + hours(4), "b").await.unwrap(), "{}", b.name);
        assert!(!s.save_refreshed(&user(9), 1, &grant("ghost", "v2"), t0(), "a").await.unwrap(), "missing row");
    })
    .await;
}

#[tokio::test]
async fn a_lease_has_one_owner_until_released_or_expired() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        let until = t0() + Duration::seconds(30);
        let LeaseAttempt::Acquired(row) = s.acquire_lease(&user(1), &lease("a", until), t0()).await.unwrap() else {
            panic!("{}: a free lease is taken", b.name);
        };
        assert_eq!((row.lease_owner.as_deref(), row.lease_until), (Some("a"), Some(until)));
        match s.acquire_lease(&user(1), &lease("b", until), t0() + Duration::seconds(1)).await.unwrap() {
            LeaseAttempt::Held(held_until) => assert_eq!(held_until, until),
            other => panic!("{}: b must wait, got {other:?}", b.name),
        }
        assert!(matches!(s.acquire_lease(&user(1), &lease("a", until), t0()).await.unwrap(), LeaseAttempt::Acquired(_)), "the owner may renew");

        s.release_lease(&user(1), "b").await.unwrap();
        assert_eq!(get(s, 1).await.lease_owner.as_deref(), Some("a"), "only the owner releases");
        // A CAS write by someone else keeps the owner's lease.
        assert!(s.save_resealed(&user(1), 1, &grant("x", "v2"), "b").await.unwrap());
        assert_eq!(get(s, 1).await.lease_owner.as_deref(), Some("a"));
        assert!(s.save_resealed(&user(1), 2, &grant("y", "v2"), "a").await.unwrap());
        assert_eq!(get(s, 1).await.lease_owner, None, "the owner's write releases it");

        let LeaseAttempt::Acquired(_) = s.acquire_lease(&user(1), &lease("b", until), t0()).await.unwrap() else {
            panic!("{}: a released lease is free", b.name);
        };
        // Expired: a takes over from b at `until` + 1 µs, not at `until`.
        assert!(matches!(s.acquire_lease(&user(1), &lease("a", until + hours(1)), until).await.unwrap(), LeaseAttempt::Held(_)));
        let later = until + Duration::microseconds(1);
        let LeaseAttempt::Acquired(row) = s.acquire_lease(&user(1), &lease("a", until + hours(1)), later).await.unwrap() else {
            panic!("{}: an expired lease is taken over", b.name);
        };
        assert_eq!(row.lease_owner.as_deref(), Some("a"));
    })
    .await;
}

#[tokio::test]
async fn missing_and_reauth_required_rows_are_not_leased() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        assert!(matches!(s.acquire_lease(&user(1), &lease("a", t0() + hours(1)), t0()).await.unwrap(), LeaseAttempt::Missing));
        seed(s, 1, "v1", t0()).await;
        let LeaseAttempt::Acquired(row) = s.acquire_lease(&user(1), &lease("a", t0() + hours(1)), t0()).await.unwrap() else {
            panic!("{}: lease", b.name);
        };
        assert!(s.mark_reauth_required(&user(1), row.revision, "invalid_grant:70008", "a").await.unwrap());
        match s.acquire_lease(&user(1), &lease("b", t0() + hours(1)), t0()).await.unwrap() {
            LeaseAttempt::NotActive(row) => {
                assert_eq!(row.status, TokenStatus::ReauthRequired);
                assert_eq!(row.status_reason.as_deref(), Some("invalid_grant:70008"));
                assert_eq!(row.sealed_refresh_token, b"rt", "the sealed token is kept");
                assert_eq!(row.lease_owner, None, "the owner's lease was released");
            }
            other => panic!("{}: expected NotActive, got {other:?}", b.name),
        }
        assert!(s.claim_due(&claim("v2", t0() + hours(48), "timer", 10)).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_failure_backs_the_row_off_without_touching_the_token() {
    on_both(|b: Backend| async move {
        let s = b.store.as_ref();
        seed(s, 1, "v1", t0()).await;
        let now = t0() + hours(48);
        assert_eq!(s.claim_due(&claim("v1", now, "run1", 10)).await.unwrap().len(), 1);
        s.record_failure(&user(1), "run1", "temporarily_unavailable", now + hours(1)).await.unwrap();
        let row = get(s, 1).await;
        assert_eq!((row.failure_count, row.last_error.as_deref()), (1, Some("temporarily_unavailable")));
        assert_eq!((row.revision, row.sealed_refresh_token.as_slice()), (1, &b"rt"[..]));
        assert_eq!(row.lease_owner, None, "the failing owner released its lease");

        assert!(s.claim_due(&claim("v1", now, "run2", 10)).await.unwrap().is_empty(), "{}: backing off", b.name);
        assert!(s.claim_due(&claim("v2", now, "run2", 10)).await.unwrap().is_empty(), "also for a re-seal");
        let retry = s.claim_due(&claim("v1", now + hours(1), "run3", 10)).await.unwrap();
        assert_eq!(retry.len(), 1, "{}: due again once next_attempt_at is reached", b.name);
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
        s.connect(&user(7), &SealedGrant { key_name: "other-key".into(), ..grant("rt", "v1") }, "s", t0()).await.unwrap();
        seed(s, 8, "v3", t0()).await;
        assert!(s.mark_reauth_required(&user(8), 1, "invalid_grant", "x").await.unwrap());
        seed(s, 9, "v3", t0()).await;
        assert!(matches!(s.acquire_lease(&user(9), &lease("do-work", now + hours(1)), now).await.unwrap(), LeaseAttempt::Acquired(_)));

        let first = s.claim_due(&claim("v5", now, "run", 3)).await.unwrap();
        assert_eq!(user_numbers(&first), ["5", "6", "2"], "{}: oldest first, limit kept", b.name);
        assert!(first.iter().all(|row| row.lease_owner.as_deref() == Some("run") && row.lease_until == Some(now + Duration::minutes(5))));
        let second = s.claim_due(&claim("v5", now, "run", 10)).await.unwrap();
        assert_eq!(user_numbers(&second), ["4", "3"], "{}: claimed rows are leased", b.name);
        assert!(s.claim_due(&claim("v5", now, "run", 10)).await.unwrap().is_empty());
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
            let (version, refreshed_at) = if n % 2 == 0 { ("old", now - hours(1)) } else { ("new", t0()) };
            seed(b.store.as_ref(), n, version, refreshed_at + Duration::minutes(n.into())).await;
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
                assert!(seen.insert(row.key.clone()), "{}: {:?} claimed twice", b.name, row.key);
            }
        }
        assert_eq!(seen.len(), 60, "{}: every due row claimed once", b.name);
    })
    .await;
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
            method: "GET".into(),
            path: "/me".into(),
            downstream_status: (minute % 2 == 0).then_some(200),
            refreshed: minute == 3,
        };
        let batch: Vec<_> = [(1, 1), (1, 2), (2, 1), (1, 3), (9, 1)].into_iter().map(|(n, m)| access(n, m)).collect();
        s.record_accesses(&batch, 10).await.expect("a deleted user is skipped, not an error");
        s.record_accesses(&[access(1, 4), access(1, 5)], 3).await.unwrap();

        let recent = s.recent_accesses(&user(1), 10).await.unwrap();
        let minutes: Vec<_> = recent.iter().map(|a| (a.at - t0()).num_minutes()).collect();
        assert_eq!(minutes, [5, 4, 3], "{}: newest `keep` kept, newest first", b.name);
        assert_eq!((recent[1].downstream_status, recent[2].refreshed, recent[0].path.as_str()), (Some(200), true, "/me"));
        assert_eq!(s.recent_accesses(&user(1), 1).await.unwrap().len(), 1);
        assert_eq!(s.recent_accesses(&user(2), 10).await.unwrap().len(), 1, "other users untouched");

        assert!(s.delete(&user(1)).await.unwrap());
        assert!(!s.delete(&user(1)).await.unwrap());
        assert!(s.find(&user(1)).await.unwrap().is_none());
        seed(s, 1, "v1", t0()).await;
        assert!(s.recent_accesses(&user(1), 10).await.unwrap().is_empty(), "{}: history cascaded", b.name);
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
        assert!(s.mark_reauth_required(&user(3), 1, "invalid_grant", "x").await.unwrap());
        s.acquire_lease(&user(1), &lease("a", now + hours(1)), now).await.unwrap();
        s.record_failure(&user(2), "x", "timeout", now + hours(1)).await.unwrap();

        let report = s.status_report(now).await.unwrap();
        assert_eq!(report.by_status, [("active".to_owned(), 2), ("reauth_required".to_owned(), 1)], "{}", b.name);
        let versions: Vec<_> = report.by_key_version.iter().map(|k| (k.key_version.as_str(), k.rows)).collect();
        assert_eq!(versions, [("v1", 1), ("v2", 2)]);
        assert_eq!(report.oldest_refreshed_at, Some(t0() + hours(1)), "only active rows");
        assert_eq!((report.leased, report.backing_off), (1, 1));
        let later = s.status_report(now + hours(2)).await.unwrap();
        assert_eq!((later.leased, later.backing_off), (0, 0), "{}: expired leases and back-offs", b.name);
    })
    .await;
}
