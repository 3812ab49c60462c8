//! What the API answers to a caller it accepts: the echo of the request (query, the
//! non-standard headers, the body) and the `/v1.0/status/{code}` answers.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::graph_error;

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

/// `/v1.0/status/{code}`: that status with a small JSON body (none for 204 and 304).
pub(super) fn status_response(code: &str) -> Response {
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

pub(super) fn query_object(query: Option<&str>) -> Value {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        fields
            .entry(name.into_owned())
            .or_insert_with(|| value.into_owned().into());
    }
    Value::Object(fields)
}

pub(super) fn echoed_headers(headers: &HeaderMap) -> Value {
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

pub(super) fn parse_body(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(body).into_owned()))
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderValue};

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
