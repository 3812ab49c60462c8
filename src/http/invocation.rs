//! JSON invocations (the host's default protocol): the timer, and the HTTP functions when
//! request forwarding is off. An HTTP invocation's `Data.req` is replayed through the same
//! router as a forwarded request, and the answer is wrapped into `Outputs.res`, so both modes
//! behave identically. Answers are `200 application/json` with a non-empty body (the host
//! discards `Logs` of any other answer), except a timer run that could not start: that one is
//! a `500` problem, because only a non-2xx answer makes the host record a failed invocation
//! and apply the function's retry policy.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State as AxumState};
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tower::ServiceExt as _;

use super::problem::ApiError;
use super::BODY_LIMIT;
use crate::app::App;
use crate::usecase::refresh_all::{self, RunOptions};

/// What the invocation endpoints need.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) app: Arc<App>,
    pub(crate) api: Router,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Envelope {
    #[serde(default)]
    data: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HttpTriggerData {
    #[serde(default)]
    url: Option<String>,
    method: String,
    #[serde(default)]
    query: Value,
    #[serde(default)]
    headers: Map<String, Value>,
    #[serde(default)]
    body: Option<Value>,
}

/// `POST /setup`, `POST /do-work`: an HTTP function invoked in JSON mode.
pub(crate) async fn http_function(
    AxumState(state): AxumState<State>,
    OriginalUri(uri): OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let function = uri.path().trim_start_matches('/').to_owned();
    tracing::warn!(function = %function, "JSON invocation of an HTTP function: is enableForwardingHttpRequest off?");
    // A malformed envelope is not a host call: it gets a plain problem answer.
    let request = match replayed_request(&function, body) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let inner = state
        .api
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    match http_output(inner).await {
        Ok(output) => Json(output).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /refresh-tokens`: the timer. The envelope is read leniently; nothing in it changes
/// what a run does. Only a body over the envelope limit (never a host call) is refused, as 413.
pub(crate) async fn timer(
    AxumState(state): AxumState<State>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match super::body::bytes(body) {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let past_due = serde_json::from_slice::<Envelope>(&body)
        .ok()
        .and_then(|envelope| envelope.data.get("timer").cloned())
        .and_then(|timer| timer.get("IsPastDue").and_then(Value::as_bool))
        .unwrap_or(false);
    let app = &state.app;
    let options = RunOptions {
        reseal_only: false,
        time_budget: app.refresh.time_budget,
        concurrency: app.refresh.concurrency,
    };
    match refresh_all::run(&app.deps, options, &|_| {}).await {
        Ok(summary) => {
            if let Some(telemetry) = &app.telemetry {
                telemetry.timer_run(&summary, app.store.as_ref()).await;
            }
            let mut logs = vec![summary.line()];
            // Pending grant events go out before the timer answers (SPEC §6).
            logs.extend(crate::events::delivery::timer_flush(app).await);
            Json(json!({ "Outputs": {}, "Logs": logs, "ReturnValue": null })).into_response()
        }
        Err(error) => {
            tracing::error!(
                error = %super::problem::format_chain(&error),
                past_due,
                "refresh-tokens run could not start"
            );
            run_not_started(&error.to_string())
        }
    }
}

/// `500` for a timer run that could not start; `why` is a fixed text without internals.
pub(crate) fn run_not_started(why: &str) -> Response {
    let body = json!({
        "type": "https://obo-vault.dev/problems/run_not_started",
        "title": "Internal Server Error",
        "status": 500,
        "detail": format!("refresh-tokens could not start: {why}; the host retries per the function's retry policy."),
        "error": "run_not_started",
    });
    let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

fn replayed_request(
    function: &str,
    body: Result<Bytes, BytesRejection>,
) -> Result<Request<Body>, ApiError> {
    let body = super::body::bytes(body)?;
    replay_envelope(function, &body)
}

/// Reads the JSON invocation of the HTTP function `function` (`setup`, `do-work`) into the
/// request replayed through the API router. Public so that the fuzz targets in `fuzz/` reach
/// the envelope parser.
pub fn replay_envelope(function: &str, body: &[u8]) -> Result<Request<Body>, ApiError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|_| {
        ApiError::InvalidRequest("the invocation is not a JSON object with Data".into())
    })?;
    let req = envelope
        .data
        .get("req")
        .cloned()
        .ok_or_else(|| ApiError::InvalidRequest("the invocation has no Data.req".into()))?;
    let req: HttpTriggerData = serde_json::from_value(req)
        .map_err(|_| ApiError::InvalidRequest("Data.req is not an HTTP request".into()))?;
    let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ApiError::InvalidRequest("Data.req.Method is not an HTTP method".into()))?;
    let query = query_string(&req)?;
    let uri = match query {
        Some(query) => format!("/api/{function}?{query}"),
        None => format!("/api/{function}"),
    };
    let payload = match req.body {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.into_bytes(),
        // Older hosts sent JSON bodies as objects.
        Some(other) => other.to_string().into_bytes(),
    };
    if payload.len() > BODY_LIMIT {
        return Err(ApiError::PayloadTooLarge);
    }
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(payload))
        .map_err(|_| ApiError::InvalidRequest("Data.req does not form a valid request".into()))?;
    for (name, values) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "content-length" | "transfer-encoding" | "host" | "connection"
        ) {
            continue;
        }
        let name = HeaderName::from_bytes(lower.as_bytes())
            .map_err(|_| ApiError::InvalidRequest("Data.req.Headers has an invalid name".into()))?;
        let values = match values {
            Value::Array(items) => items.clone(),
            single => vec![single.clone()],
        };
        for value in values {
            let Value::String(text) = value else {
                return Err(ApiError::InvalidRequest(
                    "Data.req.Headers values must be strings".into(),
                ));
            };
            let value = HeaderValue::from_str(&text).map_err(|_| {
                ApiError::InvalidRequest("Data.req.Headers has an invalid value".into())
            })?;
            request.headers_mut().append(name.clone(), value);
        }
    }
    Ok(request)
}

/// The query of the original URL, or (without `Url`) rebuilt from the `Query` map.
fn query_string(req: &HttpTriggerData) -> Result<Option<String>, ApiError> {
    if let Some(url) = &req.url {
        let url = url::Url::parse(url)
            .map_err(|_| ApiError::InvalidRequest("Data.req.Url is not a URL".into()))?;
        return Ok(url.query().map(str::to_owned));
    }
    let Value::Object(map) = &req.query else {
        return Ok(None);
    };
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (key, value) in map {
        if let Value::String(text) = value {
            serializer.append_pair(key, text);
        }
    }
    let query = serializer.finish();
    Ok((!query.is_empty()).then_some(query))
}

pub(crate) async fn http_output(response: Response) -> Result<Value, ApiError> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 8 * 1024 * 1024)
        .await
        .map_err(|_| {
            ApiError::Internal(anyhow::anyhow!("the replayed response could not be read"))
        })?;
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Ok(json!({
        "Outputs": {
            "res": {
                "statusCode": parts.status.as_u16(),
                "headers": headers,
                "body": String::from_utf8_lossy(&bytes),
            }
        },
        "Logs": [],
        "ReturnValue": null,
    }))
}
