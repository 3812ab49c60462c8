//! The Key Vault secrets emulator: the REST surface the official Rust SDK 1.0 uses.
//!
//! - A request without `Authorization: Bearer …` gets Key Vault's `401` challenge
//!   (`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
//!   resource="https://vault.azure.net"`), as the SDK's first request always does. Any bearer
//!   value is then accepted.
//! - `GET /secrets/{name}` and `/secrets/{name}/` return the newest version, enabled or not: a
//!   disabled one answers `403` with inner error `SecretDisabled`, as the real service does
//!   (operators meet it when they disable the current version; see [`reads`]).
//! - `GET /secrets/{name}/{version}`, `GET /secrets/{name}/versions` (paged with `nextLink`),
//!   `PUT /secrets/{name}` (new version), `PATCH /secrets/{name}/{version}` (attributes).
//! - `DELETE /secrets/{name}`, `GET` and `DELETE /deletedsecrets/{name}`: soft delete and
//!   purge ([`deleted`]).
//! - Every request needs `?api-version=` (any value), like the real service.
//!
//! Tests disable and enable versions with [`KeyVaultEmulator::disable_version`] and
//! [`KeyVaultEmulator::enable_version`] (or `PATCH` with `{"attributes": {"enabled": …}}`,
//! as an operator's tool does). Routes live in one file per concern ([`reads`], [`writes`]);
//! error bodies in [`errors`]; the challenge and faults in [`authorize`].
//!
//! Faults, latency and the counters concern authorized requests only: the unauthenticated
//! challenge round trip is always answered at once.

mod authorize;
mod deleted;
mod errors;
mod reads;
mod writes;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{middleware, routing::get, Router};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use parking_lot::Mutex;
use rand::RngCore as _;
use serde_json::{json, Map, Value};

use crate::faults::{Fault, Faults};

/// Counters of authorized requests since start or the last [`KeyVaultEmulator::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyVaultStats {
    /// `GET /secrets/{name}` (latest version).
    pub get_latest: u64,
    /// `GET /secrets/{name}/{version}`.
    pub get_version: u64,
    /// `GET /secrets/{name}/versions` (one per page).
    pub list_versions: u64,
    /// `PUT /secrets/{name}`.
    pub set: u64,
    /// Requests answered with the 401 challenge (no bearer token).
    pub challenges: u64,
}

#[derive(Debug, Default)]
struct Counters {
    get_latest: AtomicU64,
    get_version: AtomicU64,
    list_versions: AtomicU64,
    set: AtomicU64,
    challenges: AtomicU64,
}

/// One version of a secret.
#[derive(Debug, Clone)]
struct SecretVersion {
    version: String,
    value: String,
    content_type: Option<String>,
    tags: Option<Map<String, Value>>,
    enabled: bool,
    created: i64,
    updated: i64,
}

struct KeyVaultState {
    /// `https://127.0.0.1:{port}/`.
    vault_url: String,
    tenant_id: String,
    /// Versions per secret name, oldest first.
    secrets: Mutex<HashMap<String, Vec<SecretVersion>>>,
    faults: Faults,
    counters: Counters,
    /// Soft-deleted secrets by name, until purged.
    deleted: Mutex<HashMap<String, deleted::DeletedSecret>>,
    /// Values of purged secrets, still listed by `secret_values` for leak scans.
    purged_values: Mutex<Vec<String>>,
    /// The vault's purge protection: a purge answers 403.
    purge_protection: std::sync::atomic::AtomicBool,
}

impl KeyVaultState {
    fn bundle(&self, name: &str, secret: &SecretVersion, with_value: bool) -> Value {
        let mut body = json!({
            "id": format!("{}secrets/{name}/{}", self.vault_url, secret.version),
            "attributes": {
                "enabled": secret.enabled,
                "created": secret.created,
                "updated": secret.updated,
                "recoveryLevel": self.recovery_level(),
                "recoverableDays": deleted::RETENTION_DAYS,
            },
        });
        if let Value::Object(fields) = &mut body {
            if with_value {
                fields.insert("value".into(), secret.value.clone().into());
            }
            if let Some(content_type) = &secret.content_type {
                fields.insert("contentType".into(), content_type.clone().into());
            }
            if let Some(tags) = &secret.tags {
                fields.insert("tags".into(), Value::Object(tags.clone()));
            }
        }
        body
    }

