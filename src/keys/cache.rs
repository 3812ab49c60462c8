//! Caching in front of a [`KeySource`]: versions forever (bounded), "latest" for minutes.
//!
//! Concurrent misses for the same entry share one request (moka's `try_get_with`), so a burst
//! of do-work calls or a timer run over thousands of rows asks Key Vault once per version.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::{KeyError, KeySource, VersionedKey};

/// How many key versions are kept in memory; far more than a deployment rotates through.
const MAX_VERSIONS: u64 = 10_000;

/// Cached access to keys.
#[derive(Clone)]
pub struct CachedKeys {
    source: Arc<dyn KeySource>,
    latest: Cache<String, VersionedKey>,
    versions: Cache<(String, String), VersionedKey>,
}

impl CachedKeys {
    /// Caches `source`; "latest" answers are kept for `latest_ttl`.
    pub fn new(source: Arc<dyn KeySource>, latest_ttl: Duration) -> Self {
        Self {
            source,
            latest: Cache::builder()
                .max_capacity(MAX_VERSIONS)
                .time_to_live(latest_ttl)
                .build(),
            versions: Cache::builder().max_capacity(MAX_VERSIONS).build(),
        }
    }

    /// The latest version of `name`, at most `latest_ttl` old.
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

    /// The latest version of `name` as Key Vault has it now (the timer calls this once per key
    /// per run, so a rotation reaches every row in the next run).
    pub async fn fresh_latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        self.latest.invalidate(name).await;
        self.latest(name).await
    }

    /// One version of `name`; cached for good because a version never changes.
    pub async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError> {
        let source = self.source.clone();
        let key = (name.to_owned(), version.to_owned());
        self.versions
            .try_get_with(
                key.clone(),
                async move { source.version(&key.0, &key.1).await },
            )
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
            if version == "missing" {
                return Err(KeyError::NotFound(name.into()));
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
    async fn fresh_latest_sees_a_rotation_and_errors_are_not_cached() {
        let source = Arc::new(CountingSource::default());
        let keys = CachedKeys::new(source.clone(), Duration::from_secs(300));
        assert_eq!(keys.latest("k").await.unwrap().version, "v0");
        source.current.store(3, Ordering::SeqCst);
        assert_eq!(keys.latest("k").await.unwrap().version, "v0");
        assert_eq!(keys.fresh_latest("k").await.unwrap().version, "v3");
        assert!(keys.version("k", "missing").await.is_err());
        assert!(keys.version("k", "missing").await.is_err());
        assert_eq!(source.version_calls.load(Ordering::SeqCst), 2);
    }
}
