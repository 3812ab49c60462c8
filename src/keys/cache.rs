//! Caching in front of a [`KeySource`]: every Key Vault answer is trusted for `ttl` only.
//!
//! A version's bytes never change, but an operator may disable a version (a compromised key,
//! a rotation rolled back) and expects it out of use within minutes on every instance; so
//! versions, "latest" and refusals ("disabled", "not found", "forbidden") all expire after
//! `ttl` (5 minutes in the service) and are asked again. Concurrent misses for the same entry
//! share one request (moka's `try_get_with`), so a burst of do-work calls or a timer run over
//! thousands of rows asks Key Vault once per version. A refusal is remembered too, so rows
//! sealed under a disabled version cost no Key Vault call each, and it is logged as one alert
//! line when first seen; [`CachedKeys::fresh_latest`] (once per key and timer run) forgets the
//! key's refusals, so the first run after an operator re-enables a version uses it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;

use super::{KeyError, KeySource, VersionedKey};

/// How many key versions are kept in memory; far more than a deployment rotates through.
const MAX_VERSIONS: u64 = 10_000;

/// (secret name, version).
type VersionId = (String, String);

/// Cached access to keys.
#[derive(Clone)]
pub struct CachedKeys {
    source: Arc<dyn KeySource>,
    ttl: Duration,
    latest: Cache<String, VersionedKey>,
    versions: Cache<VersionId, VersionedKey>,
    /// Versions Key Vault refused, and until when that answer stands.
    refused: Arc<Mutex<HashMap<VersionId, (Instant, KeyError)>>>,
}

impl CachedKeys {
    /// Caches `source`; each answer is kept for `ttl`.
    pub fn new(source: Arc<dyn KeySource>, ttl: Duration) -> Self {
        Self {
            source,
            ttl,
            latest: Cache::builder()
                .max_capacity(MAX_VERSIONS)
                .time_to_live(ttl)
                .build(),
            versions: Cache::builder()
                .max_capacity(MAX_VERSIONS)
                .time_to_live(ttl)
                .build(),
            refused: Arc::default(),
        }
    }

