//! The Entra token endpoint: the On-Behalf-Of exchange (setup) and the refresh-token grant
//! (do-work, the timer), both against the tenant-specific authority
//! `{authority}/{tid}/oauth2/v2.0/token` (OBO is refused over `/common`).
//!
//! There are no retries here: callers know whether a user is waiting and how much time is
//! left, so they decide. Nothing secret (tokens, assertions, the client secret, Entra's
//! `error_description`) reaches a log line or an error.

#[cfg(test)]
mod failure_tests;
mod response;
#[cfg(test)]
mod tests;

use crate::outbound::SendTraced as _;
use std::time::Duration;

use url::Url;

use super::errors::{self, ErrorBody, Grant};
use super::{AppCredential, IdpError};
use crate::domain::{RefreshToken, TenantId};
use crate::outbound::{read_limited, BodyError};
use response::token_set;
pub use response::TokenSet;

/// Scopes added to the OBO exchange: a refresh token, and an id_token with `oid`/`tid` in it
/// (setup identifies the user from it).
const OBO_EXTRA_SCOPES: &[&str] = &["offline_access", "openid", "profile"];
/// Scopes added to a refresh-token grant: the rotated refresh token only. Nothing reads an
/// id_token after setup, so none is asked for: Entra signs one token instead of two and no
/// profile claims pass through the service.
const REFRESH_EXTRA_SCOPES: &[&str] = &["offline_access"];
/// `grant_type` of the On-Behalf-Of exchange.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Bound on a token response (tokens with many claims are a few KiB each).
const MAX_TOKEN_RESPONSE_BYTES: usize = 256 * 1024;

/// Client for the Entra token endpoint, authenticated as this app.
pub struct EntraClient {
    http: reqwest::Client,
    /// Authority host without a trailing slash.
    authority: String,
    client_id: String,
    credential: AppCredential,
    /// `OBOVAULT_CLIENT_CAPABILITIES`, declared in the `claims` of every grant.
    client_capabilities: Vec<String>,
}

impl EntraClient {
    /// A client for `authority_host` authenticating as `client_id` with `credential`.
    pub fn new(
        http: reqwest::Client,
        authority_host: Url,
        client_id: String,
        credential: AppCredential,
    ) -> Self {
        Self {
            http,
            authority: authority_host.as_str().trim_end_matches('/').to_owned(),
            client_id,
            credential,
            client_capabilities: Vec::new(),
        }
    }

    /// Declares client capabilities (`cp1`) on every grant, as MSAL's
    /// `WithClientCapabilities` does: CAE-aware APIs then issue long-lived tokens and answer a
    /// revoked one with a claims challenge instead of accepting it until it expires.
    pub fn with_client_capabilities(mut self, capabilities: &[String]) -> Self {
        self.client_capabilities = capabilities.to_vec();
        self
    }

    /// OBO: always asks for the downstream scopes plus `offline_access openid profile`,
    /// tenant-specific authority.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant))]
    pub async fn on_behalf_of(
        &self,
        tenant: &TenantId,
        assertion: &str,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        let grant_fields = vec![
            ("grant_type", JWT_BEARER_GRANT.to_owned()),
            ("requested_token_use", "on_behalf_of".to_owned()),
            ("assertion", assertion.to_owned()),
        ];
        self.request(tenant, Grant::OnBehalfOf, grant_fields, scopes, None)
            .await
    }

    /// Refresh-token grant: the downstream scopes plus `offline_access` (no id_token).
    pub async fn redeem_refresh_token(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        self.redeem_refresh_token_with_claims(tenant, refresh_token, scopes, None)
            .await
    }

