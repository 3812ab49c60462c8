//! Soft delete and purge of secrets, as Key Vault answers them (every vault has soft delete
//! since February 2025; purge protection is a vault option that cannot be turned off again).
//!
//! - `DELETE /secrets/{name}` → `200` with the deleted-secret bundle (no value): `recoveryId`,
//!   `deletedDate`, `scheduledPurgeDate` (Unix seconds), `id` of the newest version, its
//!   `attributes`; `404 SecretNotFound` when there is no such secret. Shape from the REST
//!   reference, "Delete Secret" (learn.microsoft.com/rest/api/keyvault/secrets/delete-secret),
//!   whose sample answers `scheduledPurgeDate = deletedDate + 90 days`.
//! - `GET /deletedsecrets/{name}` → `200`, the same bundle ("Get Deleted Secret"); `404`.
//! - `DELETE /deletedsecrets/{name}` (purge) → `204` ("Purge Deleted Secret"); `404` when it
//!   is not deleted; `403 Forbidden` when the vault has purge protection, with the message
//!   Key Vault gives ("Operation \"purge\" is not allowed because purge protection is enabled
//!   for this vault. Key Vault service will automatically purge it after the retention period
//!   has passed.", quoted in microsoft/AzureTRE#1760).
//! - While a secret is deleted its name cannot be reused: `PUT /secrets/{name}` answers `409
//!   Conflict` ("Secret … is currently in a deleted but recoverable state, and its name
//!   cannot be reused; in this state, the secret can only be recovered or purged.", quoted in
//!   Azure/azure-rest-api-specs#9222), and reads answer `404` like any missing secret.
//!
//! Real Key Vault completes a delete asynchronously (a purge right after it may answer `409`
//! until `GET /deletedsecrets/{name}` answers `200`); here a delete is complete at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::errors::{bad_name, kv_error, secret_not_found};
use super::{valid_name, KeyVaultState, SecretVersion};

/// Days a deleted secret stays recoverable (`recoverableDays`; Key Vault's default 90).
pub(super) const RETENTION_DAYS: i64 = 90;

/// A soft-deleted secret: its versions, kept until purged.
#[derive(Debug, Clone)]
pub(super) struct DeletedSecret {
    pub(super) versions: Vec<SecretVersion>,
    pub(super) deleted_date: i64,
    pub(super) scheduled_purge_date: i64,
}

impl KeyVaultState {
    /// `recoveryLevel` as Key Vault reports it for this vault.
    pub(super) fn recovery_level(&self) -> &'static str {
        if self.purge_protection.load(Ordering::Relaxed) {
            "Recoverable"
        } else {
            "Recoverable+Purgeable"
        }
    }

    fn deleted_bundle(&self, name: &str, deleted: &DeletedSecret) -> Value {
        let newest = deleted.versions.last();
        let mut body = newest
            .map(|secret| self.bundle(name, secret, false))
            .unwrap_or_else(|| json!({}));
        if let Value::Object(fields) = &mut body {
            fields.insert(
                "recoveryId".into(),
                format!("{}deletedsecrets/{name}", self.vault_url).into(),
            );
            fields.insert("deletedDate".into(), deleted.deleted_date.into());
            fields.insert(
                "scheduledPurgeDate".into(),
                deleted.scheduled_purge_date.into(),
            );
        }
        body
    }
}

/// `409 Conflict` for a write to a name that is deleted but not purged.
pub(super) fn conflict_if_deleted(state: &KeyVaultState, name: &str) -> Option<Response> {
    state.deleted.lock().contains_key(name).then(|| {
        kv_error(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
            None,
        )
    })
}

/// `DELETE /secrets/{name}`.
pub(super) async fn delete_secret(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let Some(versions) = state.secrets.lock().remove(&name).filter(|v| !v.is_empty()) else {
        return secret_not_found(&name);
    };
    let now = chrono::Utc::now().timestamp();
    let deleted = DeletedSecret {
        versions,
        deleted_date: now,
        scheduled_purge_date: now + RETENTION_DAYS * 24 * 3600,
    };
    let body = state.deleted_bundle(&name, &deleted);
    state.deleted.lock().insert(name, deleted);
    Json(body).into_response()
}

/// `GET /deletedsecrets/{name}`.
pub(super) async fn get_deleted(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    let deleted = state.deleted.lock().get(&name).cloned();
    match deleted {
        Some(deleted) => Json(state.deleted_bundle(&name, &deleted)).into_response(),
        None => secret_not_found(&name),
    }
}

/// `DELETE /deletedsecrets/{name}`: gone for good (its values stay listed for leak scans).
pub(super) async fn purge(
    State(state): State<Arc<KeyVaultState>>,
    Path(name): Path<String>,
) -> Response {
    if !valid_name(&name) {
        return bad_name();
    }
    if !state.deleted.lock().contains_key(&name) {
        return secret_not_found(&name);
    }
    if state.purge_protection.load(Ordering::Relaxed) {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
            Some("ForbiddenByPolicy"),
        );
    }
    if let Some(deleted) = state.deleted.lock().remove(&name) {
        state
            .purged_values
            .lock()
            .extend(deleted.versions.into_iter().map(|secret| secret.value));
    }
    StatusCode::NO_CONTENT.into_response()
}
