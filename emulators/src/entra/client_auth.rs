//! Client authentication at the token endpoint, checked as Entra does: a client secret (form
//! or HTTP Basic), a certificate-signed client assertion (`private_key_jwt`), or a federated
//! client assertion (a token of a trusted issuer matching one of the app's federated identity
//! credentials, e.g. a managed-identity token).
//!
//! Sources:
//! - "Microsoft identity platform application authentication certificate credentials"
//!   (learn.microsoft.com/entra/identity-platform/certificate-credentials): header `alg`
//!   RS256 (older text) or PS256 (current text) with `x5t` (base64url SHA-1 of the
//!   certificate's DER) or `x5t#S256` (SHA-256); claims `aud` = the token endpoint, `iss` =
//!   `sub` = the client id, `jti`, `nbf`, `exp`. Entra rejects an `aud` other than the token
//!   endpoint it was sent to (AzureAD/microsoft-authentication-library-for-dotnet#3352,
//!   panva/openid-client#348: AADSTS50027).
//! - "Configure an application to trust a managed identity" and "Workload identity
//!   federation": a federated credential is (issuer, subject, audiences), matched exactly and
//!   case-sensitively against the assertion's `iss`, `sub` and `aud`; only app-only Entra
//!   tokens may be federated assertions (AADSTS700229, reference-error-codes).
//! - Error codes and texts as Entra sends them (reference-error-codes and answers quoted in
//!   Azure/azure-workload-identity#340, #1200, Azure/login#482, Azure/azure-sdk-for-net#29007,
//!   AzureAD/microsoft-authentication-library-for-dotnet#4951): AADSTS7000215 wrong secret,
//!   AADSTS700027 signature / unknown certificate, AADSTS700024 outside the validity,
//!   AADSTS700211 unknown issuer, AADSTS700213 unknown subject, AADSTS70021 no record matching
//!   issuer, subject and audience. All are `invalid_client` with status 401.
//!
//! MSAL Python pads `x5t` with `=`; Entra accepts both, so thumbprints are compared without
//! padding.
//!
//! This module reads the request and the assertion; [`certificate`] checks a certificate
//! assertion, [`federated`] a federated one.

use axum::http::{header, HeaderMap, StatusCode};
use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use serde_json::Value;

use super::{
    errors::{echo, EntraError},
    now, EntraState,
};

mod certificate;
mod federated;

use certificate::check_certificate_assertion;
pub(super) use certificate::RegisteredCertificate;
use federated::check_federated_assertion;

const JWT_BEARER_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A federated identity credential of the emulated app (Graph `federatedIdentityCredential`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Unique name (3–120 URL-friendly characters in Entra; not checked here).
    pub name: String,
    /// The exact `iss` of accepted assertions.
    pub issuer: String,
    /// The exact `sub` of accepted assertions (for a managed identity: its object id).
    pub subject: String,
    /// Accepted `aud` values (`api://AzureADTokenExchange` and its national-cloud variants).
    pub audiences: Vec<String>,
}

/// The app's registered credentials besides its secret.
#[derive(Default)]
pub(super) struct AppCredentials {
    pub(super) certificates: Vec<RegisteredCertificate>,
    pub(super) federated: Vec<FederatedCredential>,
}

/// Authenticates the client of a token request; `Ok` when the app proved itself.
pub(super) fn authenticate_client(
    state: &EntraState,
    tid: &str,
    headers: &HeaderMap,
    form: &super::grants::Form,
) -> Result<(), EntraError> {
    let basic = basic_credentials(headers);
    let client_id = form
        .get("client_id")
        .or(basic.as_ref().map(|(id, _)| id.as_str()))
        .ok_or_else(|| EntraError::missing_parameter("client_id"))?;
    if client_id != state.client_id {
        return Err(EntraError::bad_request(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{}' was not found in the directory '{tid}'. This \
                 can happen if the application has not been installed by the administrator of \
                 the tenant or consented to by any user in the tenant.",
                echo(client_id)
            ),
        ));
    }
    let secret = form
        .get("client_secret")
        .or(basic.as_ref().map(|(_, secret)| secret.as_str()));
    match (secret, form.get("client_assertion")) {
        (Some(_), Some(_)) => Err(EntraError::bad_request(
            "invalid_request",
            7000216,
            "Only one of 'client_assertion' or 'client_secret' may be presented.",
        )),
        (Some(secret), None) => {
            if constant_time_eq(secret.as_bytes(), state.client_secret.as_bytes()) {
                Ok(())
            } else {
                Err(EntraError::invalid_client_secret(client_id))
            }
        }
        (None, Some(assertion)) => {
            let assertion_type = form.require("client_assertion_type")?;
            if assertion_type != JWT_BEARER_ASSERTION_TYPE {
                return Err(EntraError::bad_request(
                    "invalid_request",
                    90023,
                    format!(
                        "The client_assertion_type '{}' is not supported; use \
                         '{JWT_BEARER_ASSERTION_TYPE}'.",
                        echo(assertion_type)
                    ),
                ));
            }
            check_assertion(state, tid, assertion)
        }
        (None, None) => Err(unauthorized(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )),
    }
}

