//! Entra's token-endpoint error responses, in the exact shape Entra sends.
//!
//! `{"error", "error_description": "AADSTSnnnn: …\r\nTrace ID: …\r\nCorrelation ID: …\r\nTimestamp: …",
//! "error_codes": [n], "timestamp", "trace_id", "correlation_id", "error_uri", "suberror"?, "claims"?}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

/// Longest piece of caller input echoed in an error description, so hostile input cannot
/// balloon error bodies.
const MAX_ECHO: usize = 64;

/// One Entra OAuth error.
#[derive(Debug, Clone)]
pub(crate) struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    message: String,
    suberror: Option<&'static str>,
    claims: Option<String>,
    retry_after_secs: Option<u64>,
}

impl EntraError {
    /// An error with HTTP 400 (Entra's status for OAuth errors).
    pub(crate) fn bad_request(error: &'static str, code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, code, message)
    }

    /// An error with any status.
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            message: message.into(),
            suberror: None,
            claims: None,
            retry_after_secs: None,
        }
    }

    /// `invalid_request` AADSTS900144 for a missing form parameter.
    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::bad_request(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{name}'."),
        )
    }

    /// `invalid_client` AADSTS7000215: the wrong client secret.
    pub(crate) fn invalid_client_secret(client_id: &str) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{}'.",
                echo(client_id)
            ),
        )
    }

    /// `interaction_required` AADSTS50079 with `suberror: basic_action` and a claims challenge.
    pub(crate) fn interaction_required(claims: &str) -> Self {
        let mut error = Self::bad_request(
            "interaction_required",
            50079,
            "Due to a configuration change made by your administrator, or because you moved to \
             a new location, you must enroll in multi-factor authentication to access this \
             resource.",
        );
        error.suberror = Some("basic_action");
        error.claims = Some(claims.to_owned());
        error
    }

    /// The same error with Entra's `suberror`.
    pub(crate) fn with_suberror(mut self, suberror: &'static str) -> Self {
        self.suberror = Some(suberror);
        self
    }

    /// The error for an injected status fault: `temporarily_unavailable` for 503 and 429,
    /// `server_error` for other 5xx, `invalid_request` otherwise.
    pub(crate) fn injected(status: StatusCode, retry_after_secs: Option<u64>) -> Self {
        let (error, code, message) = match status.as_u16() {
            429 => (
                "temporarily_unavailable",
                90055,
                "TenantThrottlingError - There are too many incoming requests. This exception is \
                 thrown for blocked tenants.",
            ),
            503 => (
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
            ),
            500..=599 => (
                "server_error",
                90024,
                "RequestTimeout - A transient error has occurred. Please try again.",
            ),
            _ => (
                "invalid_request",
                90023,
                "InvalidRequest - The authentication service request isn't valid.",
            ),
        };
        let mut error = Self::new(status, error, code, message);
        error.retry_after_secs = retry_after_secs;
        error
    }

    /// The OAuth `error` value (for tests and logs).
    #[cfg(test)]
    pub(crate) fn error(&self) -> &'static str {
        self.error
    }

    /// The AADSTS number.
    #[cfg(test)]
    pub(crate) fn code(&self) -> u32 {
        self.code
    }
}

impl IntoResponse for EntraError {
    fn into_response(self) -> Response {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let timestamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
        let description = format!(
            "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            self.code, self.message
        );
        let mut body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        });
        if let Value::Object(fields) = &mut body {
            if let Some(suberror) = self.suberror {
                fields.insert("suberror".into(), suberror.into());
            }
            if let Some(claims) = self.claims {
                fields.insert("claims".into(), claims.into());
            }
        }
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache"),
        );
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Caller input shortened for an error description.
pub(crate) fn echo(input: &str) -> String {
    input.chars().take(MAX_ECHO).collect()
}
