//! Delegated access tokens kept in memory (never stored) per user and downstream until 5
//! minutes before they expire, and the per-user lock that keeps a user's refreshes one at a
//! time in the process.
//!
//! A miss runs its refresh once per (user, downstream) however many calls are waiting: moka's
//! `try_get_with` coalesces concurrent initialisations of one key, and every waiter gets the
//! refresh's token or its error. Misses of one user for two downstreams are two keys, so they
//! would run side by side; every redemption rotates the user's one refresh token, so the
//! refreshes also take [`AccessTokenCache::lock_user`], held until the rotated token is saved.
//!
//! Expiry goes by the [`Clock`] the cache is given, so a test can move time past it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moka::future::Cache;
use moka::ops::compute::Op;
use moka::Expiry;

use crate::domain::{AccessToken, UserKey};
use crate::ports::Clock;

/// Tokens are dropped this long before Entra's expiry, so a call never starts with a token
/// that dies on the way.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(300);
const MAX_USERS: u64 = 100_000;

/// An access token and until when it may be handed out.
pub struct CachedAccessToken {
    token: AccessToken,
    usable_until: DateTime<Utc>,
}

impl CachedAccessToken {
    /// A token that Entra, asked at `now`, says expires in `expires_in`.
    pub fn new(token: AccessToken, expires_in: Duration, now: DateTime<Utc>) -> Self {
        let usable = expires_in.saturating_sub(EXPIRY_MARGIN);
        let usable = chrono::Duration::from_std(usable).unwrap_or(chrono::Duration::zero());
        Self {
            token,
            usable_until: now + usable,
        }
    }

    /// The token.
    pub fn token(&self) -> &AccessToken {
        &self.token
    }

    fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.usable_until > now
    }
}

/// What [`AccessTokenCache::get_or_refresh`] found.
pub struct Fetched<T> {
    /// The token to use.
    pub token: Arc<CachedAccessToken>,
    /// What this call's own refresh left to do, when it ran one; `None` when the token was
    /// cached or another call's refresh got it.
    pub refreshed: Option<T>,
}

/// A user and the index of a downstream in `OBOVAULT_DOWNSTREAMS`.
type TokenKey = (UserKey, usize);

/// Moka evicts a token when it stops being usable by the cache's clock.
struct UntilUsable(Arc<dyn Clock>);

impl Expiry<TokenKey, Arc<CachedAccessToken>> for UntilUsable {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        value: &Arc<CachedAccessToken>,
        _: Instant,
    ) -> Option<Duration> {
        let left = value.usable_until - self.0.now();
        Some(left.to_std().unwrap_or(Duration::ZERO))
    }
}

/// The per-process access-token cache.
#[derive(Clone)]
pub struct AccessTokenCache {
    cache: Cache<TokenKey, Arc<CachedAccessToken>>,
    downstreams: usize,
    locks: Arc<UserLocks>,
    clock: Arc<dyn Clock>,
}

impl AccessTokenCache {
    /// An empty cache for `downstreams` downstream APIs, telling expiry by `clock`.
    pub fn new(downstreams: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_USERS)
                .expire_after(UntilUsable(clock.clone()))
                .build(),
            downstreams: downstreams.max(1),
            locks: Arc::new(UserLocks::default()),
            clock,
        }
    }

    /// The user's token for the downstream at `downstream`, running the refresh `refresh`
    /// makes (once, however many callers wait) on a miss; a hit builds none. The refresh
    /// yields the token and what is left to do after it (the rotated refresh token's save);
    /// that goes to the caller whose refresh ran.
    pub async fn get_or_refresh<T, E, F>(
        &self,
        key: &UserKey,
        downstream: usize,
        refresh: impl FnOnce() -> F,
    ) -> Result<Fetched<T>, E>
    where
        F: Future<Output = Result<(CachedAccessToken, T), E>>,
        E: Clone + Send + Sync + 'static,
    {
        let key = (key.clone(), downstream);
        if let Some(hit) = self.cache.get(&key).await {
            if hit.usable_at(self.clock.now()) {
                return Ok(Fetched {
                    token: hit,
                    refreshed: None,
                });
            }
            self.forget_stale(&key, &hit).await;
        }
        let mut refreshed = None;
        let token = self
            .cache
            .try_get_with(key, async {
                let (token, rest) = refresh().await?;
                refreshed = Some(rest);
                Ok(Arc::new(token))
            })
            .await
            .map_err(Arc::unwrap_or_clone)?;
        Ok(Fetched { token, refreshed })
    }

    /// Drops `stale` unless another call replaced it meanwhile. Moka evicts by its own
    /// monotonic clock; this catches a token the cache's clock already calls expired.
    async fn forget_stale(&self, key: &TokenKey, stale: &Arc<CachedAccessToken>) {
        self.cache
            .entry(key.clone())
            .and_compute_with(|entry| {
                let same = entry.is_some_and(|entry| Arc::ptr_eq(entry.value(), stale));
                std::future::ready(if same { Op::Remove } else { Op::Nop })
            })
            .await;
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
mod tests;