    /// The newest enabled version of `name`, at most `ttl` old.
    pub async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        let source = self.source.clone();
        let versions = self.versions.clone();
        let owned = name.to_owned();
        self.latest
            .try_get_with(owned.clone(), async move {
                let key = source.latest(&owned).await?;
                versions
                    .insert((owned, key.version.clone()), key.clone())
                    .await;
                Ok(key)
            })
            .await
            .map_err(|error: Arc<KeyError>| (*error).clone())
    }

    /// The newest enabled version of `name` as Key Vault has it now. The timer calls this once
    /// per key and run, so a rotation reaches every row in the next run; it also forgets the
    /// key's remembered refusals, so a version an operator re-enabled is used again.
    pub async fn fresh_latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        self.forget_latest(name).await;
        self.refused_entries()
            .retain(|(secret, _), _| secret != name);
        self.latest(name).await
    }

    /// Drops the cached "latest" of `name` (found older than a version in use: a rotation
    /// happened since it was cached); the next [`Self::latest`] asks Key Vault.
    pub async fn forget_latest(&self, name: &str) {
        self.latest.invalidate(name).await;
    }

    /// One version of `name`, at most `ttl` old; a refusal is remembered as long.
    pub async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError> {
        let id = (name.to_owned(), version.to_owned());
        if let Some(error) = self.remembered_refusal(&id) {
            return Err(error);
        }
        // The refusal is remembered inside the shared fetch, before it ends: a caller that
        // missed the check above while a fetch was running either joins that fetch or starts
        // one after it, which then finds the refusal instead of asking Key Vault again (when it
        // was remembered after the fetch ended, a row of a concurrent timer run could slip in
        // between and ask a second time).
        self.versions
            .try_get_with(id.clone(), async {
                if let Some(error) = self.remembered_refusal(&id) {
                    return Err(error);
                }
                let result = self.source.version(&id.0, &id.1).await;
                if let Err(error) = &result {
                    if error.is_refusal() {
                        self.remember_refusal(id.clone(), error);
                    }
                }
                result
            })
            .await
            .map_err(|error: Arc<KeyError>| (*error).clone())
    }

    /// Adds a new version and makes it the cached latest.
    pub async fn rotate(&self, name: &str) -> Result<VersionedKey, KeyError> {
        let key = self.source.rotate(name).await?;
        self.versions
            .insert((name.to_owned(), key.version.clone()), key.clone())
            .await;
        self.latest.insert(name.to_owned(), key.clone()).await;
        Ok(key)
    }

    fn refused_entries(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<VersionId, (Instant, KeyError)>> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remembered_refusal(&self, id: &VersionId) -> Option<KeyError> {
        let mut refused = self.refused_entries();
        match refused.get(id) {
            Some((until, error)) if *until > Instant::now() => Some(error.clone()),
            Some(_) => {
                refused.remove(id);
                None
            }
            None => None,
        }
    }

    /// Remembers a refusal; the first time (per `ttl`) it is an alert: rows sealed under the
    /// version cannot be opened until an operator restores it.
    fn remember_refusal(&self, id: VersionId, error: &KeyError) {
        let until = Instant::now() + self.ttl;
        let mut refused = self.refused_entries();
        if refused.len() as u64 >= MAX_VERSIONS {
            refused.retain(|_, (until, _)| *until > Instant::now());
        }
        if refused.insert(id.clone(), (until, error.clone())).is_none() {
            tracing::error!(
                alert = true,
                key.name = %id.0,
                key.version = %id.1,
                error = %error,
                "Key Vault refuses a key version that stored tokens are sealed under; they cannot be opened until an operator re-enables or restores it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::crypto::DataKey;

    #[derive(Default)]
    struct CountingSource {
        latest_calls: AtomicUsize,
        version_calls: AtomicUsize,
        current: AtomicUsize,
    }

    fn key(name: &str, version: usize) -> VersionedKey {
        VersionedKey {
            name: name.into(),
            version: format!("v{version}"),
            created: None,
            key: Arc::new(DataKey::generate()),
        }
    }

    #[async_trait]
    impl KeySource for CountingSource {
        async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
            self.latest_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(key(name, self.current.load(Ordering::SeqCst)))
        }
        async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError> {
            self.version_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            match version {
                "missing" => return Err(KeyError::NotFound(name.into())),
                "disabled" => return Err(KeyError::Disabled(name.into())),
                "down" => return Err(KeyError::Unavailable),
                _ => {}
            }
            Ok(VersionedKey {
                version: version.into(),
                ..key(name, 0)
            })
        }
        async fn rotate(&self, name: &str) -> Result<VersionedKey, KeyError> {
            Ok(key(name, self.current.fetch_add(1, Ordering::SeqCst) + 1))
        }
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_request_per_entry() {
        let source = Arc::new(CountingSource::default());
        let keys = CachedKeys::new(source.clone(), Duration::from_secs(300));
        let calls = (0..50).map(|_| keys.version("k", "v7"));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok));
        let latest = (0..50).map(|_| keys.latest("k"));
        futures::future::join_all(latest).await;
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 1);
        assert_eq!(source.latest_calls.load(Ordering::SeqCst), 1);
        // The latest version is also served from the version cache.
        keys.version("k", "v0").await.unwrap();
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn fresh_latest_sees_a_rotation_and_transient_errors_are_not_cached() {
        let source = Arc::new(CountingSource::default());
        let keys = CachedKeys::new(source.clone(), Duration::from_secs(300));
        assert_eq!(keys.latest("k").await.unwrap().version, "v0");
        source.current.store(3, Ordering::SeqCst);
        assert_eq!(keys.latest("k").await.unwrap().version, "v0");
        assert_eq!(keys.fresh_latest("k").await.unwrap().version, "v3");
        assert!(keys.version("k", "down").await.is_err());
        assert!(keys.version("k", "down").await.is_err());
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refusals_are_remembered_until_the_next_fresh_latest_of_the_key() {
        let source = Arc::new(CountingSource::default());
        let keys = CachedKeys::new(source.clone(), Duration::from_secs(300));
        for _ in 0..3 {
            assert!(matches!(
                keys.version("k", "disabled").await,
                Err(KeyError::Disabled(_))
            ));
            assert!(matches!(
                keys.version("k", "missing").await,
                Err(KeyError::NotFound(_))
            ));
        }
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 2);
        // Another key's fresh latest leaves them; this key's forgets them.
        keys.fresh_latest("other").await.unwrap();
        keys.version("k", "disabled").await.unwrap_err();
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 2);
        keys.fresh_latest("k").await.unwrap();
        keys.version("k", "disabled").await.unwrap_err();
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn every_answer_is_asked_again_after_the_ttl() {
        let source = Arc::new(CountingSource::default());
        let keys = CachedKeys::new(source.clone(), Duration::from_millis(50));
        keys.version("k", "v7").await.unwrap();
        keys.version("k", "disabled").await.unwrap_err();
        keys.latest("k").await.unwrap();
        keys.version("k", "v7").await.unwrap();
        keys.version("k", "disabled").await.unwrap_err();
        keys.latest("k").await.unwrap();
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 2);
        assert_eq!(source.latest_calls.load(Ordering::SeqCst), 1);
        // Only a lower bound on time: the entries are gone once the TTL has passed.
        tokio::time::sleep(Duration::from_millis(200)).await;
        keys.version("k", "v7").await.unwrap();
        keys.version("k", "disabled").await.unwrap_err();
        keys.latest("k").await.unwrap();
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 4);
        assert_eq!(source.latest_calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn ages_compare_by_creation_time_only_when_they_differ() {
        let at = |secs| chrono::DateTime::from_timestamp(secs, 0);
        let mut old = key("k", 1);
        let mut new = key("k", 2);
        (old.created, new.created) = (at(100), at(200));
        assert_eq!(new.compare_age(&old), Some(std::cmp::Ordering::Greater));
        assert_eq!(old.compare_age(&new), Some(std::cmp::Ordering::Less));
        assert_eq!(
            old.compare_age(&old.clone()),
            Some(std::cmp::Ordering::Equal)
        );
        new.created = at(100);
        assert_eq!(new.compare_age(&old), None, "same second");
        new.created = None;
        assert_eq!(new.compare_age(&old), None, "unknown time");
        let mut other = key("other", 3);
        other.created = at(300);
        assert_eq!(other.compare_age(&old), None, "another secret");
    }
}
