//! The Entra emulator's token signing keys: RS256 signing, the JWKS, and verification of tokens
//! it signed (used for OBO assertions and by the downstream emulator).
//!
//! Keys are RSA 2048 generated at start. The `kid` is the RFC 7638 JWK thumbprint (SHA-256,
//! base64url); `x5t` repeats it, since the emulator publishes bare keys without certificates
//! (real Entra's `kid` and `x5t` are also equal). Rotation appends a key; the newest one signs,
//! all stay in the JWKS.

use std::sync::Arc;

use anyhow::Context as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use parking_lot::{Mutex, RwLock};
use rsa::{
    pkcs1::EncodeRsaPrivateKey as _, pkcs8::EncodePublicKey as _, pkcs8::LineEnding,
    traits::PublicKeyParts as _, RsaPrivateKey,
};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// RSA modulus size of every emulator key, as Entra uses.
const RSA_BITS: usize = 2048;

/// How [`crate::EntraEmulator::sign_raw`] signs a token; all but `Current` make tokens a correct
/// verifier must reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignWith {
    /// RS256 with the current signing key (the one in the JWKS).
    Current,
    /// RS256 with an RSA key that is *not* in the JWKS, under the current key's `kid`.
    Foreign,
    /// `alg: none` and an empty signature (`header.claims.`).
    NoneAlg,
    /// HS256 keyed with the current key's public key as SPKI PEM (`-----BEGIN PUBLIC KEY-----`,
    /// LF line endings): the classic algorithm-confusion attack.
    Hs256WithPublicKey,
}

/// One RSA signing key and everything derived from it.
pub(crate) struct SigningKey {
    kid: String,
    n_b64: String,
    e_b64: String,
    public_pem: String,
    /// Parsed once: `jsonwebtoken` re-parses and re-checks a DER key on every signature, which
    /// costs more than the signature itself and made the emulator the bottleneck of load tests.
    pair: RsaKeyPair,
    decoding: DecodingKey,
}

impl SigningKey {
    /// Generates a fresh RSA 2048 key.
    fn generate() -> anyhow::Result<Self> {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
            .context("generating an RSA key")?;
        let der = private.to_pkcs1_der().context("encoding the RSA key")?;
        let public = private.to_public_key();
        let n = public.n().to_bytes_be();
        let e = public.e().to_bytes_be();
        let n_b64 = URL_SAFE_NO_PAD.encode(&n);
        let e_b64 = URL_SAFE_NO_PAD.encode(&e);
        // RFC 7638: members in lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"e":"{e_b64}","kty":"RSA","n":"{n_b64}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .context("encoding the public key")?;
        Ok(Self {
            kid,
            n_b64,
            e_b64,
            public_pem,
            pair: RsaKeyPair::from_der(der.as_bytes())
                .map_err(|e| anyhow::anyhow!("parsing the RSA key: {e}"))?,
            decoding: DecodingKey::from_rsa_raw_components(&n, &e),
        })
    }

    /// The key id published in the JWKS and put in token headers.
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    fn jwk(&self, issuer: &str) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": self.n_b64,
            "e": self.e_b64,
            "issuer": issuer,
        })
    }
}

/// Why a token failed signature verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// Not three base64url JSON parts.
    Malformed,
    /// `alg` is not RS256 (including `none` and HMAC).
    WrongAlgorithm,
    /// No `kid`, or a `kid` not in the JWKS.
    UnknownKey,
    /// The signature does not match the key.
    BadSignature,
}

impl VerifyError {
    /// A short reason, phrased like Entra's bracketed reasons.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "The token is malformed",
            Self::WrongAlgorithm => "The token is not signed with RS256",
            Self::UnknownKey => "The key was not found",
            Self::BadSignature => "The signature is invalid",
        }
    }
}

/// The signing key and every key published so far (it included).
struct Keys {
    current: Arc<SigningKey>,
    /// Oldest first; never shrinks, so rotated-out keys keep verifying.
    published: Vec<Arc<SigningKey>>,
}

/// Every key the emulator has published, plus the lazily made foreign key.
pub(crate) struct KeyStore {
    keys: RwLock<Keys>,
    /// Generated on first use: most tests never sign with a foreign key.
    foreign: Mutex<Option<Arc<SigningKey>>>,
}

