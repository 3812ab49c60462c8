//! What can go wrong at the Entra token endpoint, and how Entra's OAuth errors are classified.
//!
//! Entra documents that apps must react to `error` (and `suberror`), not to the AADSTS numbers
//! or the `error_description` text; the numbers in `error_codes` only refine a few cases
//! (throttling by loop detection, unusable OBO assertions). The description is never read: it
//! may quote parts of the request.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;

/// A failed call to the Entra token endpoint, classified by what the caller should do.
#[derive(Clone, Debug, thiserror::Error)]
pub enum IdpError {
    /// OBO only: Entra will not exchange the inbound token (expired, wrong audience, an id_token
    /// …); the caller answers `401 invalid_token` so that the client brings a fresh token.
    #[error("Entra ID refused to exchange the inbound token ({})", join(error, *code))]
    BadAssertion {
        /// Entra's `error`.
        error: String,
        /// The first of Entra's `error_codes`.
        code: Option<i64>,
    },
    /// The app registration or the request is wrong (`invalid_client`, `invalid_scope` …):
    /// nothing a user can fix; an operator must.
    #[error("Entra ID refused the service's request ({})", join(error, *code))]
    Misconfigured {
        /// Entra's `error`.
        error: String,
        /// The first of Entra's `error_codes`.
        code: Option<i64>,
    },
    /// Entra answered something that is not a usable token response.
    #[error("unexpected answer from Entra ID: {0}")]
    Protocol(String),
    /// The grant is dead or needs the user (`invalid_grant`, `interaction_required`,
    /// `consent_required`): the user must sign in again.
    #[error("the user must sign in again ({})", join(error, *code))]
    Reauth {
        /// Entra's `error`.
        error: String,
        /// The first of Entra's `error_codes`.
        code: Option<i64>,
        /// Entra's `suberror` (`basic_action`, `consent_required` …).
        suberror: Option<String>,
        /// A Conditional Access claims challenge to pass back to the client.
        claims: Option<String>,
    },
    /// Entra is throttling us (HTTP 429, or `AADSTS50196` loop detection).
    #[error("Entra ID is throttling requests")]
    Throttled {
        /// How long Entra asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Entra did not answer in time.
    #[error("Entra ID did not answer in time")]
    Timeout,
    /// Entra (or the way to it) is down: 5xx, `temporarily_unavailable`, connection errors.
    #[error("Entra ID is unavailable")]
    Unavailable {
        /// How long Entra asked us to wait, if it said.
        retry_after: Option<Duration>,
    },
}

impl IdpError {
    /// Short machine code for logs and the row's `last_error`/`status_reason`, e.g.
    /// `invalid_grant:70008`, `throttled`, `timeout`. Never contains token material or
    /// `error_description` text.
    pub fn code(&self) -> String {
        match self {
            Self::BadAssertion { error, code }
            | Self::Misconfigured { error, code }
            | Self::Reauth { error, code, .. } => join(error, *code),
            Self::Protocol(_) => "protocol".into(),
            Self::Throttled { .. } => "throttled".into(),
            Self::Timeout => "timeout".into(),
            Self::Unavailable { .. } => "unavailable".into(),
        }
    }

    /// `true` when Entra refused the service's own credential (`invalid_client`, e.g. an
    /// expired secret AADSTS7000222 or a wrong one AADSTS7000215; `unauthorized_client`, e.g.
    /// the app disabled or missing in the tenant), or the service could not even build its
    /// client assertion. Every grant would fail the same way until an operator fixes the
    /// deployment, so no user's row is to blame (SPEC §3: such a run stops and punishes no row).
    pub fn refuses_the_service(&self) -> bool {
        matches!(
            self,
            Self::Misconfigured { error, .. }
                if matches!(error.as_str(), "invalid_client" | "unauthorized_client" | "client_assertion")
        )
    }

    /// Entra's AADSTS65001 (`consent_required`): the user or an admin has not consented to the
    /// requested resource. Entra answers it to a refresh grant as `invalid_grant` with
    /// `error_codes: [65001]` and `suberror: consent_required` (as seen in the wild, e.g.
    /// MicrosoftDocs/azure-docs#39189); the grant itself is fine for other resources.
    pub fn is_consent_required(&self) -> bool {
        match self {
            Self::Reauth {
                error,
                code,
                suberror,
                ..
            } => {
                *code == Some(CONSENT_REQUIRED)
                    || error == "consent_required"
                    || suberror.as_deref() == Some("consent_required")
            }
            _ => false,
        }
    }