    /// Refresh-token grant answering a downstream's claims challenge: `claims` (JSON) goes in
    /// the `claims` parameter, merged with the client capabilities.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant, claims_challenge = claims.is_some()))]
    pub async fn redeem_refresh_token_with_claims(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
        claims: Option<&str>,
    ) -> Result<TokenSet, IdpError> {
        let grant_fields = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
        ];
        self.request(tenant, Grant::RefreshToken, grant_fields, scopes, claims)
            .await
    }

    /// One grant: the form, the POST, then a token set or a classified error.
    async fn request(
        &self,
        tenant: &TenantId,
        grant: Grant,
        fields: Vec<(&'static str, String)>,
        scopes: &[String],
        challenge: Option<&str>,
    ) -> Result<TokenSet, IdpError> {
        let endpoint = format!("{}/{tenant}/oauth2/v2.0/token", self.authority);
        let form = self
            .form(&endpoint, grant, fields, scopes, challenge)
            .await?;
        let (status, retry_after, body) = self.post(&endpoint, &form).await?;
        // The error fields are read before the status: Entra answers OAuth errors with 400 or
        // 401, and only the body says which.
        let error_body = serde_json::from_slice::<ErrorBody>(&body).ok();
        if !status.is_success() || error_body.as_ref().is_some_and(|b| b.error.is_some()) {
            let error = errors::classify(grant, status, retry_after, error_body.as_ref());
            log_failure(status, error_body.as_ref(), &error);
            return Err(error);
        }
        let set = token_set(&body, &self.client_id)?;
        tracing::debug!(
            expires_in = set.expires_in.as_secs(),
            new_refresh_token = set.refresh_token.is_some(),
            "Entra issued tokens"
        );
        Ok(set)
    }

    /// The grant's `fields` plus what every grant sends: the client, the scopes, the claims
    /// (capabilities and a challenge's), `client_info` and the app's credential.
    async fn form(
        &self,
        endpoint: &str,
        grant: Grant,
        mut fields: Vec<(&'static str, String)>,
        scopes: &[String],
        challenge: Option<&str>,
    ) -> Result<Vec<(&'static str, String)>, IdpError> {
        fields.push(("client_id", self.client_id.clone()));
        let extra = match grant {
            Grant::OnBehalfOf => OBO_EXTRA_SCOPES,
            Grant::RefreshToken => REFRESH_EXTRA_SCOPES,
        };
        fields.push(("scope", scope_parameter(scopes, extra)));
        if let Some(claims) = crate::claims::request_parameter(&self.client_capabilities, challenge)
        {
            fields.push(("claims", claims));
        }
        // Makes Entra return `client_info` (uid/utid), as MSAL does.
        fields.push(("client_info", "1".to_owned()));
        fields.extend(
            self.credential
                .form_fields(&self.client_id, endpoint)
                .await?,
        );
        Ok(fields)
    }

    /// POSTs the form; the status, Entra's Retry-After and the (bounded) body.
    async fn post(
        &self,
        endpoint: &str,
        form: &[(&'static str, String)],
    ) -> Result<(reqwest::StatusCode, Option<Duration>, Vec<u8>), IdpError> {
        let response = self
            .http
            .post(endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            // Tells Entra we honour Retry-After and understand 429, as MSAL does.
            .header("x-ms-lib-capability", "retry-after, h429")
            .form(form)
            .send_traced(crate::outbound::Dependency::EntraToken)
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = errors::retry_after(response.headers());
        let body = read_limited(response, MAX_TOKEN_RESPONSE_BYTES)
            .await
            .map_err(|error| match error {
                BodyError::Transport(error) => transport_error(error),
                BodyError::TooLarge => IdpError::Protocol("the token response is too large".into()),
            })?;
        Ok((status, retry_after, body))
    }
}

/// The downstream scopes plus `extra`, each once, in order.
fn scope_parameter(scopes: &[String], extra: &[&'static str]) -> String {
    let mut all: Vec<&str> = Vec::new();
    for scope in scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .chain(extra.iter().copied())
    {
        if !all.contains(&scope) {
            all.push(scope);
        }
    }
    all.join(" ")
}

fn transport_error(error: reqwest::Error) -> IdpError {
    // reqwest errors name the URL (authority and tenant id) and the failure, never the body.
    // Debug only: the caller logs the failure once, where it is handled.
    tracing::debug!(error = %error, timeout = error.is_timeout(), "Entra token request failed in transport");
    if error.is_timeout() {
        IdpError::Timeout
    } else {
        IdpError::Unavailable { retry_after: None }
    }
}

/// Logs what Entra documents as safe diagnostics (never `error_description`) at debug level:
/// the caller logs the failure once, where it is handled (the HTTP error mapping, the timer's
/// per-row handler); these are the details to look for when that line is not enough.
fn log_failure(status: reqwest::StatusCode, body: Option<&ErrorBody>, error: &IdpError) {
    // Trace and correlation ids are GUIDs; anything else is not echoed.
    let guid = |value: Option<&String>| value.filter(|v| uuid::Uuid::try_parse(v).is_ok()).cloned();
    tracing::debug!(
        http.status = status.as_u16(),
        outcome = %error.code(),
        entra.error = body.and_then(|b| b.error.as_deref()).map(errors::sanitize).as_deref(),
        entra.suberror = body.and_then(|b| b.suberror.as_deref()).map(errors::sanitize).as_deref(),
        entra.error_codes = ?body.map(|b| b.error_codes.as_slice()).unwrap_or_default(),
        entra.trace_id = guid(body.and_then(|b| b.trace_id.as_ref())).as_deref(),
        entra.correlation_id = guid(body.and_then(|b| b.correlation_id.as_ref())).as_deref(),
        "Entra refused the token request"
    );
}
