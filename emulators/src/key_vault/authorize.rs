//! In front of every route: Key Vault's `401` challenge for a request without a bearer token
//! (the SDK's first request), the `api-version` check, then injected faults and latency.

use std::sync::{atomic::Ordering, Arc};

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::Response,
};

use super::errors::{add_service_headers, injected_error, kv_error};
use super::KeyVaultState;
use crate::faults::Outcome;

/// Challenge, api-version check, then faults: in front of every route.
pub(super) async fn authorize(
    State(state): State<Arc<KeyVaultState>>,
    request: Request,
    next: Next,
) -> Response {
    let has_bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
        });
    if !has_bearer {
        state.counters.challenges.fetch_add(1, Ordering::Relaxed);
        let mut response = kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: Request is missing a Bearer or PoP token.",
            None,
        );
        let challenge = format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            state.tenant_id
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        return response;
    }
    let has_api_version = request.uri().query().is_some_and(|query| {
        form_urlencoded::parse(query.as_bytes())
            .any(|(name, value)| name == "api-version" && !value.is_empty())
    });
    if !has_api_version {
        return kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The 'api-version' query parameter is missing.",
            None,
        );
    }
    state
        .faults
        .answer(|outcome| async move {
            match outcome {
                Outcome::Proceed | Outcome::InvalidClient => {
                    let mut response = next.run(request).await;
                    add_service_headers(&mut response);
                    response
                }
                Outcome::Drop(response) => response,
                Outcome::Respond {
                    status,
                    retry_after_secs,
                } => injected_error(status, retry_after_secs),
            }
        })
        .await
}
