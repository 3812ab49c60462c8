//! The checks a workload's request passes before anything is sent: method, path (character
//! allow-list, allowed prefixes, still under the base URL), query size and headers.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;

use super::DownstreamError;

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
/// Most query parameters a workload may pass.
const MAX_QUERY_ENTRIES: usize = 50;

/// `request.method`: the methods a downstream call may use; `GET` when absent.
pub(super) fn method(method: Option<&str>) -> Result<reqwest::Method, DownstreamError> {
    match method.unwrap_or("GET").to_ascii_uppercase().as_str() {
        "GET" => Ok(reqwest::Method::GET),
        "POST" => Ok(reqwest::Method::POST),
        "PUT" => Ok(reqwest::Method::PUT),
        "PATCH" => Ok(reqwest::Method::PATCH),
        "DELETE" => Ok(reqwest::Method::DELETE),
        _ => Err(DownstreamError::InvalidRequest(
            "request.method must be GET, POST, PUT, PATCH or DELETE".into(),
        )),
    }
}

/// The URL of `path` under `base`, with the workload's `query`.
pub(super) fn url(
    base: &Url,
    path: &str,
    allowed_prefixes: &[String],
    query: Option<&BTreeMap<String, String>>,
) -> Result<Url, DownstreamError> {
    check_path(path, allowed_prefixes)?;
    let mut url = join(base, path)?;
    if let Some(query) = query {
        if query.len() > MAX_QUERY_ENTRIES {
            return Err(DownstreamError::InvalidRequest(
                "request.query has too many entries".into(),
            ));
        }
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// `request.headers`, each allow-listed.
pub(super) fn headers(
    headers: Option<BTreeMap<String, String>>,
) -> Result<Vec<(HeaderName, HeaderValue)>, DownstreamError> {
    headers
        .unwrap_or_default()
        .into_iter()
        .map(|(name, value)| check_header(&name, &value))
        .collect()
}

/// `request.body`: JSON, never with `GET` or `DELETE`.
pub(super) fn body(
    body: Option<Value>,
    method: &reqwest::Method,
) -> Result<Option<Value>, DownstreamError> {
    let body = body.filter(|b| !b.is_null());
    if body.is_some() && matches!(*method, reqwest::Method::GET | reqwest::Method::DELETE) {
        return Err(DownstreamError::InvalidRequest(format!(
            "request.body is not allowed with {method}"
        )));
    }
    Ok(body)
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
