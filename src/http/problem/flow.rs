//! The answer to each flow failure. Failures of Entra and Key Vault are logged here, once,
//! inside the request span: the clients below do not log them (docs/LOGGING.md).

use std::sync::Arc;
use std::time::Duration;

use super::{ApiError, TENANT_NOT_ALLOWED};
use crate::downstream::DownstreamError;
use crate::idp::IdpError;
use crate::keys::KeyError;
use crate::store::StoreError;
use crate::usecase::FlowError;

impl From<FlowError> for ApiError {
    fn from(error: FlowError) -> Self {
        match error {
            FlowError::Busy => unavailable("the user's token (another refresh is running)", None, 1),
            FlowError::Crypto(_) => Self::Internal(anyhow::Error::new(error)),
            FlowError::Downstream(error) => downstream(error),
            FlowError::Idp(error) => entra(error),
            FlowError::InteractionRequired { claims } => {
                tracing::info!("Entra ID requires the user to sign in interactively");
                Self::InteractionRequired { claims }
            }
            FlowError::Keys(error) => key_vault(error),
            FlowError::KeyVersionUnavailable { .. } => Self::KeyRefused {
                detail: "The key version this user's token is sealed under is disabled or missing in Key Vault. The token is kept; it works again once an operator restores that version.",
            },
            FlowError::NotConnected => Self::NotConnected,
            FlowError::ReauthRequired { reason, claims } => Self::ReauthRequired { reason, claims },
            error @ FlowError::ConsentRequired { .. } => Self::ConsentRequired(error.to_string()),
            FlowError::Store(error) => store(error),
            FlowError::TenantNotAllowed => Self::TenantNotAllowed(TENANT_NOT_ALLOWED),
            FlowError::Tenancy(refusal) => refusal.into(),
        }
    }
}

/// `503` for `what`, asking to retry after `retry_after` or `default` seconds.
fn unavailable(what: &'static str, retry_after: Option<Duration>, default: u64) -> ApiError {
    ApiError::Unavailable {
        what,
        retry_after: retry_after.unwrap_or(Duration::from_secs(default)),
    }
}

fn downstream(error: DownstreamError) -> ApiError {
    match error {
        DownstreamError::InvalidRequest(detail) => ApiError::InvalidRequest(detail),
        DownstreamError::PathNotAllowed(detail) => ApiError::PathNotAllowed(detail),
        DownstreamError::Timeout => {
            ApiError::UpstreamTimeout("the downstream API did not answer in time".into())
        }
        DownstreamError::Unreachable => {
            ApiError::Upstream("the downstream API is unreachable or answered unusably".into())
        }
    }
}

fn entra(error: IdpError) -> ApiError {
    match error {
        IdpError::BadAssertion { .. } => {
            tracing::warn!(entra.error = %error.code(), "Entra ID refused to exchange the caller's token");
            ApiError::InvalidToken {
                detail: "Entra ID refused to exchange the token; sign in again".into(),
                missing: false,
            }
        }
        IdpError::Misconfigured { error, code } => {
            tracing::error!(alert = true, entra.error = %error, entra.code = ?code, "Entra ID refused the service's own credentials or request: check the app registration");
            ApiError::Upstream("Entra ID refused the service's request".into())
        }
        IdpError::Protocol(why) => {
            tracing::error!(why = %why, "unexpected answer from Entra ID");
            ApiError::Upstream("Entra ID answered unexpectedly".into())
        }
        IdpError::Reauth { .. } => ApiError::ReauthRequired {
            reason: Some(error.code()),
            claims: None,
        },
        IdpError::Throttled { .. } | IdpError::Timeout | IdpError::Unavailable { .. } => {
            tracing::warn!(entra.error = %error.code(), "Entra ID is throttling, slow or unavailable");
            unavailable("Entra ID", error.retry_after(), 5)
        }
    }
}

fn key_vault(error: KeyError) -> ApiError {
    match error {
        KeyError::Throttled(retry_after) => unavailable("Key Vault", retry_after, 5),
        KeyError::Unavailable => unavailable("Key Vault", None, 5),
        KeyError::Disabled(_) => {
            tracing::error!(alert = true, error = %error, "every version of the tenant's key is disabled in Key Vault: an operator must act");
            ApiError::KeyRefused {
                detail: "The tenant's encryption key is disabled in Key Vault; an operator must enable a version.",
            }
        }
        KeyError::NotFound(_) | KeyError::Misconfigured(_) => {
            tracing::error!(alert = true, error = %error, "Key Vault key problem: an operator must act");
            ApiError::Upstream("the encryption key is not available".into())
        }
    }
}

fn store(error: Arc<StoreError>) -> ApiError {
    match error.as_ref() {
        StoreError::Unavailable(_) => unavailable("the database", None, 2),
        StoreError::Other(_) => ApiError::Internal(anyhow::Error::new(error)),
    }
}
