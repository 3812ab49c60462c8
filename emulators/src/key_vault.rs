//! The Key Vault secrets emulator: the REST surface the official Rust SDK 1.0 uses.
//!
//! - A request without `Authorization: Bearer …` gets Key Vault's `401` challenge
//!   (`WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
//!   resource="https://vault.azure.net"`), as the SDK's first request always does. Any bearer
//!   value is then accepted.
//! - `GET /secrets/{name}` and `/secrets/{name}/` return the newest *enabled* version (real Key
//!   Vault returns the newest version and answers 403 when it is disabled; here a disabled
//!   newest version falls back to the one before, and 403 comes only when all are disabled).
//! - `GET /secrets/{name}/{version}`, `PUT /secrets/{name}` (new version),
//!   `PATCH /secrets/{name}/{version}` (attributes), `GET /secrets/{name}/versions`.
//! - Every request needs `?api-version=` (any value), like the real service.
//!
//! Faults, latency and the counters concern authorized requests only: the unauthenticated
//! challenge round trip is always answered at once.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD, Engine as _};
use parking_lot::Mutex;
use rand::RngCore as _;
use serde_json::{json, Map, Value};

use crate::faults::{Fault, Faults, Outcome};

/// Largest secret value Key Vault accepts (25 KiB).
const MAX_VALUE_BYTES: usize = 25 * 1024;

/// Counters of authorized requests since start or the last [`KeyVaultEmulator::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyVaultStats {
    /// `GET /secrets/{name}` (latest version).
    pub get_latest: u64,
    /// `GET /secrets/{name}/{version}`.
    pub get_version: u64,
    /// `PUT /secrets/{name}`.
    pub set: u64,
    /// Requests answered with the 401 challenge (no bearer token).
    pub challenges: u64,
}

#[derive(Debug, Default)]
struct Counters {
    get_latest: AtomicU64,
    get_version: AtomicU64,
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
}

impl KeyVaultState {
    fn bundle(&self, name: &str, secret: &SecretVersion, with_value: bool) -> Value {
        let mut body = json!({
            "id": format!("{}secrets/{name}/{}", self.vault_url, secret.version),
            "attributes": {
                "enabled": secret.enabled,
                "created": secret.created,
                "updated": secret.updated,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
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

    /// The version `GET /secrets/{name}` would answer with: the newest enabled one.
    pub fn latest_version(&self, name: &str) -> Option<String> {
        let secrets = self.state.secrets.lock();
        newest_enabled(secrets.get(name)?).map(|s| s.version.clone())
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

    /// Disables a version: reading it answers 403 `SecretDisabled`. Returns whether it existed.
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

    /// Every secret value the vault holds or ever held (versions are never deleted).
    pub fn secret_values(&self) -> Vec<String> {
        self.state
            .secrets
            .lock()
            .values()
            .flatten()
            .map(|s| s.value.clone())
            .collect()
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
            set: c.set.load(Ordering::Relaxed),
            challenges: c.challenges.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        let c = &self.state.counters;
        for counter in [&c.get_latest, &c.get_version, &c.set, &c.challenges] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

fn newest_enabled(versions: &[SecretVersion]) -> Option<&SecretVersion> {
    versions.iter().rev().find(|s| s.enabled)
}

/// The emulator's router.
pub(crate) fn router(emulator: &KeyVaultEmulator) -> Router {
    let state = Arc::clone(&emulator.state);
    Router::new()
        .route("/secrets/{name}", get(get_latest).put(set_secret))
        .route("/secrets/{name}/", get(get_latest))
        .route("/secrets/{name}/versions", get(list_versions))
        .route(
            "/secrets/{name}/{version}",
            get(get_version).patch(update_version),
        )
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .with_state(state)
}

/// Key Vault's error body, `{"error": {"code", "message", "innererror"?}}`.
fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let (Some(inner), Value::Object(fields)) = (inner, &mut error) {
        fields.insert("innererror".into(), json!({"code": inner}));
    }
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    add_service_headers(&mut response);
    response
}

fn add_service_headers(response: &mut Response) {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static("1.9.0.0"),
    );
}

/// Challenge, api-version check, then faults: in front of every route.
async fn authorize(
    State(state): State<Arc<KeyVaultState>>,
    request: Request,
    next: Next,
) -> Response {
    let has_bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
        });
    if !has_bearer {
        state.counters.challenges.fetch_add(1, Ordering::Relaxed);
        let mut response = kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            None,
        );
        let challenge = format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            state.tenant_id
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        return response;
    }
    let has_api_version = request.uri().query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes())
            .any(|(name, value)| name == "api-version" && !value.is_empty())
    });
    if !has_api_version {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing.",
            None,
        );
    }
    state
        .faults
        .answer(|outcome| async move {
            match outcome {
                Outcome::Proceed | Outcome::InvalidClient => {
                    let mut response = next.run(request).await;
                    add_service_headers(&mut response);
                    response
                }
                Outcome::Drop(response) => response,
                Outcome::Respond {
                    status,
                    retry_after_secs,
                } => injected_error(status, retry_after_secs),
            }
        })
        .await
}

