//! The token endpoint, `POST /{tenant}/oauth2/v2.0/token`: client authentication and the
//! on-behalf-of, refresh-token and client-credentials grants.
//!
//! Client authentication (secret, certificate or federated assertion) is in
//! [`super::client_auth`].
//!
//! Each grant runs synchronously under short locks; signing happens outside them.

use std::time::Instant;
use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde_json::{json, Value};

use super::{
    claims::{consent_required, ClaimsRequest},
    client_auth::authenticate_client,
    errors::{echo, EntraError},
    now,
    tokens::{v1_issuer, TOKEN_LIFETIME_SECS},
    EntraState, TokenVersion,
};
use super::{GrantKind, GrantRecord};
use crate::faults::Outcome;

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Scopes that are about the sign-in, not a resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];
/// The delegated permission `.default` stands for on every resource.
const DEFAULT_DELEGATED_SCOPE: &str = "User.Read";

/// The grant a successful answer belongs to, for the counters.
#[derive(Debug, Clone, Copy)]
enum Grant {
    OnBehalfOf,
    Refresh,
    ClientCredentials,
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(super) async fn token(
    State(state): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let response = state
        .faults
        .answer(|outcome| {
            // The grant's work (its RS256 signature above all) runs on the blocking pool, within
            // the latency: on the runtime's workers it held up the answers of other requests
            // that were due meanwhile, and real Entra's work for one request never delays
            // another's answer.
            let state = Arc::clone(&state);
            async move {
                let work = tokio::task::spawn_blocking(move || {
                    answer_token_request(&state, &tenant, &headers, &body, outcome)
                });
                work.await
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
        })
        .await;
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state
        .counters
        .token_endpoint_micros
        .fetch_add(micros, Ordering::Relaxed);
    response
}

fn answer_token_request(
    state: &EntraState,
    tenant: &str,
    headers: &HeaderMap,
    body: &[u8],
    outcome: Outcome,
) -> Response {
    match outcome {
        Outcome::Proceed => {}
        Outcome::Respond {
            status,
            retry_after_secs,
        } => {
            state.counters.failed_grants.fetch_add(1, Ordering::Relaxed);
            return EntraError::injected(status, retry_after_secs).into_response();
        }
        Outcome::InvalidClient => {
            state.counters.failed_grants.fetch_add(1, Ordering::Relaxed);
            return EntraError::invalid_client_secret(&state.client_id).into_response();
        }
        Outcome::Drop(response) => return response,
    }
    let throttled = state
        .grants
        .lock()
        .throttled_tenants
        .get(&tenant.to_ascii_lowercase())
        .copied();
    if let Some(retry_after_secs) = throttled {
        state.counters.failed_grants.fetch_add(1, Ordering::Relaxed);
        return EntraError::injected(StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs))
            .into_response();
    }
    let form = Form::parse(body);
    match grant(state, tenant, headers, &form) {
        Ok((grant, body)) => {
            let counter = match grant {
                Grant::OnBehalfOf => &state.counters.obo_grants,
                Grant::Refresh => &state.counters.refresh_grants,
                Grant::ClientCredentials => &state.counters.client_credentials_grants,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let mut response = (StatusCode::OK, Json(body)).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store, no-cache"),
            );
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => {
            state.counters.failed_grants.fetch_add(1, Ordering::Relaxed);
            error.into_response()
        }
    }
}

/// The form body; the first occurrence of a parameter wins, empty values count as absent.
pub(super) struct Form(HashMap<String, String>);

impl Form {
    fn parse(body: &[u8]) -> Self {
        let mut fields = HashMap::new();
        for (name, value) in form_urlencoded::parse(body) {
            fields
                .entry(name.into_owned())
                .or_insert_with(|| value.into_owned());
        }
        Self(fields)
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(super) fn require(&self, name: &str) -> Result<&str, EntraError> {
        self.get(name)
            .ok_or_else(|| EntraError::missing_parameter(name))
    }
}

fn grant(
    state: &EntraState,
    tenant: &str,
    headers: &HeaderMap,
    form: &Form,
) -> Result<(Grant, Value), EntraError> {
    let tid = tenant_id(tenant)?;
    let grant_type = form.require("grant_type")?;
    authenticate_client(state, &tid, headers, form)?;
    match grant_type {
        JWT_BEARER_GRANT | "refresh_token" => {
            let kind = if grant_type == JWT_BEARER_GRANT {
                GrantKind::OnBehalfOf
            } else {
                GrantKind::RefreshToken
            };
            let result = ClaimsRequest::parse(form.get("claims")).and_then(|claims| match kind {
                GrantKind::OnBehalfOf => {
                    on_behalf_of(state, &tid, form, &claims).map(|b| (Grant::OnBehalfOf, b))
                }
                GrantKind::RefreshToken => {
                    refresh(state, &tid, form, &claims).map(|b| (Grant::Refresh, b))
                }
            });
            state.grants.lock().log.push(GrantRecord {
                grant: kind,
                scope: form.get("scope").unwrap_or_default().to_owned(),
                claims: form
                    .get("claims")
                    .and_then(|c| serde_json::from_str(c).ok()),
                succeeded: result.is_ok(),
            });
            result
        }
        "client_credentials" => {
            client_credentials(state, &tid, form).map(|b| (Grant::ClientCredentials, b))
        }
        other => Err(EntraError::bad_request(
            "unsupported_grant_type",
            70003,
            format!(
                "The app requested an unsupported grant type '{}'.",
                echo(other)
            ),
        )),
    }
}

/// The path tenant as a lower-case GUID. The emulator needs a tenant-specific authority, like
/// OBO does in real Entra.
pub(super) fn tenant_id(tenant: &str) -> Result<String, EntraError> {
    if ["common", "organizations", "consumers"].contains(&tenant.to_ascii_lowercase().as_str()) {
        return Err(EntraError::bad_request(
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please \
             use the /organizations or tenant-specific endpoint.",
        ));
    }
    match uuid::Uuid::try_parse(tenant) {
        Ok(id) if tenant.len() == 36 => Ok(id.hyphenated().to_string()),
        _ => Err(EntraError::bad_request(
            "invalid_request",
            90002,
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and \
                 are signing into the correct cloud.",
                echo(tenant)
            ),
        )),
    }
}

/// Requested scopes: those of exactly one resource plus optional OpenID Connect scopes.
#[derive(Debug)]
struct Scopes {
    resource: String,
    /// Permission names on the resource (`.default` included as is).
    permissions: Vec<String>,
    /// Requested OIDC scopes, in request order.
    oidc: Vec<String>,
}

impl Scopes {
    fn parse(raw: &str) -> Result<Self, EntraError> {
        let invalid = |message: String| EntraError::bad_request("invalid_scope", 70011, message);
        let mut resource: Option<&str> = None;
        let mut permissions = Vec::new();
        let mut oidc = Vec::new();
        for item in raw.split_whitespace() {
            if OIDC_SCOPES.contains(&item) {
                if !oidc.iter().any(|s| s == item) {
                    oidc.push(item.to_owned());
                }
                continue;
            }
            let Some((item_resource, permission)) = item.rsplit_once('/') else {
                return Err(invalid(format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope \
                     '{}' does not name a resource.",
                    echo(item)
                )));
            };
            if item_resource.is_empty() || permission.is_empty() {
                return Err(invalid(format!(
                    "The provided value for the input parameter 'scope' is not valid. The scope \
                     '{}' is not valid.",
                    echo(item)
                )));
            }
            match resource {
                Some(known) if known != item_resource => {
                    return Err(invalid(
                        "The provided value for the input parameter 'scope' is not valid. Scopes \
                         of more than one resource were requested."
                            .to_owned(),
                    ))
                }
                _ => resource = Some(item_resource),
            }
            if !permissions.iter().any(|p| p == permission) {
                permissions.push(permission.to_owned());
            }
        }
        let Some(resource) = resource else {
            return Err(invalid(
                "The provided value for the input parameter 'scope' is not valid. A scope of a \
                 resource is required."
                    .to_owned(),
            ));
        };
        if permissions.len() > 1 && permissions.iter().any(|p| p == ".default") {
            return Err(invalid(
                "The provided value for the input parameter 'scope' is not valid. The '.default' \
                 scope can't be combined with resource-specific scopes."
                    .to_owned(),
            ));
        }
        Ok(Self {
            resource: resource.to_owned(),
            permissions,
            oidc,
        })
    }

    fn wants(&self, oidc_scope: &str) -> bool {
        self.oidc.iter().any(|s| s == oidc_scope)
    }

    /// The `scp` of the issued access token: `.default` stands for `User.Read`.
    fn granted_permissions(&self) -> String {
        if self.permissions.iter().any(|p| p == ".default") {
            DEFAULT_DELEGATED_SCOPE.to_owned()
        } else {
            self.permissions.join(" ")
        }
    }

    /// The `scope` field of the answer: granted permissions with the resource prefix, then the
    /// requested OIDC scopes.
    fn granted(&self) -> String {
        let permissions = self.granted_permissions();
        let mut scopes: Vec<String> = permissions
            .split(' ')
            .map(|p| format!("{}/{p}", self.resource))
            .collect();
        scopes.extend(self.oidc.iter().cloned());
        scopes.join(" ")
    }
}

fn invalid_grant(code: u32, message: impl Into<String>) -> EntraError {
    EntraError::bad_request("invalid_grant", code, message)
}

fn on_behalf_of(
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

fn refresh(
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

fn client_credentials(state: &EntraState, tid: &str, form: &Form) -> Result<Value, EntraError> {
    let scope = form.require("scope")?;
    let mut items = scope.split_whitespace();
    let resource = match (items.next(), items.next()) {
        (Some(only), None) => only.strip_suffix("/.default").filter(|r| !r.is_empty()),
        _ => None,
    };
    let Some(resource) = resource else {
        return Err(EntraError::bad_request(
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {} is not valid. Client credential flows must have \
                 a scope value with /.default suffixed to the resource identifier (application \
                 ID URI).",
                echo(scope)
            ),
        ));
    };
    let own_app = resource == state.client_id || resource == format!("api://{}", state.client_id);
    let (aud, roles) = if own_app {
        let roles = state
            .grants
            .lock()
            .app_roles
            .get(&state.client_id)
            .cloned()
            .unwrap_or_default();
        (state.client_id.clone(), roles)
    } else {
        (resource.to_owned(), Vec::new())
    };
    let claims = state.issuer().client_credentials_claims(tid, &aud, &roles);
    let access_token = state.issue_token(&claims, TokenVersion::V2);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS - 1,
        "ext_expires_in": TOKEN_LIFETIME_SECS - 1,
        "access_token": access_token,
    }))
}

