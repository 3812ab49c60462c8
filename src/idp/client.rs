//! The Entra token endpoint: the On-Behalf-Of exchange (setup) and the refresh-token grant
//! (do-work, the timer), both against the tenant-specific authority
//! `{authority}/{tid}/oauth2/v2.0/token` (OBO is refused over `/common`).
//!
//! There are no retries here: callers know whether a user is waiting and how much time is
//! left, so they decide. Nothing secret (tokens, assertions, the client secret, Entra's
//! `error_description`) reaches a log line or an error.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use super::errors::{self, ErrorBody, Grant};
use super::{AppCredential, IdpError};
use crate::domain::{AccessToken, RefreshToken, TenantId, UserId};

/// Scopes added to every request: a refresh token, an id_token, and `oid`/`tid` in it.
const OIDC_SCOPES: [&str; 3] = ["offline_access", "openid", "profile"];
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
}

/// A successful token response. `Debug` never shows a token.
pub struct TokenSet {
    /// The access token for the downstream API.
    pub access_token: AccessToken,
    /// `expires_in` of the access token.
    pub expires_in: Duration,
    /// The new refresh token; `None` when Entra sent none (keep the old one).
    pub refresh_token: Option<RefreshToken>,
    /// (`tid`, `oid`) from the id_token, when one came back.
    pub identity: Option<(TenantId, UserId)>,
    /// The granted scopes, space separated, as Entra reported them.
    pub scope: String,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token newtypes print as `AccessToken(..)`/`RefreshToken(..)`.
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("identity", &self.identity)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The fields of a token response we use. No `Debug`: it holds tokens.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    id_token: Option<String>,
    #[serde(default)]
    scope: String,
}

/// The id_token claims that identify the user.
#[derive(Deserialize)]
struct IdTokenClaims {
    aud: serde_json::Value,
    tid: Option<String>,
    oid: Option<String>,
}

impl EntraClient {
    /// A client for `authority_host` authenticating as `client_id` with `credential`.
    pub fn new(http: reqwest::Client, authority_host: Url, client_id: String, credential: AppCredential) -> Self {
        Self {
            http,
            authority: authority_host.as_str().trim_end_matches('/').to_owned(),
            client_id,
            credential,
        }
    }

    /// OBO: always asks for the downstream scopes plus `offline_access openid profile`,
    /// tenant-specific authority.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant))]
    pub async fn on_behalf_of(&self, tenant: &TenantId, assertion: &str, scopes: &[String]) -> Result<TokenSet, IdpError> {
        let grant_fields = vec![
            ("grant_type", JWT_BEARER_GRANT.to_owned()),
            ("requested_token_use", "on_behalf_of".to_owned()),
            ("assertion", assertion.to_owned()),
        ];
        self.request(tenant, Grant::OnBehalfOf, grant_fields, scopes).await
    }

    /// Refresh-token grant; same scopes rule.
    #[tracing::instrument(skip_all, fields(tenant.id = %tenant))]
    pub async fn redeem_refresh_token(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        let grant_fields = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
        ];
        self.request(tenant, Grant::RefreshToken, grant_fields, scopes).await
    }

    async fn request(
        &self,
        tenant: &TenantId,
        grant: Grant,
        mut fields: Vec<(&'static str, String)>,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError> {
        let endpoint = format!("{}/{tenant}/oauth2/v2.0/token", self.authority);
        fields.push(("client_id", self.client_id.clone()));
        fields.push(("scope", scope_parameter(scopes)));
        // Makes Entra return `client_info` (uid/utid), as MSAL does.
        fields.push(("client_info", "1".to_owned()));
        fields.extend(self.credential.form_fields(&self.client_id, &endpoint).await?);
        let response = self
            .http
            .post(&endpoint)
            .header(reqwest::header::ACCEPT, "application/json")
            // Tells Entra we honour Retry-After and understand 429, as MSAL does.
            .header("x-ms-lib-capability", "retry-after, h429")
            .form(&fields)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = errors::retry_after(response.headers());
        let body = read_limited(response, MAX_TOKEN_RESPONSE_BYTES).await.map_err(|error| match error {
            BodyError::Transport(error) => transport_error(error),
            BodyError::TooLarge => IdpError::Protocol("the token response is too large".into()),
        })?;
        // The error fields are read before the status: Entra answers OAuth errors with 400 or
        // 401, and only the body says which.
        let error_body = serde_json::from_slice::<ErrorBody>(&body).ok();
        if !status.is_success() || error_body.as_ref().is_some_and(|b| b.error.is_some()) {
            let error = errors::classify(grant, status, retry_after, error_body.as_ref());
            log_failure(status, error_body.as_ref(), &error);
            return Err(error);
        }
        let set = token_set(&body, &self.client_id)?;
        tracing::debug!(expires_in = set.expires_in.as_secs(), new_refresh_token = set.refresh_token.is_some(), "Entra issued tokens");
        Ok(set)
    }
}

