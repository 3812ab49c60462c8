//! The grants that act for a user: on-behalf-of (a user's access token for one of another
//! resource, <https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow>)
//! and refresh token (a refresh token for new tokens), and the success body they share.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::{json, Value};

use super::super::claims::{consent_required, ClaimsRequest};
use super::super::errors::{echo, EntraError};
use super::super::tokens::{v1_issuer, TOKEN_LIFETIME_SECS};
use super::super::{now, EntraState, TokenVersion};
use super::scopes::{scope_string, Scopes};
use super::Form;

fn invalid_grant(code: u32, message: impl Into<String>) -> EntraError {
    EntraError::bad_request("invalid_grant", code, message)
}

pub(super) fn on_behalf_of(
    state: &EntraState,
    tid: &str,
    form: &Form,
    claims_request: &ClaimsRequest,
) -> Result<Value, EntraError> {
    let token_use = form.require("requested_token_use")?;
    if token_use != "on_behalf_of" {
        return Err(EntraError::bad_request(
            "invalid_request",
            90023,
            format!(
                "The 'requested_token_use' value '{}' is not valid; use 'on_behalf_of'.",
                echo(token_use)
            ),
        ));
    }
    let assertion = form.require("assertion")?;
    let scopes = Scopes::parse(form.require("scope")?)?;
    let claims = state.keys.verify(assertion).map_err(|error| {
        invalid_grant(
            50013,
            format!(
                "Assertion failed signature validation. [Reason - {}.]",
                error.reason()
            ),
        )
    })?;
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    if claims.get("scp").is_none() && claims.get("roles").is_none() && claim("idtyp").is_none() {
        return Err(EntraError::bad_request(
            "invalid_request",
            240002,
            "Input id_token cannot be used as 'urn:ietf:params:oauth:grant-type:jwt-bearer' grant.",
        ));
    }
    let now = now();
    let exp = claims.get("exp").and_then(Value::as_i64);
    let nbf = claims
        .get("nbf")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MIN);
    match exp {
        Some(exp) if exp > now && nbf <= now => {}
        _ => {
            return Err(invalid_grant(
                500133,
                "Assertion is not within its valid time range. Ensure that the access token is \
                 not expired before using it for user assertion, or request a new token.",
            ))
        }
    }
    let api_uri = format!("api://{}", state.client_id);
    let aud = claim("aud").unwrap_or_default();
    if aud != state.client_id && aud != api_uri {
        return Err(invalid_grant(
            50013,
            format!(
                "Assertion audience does not match the Client app presenting the assertion. The \
                 audience in the assertion was '{}' and the expected audience is '{}' or one of \
                 the Application Id URIs of this application.",
                echo(aud),
                state.client_id
            ),
        ));
    }
    if claim("tid") != Some(tid) {
        return Err(invalid_grant(
            50013,
            "Assertion contains an invalid tenant. The assertion was not issued by the tenant \
             of this token request.",
        ));
    }
    let iss = claim("iss").unwrap_or_default();
    if iss != state.issuer().v2_issuer(tid) && iss != v1_issuer(tid) {
        return Err(invalid_grant(
            50013,
            "Assertion contains an invalid issuer.",
        ));
    }
    if claims.get("scp").and_then(Value::as_str).is_none() {
        return Err(invalid_grant(
            50013,
            "Assertion is not a delegated user token: it has no 'scp' claim.",
        ));
    }
    let Some(oid) = claim("oid").filter(|oid| !oid.is_empty()) else {
        return Err(invalid_grant(50013, "Assertion has no 'oid' claim."));
    };
    let oid = oid.to_owned();
    let refresh_token = {
        let mut grants = state.grants.lock();
        if let Some(challenge) = grants.interaction.get(&(tid.to_owned(), oid.clone())) {
            return Err(EntraError::interaction_required(challenge));
        }
        if !grants.consented(tid, &oid, &scopes.resource) {
            return Err(consent_required(&state.client_id));
        }
        scopes
            .wants("offline_access")
            .then(|| grants.issue_refresh_token(tid, &oid, &scope_string(&scopes)))
    };
    Ok(success(
        state,
        Subject { tid, oid: &oid },
        &scopes,
        refresh_token,
        wants_client_info(form),
        claims_request,
    ))
}

