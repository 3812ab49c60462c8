//! The `claims` parameter of OBO and refresh grants, and per-resource consent.
//!
//! A client declares capabilities with `{"access_token":{"xms_cc":{"values":["cp1"]}}}` and
//! answers a resource's claims challenge by passing the challenge's JSON as `claims`
//! ("Claims challenges, claims requests and client capabilities",
//! learn.microsoft.com/entra/identity-platform/claims-challenge). The emulator honours the two
//! parts a CAE challenge and a CAE-capable client use:
//! - `xms_cc` values become the access token's `xms_cc` claim (the optional claim that tells a
//!   resource the client can handle claims challenges, "Optional claims reference",
//!   learn.microsoft.com/entra/identity-platform/optional-claims-reference);
//! - an essential `nbf` (Graph's CAE challenge, `{"access_token":{"nbf":{"essential":true,
//!   "value":"1604106651"}}}`) makes the token's `iat`/`nbf` no earlier than that time, so a
//!   token issued in answer to a challenge satisfies it.
//!
//! Consent is per user and resource: Entra answers a grant for a resource nobody consented to
//! with `invalid_grant`, AADSTS65001 and `suberror: consent_required` (the body real Entra
//! sends, as reported e.g. in MicrosoftDocs/azure-docs#39189).

use serde_json::Value;

use super::errors::{echo, EntraError};

/// What a grant's `claims` asks of the access token.
#[derive(Debug, Default, Clone)]
pub(super) struct ClaimsRequest {
    /// `access_token.xms_cc.values`.
    pub(super) capabilities: Vec<String>,
    /// `access_token.nbf.value` when essential, as Unix seconds.
    pub(super) not_before: Option<i64>,
}

impl ClaimsRequest {
    /// Parses the `claims` form parameter. A value that is not a JSON object is refused as
    /// `invalid_request` AADSTS9002313 ("Request is malformed or invalid", the generic code of
    /// the AADSTS error reference; Entra documents no more specific one for `claims`).
    pub(super) fn parse(value: Option<&str>) -> Result<Self, EntraError> {
        let Some(value) = value else {
            return Ok(Self::default());
        };
        let raw: Value = serde_json::from_str(value)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                EntraError::bad_request(
                    "invalid_request",
                    9002313,
                    format!(
                        "Invalid request. Request is malformed or invalid: the 'claims' \
                         parameter '{}' is not a JSON object.",
                        echo(value)
                    ),
                )
            })?;
        let access_token = &raw["access_token"];
        let capabilities = access_token["xms_cc"]["values"]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let nbf = &access_token["nbf"];
        let not_before = (nbf["essential"] == Value::Bool(true))
            .then(|| match &nbf["value"] {
                Value::String(s) => s.parse::<i64>().ok(),
                Value::Number(n) => n.as_i64(),
                _ => None,
            })
            .flatten();
        Ok(Self {
            capabilities,
            not_before,
        })
    }

    /// Applies the request to an access token's claims.
    pub(super) fn apply(&self, claims: &mut Value) {
        let Value::Object(fields) = claims else {
            return;
        };
        if !self.capabilities.is_empty() {
            fields.insert("xms_cc".into(), self.capabilities.clone().into());
        }
        if let Some(not_before) = self.not_before {
            for name in ["iat", "nbf"] {
                let current = fields.get(name).and_then(Value::as_i64).unwrap_or(0);
                // Never in the future: a token is valid when issued.
                let now = super::now();
                fields.insert(name.into(), current.max(not_before.min(now)).into());
            }
        }
    }
}

/// `invalid_grant` AADSTS65001 with `suberror: consent_required`.
pub(super) fn consent_required(client_id: &str) -> EntraError {
    EntraError::bad_request(
        "invalid_grant",
        65001,
        format!(
            "The user or administrator has not consented to use the application with ID '{}' \
             named 'obo-vault'. Send an interactive authorization request for this user and \
             resource.",
            echo(client_id)
        ),
    )
    .with_suberror("consent_required")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn capabilities_and_an_essential_nbf_are_honoured() {
        let request = ClaimsRequest::parse(Some(
            r#"{"access_token":{"xms_cc":{"values":["cp1"]},"nbf":{"essential":true,"value":"100"}}}"#,
        ))
        .expect("valid");
        let mut claims = json!({"iat": 50, "nbf": 50});
        request.apply(&mut claims);
        assert_eq!(claims, json!({"iat": 100, "nbf": 100, "xms_cc": ["cp1"]}));
        assert!(ClaimsRequest::parse(Some("[1]")).is_err());
        assert!(ClaimsRequest::parse(Some("{")).is_err());
        let absent = ClaimsRequest::parse(None).expect("absent");
        assert!(absent.capabilities.is_empty() && absent.not_before.is_none());
    }
}
