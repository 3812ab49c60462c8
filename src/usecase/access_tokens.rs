//! Delegated access tokens kept in memory (never stored) until 5 minutes before they expire.
//!
//! A miss runs its refresh once per user per process however many calls are waiting: moka's
//! `try_get_with` coalesces concurrent initialisations of one key.

use std::sync::Arc;
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

struct UntilUsable;

impl Expiry<UserKey, Arc<CachedAccessToken>> for UntilUsable {
    fn expire_after_create(
        &self,
        _: &UserKey,
        value: &Arc<CachedAccessToken>,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.usable_until.saturating_duration_since(now))
    }
}

/// The per-process access-token cache.
#[derive(Clone)]
pub struct AccessTokenCache {
    cache: Cache<UserKey, Arc<CachedAccessToken>>,
}

impl Default for AccessTokenCache {
    fn default() -> Self {
        Self::new()
    }
}

impl AccessTokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_USERS)
                .expire_after(UntilUsable)
                .build(),
        }
    }

    /// The user's token, running `refresh` (once, however many callers wait) on a miss.
    /// The boolean is `true` for the caller whose `refresh` ran.
    pub async fn get_or_refresh(
        &self,
        key: &UserKey,
        refresh: impl std::future::Future<Output = Result<Arc<CachedAccessToken>, FlowError>>,
    ) -> Result<Arc<CachedAccessToken>, Arc<FlowError>> {
        if let Some(hit) = self.cache.get(key).await {
            if hit.usable_until > Instant::now() {
                return Ok(hit);
            }
        }
        self.cache.try_get_with(key.clone(), refresh).await
    }

    /// Forgets the user's token (disconnect, a new setup, or a downstream 401).
    pub async fn invalidate(&self, key: &UserKey) {
        self.cache.invalidate(key).await;
    }
}
