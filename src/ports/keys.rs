//! Key Vault as the flows' key ring: [`CachedKeys`] in front of the vault.

use async_trait::async_trait;

use super::KeyRing;
use crate::keys::{CachedKeys, KeyError, VersionedKey};

#[async_trait]
impl KeyRing for CachedKeys {
    async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        CachedKeys::latest(self, name).await
    }

    async fn fresh_latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        CachedKeys::fresh_latest(self, name).await
    }

    async fn forget_latest(&self, name: &str) {
        CachedKeys::forget_latest(self, name).await;
    }

    async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError> {
        CachedKeys::version(self, name, version).await
    }
}
