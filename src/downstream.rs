//! The built-in work of do-work: one call to the downstream API with the user's access token.
//!
//! The workload only chooses a relative path under `OBOVAULT_DOWNSTREAM_BASE_URL` within
//! `OBOVAULT_DOWNSTREAM_ALLOWED_PATHS`. Paths are checked against a character allow-list
//! first (no `%`, `\`, `@`, `:`, `?`, `#`, whitespace or control characters; no `//` and no
//! dot segments), then the joined URL is checked to still be on the configured origin and
//! under the base path: nothing a caller sends can point the token somewhere else.

use crate::outbound::SendTraced as _;
use std::collections::BTreeMap;

mod checks;

use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

pub use checks::check_path;

use crate::config::DownstreamSettings;
use crate::domain::AccessToken;
use crate::outbound::{read_limited, BodyError};

/// Downstream answers larger than this are refused rather than buffered.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What the workload asks the downstream API (the `request` of a do-work body).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnverifiedRequest {
    /// HTTP method; default `GET`.
    #[serde(default)]
    pub method: Option<String>,
    /// Path relative to the base URL; default the first allowed path.
    #[serde(default)]
    pub path: Option<String>,
    /// Query parameters.
    #[serde(default)]
    pub query: Option<BTreeMap<String, String>>,
    /// Extra request headers (allow-listed).
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    /// JSON body.
    #[serde(default)]
    pub body: Option<Value>,
}

/// A request that passed every check.
#[derive(Clone, Debug)]
pub struct DownstreamRequest {
    method: reqwest::Method,
    path: String,
    url: Url,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<Value>,
}

impl DownstreamRequest {
    /// The method, for the audit.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The relative path (no query), for the audit.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full URL the call goes to (for the fuzz targets in `fuzz/`).
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// The envelope do-work answers with.
#[derive(Clone, Debug, Serialize)]
pub struct DownstreamResponse {
    /// The downstream status.
    pub status: u16,
    /// The downstream content type.
    pub headers: BTreeMap<String, String>,
    /// JSON when the downstream answered JSON, else text.
    pub body: Value,
    /// On a 401 with `error="insufficient_claims"`: the challenge's decoded claims (JSON).
    /// Not part of the envelope: do-work answers the challenge itself.
    #[serde(skip)]
    pub claims_challenge: Option<String>,
}

/// Why a request was refused or the call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DownstreamError {
    /// The request is malformed (400 `invalid_request`).
    #[error("{0}")]
    InvalidRequest(String),
    /// The path is outside what is allowed (400 `path_not_allowed`).
    #[error("{0}")]
    PathNotAllowed(String),
    /// The downstream API did not answer in time (504).
    #[error("the downstream API did not answer in time")]
    Timeout,
    /// The downstream API could not be reached or answered unusably (502).
    #[error("the downstream API is unreachable")]
    Unreachable,
}

/// What do-work does with a user's access token. [`Downstream`], the built-in implementation,
/// proxies one call to `OBOVAULT_DOWNSTREAM_BASE_URL`; a team can put its own logic behind the
/// same contract (the token never leaves the implementation; the answer is the envelope).
#[async_trait::async_trait]
pub trait Work: Send + Sync {
    /// Checks the workload's `request`; a refusal is a 400 and nothing is sent. Runs before any
    /// token is touched.
    fn prepare(
        &self,
        unverified: Option<UnverifiedRequest>,
    ) -> Result<DownstreamRequest, DownstreamError>;

    /// Acts with the user's access token and returns what the workload receives.
    async fn call(
        &self,
        request: &DownstreamRequest,
        token: &AccessToken,
    ) -> Result<DownstreamResponse, DownstreamError>;
}

/// The downstream API client: the built-in [`Work`].
pub struct Downstream {
    http: reqwest::Client,
    settings: DownstreamSettings,
}

impl Downstream {
    /// Wraps a client built by `outbound::client`.
    pub fn new(http: reqwest::Client, settings: DownstreamSettings) -> Self {
        Self { http, settings }
    }
}

#[async_trait::async_trait]
impl Work for Downstream {
    /// Checks a workload's request; nothing is sent.
    fn prepare(
        &self,
        unverified: Option<UnverifiedRequest>,
    ) -> Result<DownstreamRequest, DownstreamError> {
        let unverified = unverified.unwrap_or(UnverifiedRequest {
            method: None,
            path: None,
            query: None,
            headers: None,
            body: None,
        });
        let method = checks::method(unverified.method.as_deref())?;
        let path = match unverified.path {
            Some(path) => path,
            None => self.settings.allowed_paths[0].clone(),
        };
        let url = checks::url(
            &self.settings.base_url,
            &path,
            &self.settings.allowed_paths,
            unverified.query.as_ref(),
        )?;
        Ok(DownstreamRequest {
            headers: checks::headers(unverified.headers)?,
            body: checks::body(unverified.body, &method)?,
            method,
            path,
            url,
        })
    }

    /// Calls the downstream API. A downstream 4xx/5xx is a successful call: it is reported in
    /// the envelope. Its span is at `debug`: at `info` nothing is logged inside it, and the
    /// caller's span (do-work) and the audit line already name the user, method and path,
    /// so building and formatting it on every call would only cost.
    #[tracing::instrument(level = "debug", skip_all, fields(http.method = %request.method, downstream.path = %request.path))]
    async fn call(
        &self,
        request: &DownstreamRequest,
        token: &AccessToken,
    ) -> Result<DownstreamResponse, DownstreamError> {
        let mut builder = self
            .http
            .request(request.method.clone(), request.url.clone())
            .bearer_auth(token.expose());
        for (name, value) in &request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let response = builder
            .send_traced(crate::outbound::Dependency::Downstream)
            .await
            .map_err(classify)?;
        envelope(response).await
    }
}

/// The envelope of the downstream's answer: status, content type and body (JSON when it says
/// so and parses, else text), and a claims challenge when one came with a 401.
async fn envelope(response: reqwest::Response) -> Result<DownstreamResponse, DownstreamError> {
    let status = response.status().as_u16();
    let claims_challenge = (status == 401)
        .then(|| crate::claims::challenge(response.headers()))
        .flatten();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = read_limited(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|error| match error {
            BodyError::Transport(error) => classify(error),
            BodyError::TooLarge => DownstreamError::Unreachable,
        })?;
    let body = match &content_type {
        Some(kind) if kind.contains("json") => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        _ if bytes.is_empty() => Value::Null,
        _ => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    let mut headers = BTreeMap::new();
    if let Some(kind) = content_type {
        headers.insert("content-type".to_owned(), kind);
    }
    Ok(DownstreamResponse {
        status,
        headers,
        body,
        claims_challenge,
    })
}

fn classify(error: reqwest::Error) -> DownstreamError {
    if error.is_timeout() {
        DownstreamError::Timeout
    } else {
        DownstreamError::Unreachable
    }
}
