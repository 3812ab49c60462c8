//! Encryption keys: Key Vault secrets holding 32 random bytes, one secret per tenant, each
//! new secret version a key rotation.
//!
//! [`KeyVaultKeys`] talks to Key Vault through the official SDK; [`CachedKeys`] sits in front
//! of any [`KeySource`]: a version's bytes never change, but an operator may disable it, so
//! every answer (latest, a version, a refusal) is trusted for a few minutes only. Concurrent
//! misses for one entry make one request.

mod cache;
mod key_vault;

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::crypto::DataKey;

pub use cache::CachedKeys;
pub use key_vault::{KeyVaultKeys, Shredded};

/// A key version and its material.
#[derive(Clone)]
pub struct VersionedKey {
    /// Key Vault secret name.
    pub name: String,
    /// Key Vault secret version.
    pub version: String,
    /// When Key Vault created the version (`attributes.created`, whole seconds).
    pub created: Option<DateTime<Utc>>,
    /// The 32-byte key, shared read-only.
    pub key: Arc<DataKey>,
}

impl std::fmt::Debug for VersionedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionedKey")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl VersionedKey {
    /// How this version's age compares with `other`'s, by Key Vault's creation times:
    /// `Greater` when this one is newer. `None` when they cannot be told apart: other secrets,
    /// a missing time, or two versions created within the same second.
    pub fn compare_age(&self, other: &VersionedKey) -> Option<Ordering> {
        if self.name != other.name {
            return None;
        }
        if self.version == other.version {
            return Some(Ordering::Equal);
        }
        match self.created?.cmp(&other.created?) {
            Ordering::Equal => None,
            order => Some(order),
        }
    }
}

/// Why a key could not be had.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KeyError {
    /// The secret (or that version) does not exist.
    #[error("key {0} was not found in Key Vault")]
    NotFound(String),
    /// The version is disabled (`403`, inner error `SecretDisabled`); for "latest", every
    /// version is.
    #[error("key {0} is disabled in Key Vault")]
    Disabled(String),
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

impl KeyError {
    /// Key Vault will not give the key (missing, disabled, forbidden, or not a key): only an
    /// operator can change that, so retrying soon does not help.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::NotFound(_) | Self::Disabled(_) | Self::Misconfigured(_)
        )
    }
}

/// Where keys come from (Key Vault in production; tests may wrap it).
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The newest *enabled* version of `name` (Key Vault's "latest" is the newest version,
    /// which may be disabled).
    async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError>;
    /// One specific version of `name`.
    async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError>;
    /// Adds a new version holding 32 fresh random bytes and returns it.
    async fn rotate(&self, name: &str) -> Result<VersionedKey, KeyError>;
}
