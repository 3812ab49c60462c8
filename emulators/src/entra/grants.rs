//! The token endpoint, `POST /{tenant}/oauth2/v2.0/token`: the request's form, its tenant,
//! client authentication, the choice of grant and the client-credentials grant. The grants
//! that act for a user (on-behalf-of, refresh token) are in [`user`]; the requested scopes
//! are read by [`scopes`].
//!
//! Client authentication (secret, certificate or federated assertion) is in
//! [`super::client_auth`].
//!
//! Each grant runs synchronously under short locks; signing happens outside them.

mod scopes;
mod user;

use std::time::Instant;
use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use super::{
    claims::ClaimsRequest,
    client_auth::authenticate_client,
    errors::{echo, EntraError},
    tokens::TOKEN_LIFETIME_SECS,
    EntraState, TokenVersion,
};
use super::{GrantKind, GrantRecord};
use crate::faults::Outcome;
use user::{on_behalf_of, refresh};

const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

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
            // that were due meanwhile. Real Entra limits a caller by request rate, answering
            // over the limit at once (429 with Retry-After for client credentials, AADSTS50196
            // for user-facing grants), not by queueing one request behind another's work:
            // https://learn.microsoft.com/entra/msal/dotnet/advanced/client-and-server-throttling
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

#[cfg(test)]
mod tests {
    use super::*;

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
