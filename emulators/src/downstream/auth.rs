//! Who may call the API: a token the Entra emulator signed for this API's resource, within
//! its lifetime (`401 InvalidAuthenticationToken` otherwise, as Graph answers), and, for a
//! CAE-capable token (`xms_cc` holds `cp1`) issued before the user's sessions were revoked,
//! Graph's claims challenge ("How to use Continuous Access Evaluation enabled APIs in your
//! applications", learn.microsoft.com/entra/identity-platform/
//! app-resilience-continuous-access-evaluation).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{graph_error, DownstreamState};

/// Checks the bearer token; the error is Graph's message for the failure.
pub(super) fn authenticate(
    state: &DownstreamState,
    headers: &HeaderMap,
) -> Result<Value, &'static str> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or("Access token is empty.")?;
    let claims = state
        .keys
        .verify(token)
        .map_err(|_| "Access token validation failure. Invalid signature or token.")?;
    if claims.get("aud").and_then(Value::as_str) != Some(state.resource.as_str()) {
        return Err("Access token validation failure. Invalid audience.");
    }
    let now = chrono::Utc::now().timestamp();
    match claims.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp > now => {}
        _ => return Err("Lifetime validation failed, the token is expired."),
    }
    if claims
        .get("nbf")
        .and_then(Value::as_i64)
        .is_some_and(|nbf| nbf > now)
    {
        return Err("Lifetime validation failed, the token is not yet valid.");
    }
    Ok(claims)
}

/// The claims challenge for a revoked CAE token; records the `uti` of an accepted one.
pub(super) fn cae_challenge(state: &DownstreamState, claims: &Value) -> Option<Response> {
    let capable = claims["xms_cc"]
        .as_array()
        .is_some_and(|values| values.iter().any(|v| v.as_str() == Some("cp1")));
    if !capable {
        return None;
    }
    let text = |name: &str| claims[name].as_str().unwrap_or_default().to_owned();
    let user = (text("tid"), text("oid"));
    let uti = text("uti");
    let issued = claims["iat"].as_i64().unwrap_or(0);
    if let Some(revocation) = state.revocations.lock().get(&user) {
        if issued < revocation.at || revocation.revoked.contains(&uti) {
            let challenge = json!({"access_token": {"nbf": {
                "essential": true,
                "value": revocation.at.to_string(),
            }}});
            let mut response = graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Continuous access evaluation resulted in challenge with result: \
                 InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp",
            );
            let header = format!(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", \
                 client_id=\"{}\", error=\"insufficient_claims\", claims=\"{}\"",
                state.resource,
                base64::engine::general_purpose::STANDARD.encode(challenge.to_string())
            );
            if let Ok(value) = HeaderValue::from_str(&header) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return Some(response);
        }
    }
    state.seen.lock().entry(user).or_default().insert(uti);
    None
}
