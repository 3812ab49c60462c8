//! The downstream API emulator: a Graph-like API under `/v1.0` that only accepts access tokens
//! the Entra emulator issued for its resource, and echoes what it received.
//!
//! - Any method on any path under `/v1.0/`: with a valid token, `200` and an echo
//!   `{"oid","tid","scp","method","path","query","headers","body"}`; `GET /v1.0/me` adds
//!   `displayName` and `id`. `body` is the parsed JSON body, `null` when empty, or the text
//!   when it is not JSON. `headers` holds the lower-cased non-standard request headers (never
//!   `Authorization`, cookies or hop-by-hop headers).
//! - `/v1.0/status/{code}` answers that status (200..=599) with a small JSON body.
//! - A missing, malformed, foreign-signed, wrong-audience, expired or not-yet-valid token gets
//!   `401` `{"error":{"code":"InvalidAuthenticationToken",…}}` like Graph.
//! - Continuous Access Evaluation: after [`DownstreamEmulator::revoke_sessions`] a CAE token
//!   (one whose `xms_cc` holds `cp1`) of that user issued before the revocation gets `401` with
//!   Graph's claims challenge, `WWW-Authenticate: Bearer realm="", authorization_uri=…,
//!   error="insufficient_claims", claims="<base64 of {"access_token":{"nbf":{"essential":true,
//!   "value":"<revocation time>"}}}>"` ("How to use Continuous Access Evaluation enabled APIs in
//!   your applications", learn.microsoft.com/entra/identity-platform/
//!   app-resilience-continuous-access-evaluation). Tokens without the capability are not
//!   challenged: resources send claims challenges only to clients that declared they handle
//!   them (learn.microsoft.com/entra/identity-platform/claims-challenge).
//!
//! Several APIs, each with its own audience, run as several emulators (see `Stack`).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::any,
    Json, Router,
};
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::{
    entra::display_name,
    faults::{Fault, Faults, Outcome},
    signing::KeyStore,
};

/// Path prefix of the API, as in Graph.
const API_PREFIX: &str = "/v1.0";

/// Request headers never echoed: standard, hop-by-hop or credential-bearing ones.
const HIDDEN_HEADERS: [&str; 16] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "content-type",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
];

/// Counters since start or the last [`DownstreamEmulator::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DownstreamStats {
    /// Every request received under `/v1.0` (answered, faulted or rejected).
    pub requests: u64,
    /// Requests answered `401` for a missing or invalid token.
    pub unauthorized: u64,
}

/// A user's sessions revoked at `at` (Unix seconds): the CAE tokens seen until then stay
/// refused even if issued within that second.
#[derive(Default)]
struct Revocation {
    at: i64,
    revoked: HashSet<String>,
}

struct DownstreamState {
    /// `https://127.0.0.1:{port}/v1.0`.
    base_url: String,
    /// The `aud` tokens must carry.
    resource: String,
    keys: Arc<KeyStore>,
    faults: Faults,
    requests: AtomicU64,
    unauthorized: AtomicU64,
    /// `uti` of every CAE token accepted, per (tenant, user).
    seen: Mutex<HashMap<(String, String), HashSet<String>>>,
    revocations: Mutex<HashMap<(String, String), Revocation>>,
}

/// Handle to a running downstream API emulator. Clones share the same emulator.
#[derive(Clone)]
pub struct DownstreamEmulator {
    state: Arc<DownstreamState>,
}

impl std::fmt::Debug for DownstreamEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownstreamEmulator")
            .field("base_url", &self.state.base_url)
            .field("resource", &self.state.resource)
            .finish_non_exhaustive()
    }
}

