//! Encryption keys: Key Vault secrets holding 32 random bytes, one secret per tenant, each
//! new secret version a key rotation.
//!
//! [`KeyVaultKeys`] talks to Key Vault through the official SDK; [`CachedKeys`] sits in front
//! of any [`KeySource`]: a version never changes, so it is cached for good (bounded), while
//! "latest" is cached for a few minutes. Concurrent misses for one entry make one request.

mod cache;
mod key_vault;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::crypto::DataKey;

pub use cache::CachedKeys;
pub use key_vault::KeyVaultKeys;

/// A key version and its material.
#[derive(Clone)]
pub struct VersionedKey {
    /// Key Vault secret name.
    pub name: String,
    /// Key Vault secret version.
    pub version: String,
    /// The 32-byte key, shared read-only.
    pub key: Arc<DataKey>,
}

impl std::fmt::Debug for VersionedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedKey")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Why a key could not be had.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret (or that version) does not exist, or is disabled.
    #[error("key {0} was not found in Key Vault")]
    NotFound(String),
    /// Key Vault throttled us; retry after the given time.
    #[error("Key Vault is throttling requests")]
    Throttled(Option<Duration>),
    /// Key Vault is down, unreachable or timed out.
    #[error("Key Vault is unavailable")]
    Unavailable,
    /// Key Vault refused us (403) or the secret is not a 32-byte base64 key: an operator
    /// must act.
    #[error("Key Vault configuration problem: {0}")]
    Misconfigured(String),
}

/// Where keys come from (Key Vault in production; tests may wrap it).
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The latest enabled version of `name`.
    async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError>;
    /// One specific version of `name`.
    async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError>;
    /// Adds a new version holding 32 fresh random bytes and returns it.
    async fn rotate(&self, name: &str) -> Result<VersionedKey, KeyError>;
}
