//! The Functions custom-handler protocol on axum (SPEC §2-§3).
//!
//! Forwarded HTTP requests arrive on `/api/setup` and `/api/do-work`; JSON invocations of the
//! same functions on `/setup` and `/do-work` are replayed through the same router
//! (`invocation`); the timer arrives on `/refresh-tokens`; `GET /` answers the host's
//! readiness probe at once.

mod auth;
mod body;
mod do_work;
mod invocation;
pub mod problem;
mod setup;
pub(crate) mod starting;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderName};
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::app::App;
pub use invocation::replay_envelope;
use problem::ApiError;

/// Largest request body accepted (forwarded or inside a JSON invocation).
pub const BODY_LIMIT: usize = 256 * 1024;
/// Largest JSON invocation envelope: the body limit plus room for headers and metadata.
const ENVELOPE_LIMIT: usize = BODY_LIMIT * 2 + 64 * 1024;

/// The whole app.
pub fn router(app: Arc<App>) -> Router {
    let api = api_router(app.clone());
    let telemetry = app.telemetry.clone();
    let router = Router::new()
        .route("/", get(|| async { "obo-vault ready" }))
        // Invocations are POSTs; any other method gets our 405 problem, not axum's bare one.
        .route(
            "/setup",
            post(invocation::http_function).fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .route(
            "/do-work",
            post(invocation::http_function).fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .route(
            "/refresh-tokens",
            post(invocation::timer).fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .layer(DefaultBodyLimit::max(ENVELOPE_LIMIT))
        .with_state(invocation::State {
            app,
            api: api.clone(),
        })
        .merge(api)
        .fallback(|| async { ApiError::NotFound })
        .layer(CatchPanicLayer::custom(|_| {
            // The panic message is not logged: it could quote a value we were handling.
            ApiError::Internal(anyhow::anyhow!("a handler panicked")).into_response()
        }));
    // Server spans only when an exporter is configured: otherwise no layer at all.
    crate::telemetry::server::traced(router, telemetry)
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            HeaderName::from_static("x-functions-key"),
            HeaderName::from_static("x-ms-token-aad-access-token"),
            HeaderName::from_static("x-ms-token-aad-id-token"),
        ]))
}

/// The forwarded HTTP functions.
fn api_router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/api/setup",
            get(setup::status)
                .post(setup::connect)
                .delete(setup::disconnect)
                .fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .route(
            "/api/do-work",
            post(do_work::do_work).fallback(|| async { ApiError::MethodNotAllowed }),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}

fn request_span(request: &Request) -> tracing::Span {
    let invocation_id = request
        .headers()
        .get("x-azure-functions-invocationid")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 64 && v.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
        .unwrap_or("");
    // The path only: the query may carry the function key (`code`).
    tracing::info_span!(
        "request",
        http.method = %request.method(),
        http.path = %request.uri().path(),
        invocation.id = %invocation_id,
        caller.app_id = tracing::field::Empty,
        caller.tenant_id = tracing::field::Empty,
    )
}
