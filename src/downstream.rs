//! The built-in work of do-work: one call to the downstream API with the user's access token.
//!
//! The workload only chooses a relative path under `OBOVAULT_DOWNSTREAM_BASE_URL` within
//! `OBOVAULT_DOWNSTREAM_ALLOWED_PATHS`. Paths are checked against a character allow-list
//! first (no `%`, `\`, `@`, `:`, `?`, `#`, whitespace or control characters; no `//` and no
//! dot segments), then the joined URL is checked to still be on the configured origin and
//! under the base path: nothing a caller sends can point the token somewhere else.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::config::DownstreamSettings;
use crate::domain::AccessToken;

/// Request headers a workload may pass through; everything else is refused.
const ALLOWED_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "consistencylevel",
    "if-match",
    "if-none-match",
    "prefer",
];
const MAX_PATH_LEN: usize = 2048;
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
        let method = match unverified
            .method
            .as_deref()
            .unwrap_or("GET")
            .to_ascii_uppercase()
            .as_str()
        {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            "PUT" => reqwest::Method::PUT,
            "PATCH" => reqwest::Method::PATCH,
            "DELETE" => reqwest::Method::DELETE,
            _ => {
                return Err(DownstreamError::InvalidRequest(
                    "request.method must be GET, POST, PUT, PATCH or DELETE".into(),
                ))
            }
        };
        let path = match unverified.path {
            Some(path) => path,
            None => self.settings.allowed_paths[0].clone(),
        };
        check_path(&path, &self.settings.allowed_paths)?;
        let mut url = join(&self.settings.base_url, &path)?;
        if let Some(query) = &unverified.query {
            if query.len() > 50 {
                return Err(DownstreamError::InvalidRequest(
                    "request.query has too many entries".into(),
                ));
            }
            url.query_pairs_mut().extend_pairs(query);
        }
        let headers = unverified
            .headers
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| check_header(&name, &value))
            .collect::<Result<Vec<_>, _>>()?;
        let body = unverified.body.filter(|b| !b.is_null());
        if body.is_some() && matches!(method, reqwest::Method::GET | reqwest::Method::DELETE) {
            return Err(DownstreamError::InvalidRequest(format!(
                "request.body is not allowed with {method}"
            )));
        }
        Ok(DownstreamRequest {
            method,
            path,
            url,
            headers,
            body,
        })
    }

    /// Calls the downstream API. A downstream 4xx/5xx is a successful call: it is reported in
    /// the envelope.
    #[tracing::instrument(skip_all, fields(http.method = %request.method, downstream.path = %request.path))]
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
        let response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let claims_challenge = (status == 401)
            .then(|| crate::claims::challenge(response.headers()))
            .flatten();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_limited(response).await?;
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
}

async fn read_limited(response: reqwest::Response) -> Result<Vec<u8>, DownstreamError> {
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(classify)?;
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(DownstreamError::Unreachable);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

fn classify(error: reqwest::Error) -> DownstreamError {
    if error.is_timeout() {
        DownstreamError::Timeout
    } else {
        DownstreamError::Unreachable
    }
}

/// Checks a relative downstream path against the allow-list and the allowed prefixes.
pub fn check_path(path: &str, allowed_prefixes: &[String]) -> Result<(), DownstreamError> {
    let refuse = |why: &str| {
        Err(DownstreamError::PathNotAllowed(format!(
            "request.path {why}"
        )))
    };
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return refuse("must be 1 to 2048 characters");
    }
    if !path.starts_with('/') {
        return refuse("must start with /");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~/()',=$!*+;".contains(c);
    if let Some(bad) = path.chars().find(|c| !allowed(*c)) {
        return refuse(&format!(
            "contains a character that is not allowed ({})",
            if bad.is_ascii_graphic() {
                bad.to_string()
            } else {
                format!("U+{:04X}", bad as u32)
            }
        ));
    }
    if path.contains("//") {
        return refuse("must not contain //");
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return refuse("must not contain . or .. segments");
    }
    let under_prefix = allowed_prefixes.iter().any(|prefix| {
        path == prefix
            || path
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    });
    if !under_prefix {
        return refuse("is not under an allowed path");
    }
    Ok(())
}

fn join(base: &Url, path: &str) -> Result<Url, DownstreamError> {
    let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    let url = Url::parse(&joined).map_err(|_| {
        DownstreamError::PathNotAllowed("request.path is not a valid URL path".into())
    })?;
    // Defence in depth: the character checks above already make these impossible.
    let same_origin = url.origin() == base.origin();
    let under_base = url.path().starts_with(base.path().trim_end_matches('/'));
    if !same_origin || !under_base || url.query().is_some() || url.fragment().is_some() {
        return Err(DownstreamError::PathNotAllowed(
            "request.path leaves the downstream API".into(),
        ));
    }
    Ok(url)
}

fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), DownstreamError> {
    let lower = name.to_ascii_lowercase();
    if !ALLOWED_HEADERS.contains(&lower.as_str()) {
        return Err(DownstreamError::InvalidRequest(format!(
            "request.headers: {name} is not allowed (allowed: {})",
            ALLOWED_HEADERS.join(", ")
        )));
    }
    if value.len() > 1024 || !value.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
        return Err(DownstreamError::InvalidRequest(format!(
            "request.headers: {name} has an invalid value"
        )));
    }
    let name = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
        DownstreamError::InvalidRequest(format!("request.headers: {name} is not a header name"))
    })?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| DownstreamError::InvalidRequest("request.headers: invalid value".into()))?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes() -> Vec<String> {
        vec!["/me".into(), "/users".into()]
    }

    #[test]
    fn paths_under_an_allowed_prefix_pass() {
        for good in [
            "/me",
            "/me/messages",
            "/users/abc/photo",
            "/me/drive/root(path='x')",
        ] {
            assert!(check_path(good, &prefixes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn paths_that_could_leave_the_host_are_refused() {
        let cases = [
            "",
            "me",
            "//evil.example/me",
            "/me/../admin",
            "/me/./x",
            "/me/%2e%2e/admin",
            "/me%2F..",
            "/me\\..\\admin",
            "/me@evil.example",
            "https://evil.example/me",
            "/me?x=1",
            "/me#x",
            "/me/\u{0}",
            "/me/\n",
            "/me x",
            "/mes",
            "/admin",
            "/me//x",
            "/me/é",
            "/me:80",
        ];
        for bad in cases {
            assert!(
                check_path(bad, &prefixes()).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn joined_urls_stay_under_the_base() {
        let base = Url::parse("https://graph.example/v1.0").unwrap();
        assert_eq!(
            join(&base, "/me/x").unwrap().as_str(),
            "https://graph.example/v1.0/me/x"
        );
    }

    #[test]
    fn only_allow_listed_headers_pass() {
        assert!(check_header("ConsistencyLevel", "eventual").is_ok());
        assert!(check_header("Authorization", "Bearer x").is_err());
        assert!(check_header("Host", "evil").is_err());
        assert!(check_header("Prefer", "a\r\nb").is_err());
    }
}
