//! Key Vault's error bodies and service headers.
//!
//! The body shape is the REST specification's `KeyVaultError`:
//! `{"error": {"code", "message", "innererror"?: {"code"}}}` (wire name `innererror`,
//! Azure/azure-rest-api-specs `specification/keyvault/data-plane/Microsoft.KeyVault/stable/7.5/common.json`).

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

/// Key Vault's error body, `{"error": {"code", "message", "innererror"?}}`.
pub(super) fn kv_error(
    status: StatusCode,
    code: &str,
    message: &str,
    inner: Option<&str>,
) -> Response {
    let mut error = json!({"code": code, "message": message});
    if let (Some(inner), Value::Object(fields)) = (inner, &mut error) {
        fields.insert("innererror".into(), json!({"code": inner}));
    }
    let mut response = (status, Json(json!({ "error": error }))).into_response();
    add_service_headers(&mut response);
    response
}

pub(super) fn add_service_headers(response: &mut Response) {
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        headers.insert("x-ms-request-id", id);
    }
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static("1.9.0.0"),
    );
}

/// An injected fault in Key Vault's error shape.
pub(super) fn injected_error(status: StatusCode, retry_after_secs: Option<u64>) -> Response {
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

pub(super) fn bad_name() -> Response {
    kv_error(
        StatusCode::BAD_REQUEST,
        "BadParameter",
        "The request URI contains an invalid name. Secret names may contain only 0-9, a-z, A-Z and -, up to 127 characters.",
        None,
    )
}

pub(super) fn bad_body(message: &str) -> Response {
    kv_error(StatusCode::BAD_REQUEST, "BadParameter", message, None)
}

pub(super) fn secret_not_found(id: &str) -> Response {
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

/// What Key Vault answers for a read of a disabled version, and for "latest" while the newest
/// version is disabled: `403`, code `Forbidden`, inner error `SecretDisabled`. Seen verbatim in
/// Azure/azure-sdk-for-js#24756 (a GET of `secrets/{name}/`), ansible-collections/azure#1989
/// and turbot/steampipe-plugin-azure#111 (`Status=403 Code="Forbidden" Message="Operation get
/// is not allowed on a disabled secret." InnerError={"code":"SecretDisabled"}`).
pub(super) fn secret_disabled() -> Response {
    kv_error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "Operation get is not allowed on a disabled secret.",
        Some("SecretDisabled"),
    )
}

pub(super) async fn not_found() -> Response {
    kv_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The requested resource was not found.",
        None,
    )
}