fn unauthorized(code: u32, message: impl Into<String>) -> EntraError {
    EntraError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
}

fn malformed() -> EntraError {
    unauthorized(50027, "JWT token is invalid or malformed.")
}

/// A JWT split into its parts.
struct Jwt<'a> {
    /// The whole token.
    token: &'a str,
    header: Value,
    claims: Value,
    signing_input: &'a str,
    signature: &'a str,
}

impl<'a> Jwt<'a> {
    fn parse(token: &'a str) -> Option<Self> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, claims) = signing_input.split_once('.')?;
        if claims.contains('.') {
            return None;
        }
        let header = decode_json_part(header)?;
        let claims = decode_json_part(claims)?;
        (header.is_object() && claims.is_object()).then_some(Self {
            token,
            header,
            claims,
            signing_input,
            signature,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(Value::as_str)
    }

    fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// `aud` as a list (a JWT may carry one string or an array).
    fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }
}

fn decode_json_part(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn check_assertion(state: &EntraState, tid: &str, assertion: &str) -> Result<(), EntraError> {
    let jwt = Jwt::parse(assertion).ok_or_else(malformed)?;
    // An assertion the app signed itself names the app as issuer; anything else must be a
    // token of another issuer the app federates with.
    if jwt.claim("iss") == Some(state.client_id.as_str()) {
        check_certificate_assertion(state, tid, &jwt)
    } else {
        check_federated_assertion(state, &jwt)
    }
}

/// AADSTS700024 unless `nbf` <= now < `exp` (`exp` required, `nbf` optional).
fn within_validity(jwt: &Jwt<'_>, docs: &str) -> Result<(), EntraError> {
    let now = now();
    let exp = jwt.claims.get("exp").and_then(Value::as_i64);
    let nbf = jwt.claims.get("nbf").and_then(Value::as_i64);
    let valid = exp.is_some_and(|exp| now < exp) && nbf.is_none_or(|nbf| nbf <= now);
    if valid {
        return Ok(());
    }
    let time = |secs: Option<i64>| {
        chrono::DateTime::from_timestamp(secs.unwrap_or(0), 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S.0000000Z")
            .to_string()
    };
    Err(unauthorized(
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion \
             valid from {}, expiry time of assertion {}. Review the documentation at {docs} .",
            time(Some(now)),
            time(nbf),
            time(exp)
        ),
    ))
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

/// Undoes `application/x-www-form-urlencoded` escaping of one value.
fn form_decode(value: &str) -> String {
    form_urlencoded::parse(value.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default()
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("my%20app:s%3Acret+x");
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).expect("header"),
        );
        assert_eq!(
            basic_credentials(&headers),
            Some(("my app".to_owned(), "s:cret x".to_owned()))
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&headers), None);
    }

    #[test]
    fn jwts_split_into_three_parts() {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#);
        let claims = URL_SAFE_NO_PAD.encode(r#"{"aud":["a","b"]}"#);
        let token = format!("{header}.{claims}.sig");
        let jwt = Jwt::parse(&token).expect("parses");
        assert_eq!(jwt.header("alg"), Some("RS256"));
        assert_eq!(jwt.audiences(), ["a", "b"]);
        assert_eq!(jwt.signature, "sig");
        assert_eq!(jwt.signing_input, format!("{header}.{claims}"));
        for bad in ["", "a.b", "a.b.c.d", &format!("{header}.x.y")] {
            assert!(Jwt::parse(bad).is_none(), "{bad}");
        }
    }
}