impl DownstreamEmulator {
    /// An emulator at `origin` (`https://127.0.0.1:{port}`) accepting tokens for `resource`
    /// signed by `keys`.
    pub(crate) fn new(origin: &str, resource: &str, keys: Arc<KeyStore>) -> Self {
        Self {
            state: Arc::new(DownstreamState {
                base_url: format!("{origin}{API_PREFIX}"),
                resource: resource.to_owned(),
                keys,
                faults: Faults::default(),
                requests: AtomicU64::new(0),
                unauthorized: AtomicU64::new(0),
                seen: Mutex::new(HashMap::new()),
                revocations: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `https://127.0.0.1:{port}/v1.0` (`OBOVAULT_DOWNSTREAM_BASE_URL`).
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    /// The resource (token audience) the API accepts.
    pub fn resource(&self) -> &str {
        &self.state.resource
    }

    /// Revokes the user's sessions now, as a CAE critical event (password reset, user disabled,
    /// admin revocation) does: CAE tokens of the user issued until now are answered with a
    /// claims challenge; tokens issued later pass.
    pub fn revoke_sessions(&self, tid: &str, oid: &str) {
        let user = (tid.to_owned(), oid.to_owned());
        let revoked = self.state.seen.lock().remove(&user).unwrap_or_default();
        let mut revocations = self.state.revocations.lock();
        let revocation = revocations.entry(user).or_default();
        revocation.at = chrono::Utc::now().timestamp();
        revocation.revoked.extend(revoked);
    }

    /// Queues a fault for the next `fault.times` requests.
    /// [`crate::FaultKind::InvalidClient`] is ignored here.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.inject(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Answers every request this long after it arrived (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.state.faults.set_latency(latency);
    }

    /// Counters since start or the last reset.
    pub fn stats(&self) -> DownstreamStats {
        DownstreamStats {
            requests: self.state.requests.load(Ordering::Relaxed),
            unauthorized: self.state.unauthorized.load(Ordering::Relaxed),
        }
    }

    /// Sets every counter to zero.
    pub fn reset_stats(&self) {
        self.state.requests.store(0, Ordering::Relaxed);
        self.state.unauthorized.store(0, Ordering::Relaxed);
    }
}

/// The emulator's router.
pub(crate) fn router(emulator: &DownstreamEmulator) -> Router {
    let state = Arc::clone(&emulator.state);
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let state = Arc::clone(&state);
        async move {
            state.requests.fetch_add(1, Ordering::Relaxed);
            state
                .faults
                .answer(|outcome| async { handle(&state, outcome, method, uri, headers, body) })
                .await
        }
    };
    Router::new()
        .route(API_PREFIX, any(handler.clone()))
        .route(&format!("{API_PREFIX}/"), any(handler.clone()))
        .route(&format!("{API_PREFIX}/{{*rest}}"), any(handler))
}

fn handle(
    state: &DownstreamState,
    outcome: Outcome,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match outcome {
        Outcome::Proceed | Outcome::InvalidClient => {}
        Outcome::Drop(response) => return response,
        Outcome::Respond {
            status,
            retry_after_secs,
        } => {
            let mut response = graph_error(status, "ServiceError", "Injected fault.");
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return response;
        }
    }
    let claims = match authenticate(state, &headers) {
        Ok(claims) => match cae_challenge(state, &claims) {
            None => claims,
            Some(response) => {
                state.unauthorized.fetch_add(1, Ordering::Relaxed);
                return response;
            }
        },
        Err(message) => {
            state.unauthorized.fetch_add(1, Ordering::Relaxed);
            let mut response = graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                message,
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"\", error=\"invalid_token\""),
            );
            return response;
        }
    };
    let path = match uri.path().strip_prefix(API_PREFIX) {
        Some("") | None => "/",
        Some(path) => path,
    };
    if let Some(code) = path.strip_prefix("/status/") {
        return status_response(code);
    }
    let claim = |name: &str| claims.get(name).cloned().unwrap_or(Value::Null);
    let mut echo = json!({
        "oid": claim("oid"),
        "tid": claim("tid"),
        "scp": claim("scp"),
        "method": method.as_str(),
        "path": path,
        "query": query_object(uri.query()),
        "headers": echoed_headers(&headers),
        "body": parse_body(&body),
    });
    if method == Method::GET && path == "/me" {
        if let (Value::Object(fields), Some(oid)) =
            (&mut echo, claims.get("oid").and_then(Value::as_str))
        {
            fields.insert("displayName".into(), display_name(oid).into());
            fields.insert("id".into(), oid.into());
        }
    }
    Json(echo).into_response()
}

/// Checks the bearer token; the error is Graph's message for the failure.
fn authenticate(state: &DownstreamState, headers: &HeaderMap) -> Result<Value, &'static str> {
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
fn cae_challenge(state: &DownstreamState, claims: &Value) -> Option<Response> {
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

/// Graph's error body, `{"error": {"code", "message", "innerError": {...}}}`.
fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
                "request-id": request_id,
                "client-request-id": request_id,
            },
        },
    });
    (status, Json(body)).into_response()
}

/// `/v1.0/status/{code}`: that status with a small JSON body (none for 204 and 304).
fn status_response(code: &str) -> Response {
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The status must be a number from 200 to 599.",
        );
    };
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Response::builder()
            .status(status)
            .body(Body::empty())
            .unwrap_or_default();
    }
    if status.is_client_error() || status.is_server_error() {
        return graph_error(
            status,
            "EmulatedStatus",
            &format!("Emulated status {}.", status.as_u16()),
        );
    }
    (status, Json(json!({ "status": status.as_u16() }))).into_response()
}

fn query_object(query: Option<&str>) -> Value {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        fields
            .entry(name.into_owned())
            .or_insert_with(|| value.into_owned().into());
    }
    Value::Object(fields)
}

fn echoed_headers(headers: &HeaderMap) -> Value {
    let mut echoed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str(); // already lower-case
        if HIDDEN_HEADERS.contains(&name) {
            continue;
        }
        echoed
            .entry(name.to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    Value::Object(
        echoed
            .into_iter()
            .map(|(name, values)| (name, Value::from(values.join(", "))))
            .collect(),
    )
}

fn parse_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_paths_are_bounded() {
        assert_eq!(status_response("404").status(), StatusCode::NOT_FOUND);
        assert_eq!(status_response("204").status(), StatusCode::NO_CONTENT);
        assert_eq!(status_response("201").status(), StatusCode::CREATED);
        for bad in ["", "99", "600", "abc", "101", "4044"] {
            assert_eq!(
                status_response(bad).status(),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_hide_credentials_and_standard_ones() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        headers.insert("ConsistencyLevel", HeaderValue::from_static("eventual"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(
            echoed_headers(&headers),
            json!({"consistencylevel": "eventual"})
        );
    }
}
