//! Delegated access tokens kept in memory (never stored) per user and downstream until 5
//! minutes before they expire, and the per-user lock that keeps a user's refreshes one at a
//! time in the process.
//!
//! A miss runs its refresh once per (user, downstream) however many calls are waiting: moka's
//! `try_get_with` coalesces concurrent initialisations of one key. Misses of one user for two
//! downstreams are two keys, so they would run side by side; every redemption rotates the
//! user's one refresh token, so the refreshes also take [`AccessTokenCache::lock_user`], held
//! until the rotated token is saved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;

use super::FlowError;
use crate::domain::{AccessToken, UserKey};

/// Tokens are dropped this long before Entra's expiry, so a call never starts with a token
/// that dies on the way.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
const MAX_USERS: u64 = 100_000;

/// An access token and how long it may still be handed out.
pub struct CachedAccessToken {
    token: AccessToken,
    usable_until: Instant,
}

impl CachedAccessToken {
    /// A token that Entra says expires in `expires_in`.
    pub fn new(token: AccessToken, expires_in: Duration) -> Self {
        Self {
            token,
            usable_until: Instant::now() + expires_in.saturating_sub(EXPIRY_MARGIN),
        }
    }

    /// The token.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }
}

/// A user and the index of a downstream in `OBOVAULT_DOWNSTREAMS`.
type TokenKey = (UserKey, usize);

struct UntilUsable;

impl Expiry<TokenKey, Arc<CachedAccessToken>> for UntilUsable {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        value: &Arc<CachedAccessToken>,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.usable_until.saturating_duration_since(now))
    }
}

/// The per-process access-token cache.
#[derive(Clone)]
pub struct AccessTokenCache {
    cache: Cache<TokenKey, Arc<CachedAccessToken>>,
    downstreams: usize,
    locks: Arc<UserLocks>,
}

impl Default for AccessTokenCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessTokenCache {
    /// An empty cache for one downstream.
    pub fn new() -> Self {
        Self::with_downstreams(1)
    }

    /// An empty cache for `downstreams` downstream APIs.
    pub fn with_downstreams(downstreams: usize) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_USERS)
                .expire_after(UntilUsable)
                .build(),
            downstreams: downstreams.max(1),
            locks: Arc::new(UserLocks::default()),
        }
    }

    /// The user's token for the downstream at `downstream`, running `refresh` (once, however
    /// many callers wait) on a miss.
    pub async fn get_or_refresh(
        &self,
        key: &UserKey,
        downstream: usize,
        refresh: impl std::future::Future<Output = Result<Arc<CachedAccessToken>, FlowError>>,
    ) -> Result<Arc<CachedAccessToken>, Arc<FlowError>> {
        let key = (key.clone(), downstream);
        if let Some(hit) = self.cache.get(&key).await {
            if hit.usable_until > Instant::now() {
                return Ok(hit);
            }
        }
        self.cache.try_get_with(key, refresh).await
    }

    /// Forgets the user's tokens for every downstream (disconnect, a new setup, a dead grant).
    pub async fn invalidate(&self, key: &UserKey) {
        for downstream in 0..self.downstreams {
            self.cache.invalidate(&(key.clone(), downstream)).await;
        }
    }

    /// Forgets the user's token for one downstream (a downstream 401).
    pub async fn invalidate_one(&self, key: &UserKey, downstream: usize) {
        self.cache.invalidate(&(key.clone(), downstream)).await;
    }

    /// Waits for the user's refresh lock: one redemption of a user's grant at a time in the
    /// process, whatever downstream it is for. Hold the guard until the rotated refresh token
    /// is saved, or the next redemption would present the one just used.
    pub async fn lock_user(&self, key: &UserKey) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.lock_for(key).lock_owned().await
    }
}

/// One async mutex per user with a refresh running or waiting; entries whose mutex nobody
/// holds any more are pruned as the map grows.
#[derive(Default)]
struct UserLocks {
    map: Mutex<LockMap>,
}

#[derive(Default)]
struct LockMap {
    locks: HashMap<UserKey, Weak<tokio::sync::Mutex<()>>>,
    /// Size at which dead entries are pruned next.
    prune_at: usize,
}

impl UserLocks {
    fn lock_for(&self, key: &UserKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lock) = map.locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if map.locks.len() >= map.prune_at {
            map.locks.retain(|_, lock| lock.strong_count() > 0);
            map.prune_at = (map.locks.len() * 2).max(1024);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.locks.insert(key.clone(), Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TenantId, UserId};

    fn user(n: u8) -> UserKey {
        UserKey {
            tenant_id: TenantId::parse("11111111-1111-1111-1111-111111111111").unwrap(),
            user_id: UserId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02x}")).unwrap(),
        }
    }

    #[tokio::test]
    async fn one_lock_per_user_and_unused_locks_are_pruned() {
        let cache = AccessTokenCache::with_downstreams(2);
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
}
