//! Claims requests (Continuous Access Evaluation): reading a downstream API's claims challenge,
//! and building the `claims` parameter of a grant from it and the client capabilities.
//!
//! A CAE-aware API (Microsoft Graph, …) answers a revoked or non-compliant token with `401` and
//! `WWW-Authenticate: Bearer realm="", authorization_uri="…", error="insufficient_claims",
//! claims="<base64 JSON>"` ("Claims challenges, claims requests and client capabilities",
//! learn.microsoft.com/entra/identity-platform/claims-challenge). The client redeems again with
//! the decoded JSON as the token request's `claims` parameter. An app that declares the client
//! capability `cp1` sends `{"access_token":{"xms_cc":{"values":["cp1"]}}}` on every request,
//! merged with any challenge, as MSAL does (MSAL.NET `ClaimsHelper.
//! GetMergedClaimsAndClientCapabilities`; MSAL Java `ClientCapabilities` / `ClaimsRequest`).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use serde_json::{json, Value};

/// Longest claims challenge taken (real ones are well under 1 KiB).
const MAX_CLAIMS_BYTES: usize = 8 * 1024;

/// The decoded claims of a `Bearer` challenge with `error="insufficient_claims"`, as compact
/// JSON; `None` for any other 401 (an expired or foreign token) or an unusable challenge.
pub fn challenge(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(challenge_in)
}

fn challenge_in(header: &str) -> Option<String> {
    let params = bearer_params(header)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    };
    if get("error") != Some("insufficient_claims") {
        return None;
    }
    decode(get("claims")?)
}

/// The auth-params of the `Bearer` challenge in a `WWW-Authenticate` value (RFC 9110 §11.6.1:
/// `scheme param=value, param="quoted", …`; several challenges may share one header).
fn bearer_params(header: &str) -> Option<Vec<(String, String)>> {
    let start = find_scheme(header, "bearer")?;
    let mut rest = header[start + "bearer".len()..].trim_start();
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some(eq) = rest.find('=') else { break };
        let name = rest[..eq].trim();
        if name.is_empty() || name.contains(' ') {
            // The next challenge's scheme: this one has ended.
            break;
        }
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        params.push((name.to_owned(), value));
        rest = remaining;
    }
    Some(params)
}

/// Where the `scheme` token starts (case-insensitive, as a whole word).
fn find_scheme(header: &str, scheme: &str) -> Option<usize> {
    let lower = header.to_ascii_lowercase();
    let mut from = 0;
    while let Some(found) = lower[from..].find(scheme) {
        let at = from + found;
        let before_ok = at == 0 || matches!(lower.as_bytes()[at - 1], b' ' | b',');
        let after = lower.as_bytes().get(at + scheme.len());
        if before_ok && matches!(after, None | Some(b' ')) {
            return Some(at);
        }
        from = at + scheme.len();
    }
    None
}

/// Base64 (any alphabet, padded or not) of a JSON object, re-serialized compactly.
fn decode(encoded: &str) -> Option<String> {
    if encoded.len() > MAX_CLAIMS_BYTES * 4 / 3 + 4 {
        return None;
    }
    let bytes = [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(encoded.trim()).ok())?;
    match serde_json::from_slice::<Value>(&bytes).ok()? {
        value @ Value::Object(_) => Some(value.to_string()),
        _ => None,
    }
}

/// The `claims` parameter of a grant: the client capabilities as
/// `{"access_token":{"xms_cc":{"values":[…]}}}`, merged with a challenge's claims; `None` when
/// there is neither.
pub fn request_parameter(capabilities: &[String], challenge: Option<&str>) -> Option<String> {
    let mut merged = challenge
        .and_then(|claims| serde_json::from_str::<Value>(claims).ok())
        .filter(Value::is_object);
    if !capabilities.is_empty() {
        let declared = json!({"access_token": {"xms_cc": {"values": capabilities}}});
        merged = Some(match merged {
            Some(mut claims) => {
                merge(&mut claims, declared);
                claims
            }
            None => declared,
        });
    }
    merged.map(|claims| claims.to_string())
}

/// Deep merge of JSON objects: objects merge key by key, arrays are united, and for anything
/// else the value already there (the challenge's) is kept.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(into), Value::Array(from)) => {
            for value in from {
                if !into.contains(&value) {
                    into.push(value);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// The example of learn.microsoft.com/entra/identity-platform/claims-challenge.
    const DOCS_EXAMPLE: &str = "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiY3AxIn19fQ==\"";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn the_documented_challenge_decodes() {
        assert_eq!(
            challenge(&headers(&[DOCS_EXAMPLE])).as_deref(),
            Some(r#"{"access_token":{"acrs":{"essential":true,"value":"cp1"}}}"#)
        );
        // Graph's CAE challenge, unpadded, after another scheme's challenge.
        let graph = "PoP realm=\"x\", Bearer realm=\"\", client_id=\"00000003-0000-0000-c000-000000000000\", error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsibmJmIjp7ImVzc2VudGlhbCI6dHJ1ZSwgInZhbHVlIjoiMTYwNDEwNjY1MSJ9fX0\"";
        assert_eq!(
            challenge(&headers(&[graph])).as_deref(),
            Some(r#"{"access_token":{"nbf":{"essential":true,"value":"1604106651"}}}"#)
        );
    }

    #[test]
    fn other_401s_are_not_challenges() {
        for value in [
            "Bearer realm=\"\", error=\"invalid_token\"",
            "Bearer error=\"insufficient_claims\"",
            "Bearer error=\"insufficient_claims\", claims=\"not base64!\"",
            "Bearer error=\"insufficient_claims\", claims=\"WzFd\"",
            "Basic realm=\"x\", error=\"insufficient_claims\", claims=\"e30=\"",
            "Bearerx error=\"insufficient_claims\", claims=\"e30=\"",
            "",
        ] {
            assert_eq!(challenge(&headers(&[value])), None, "{value}");
        }
        assert_eq!(challenge(&HeaderMap::new()), None);
    }

    #[test]
    fn capabilities_merge_with_a_challenge() {
        let cp1 = vec!["cp1".to_owned()];
        assert_eq!(request_parameter(&[], None), None);
        assert_eq!(
            request_parameter(&cp1, None).as_deref(),
            Some(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#)
        );
        let challenge = r#"{"access_token":{"nbf":{"essential":true,"value":"1604106651"}}}"#;
        assert_eq!(
            request_parameter(&[], Some(challenge)).as_deref(),
            Some(challenge)
        );
        let merged: Value =
            serde_json::from_str(&request_parameter(&cp1, Some(challenge)).unwrap()).unwrap();
        assert_eq!(
            merged,
            json!({"access_token": {
                "nbf": {"essential": true, "value": "1604106651"},
                "xms_cc": {"values": ["cp1"]},
            }})
        );
        let with_cc = r#"{"access_token":{"xms_cc":{"values":["cp2"]}}}"#;
        let merged: Value =
            serde_json::from_str(&request_parameter(&cp1, Some(with_cc)).unwrap()).unwrap();
        assert_eq!(
            merged["access_token"]["xms_cc"]["values"],
            json!(["cp2", "cp1"])
        );
    }
}