/// An injected fault in Key Vault's error shape.
fn injected_error(status: StatusCode, retry_after_secs: Option<u64>) -> Response {
    let (code, message) = match status.as_u16() {
        429 => (
            "Throttled",
            "Request was not processed because too many requests were received.",
        ),
        503 => (
            "ServiceUnavailable",
            "The service is temporarily unavailable.",
        ),
        500..=599 => ("InternalServerError", "An unexpected error occurred."),
        _ => ("BadParameter", "The request was rejected (injected fault)."),
    };
    let mut response = kv_error(status, code, message, None);
    if let Some(secs) = retry_after_secs {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Key Vault object names: 1-127 characters of `0-9a-zA-Z-`.
fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn bad_name() -> Response {
    kv_error(
        StatusCode::BAD_REQUEST,
        "BadParameter",
        "The request URI contains an invalid name. Secret names may contain only 0-9, a-z, A-Z and -, up to 127 characters.",
        None,
    )
}

fn secret_not_found(id: &str) -> Response {
    let id: String = id.chars().take(300).collect();
    kv_error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        &format!(
            "A secret with (name/id) {id} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

fn secret_disabled() -> Response {
    kv_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "Operation get is not allowed on a disabled secret.",
        Some("SecretDisabled"),
    )
}

async fn not_found() -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource was not found.",
        None,
    )
}

async fn get_latest(State(state): State<Arc<KeyVaultState>>, Path(name): Path<String>) -> Response {
    state.counters.get_latest.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    let secrets = state.secrets.lock();
    let Some(versions) = secrets.get(&name).filter(|v| !v.is_empty()) else {
        return secret_not_found(&name);
    };
    match newest_enabled(versions) {
        Some(secret) => Json(state.bundle(&name, secret, true)).into_response(),
        None => secret_disabled(),
    }
}

async fn get_version(
    State(state): State<Arc<KeyVaultState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    state.counters.get_version.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    let secrets = state.secrets.lock();
    let Some(secret) = secrets
        .get(&name)
        .and_then(|versions| versions.iter().find(|s| s.version == version))
    else {
        return secret_not_found(&format!("{name}/{version}"));
    };
    if !secret.enabled {
        return secret_disabled();
    }
    Json(state.bundle(&name, secret, true)).into_response()
}

async fn list_versions(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let secrets = state.secrets.lock();
    let Some(versions) = secrets.get(&name) else {
        return secret_not_found(&name);
    };
    let items: Vec<Value> = versions
        .iter()
        .map(|s| state.bundle(&name, s, false))
        .collect();
    Json(json!({ "value": items, "nextLink": null })).into_response()
}

fn bad_body(message: &str) -> Response {
    kv_error(StatusCode::BAD_REQUEST, "BadParameter", message, None)
}

/// `attributes.enabled` of a request body (default `true`).
fn enabled_attribute(body: &Value) -> Result<Option<bool>, &'static str> {
    match body.get("attributes") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(attributes)) => match attributes.get("enabled") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(enabled)) => Ok(Some(*enabled)),
            Some(_) => Err("attributes.enabled must be a boolean."),
        },
        Some(_) => Err("attributes must be an object."),
    }
}

fn tags(body: &Value) -> Result<Option<Map<String, Value>>, &'static str> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(tags)) if tags.len() <= 15 && tags.values().all(Value::is_string) => {
            Ok(Some(tags.clone()))
        }
        Some(_) => Err("tags must be an object of at most 15 string values."),
    }
}

async fn set_secret(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    state.counters.set.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_body("The request body is not valid JSON.");
    };
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return bad_body("The parameter 'value' is required and must be a string.");
    };
    if value.len() > MAX_VALUE_BYTES {
        return bad_body("The secret value exceeds the maximum size of 25 KB.");
    }
    let content_type = match body.get("contentType") {
        None | Some(Value::Null) => None,
        Some(Value::String(ct)) if ct.len() <= 255 => Some(ct.clone()),
        Some(_) => return bad_body("contentType must be a string of at most 255 characters."),
    };
    let enabled = match enabled_attribute(&body) {
        Ok(enabled) => enabled.unwrap_or(true),
        Err(message) => return bad_body(message),
    };
    let tags = match tags(&body) {
        Ok(tags) => tags,
        Err(message) => return bad_body(message),
    };
    let secret = state.insert(&name, value.to_owned(), content_type, tags, enabled);
    Json(state.bundle(&name, &secret, true)).into_response()
}

async fn update_version(
    State(state): State<Arc<KeyVaultState>>,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad_body("The request body is not valid JSON.");
    };
    let enabled = match enabled_attribute(&body) {
        Ok(enabled) => enabled,
        Err(message) => return bad_body(message),
    };
    let tags = match tags(&body) {
        Ok(tags) => tags,
        Err(message) => return bad_body(message),
    };
    let mut secrets = state.secrets.lock();
    let Some(secret) = secrets
        .get_mut(&name)
        .and_then(|versions| versions.iter_mut().find(|s| s.version == version))
    else {
        return secret_not_found(&format!("{name}/{version}"));
    };
    if let Some(enabled) = enabled {
        secret.enabled = enabled;
    }
    if tags.is_some() {
        secret.tags = tags;
    }
    if let Some(Value::String(ct)) = body.get("contentType") {
        secret.content_type = Some(ct.clone());
    }
    secret.updated = chrono::Utc::now().timestamp();
    let secret = secret.clone();
    drop(secrets);
    Json(state.bundle(&name, &secret, false)).into_response()
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
    fn latest_skips_disabled_versions() {
        let kv = KeyVaultEmulator::new("https://127.0.0.1:1/".into(), "t");
        let v1 = kv.put_secret("k", "one");
        let v2 = kv.create_key("k");
        assert_eq!(kv.latest_version("k"), Some(v2.clone()));
        assert!(kv.disable_version("k", &v2));
        assert_eq!(kv.latest_version("k"), Some(v1.clone()));
        assert!(kv.disable_version("k", &v1));
        assert_eq!(kv.latest_version("k"), None);
        assert!(!kv.disable_version("k", "nope"));
        assert_eq!(kv.secret_values().len(), 2);
        assert_eq!(v1.len(), 32);
        assert!(v1.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