pub(super) fn refresh(
    state: &EntraState,
    tid: &str,
    form: &Form,
    claims_request: &ClaimsRequest,
) -> Result<Value, EntraError> {
    let presented = form.require("refresh_token")?;
    let requested = form.get("scope").map(Scopes::parse).transpose()?;
    let (oid, scopes, refresh_token) = {
        let mut grants = state.grants.lock();
        let strict = grants.strict_single_use;
        let Some(record) = grants.refresh_tokens.get(presented).cloned() else {
            return Err(invalid_grant(
                70008,
                "The provided authorization code or refresh token has expired due to \
                 inactivity. Send a new interactive authorization request for this user and \
                 resource.",
            ));
        };
        if record.tid != tid {
            return Err(invalid_grant(
                70000,
                "Provided grant is invalid or malformed: the refresh token was issued in \
                 another tenant.",
            ));
        }
        if record.revoked {
            return Err(invalid_grant(
                50173,
                "The provided grant has expired due to it being revoked, a fresh auth token is \
                 needed. The user might have changed or reset their password.",
            ));
        }
        if strict && record.redeemed {
            return Err(invalid_grant(
                70008,
                "The provided refresh token was already redeemed (emulator strict single-use \
                 mode: concurrent or repeated refresh detected).",
            ));
        }
        let user = (record.tid.clone(), record.oid.clone());
        if let Some(challenge) = grants.interaction.get(&user) {
            return Err(EntraError::interaction_required(challenge));
        }
        let scopes = match requested {
            Some(scopes) => scopes,
            None => Scopes::parse(&record.scopes)?,
        };
        // Nothing is redeemed (the token stays unused) when the resource lacks consent.
        if !grants.consented(tid, &record.oid, &scopes.resource) {
            return Err(consent_required(&state.client_id));
        }
        let omit = grants.omit_refresh_token_next > 0;
        let refresh_token = if omit {
            grants.omit_refresh_token_next -= 1;
            None
        } else {
            if let Some(used) = grants.refresh_tokens.get_mut(presented) {
                used.redeemed = true;
            }
            Some(grants.issue_refresh_token(tid, &record.oid, &record.scopes))
        };
        (record.oid, scopes, refresh_token)
    };
    Ok(success(
        state,
        Subject { tid, oid: &oid },
        &scopes,
        refresh_token,
        wants_client_info(form),
        claims_request,
    ))
}

/// MSAL sends `client_info=1` to get the user's ids back next to the tokens.
fn wants_client_info(form: &Form) -> bool {
    form.get("client_info") == Some("1")
}

/// The success body of an OBO or refresh grant.
/// The user a grant is for.
struct Subject<'a> {
    tid: &'a str,
    oid: &'a str,
}

fn success(
    state: &EntraState,
    subject: Subject<'_>,
    scopes: &Scopes,
    refresh_token: Option<String>,
    client_info: bool,
    claims_request: &ClaimsRequest,
) -> Value {
    let Subject { tid, oid } = subject;
    let issuer = state.issuer();
    let mut claims =
        issuer.resource_claims(tid, oid, &scopes.resource, &scopes.granted_permissions());
    claims_request.apply(&mut claims);
    let access_token = state.issue_token(&claims, TokenVersion::V1);
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scopes.granted(),
        "expires_in": TOKEN_LIFETIME_SECS - 1,
        "ext_expires_in": TOKEN_LIFETIME_SECS - 1,
        "access_token": access_token,
    });
    if let Value::Object(fields) = &mut body {
        if let Some(refresh_token) = refresh_token {
            state.remember(refresh_token.clone());
            fields.insert("refresh_token".into(), refresh_token.into());
        }
        if scopes.wants("openid") {
            let id_claims = issuer.id_token_claims(tid, oid);
            let id_token = state.issue_token(&id_claims, TokenVersion::V2);
            fields.insert("id_token".into(), id_token.into());
        }
        if client_info {
            let info = json!({"uid": oid, "utid": tid}).to_string();
            fields.insert("client_info".into(), URL_SAFE_NO_PAD.encode(info).into());
        }
    }
    body
}