/// The scopes of a grant as stored with its refresh token.
fn scope_string(scopes: &Scopes) -> String {
    let mut items: Vec<String> = scopes
        .permissions
        .iter()
        .map(|p| format!("{}/{p}", scopes.resource))
        .collect();
    items.extend(scopes.oidc.iter().cloned());
    items.join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_need_exactly_one_resource() {
        let ok =
            Scopes::parse("https://r.test/.default offline_access openid profile").expect("valid");
        assert_eq!(ok.resource, "https://r.test");
        assert_eq!(
            ok.granted(),
            "https://r.test/User.Read offline_access openid profile"
        );
        let explicit = Scopes::parse("api://x/Files.Read api://x/Mail.Send").expect("valid");
        assert_eq!(explicit.granted_permissions(), "Files.Read Mail.Send");

        for bad in [
            "",
            "openid profile",
            "User.Read",
            "https://a.test/.default https://b.test/.default",
            "https://a.test/.default https://a.test/Mail.Read",
            "/x",
            "https://a.test/",
        ] {
            let error = Scopes::parse(bad).expect_err(bad);
            assert_eq!(
                (error.error(), error.code()),
                ("invalid_scope", 70011),
                "{bad}"
            );
        }
    }

    #[test]
    fn tenants_must_be_guids() {
        assert_eq!(
            tenant_id("8EAEF023-2B34-4DA1-9BAA-8BC8C9D6A490").expect("guid"),
            "8eaef023-2b34-4da1-9baa-8bc8c9d6a490"
        );
        assert_eq!(tenant_id("common").expect_err("common").code(), 9001023);
        for bad in [
            "x",
            "8eaef0232b344da19baa8bc8c9d6a490",
            "{8eaef023-2b34-4da1-9baa-8bc8c9d6a490}",
        ] {
            assert_eq!(tenant_id(bad).expect_err(bad).code(), 90002);
        }
    }
}
