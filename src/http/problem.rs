//! The one mapping from failures to `application/problem+json` answers (SPEC §3).
//!
//! Client faults carry a clear `detail`; server faults carry a fixed text and the cause goes
//! to the log once, inside the request span. No variant's body ever holds token material.
//! Which answer each flow failure gets is `flow`'s.

mod flow;

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::tenancy::TenancyRefusal;

/// Every error the HTTP API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401 `interaction_required`: Entra wants the user back (MFA, consent, CA policy).
    #[error("the user must sign in again")]
    InteractionRequired {
        /// Entra's claims challenge, passed back to the client.
        claims: Option<String>,
    },
    /// 403 `consent_required`: consent for one downstream API is missing.
    #[error("{0}")]
    ConsentRequired(String),
    /// 403 `insufficient_role`.
    #[error("{0}")]
    InsufficientRole(String),
    /// 403 `insufficient_scope`.
    #[error("{0}")]
    InsufficientScope(String),
    /// 500 with an opaque body; the cause is logged.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// 400 `invalid_request`.
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `invalid_token`; `missing` selects the bare `Bearer` challenge (RFC 6750 §3.1).
    #[error("{detail}")]
    InvalidToken {
        /// Why the token was refused, safe to show.
        detail: String,
        /// No credentials were sent at all.
        missing: bool,
    },
    /// 405 `method_not_allowed`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 404 `not_connected`.
    #[error("the user has not connected")]
    NotConnected,
    /// 404 `not_found` for an unknown route.
    #[error("no such endpoint")]
    NotFound,
    /// 400 `path_not_allowed`.
    #[error("{0}")]
    PathNotAllowed(String),
    /// 413 `payload_too_large`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// 409 `reauth_required`.
    #[error("the stored grant no longer works; the user must run setup again")]
    ReauthRequired {
        /// Entra's error code, e.g. `invalid_grant:70008`.
        reason: Option<String>,
        /// Claims (JSON) the next interactive sign-in must request, when known.
        claims: Option<String>,
    },
    /// 403 `tenant_not_allowed`, with the detail saying which rule refused.
    #[error("{0}")]
    TenantNotAllowed(&'static str),
    /// 503 `unavailable` with `Retry-After`: Key Vault refuses a key (a disabled, deleted or
    /// forbidden version). Not 502: Key Vault answered correctly, and the condition is the
    /// deployment's and temporary (nothing is lost: the token stays stored and works again
    /// once an operator restores the version). Not 409: the grant is fine, the user has
    /// nothing to do.
    #[error("{detail}")]
    KeyRefused {
        /// What is refused and what fixes it.
        detail: &'static str,
    },
    /// 503 `unavailable` with `Retry-After`.
    #[error("{what} is unavailable")]
    Unavailable {
        /// Which dependency: "Entra ID", "Key Vault", "the database".
        what: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
    /// 415 `unsupported_media_type`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 502 `upstream_error`.
    #[error("{0}")]
    Upstream(String),
    /// 504 `upstream_timeout`.
    #[error("{0}")]
    UpstreamTimeout(String),
}

/// `Retry-After` for a refused key: a restored version is seen at once by the timer and
/// within minutes by every instance (the key cache's 5 minutes), so asking every minute is
/// enough and costs no Key Vault call (the refusal is cached).
const KEY_REFUSED_RETRY_AFTER_SECS: u64 = 60;

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_) | Self::PathNotAllowed(_) => StatusCode::BAD_REQUEST,
            Self::InvalidToken { .. } | Self::InteractionRequired { .. } => {
                StatusCode::UNAUTHORIZED
            }
            Self::ConsentRequired(_)
            | Self::InsufficientRole(_)
            | Self::InsufficientScope(_)
            | Self::TenantNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::NotConnected | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ReauthRequired { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Unavailable { .. } | Self::KeyRefused { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The machine code in the body's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ConsentRequired(_) => "consent_required",
            Self::InteractionRequired { .. } => "interaction_required",
            Self::InsufficientRole(_) => "insufficient_role",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Internal(_) => "internal_error",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidToken { .. } => "invalid_token",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::NotConnected => "not_connected",
            Self::NotFound => "not_found",
            Self::PathNotAllowed(_) => "path_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ReauthRequired { .. } => "reauth_required",
            Self::TenantNotAllowed(_) => "tenant_not_allowed",
            Self::Unavailable { .. } | Self::KeyRefused { .. } => "unavailable",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Upstream(_) => "upstream_error",
            Self::UpstreamTimeout(_) => "upstream_timeout",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::Internal(_) => "The service failed to handle the request.".into(),
            Self::InteractionRequired { .. } => {
                "Entra ID requires the user to sign in interactively (see claims).".into()
            }
            Self::NotConnected => "No token is held for this user; the user must run setup.".into(),
            Self::MethodNotAllowed => "This endpoint does not support the method.".into(),
            Self::NotFound => "No such endpoint.".into(),
            Self::PayloadTooLarge => "The request body exceeds the limit of 256 KiB.".into(),
            Self::Unavailable { what, .. } => {
                format!("{what} is throttled or unavailable; retry after the time given.")
            }
            other => other.to_string(),
        }
    }

    fn title(&self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }
}

/// The detail of a `tenant_not_allowed` for a tenant outside `OBOVAULT_ALLOWED_TENANTS`.
pub(crate) const TENANT_NOT_ALLOWED: &str = "The tenant is not allowed to use this service.";

impl From<TenancyRefusal> for ApiError {
    fn from(refusal: TenancyRefusal) -> Self {
        Self::TenantNotAllowed(match refusal {
            TenancyRefusal::WorkloadTenantNotListed => {
                "Workloads of this tenant may not call do-work."
            }
            TenancyRefusal::OtherTenantsUser => {
                "A workload of another tenant may act only for users of its own tenant."
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(error) = &self {
            tracing::error!(error = %format_chain(error.as_ref()), "request failed");
        }
        let mut body = json!({
            "type": format!("https://obo-vault.dev/problems/{}", self.code()),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.detail(),
            "error": self.code(),
        });
        match &self {
            Self::InteractionRequired {
                claims: Some(claims),
            } => {
                body["claims"] = json!(claims);
            }
            Self::ReauthRequired { reason, claims } => {
                if let Some(reason) = reason {
                    body["reason"] = json!(reason);
                }
                if let Some(claims) = claims {
                    body["claims"] = json!(claims);
                }
            }
            _ => {}
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(challenge) = self.challenge() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        let retry_after = match &self {
            Self::Unavailable { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            Self::KeyRefused { .. } => Some(KEY_REFUSED_RETRY_AFTER_SECS),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl ApiError {
    fn challenge(&self) -> Option<String> {
        use base64::Engine as _;
        match self {
            Self::InvalidToken { missing: true, .. } => Some("Bearer".into()),
            Self::InvalidToken { detail, .. } => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                detail.replace(['"', '\\'], "'")
            )),
            Self::InsufficientScope(_) | Self::InsufficientRole(_) => {
                Some("Bearer error=\"insufficient_scope\"".into())
            }
            Self::InteractionRequired { claims } => {
                let mut value = "Bearer error=\"interaction_required\"".to_owned();
                if let Some(claims) = claims {
                    // Base64, as Entra-aware clients (MSAL) expect in a claims challenge.
                    let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
                    value.push_str(&format!(", claims=\"{encoded}\""));
                }
                Some(value)
            }
            _ => None,
        }
    }
}

/// Formats an error and its sources on one line, for logs.
pub fn format_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