    /// Retry-After for Throttled/Unavailable.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after } | Self::Unavailable { retry_after } => *retry_after,
            _ => None,
        }
    }
}

fn join(error: &str, code: Option<i64>) -> String {
    match code {
        Some(code) => format!("{error}:{code}"),
        None => error.to_owned(),
    }
}

/// Which grant failed: assertion problems only exist for OBO.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(super) enum Grant {
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` with `requested_token_use=on_behalf_of`.
    OnBehalfOf,
    /// `refresh_token`.
    RefreshToken,
}

/// The fields of an Entra error body that we act on or log. `error_description` is
/// deliberately absent so that it cannot end up anywhere.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: Option<String>,
    #[serde(default)]
    pub(super) error_codes: Vec<i64>,
    pub(super) suberror: Option<String>,
    pub(super) claims: Option<String>,
    pub(super) trace_id: Option<String>,
    pub(super) correlation_id: Option<String>,
}

/// AADSTS65001: no consent for the requested resource.
const CONSENT_REQUIRED: i64 = 65001;
/// AADSTS50196: "loop detected", Entra's throttling of user flows.
const LOOP_DETECTED: i64 = 50196;
/// The inbound token cannot be used as an OBO assertion: expired (500133), invalid or for
/// another audience (50013, 50027), an id_token (240002).
const BAD_ASSERTION: [i64; 4] = [500_133, 50_013, 50_027, 240_002];
/// `invalid_grant` suberrors that MSAL does not treat as "the user must come back": the
/// refresh token belongs to another client, or an app protection policy is missing. A new
/// sign-in would not help, so they are configuration problems.
const NOT_USER_FIXABLE: [&str; 2] = ["client_mismatch", "protection_policy_required"];
/// Longest wait we accept from a Retry-After header (MSAL caps it the same way).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Reads `Retry-After` as integer seconds (the form Entra uses), capped at an hour.
pub(super) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// Classifies a response that is not a token: the body was parsed first (it may be absent
/// when it was not JSON), then the status.
pub(super) fn classify(
    grant: Grant,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Option<&ErrorBody>,
) -> IdpError {
    let codes = body.map(|b| b.error_codes.as_slice()).unwrap_or_default();
    let code = codes.first().copied();
    let error = body.and_then(|b| b.error.as_deref()).map(sanitize);
    // "Retry later" signals win over the `error` switch: treating a throttled or failing STS
    // as a dead grant would mark a healthy row `reauth_required`, while retrying is harmless.
    if codes.contains(&LOOP_DETECTED) || status == StatusCode::TOO_MANY_REQUESTS {
        return IdpError::Throttled { retry_after };
    }
    if status.is_server_error() || error.as_deref() == Some("temporarily_unavailable") {
        return IdpError::Unavailable { retry_after };
    }
    let Some(error) = error else {
        return IdpError::Protocol(format!("HTTP {} without an OAuth error", status.as_u16()));
    };
    if grant == Grant::OnBehalfOf && codes.iter().any(|c| BAD_ASSERTION.contains(c)) {
        return IdpError::BadAssertion { error, code };
    }
    let suberror = body.and_then(|b| b.suberror.as_deref()).map(sanitize);
    match error.as_str() {
        "invalid_grant"
            if suberror
                .as_deref()
                .is_some_and(|s| NOT_USER_FIXABLE.contains(&s)) =>
        {
            IdpError::Misconfigured { error, code }
        }
        "invalid_grant" | "interaction_required" | "consent_required" => IdpError::Reauth {
            error,
            code,
            suberror,
            claims: body
                .and_then(|b| b.claims.clone())
                .filter(|c| !c.is_empty()),
        },
        // invalid_client, unauthorized_client, invalid_scope, invalid_resource,
        // unsupported_grant_type, invalid_request, and anything new: an operator must look.
        _ => IdpError::Misconfigured { error, code },
    }
}

/// Entra's `error`/`suberror` are short ASCII codes; anything else is replaced, so a broken or
/// hostile answer cannot put free text into logs, API answers or the database.
pub(super) fn sanitize(value: &str) -> String {
    let is_code = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if is_code {
        value.to_owned()
    } else {
        "unknown_error".into()
    }
}

#[cfg(test)]
mod tests;