impl KeyStore {
    /// A store with one freshly generated key.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let key = Arc::new(SigningKey::generate()?);
        Ok(Self {
            keys: RwLock::new(Keys {
                current: Arc::clone(&key),
                published: vec![key],
            }),
            foreign: Mutex::new(None),
        })
    }

    /// The key that signs new tokens.
    pub(crate) fn current(&self) -> Arc<SigningKey> {
        Arc::clone(&self.keys.read().current)
    }

    /// Generates a new current key; the old ones stay published.
    pub(crate) fn rotate(&self) -> anyhow::Result<()> {
        let key = Arc::new(SigningKey::generate()?);
        let mut keys = self.keys.write();
        keys.current = Arc::clone(&key);
        keys.published.push(key);
        Ok(())
    }

    fn foreign(&self) -> anyhow::Result<Arc<SigningKey>> {
        let mut slot = self.foreign.lock();
        if let Some(key) = slot.as_ref() {
            return Ok(Arc::clone(key));
        }
        let key = Arc::new(SigningKey::generate()?);
        *slot = Some(Arc::clone(&key));
        Ok(key)
    }

    /// The JWKS document; every key carries `issuer` (Entra's multi-tenant key issuer).
    pub(crate) fn jwks(&self, issuer: &str) -> Value {
        let keys: Vec<Value> = self
            .keys
            .read()
            .published
            .iter()
            .map(|k| k.jwk(issuer))
            .collect();
        json!({ "keys": keys })
    }

    /// Signs `claims` under `header`. A header object missing `alg`, `kid` or `typ` gets them
    /// filled in for `with` (the current `kid` also for `Foreign`); fields it has are kept as
    /// given, so hostile tests control the header fully.
    pub(crate) fn sign(&self, header: Value, claims: &Value, with: SignWith) -> String {
        let current = self.current();
        let mut header = header;
        if let Value::Object(fields) = &mut header {
            let alg = match with {
                SignWith::Current | SignWith::Foreign => "RS256",
                SignWith::NoneAlg => "none",
                SignWith::Hs256WithPublicKey => "HS256",
            };
            fields.entry("typ").or_insert_with(|| Value::from("JWT"));
            fields.entry("alg").or_insert_with(|| Value::from(alg));
            if with != SignWith::NoneAlg {
                fields
                    .entry("kid")
                    .or_insert_with(|| Value::from(current.kid()));
            }
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match with {
            SignWith::Current => rs256(&signing_input, &current.pair),
            SignWith::Foreign => match self.foreign() {
                Ok(foreign) => rs256(&signing_input, &foreign.pair),
                // Key generation does not fail in practice; a garbage signature is just as
                // foreign.
                Err(_) => URL_SAFE_NO_PAD.encode([0u8; 256]),
            },
            SignWith::NoneAlg => String::new(),
            SignWith::Hs256WithPublicKey => {
                let key = EncodingKey::from_secret(current.public_pem.as_bytes());
                jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
                    .unwrap_or_default()
            }
        };
        format!("{signing_input}.{signature}")
    }

    /// Checks that `token` is an RS256 JWT signed by a published key and returns its claims.
    /// Time claims are left to the caller, which knows which error to answer.
    pub(crate) fn verify(&self, token: &str) -> Result<Value, VerifyError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed);
        };
        let header = decode_json_part(header_b64).ok_or(VerifyError::Malformed)?;
        let claims = decode_json_part(claims_b64).ok_or(VerifyError::Malformed)?;
        if !claims.is_object() {
            return Err(VerifyError::Malformed);
        }
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(VerifyError::WrongAlgorithm);
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or(VerifyError::UnknownKey)?;
        let key = self
            .keys
            .read()
            .published
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .ok_or(VerifyError::UnknownKey)?;
        let message = &token[..header_b64.len() + 1 + claims_b64.len()];
        match jsonwebtoken::crypto::verify(
            signature,
            message.as_bytes(),
            &key.decoding,
            Algorithm::RS256,
        ) {
            Ok(true) => Ok(claims),
            Ok(false) | Err(_) => Err(VerifyError::BadSignature),
        }
    }
}

fn rs256(signing_input: &str, key: &RsaKeyPair) -> String {
    // Signing with a key we generated ourselves has no input-dependent failure; an empty
    // signature (rejected by every verifier) is the harmless fallback.
    let mut signature = vec![0u8; key.public_modulus_len()];
    match key.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    ) {
        Ok(()) => URL_SAFE_NO_PAD.encode(signature),
        Err(_) => String::new(),
    }
}

/// Decodes one base64url (unpadded, padding tolerated) JSON part of a JWT.
fn decode_json_part(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_roundtrip_and_hostile_variants() {
        let store = KeyStore::generate().expect("keygen");
        let claims = json!({"sub": "x", "exp": 1});
        let good = store.sign(json!({}), &claims, SignWith::Current);
        assert_eq!(store.verify(&good), Ok(claims.clone()));

        let foreign = store.sign(json!({}), &claims, SignWith::Foreign);
        assert_eq!(store.verify(&foreign), Err(VerifyError::BadSignature));
        let none = store.sign(json!({}), &claims, SignWith::NoneAlg);
        assert!(none.ends_with('.'));
        assert_eq!(store.verify(&none), Err(VerifyError::WrongAlgorithm));
        let hs = store.sign(json!({}), &claims, SignWith::Hs256WithPublicKey);
        assert_eq!(store.verify(&hs), Err(VerifyError::WrongAlgorithm));
        // An HS256 token relabelled RS256 still fails on the signature.
        let relabelled = store.sign(
            json!({"alg": "RS256"}),
            &claims,
            SignWith::Hs256WithPublicKey,
        );
        assert_eq!(store.verify(&relabelled), Err(VerifyError::BadSignature));

        for junk in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "e30.e30.",
            "e30.W10.x",
            "\u{1F600}.a.b",
        ] {
            assert!(store.verify(junk).is_err(), "{junk:?}");
        }

        let old_kid = store.current().kid().to_owned();
        store.rotate().expect("rotate");
        assert_ne!(store.current().kid(), old_kid);
        assert_eq!(store.verify(&good), Ok(claims));
        assert_eq!(store.jwks("iss")["keys"].as_array().map(Vec::len), Some(2));
    }
}