/// The downstream scopes plus the OIDC ones, each once, in order.
fn scope_parameter(scopes: &[String]) -> String {
    let mut all: Vec<&str> = Vec::new();
    for scope in scopes.iter().flat_map(|s| s.split_whitespace()).chain(OIDC_SCOPES) {
        if !all.contains(&scope) {
            all.push(scope);
        }
    }
    all.join(" ")
}

fn transport_error(error: reqwest::Error) -> IdpError {
    // reqwest errors name the URL (authority and tenant id) and the failure, never the body.
    tracing::warn!(error = %error, timeout = error.is_timeout(), "Entra token request failed in transport");
    if error.is_timeout() {
        IdpError::Timeout
    } else {
        IdpError::Unavailable { retry_after: None }
    }
}

/// Logs what Entra documents as safe diagnostics: never `error_description`.
fn log_failure(status: reqwest::StatusCode, body: Option<&ErrorBody>, error: &IdpError) {
    // Trace and correlation ids are GUIDs; anything else is not echoed.
    let guid = |value: Option<&String>| value.filter(|v| uuid::Uuid::try_parse(v).is_ok()).cloned();
    tracing::warn!(
        http.status = status.as_u16(),
        outcome = %error.code(),
        entra.error_codes = ?body.map(|b| b.error_codes.as_slice()).unwrap_or_default(),
        entra.trace_id = guid(body.and_then(|b| b.trace_id.as_ref())).as_deref(),
        entra.correlation_id = guid(body.and_then(|b| b.correlation_id.as_ref())).as_deref(),
        "Entra refused the token request"
    );
}

fn token_set(body: &[u8], client_id: &str) -> Result<TokenSet, IdpError> {
    let response: TokenResponse =
        serde_json::from_slice(body).map_err(|_| IdpError::Protocol("the token response is not JSON".into()))?;
    let access_token = response
        .access_token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| IdpError::Protocol("the token response has no access_token".into()))?;
    if response.token_type.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("bearer")) {
        return Err(IdpError::Protocol("the access token is not a bearer token".into()));
    }
    let expires_in = match &response.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        // Some Microsoft endpoints send numbers as strings.
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| IdpError::Protocol("the token response has no valid expires_in".into()))?;
    let identity = response.id_token.as_deref().map(|t| identity(t, client_id)).transpose()?;
    Ok(TokenSet {
        access_token: AccessToken::new(access_token),
        expires_in: Duration::from_secs(expires_in),
        refresh_token: response.refresh_token.filter(|t| !t.is_empty()).map(RefreshToken::new),
        identity,
        scope: response.scope,
    })
}

/// (`tid`, `oid`) of the id_token.
///
/// The signature is not checked: the id_token came straight from the token endpoint over TLS,
/// which OIDC Core 3.1.3.7 (item 6) allows in place of signature validation. The audience is
/// still checked so that a token meant for another client is never taken as ours.
fn identity(id_token: &str, client_id: &str) -> Result<(TenantId, UserId), IdpError> {
    let invalid = |why: &str| IdpError::Protocol(format!("the id_token {why}"));
    let payload = id_token.split('.').nth(1).ok_or_else(|| invalid("is not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).map_err(|_| invalid("is not a JWT"))?;
    let claims: IdTokenClaims = serde_json::from_slice(&bytes).map_err(|_| invalid("has unreadable claims"))?;
    let ours = match &claims.aud {
        serde_json::Value::String(aud) => aud == client_id,
        serde_json::Value::Array(auds) => auds.len() == 1 && auds[0].as_str() == Some(client_id),
        _ => false,
    };
    if !ours {
        return Err(invalid("was issued for another client"));
    }
    let tenant = claims.tid.as_deref().and_then(|t| TenantId::parse(t).ok()).ok_or_else(|| invalid("has no valid tid"))?;
    let user = claims.oid.as_deref().and_then(|o| UserId::parse(o).ok()).ok_or_else(|| invalid("has no valid oid"))?;
    Ok((tenant, user))
}

/// Why a response body could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum BodyError {
    /// The connection failed or timed out while reading.
    #[error("reading the body failed: {0}")]
    Transport(reqwest::Error),
    /// The body is larger than the limit.
    #[error("the body is too large")]
    TooLarge,
}

/// Reads a response body of at most `limit` bytes, so a broken or hostile endpoint cannot make
/// us buffer without bound.
pub(super) async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
