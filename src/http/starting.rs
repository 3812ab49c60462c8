//! Answers while the database is not open yet (SPEC §2): the host's readiness probe `GET /`
//! gets `503` + `Retry-After` (any answer counts as "started" for the host, so it stops
//! waiting, and health checks see the truth), forwarded calls of the HTTP functions get our
//! `503 unavailable` problem, JSON invocations of them the same answer inside `Outputs.res`,
//! and the timer a `500` so that the host records a failed run and applies its retry policy.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Json;

use super::invocation;
use super::problem::ApiError;

/// How long callers are asked to wait: the store is retried at least this often.
const RETRY_AFTER: Duration = Duration::from_secs(5);

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        what: "the database",
        retry_after: RETRY_AFTER,
    }
}

/// The answer to `request` before the app can serve.
pub(crate) async fn answer(request: Request) -> Response {
    let path = request.uri().path();
    match (request.method(), path) {
        (&Method::GET, "/") => {
            let mut response = (
                StatusCode::SERVICE_UNAVAILABLE,
                "obo-vault starting: the database is not reachable yet",
            )
                .into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            );
            response
        }
        (&Method::POST, "/refresh-tokens") => {
            invocation::run_not_started("the database is unavailable")
        }
        (&Method::POST, "/setup" | "/do-work") => {
            match invocation::http_output(unavailable().into_response()).await {
                Ok(output) => Json(output).into_response(),
                Err(error) => error.into_response(),
            }
        }
        (_, path) if path.starts_with("/api/") => unavailable().into_response(),
        _ => ApiError::NotFound.into_response(),
    }
}
