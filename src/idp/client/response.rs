//! Reading the token endpoint's answer: the body (bounded), the token response, and the
//! user's identity from the id_token.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use crate::domain::{AccessToken, RefreshToken, TenantId, UserId};
use crate::idp::IdpError;

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

pub(super) fn token_set(body: &[u8], client_id: &str) -> Result<TokenSet, IdpError> {
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| IdpError::Protocol("the token response is not JSON".into()))?;
    let access_token = response
        .access_token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| IdpError::Protocol("the token response has no access_token".into()))?;
    if response
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(IdpError::Protocol(
            "the access token is not a bearer token".into(),
        ));
    }
    let expires_in = match &response.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        // Some Microsoft endpoints send numbers as strings.
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| IdpError::Protocol("the token response has no valid expires_in".into()))?;
    let identity = response
        .id_token
        .as_deref()
        .map(|t| identity(t, client_id))
        .transpose()?;
    Ok(TokenSet {
        access_token: AccessToken::new(access_token),
        expires_in: Duration::from_secs(expires_in),
        refresh_token: response
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(RefreshToken::new),
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
    let payload = id_token
        .split('.')
        .nth(1)
        .ok_or_else(|| invalid("is not a JWT"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| invalid("is not a JWT"))?;
    let claims: IdTokenClaims =
        serde_json::from_slice(&bytes).map_err(|_| invalid("has unreadable claims"))?;
    let ours = match &claims.aud {
        serde_json::Value::String(aud) => aud == client_id,
        serde_json::Value::Array(auds) => auds.len() == 1 && auds[0].as_str() == Some(client_id),
        _ => false,
    };
    if !ours {
        return Err(invalid("was issued for another client"));
    }
    let tenant = claims
        .tid
        .as_deref()
        .and_then(|t| TenantId::parse(t).ok())
        .ok_or_else(|| invalid("has no valid tid"))?;
    let user = claims
        .oid
        .as_deref()
        .and_then(|o| UserId::parse(o).ok())
        .ok_or_else(|| invalid("has no valid oid"))?;
    Ok((tenant, user))
}
