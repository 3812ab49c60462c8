//! Writing secrets: a new version (`PUT`), and a version's attributes (`PATCH`, which is how
//! an operator disables or re-enables a version).

use std::sync::{atomic::Ordering, Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{Map, Value};

use super::errors::{bad_body, bad_name, secret_not_found};
use super::{valid_name, KeyVaultState};

/// Largest secret value Key Vault accepts (25 KiB).
const MAX_VALUE_BYTES: usize = 25 * 1024;

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

pub(super) async fn set_secret(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    state.counters.set.fetch_add(1, Ordering::Relaxed);
    if !valid_name(&name) {
        return bad_name();
    }
    if let Some(conflict) = super::deleted::conflict_if_deleted(&state, &name) {
        return conflict;
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

/// `PATCH /secrets/{name}/{version}`: Key Vault's "Update Secret" operation
/// (learn.microsoft.com/rest/api/keyvault/secrets/update-secret; `SecretUpdateParameters` in
/// the REST specification's `secrets.json`): it changes only the attributes, tags and content
/// type it is given, never the value, and answers `200` with the secret bundle without its
/// value. An unknown version is `404 SecretNotFound`, as for a read.
pub(super) async fn update_version(
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