    fn insert(
        &self,
        name: &str,
        value: String,
        content_type: Option<String>,
        tags: Option<Map<String, Value>>,
        enabled: bool,
    ) -> SecretVersion {
        let now = chrono::Utc::now().timestamp();
        let secret = SecretVersion {
            version: uuid::Uuid::new_v4().simple().to_string(),
            value,
            content_type,
            tags,
            enabled,
            created: now,
            updated: now,
        };
        self.secrets
            .lock()
            .entry(name.to_owned())
            .or_default()
            .push(secret.clone());
        secret
    }
}

/// Handle to a running Key Vault emulator. Clones share the same vault.
#[derive(Clone)]
pub struct KeyVaultEmulator {
    state: Arc<KeyVaultState>,
}

impl std::fmt::Debug for KeyVaultEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultEmulator")
            .field("vault_url", &self.state.vault_url)
            .finish_non_exhaustive()
    }
}

impl KeyVaultEmulator {
    /// An empty vault answering at `vault_url` (with trailing slash).
    pub(crate) fn new(vault_url: String, tenant_id: &str) -> Self {
        Self {
            state: Arc::new(KeyVaultState {
                vault_url,
                tenant_id: tenant_id.to_owned(),
                secrets: Mutex::new(HashMap::new()),
                faults: Faults::default(),
                counters: Counters::default(),
                deleted: Mutex::new(HashMap::new()),
                purged_values: Mutex::new(Vec::new()),
                purge_protection: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// `https://127.0.0.1:{port}/` (`OBOVAULT_KEY_VAULT_URL`).
    pub fn vault_url(&self) -> String {
        self.state.vault_url.clone()
    }

    /// Stores a new version of a secret and returns its version id (32 hex characters).
    pub fn put_secret(&self, name: &str, value: &str) -> String {
        self.state
            .insert(name, value.to_owned(), None, None, true)
            .version
    }

    /// Stores a new version holding a fresh key (base64 of 32 random bytes, as obo-vault expects)
    /// and returns the version id. Calling it again rotates the key.
    pub fn create_key(&self, name: &str) -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        self.put_secret(name, &STANDARD.encode(key))
    }

    /// The newest version of `name`, enabled or not: the one `GET /secrets/{name}` answers
    /// with (or refuses with `403 SecretDisabled` when it is disabled).
    pub fn latest_version(&self, name: &str) -> Option<String> {
        let secrets = self.state.secrets.lock();
        secrets.get(name)?.last().map(|s| s.version.clone())
    }

    /// The newest *enabled* version of `name`: the one a client should seal under.
    pub fn newest_enabled_version(&self, name: &str) -> Option<String> {
        let secrets = self.state.secrets.lock();
        secrets
            .get(name)?
            .iter()
            .rev()
            .find(|s| s.enabled)
            .map(|s| s.version.clone())
    }

    /// The value of one version, whatever its state (for tests).
    pub fn secret_value(&self, name: &str, version: &str) -> Option<String> {
        let secrets = self.state.secrets.lock();
        secrets
            .get(name)?
            .iter()
            .find(|s| s.version == version)
            .map(|s| s.value.clone())
    }

    /// Disables a version, as an operator does in the portal or with `az keyvault secret
    /// set-attributes --enabled false`: reading it answers 403 `SecretDisabled`, and so does
    /// "latest" while it is the newest version. Returns whether it existed.
    pub fn disable_version(&self, name: &str, version: &str) -> bool {
        self.set_enabled(name, version, false)
    }

    /// Enables a version again. Returns whether it existed.
    pub fn enable_version(&self, name: &str, version: &str) -> bool {
        self.set_enabled(name, version, true)
    }

    fn set_enabled(&self, name: &str, version: &str, enabled: bool) -> bool {
        let mut secrets = self.state.secrets.lock();
        let Some(secret) = secrets
            .get_mut(name)
            .and_then(|versions| versions.iter_mut().find(|s| s.version == version))
        else {
            return false;
        };
        secret.enabled = enabled;
        secret.updated = chrono::Utc::now().timestamp();
        true
    }

    /// Every secret value the vault holds or ever held, deleted and purged ones included.
    pub fn secret_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .state
            .secrets
            .lock()
            .values()
            .flatten()
            .map(|s| s.value.clone())
            .collect();
        let deleted = self.state.deleted.lock();
        values.extend(
            deleted
                .values()
                .flat_map(|d| d.versions.iter().map(|s| s.value.clone())),
        );
        values.extend(self.state.purged_values.lock().iter().cloned());
        values
    }

    /// Turns the vault's purge protection on (or off, which real Key Vault never allows).
    pub fn set_purge_protection(&self, on: bool) {
        self.state.purge_protection.store(on, Ordering::Relaxed);
    }

    /// Whether `name` is soft-deleted (deleted, not purged).
    pub fn is_deleted(&self, name: &str) -> bool {
        self.state.deleted.lock().contains_key(name)
    }

    /// Whether `name` exists in any state (live or soft-deleted).
    pub fn exists(&self, name: &str) -> bool {
        self.state.secrets.lock().contains_key(name) || self.is_deleted(name)
    }

    /// Queues a fault for the next `fault.times` authorized requests.
    /// [`crate::FaultKind::InvalidClient`] is ignored here.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.inject(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Answers every authorized request this long after it arrived (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.state.faults.set_latency(latency);
    }

    /// Counters since start or the last reset.
    pub fn stats(&self) -> KeyVaultStats {
        let c = &self.state.counters;
        KeyVaultStats {
            get_latest: c.get_latest.load(Ordering::Relaxed),
            get_version: c.get_version.load(Ordering::Relaxed),
            list_versions: c.list_versions.load(Ordering::Relaxed),
            set: c.set.load(Ordering::Relaxed),
            challenges: c.challenges.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        let c = &self.state.counters;
        for counter in [
            &c.get_latest,
            &c.get_version,
            &c.list_versions,
            &c.set,
            &c.challenges,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// The emulator's router. One route per REST path; a new operation (delete, purge …) is a
/// new handler in its own file, chained here.
pub(crate) fn router(emulator: &KeyVaultEmulator) -> Router {
    let state = Arc::clone(&emulator.state);
    Router::new()
        .route(
            "/secrets/{name}",
            get(reads::get_latest)
                .put(writes::set_secret)
                .delete(deleted::delete_secret),
        )
        .route(
            "/deletedsecrets/{name}",
            get(deleted::get_deleted).delete(deleted::purge),
        )
        .route("/secrets/{name}/", get(reads::get_latest))
        .route("/secrets/{name}/versions", get(reads::list_versions))
        .route(
            "/secrets/{name}/{version}",
            get(reads::get_version).patch(writes::update_version),
        )
        .fallback(errors::not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize::authorize,
        ))
        .with_state(state)
}

/// Key Vault object names: 1-127 characters of `0-9a-zA-Z-`.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_key_vault_rules() {
        assert!(valid_name("obo-vault-8eaef023"));
        assert!(!valid_name(""));
        assert!(!valid_name("a_b"));
        assert!(!valid_name("ä"));
        assert!(!valid_name(&"a".repeat(128)));
    }

    #[test]
    fn latest_is_the_newest_version_enabled_or_not() {
        let kv = KeyVaultEmulator::new("https://127.0.0.1:1/".into(), "t");
        let v1 = kv.put_secret("k", "one");
        let v2 = kv.create_key("k");
        assert_eq!(kv.latest_version("k"), Some(v2.clone()));
        assert!(kv.disable_version("k", &v2));
        assert_eq!(kv.latest_version("k"), Some(v2.clone()));
        assert_eq!(kv.newest_enabled_version("k"), Some(v1.clone()));
        assert!(kv.disable_version("k", &v1));
        assert_eq!(kv.newest_enabled_version("k"), None);
        assert!(kv.enable_version("k", &v2));
        assert_eq!(kv.newest_enabled_version("k"), Some(v2));
        assert!(!kv.disable_version("k", "nope"));
        assert_eq!(kv.secret_values().len(), 2);
        assert_eq!(v1.len(), 32);
        assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
