//! Reading request bodies into our error shape: 413 over the limit, 415 for a non-JSON
//! content type, 400 for anything that is not a JSON object of the expected form.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use super::problem::ApiError;

/// The raw body, or the right problem when it could not be read.
pub(crate) fn bytes(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::InvalidRequest("the request body could not be read".into())
        }
    })
}

/// Parses a JSON object body. An empty body is `None`.
pub(crate) fn json_object<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be application/json".into(),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        ApiError::InvalidRequest(format!(
            "the body is not valid JSON ({})",
            error.classify_name()
        ))
    })?;
    // serde would also read a struct from a JSON array; only objects are accepted.
    if !value.is_object() {
        return Err(ApiError::InvalidRequest(
            "the body must be a JSON object".into(),
        ));
    }
    // Read from the bytes, not the `Value`: a `Value` keeps only the last of duplicate keys,
    // while the typed read refuses `{"userId": a, "userId": b}`, which other parsers (a
    // gateway, a log scanner) may read as `a`.
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|error| ApiError::InvalidRequest(format!("invalid body: {error}")))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "unexpected end",
        }
    }
}
