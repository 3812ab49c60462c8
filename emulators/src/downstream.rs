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
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::any,
    Json, Router,
};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::{
    entra::display_name,
    faults::{Fault, Faults, Outcome},
    signing::KeyStore,
};

mod auth;
mod echo;

use auth::{authenticate, cae_challenge};
use echo::{echoed_headers, parse_body, query_object, status_response};

/// Path prefix of the API, as in Graph.
const API_PREFIX: &str = "/v1.0";

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
