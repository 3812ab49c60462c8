//! Federated credentials (workload identity federation): a client assertion that is a token
//! of another issuer the app trusts, matched exactly and case-sensitively against one of the
//! app's federated identity credentials (issuer, subject, audiences), as Entra does
//! (<https://learn.microsoft.com/entra/workload-id/workload-identity-federation>): AADSTS700211
//! unknown issuer, AADSTS700213 unknown subject, AADSTS70021 no credential matching all
//! three; only app-only Entra tokens may be assertions (AADSTS700229).

use super::super::{
    errors::{echo, EntraError},
    EntraState,
};
use axum::http::StatusCode;

use super::{unauthorized, within_validity, FederatedCredential, Jwt};

/// Where Entra's federation errors send the reader.
const FEDERATION_DOCS: &str =
    "https://learn.microsoft.com/entra/workload-id/workload-identity-federation";

pub(super) fn check_federated_assertion(
    state: &EntraState,
    jwt: &Jwt<'_>,
) -> Result<(), EntraError> {
    let iss = jwt.claim("iss").unwrap_or_default();
    let sub = jwt.claim("sub").unwrap_or_default();
    let audiences = jwt.audiences();
    {
        let credentials = state.credentials.lock();
        let by_issuer: Vec<&FederatedCredential> = credentials
            .federated
            .iter()
            .filter(|f| f.issuer == iss)
            .collect();
        if by_issuer.is_empty() {
            return Err(unauthorized(
                700211,
                format!(
                    "No matching federated identity record found for presented assertion issuer \
                     '{}'. Please check your federated identity credential Subject, Audience and \
                     Issuer against the presented assertion. {FEDERATION_DOCS}",
                    echo(iss)
                ),
            ));
        }
        let by_subject: Vec<&&FederatedCredential> =
            by_issuer.iter().filter(|f| f.subject == sub).collect();
        if by_subject.is_empty() {
            return Err(unauthorized(
                700213,
                format!(
                    "No matching federated identity record found for presented assertion subject \
                     '{}'. Check your federated identity credential Subject, Audience and Issuer \
                     against the presented assertion. {FEDERATION_DOCS}",
                    echo(sub)
                ),
            ));
        }
        let matched = by_subject
            .iter()
            .any(|f| f.audiences.iter().any(|a| audiences.contains(&a.as_str())));
        if !matched {
            return Err(unauthorized(
                70021,
                format!(
                    "No matching federated identity record found for presented assertion. \
                     Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'. \
                     {FEDERATION_DOCS}",
                    echo(iss),
                    echo(sub),
                    echo(&audiences.join(","))
                ),
            ));
        }
    }
    // The emulator can fetch keys of one issuer family only: its own tenants' v2 issuer, whose
    // tokens (managed-identity tokens included) it signs itself. Any other issuer's keys are
    // out of its reach, so such an assertion cannot be verified.
    let own_issuer = iss
        .strip_prefix(&format!("{}/", state.host))
        .and_then(|rest| rest.strip_suffix("/v2.0"))
        .is_some_and(|tid| uuid::Uuid::try_parse(tid).is_ok());
    if !own_issuer {
        return Err(unauthorized(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - The signing keys of \
                 issuer '{}' could not be retrieved.]",
                echo(iss)
            ),
        ));
    }
    if let Err(error) = state.keys.verify(jwt.token) {
        return Err(unauthorized(
            700027,
            format!(
                "Client assertion failed signature validation. [Reason - {}.]",
                error.reason()
            ),
        ));
    }
    if jwt.claims.get("scp").is_some() || jwt.claim("idtyp") == Some("user") {
        return Err(EntraError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            700229,
            "ForbiddenTokenType - Only app-only tokens can be used as Federated Identity \
             Credentials for Microsoft Entra issuer.",
        ));
    }
    within_validity(jwt, FEDERATION_DOCS)
}
