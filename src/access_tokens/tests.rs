use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::domain::{TenantId, UserId};
use crate::ports::SystemClock;

fn user(n: u8) -> UserKey {
    UserKey {
        tenant_id: TenantId::parse("11111111-1111-1111-1111-111111111111").unwrap(),
        user_id: UserId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02x}")).unwrap(),
    }
}

/// A clock that stands still until moved.
struct Manual(Mutex<DateTime<Utc>>);

impl Clock for Manual {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

#[tokio::test]
async fn one_lock_per_user_and_unused_locks_are_pruned() {
    let cache = AccessTokenCache::new(2, Arc::new(SystemClock));
    let held = cache.lock_user(&user(1)).await;
    assert!(cache.locks.lock_for(&user(1)).try_lock().is_err());
    assert!(cache.locks.lock_for(&user(2)).try_lock().is_ok());
    drop(held);
    assert!(cache.locks.lock_for(&user(1)).try_lock().is_ok());
    for n in 0..=255 {
        drop(cache.lock_user(&user(n)).await);
    }
    let map = cache.locks.map.lock().unwrap();
    assert!(map.locks.values().all(|lock| lock.strong_count() == 0));
    assert!(map.locks.len() <= map.prune_at);
}

#[tokio::test]
async fn a_token_is_refreshed_once_the_clock_passes_its_margin() {
    let clock = Arc::new(Manual(Mutex::new(Utc::now())));
    let cache = AccessTokenCache::new(1, clock.clone());
    let refreshes = AtomicUsize::new(0);
    let owner = user(1);
    let fetch = || {
        cache.get_or_refresh(&owner, 0, || async {
            refreshes.fetch_add(1, Ordering::SeqCst);
            let token = AccessToken::new("at".into());
            let now = clock.now();
            Ok::<_, String>((
                CachedAccessToken::new(token, Duration::from_secs(3600), now),
                (),
            ))
        })
    };
    assert!(fetch().await.unwrap().refreshed.is_some());
    assert!(fetch().await.unwrap().refreshed.is_none());
    *clock.0.lock().unwrap() += chrono::Duration::seconds(3600 - 301);
    assert!(fetch().await.unwrap().refreshed.is_none(), "still usable");
    *clock.0.lock().unwrap() += chrono::Duration::seconds(2);
    assert!(
        fetch().await.unwrap().refreshed.is_some(),
        "inside the margin"
    );
    assert_eq!(refreshes.load(Ordering::SeqCst), 2);
}
