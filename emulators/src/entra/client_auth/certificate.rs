//! Certificate credentials (`private_key_jwt`): a client assertion the app signed with the
//! private key of a certificate registered on it, checked as Entra does
//! (<https://learn.microsoft.com/entra/identity-platform/certificate-credentials>): `x5t` or
//! `x5t#S256` names the certificate, `iss` = `sub` = the client id, `aud` = the token
//! endpoint it was sent to (AADSTS50027 otherwise), within `nbf`..`exp` (AADSTS700024);
//! an unknown certificate or a bad signature is AADSTS700027.

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine as _,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use sha2::{Digest as _, Sha256};

use super::super::{
    errors::{echo, EntraError},
    EntraState,
};
use super::{malformed, unauthorized, within_validity, Jwt};

/// Where Entra's certificate-assertion errors send the reader.
const CERTIFICATE_DOCS: &str =
    "https://learn.microsoft.com/entra/identity-platform/certificate-credentials";

/// A certificate registered on the app: its thumbprints and public key.
pub(in crate::entra) struct RegisteredCertificate {
    sha1: Vec<u8>,
    sha256: Vec<u8>,
    key: DecodingKey,
}

impl RegisteredCertificate {
    /// Reads one PEM `CERTIFICATE` (an RSA certificate, as Entra requires for assertions).
    pub(in crate::entra) fn from_pem(pem: &str) -> anyhow::Result<Self> {
        let der = pem_certificate_der(pem)?;
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|error| anyhow::anyhow!("not an RSA certificate: {error}"))?;
        Ok(Self {
            sha1: sha1_digest(&der),
            sha256: Sha256::digest(&der).to_vec(),
            key,
        })
    }

    /// The upper-case hex SHA-1 thumbprint, as Entra's messages show it.
    fn hex_sha1(&self) -> String {
        hex_upper(&self.sha1)
    }
}

pub(super) fn check_certificate_assertion(
    state: &EntraState,
    tid: &str,
    jwt: &Jwt<'_>,
) -> Result<(), EntraError> {
    if jwt.claim("sub") != Some(state.client_id.as_str()) {
        return Err(unauthorized(
            50048,
            "Subject mismatches Issuer claim in the client assertion.",
        ));
    }
    let algorithm = match jwt.header("alg") {
        Some("RS256") => Algorithm::RS256,
        Some("PS256") => Algorithm::PS256,
        other => {
            return Err(unauthorized(
                50027,
                format!(
                    "Invalid JWT token. '{}' is not a supported signature algorithm for a client \
                     assertion; use 'RS256' or 'PS256'.",
                    echo(other.unwrap_or_default())
                ),
            ))
        }
    };
    let by_sha256 = jwt.header("x5t#S256").and_then(thumbprint);
    let by_sha1 = jwt.header("x5t").and_then(thumbprint);
    let presented = by_sha1.as_deref().map(hex_upper).unwrap_or_default();
    let credentials = state.credentials.lock();
    let certificate = credentials.certificates.iter().find(|c| {
        by_sha256.as_deref() == Some(c.sha256.as_slice())
            || by_sha1.as_deref() == Some(c.sha1.as_slice())
    });
    let Some(certificate) = certificate else {
        return Err(invalid_signature(
            "The key was not found.",
            &presented,
            &state.client_id,
        ));
    };
    let verified = jsonwebtoken::crypto::verify(
        jwt.signature,
        jwt.signing_input.as_bytes(),
        &certificate.key,
        algorithm,
    );
    if !matches!(verified, Ok(true)) {
        return Err(invalid_signature(
            "The provided signature value did not match the expected signature value.",
            &certificate.hex_sha1(),
            &state.client_id,
        ));
    }
    drop(credentials);
    let endpoint = format!("{}/{tid}/oauth2/v2.0/token", state.host);
    if jwt.audiences() != [endpoint.as_str()] {
        return Err(malformed());
    }
    if jwt.claim("jti").is_none_or(str::is_empty) {
        return Err(malformed());
    }
    within_validity(jwt, CERTIFICATE_DOCS)
}

/// AADSTS700027 with Entra's bracketed reason.
fn invalid_signature(reason: &str, thumbprint: &str, client_id: &str) -> EntraError {
    unauthorized(
        700027,
        format!(
            "Client assertion contains an invalid signature. [Reason - {reason}, Thumbprint of \
             key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer \
             or directly use MS Graph to see configured keys for app Id '{client_id}'.]"
        ),
    )
}

/// A base64url thumbprint (padding tolerated) as bytes.
fn thumbprint(encoded: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn sha1_digest(bytes: &[u8]) -> Vec<u8> {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn pem_certificate_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem
        .find(BEGIN)
        .ok_or_else(|| anyhow::anyhow!("no CERTIFICATE block"))?
        + BEGIN.len();
    let end = pem[start..]
        .find(END)
        .ok_or_else(|| anyhow::anyhow!("unterminated CERTIFICATE block"))?;
    let body: String = pem[start..start + end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Ok(STANDARD.decode(body)?)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    use super::*;

    #[test]
    fn thumbprints_decode_with_or_without_padding() {
        let bytes = [0xABu8; 20];
        let unpadded = URL_SAFE_NO_PAD.encode(bytes);
        let padded = base64::engine::general_purpose::URL_SAFE.encode(bytes);
        assert_ne!(unpadded, padded);
        assert_eq!(thumbprint(&unpadded), Some(bytes.to_vec()));
        assert_eq!(thumbprint(&padded), Some(bytes.to_vec()));
        assert_eq!(hex_upper(&[0x0a, 0xff]), "0AFF");
    }
}
