//! How the app proves itself to Entra at the token endpoint: a client secret, a client
//! assertion signed with a certificate's key (`private_key_jwt`), or a managed-identity token
//! used as a federated client assertion (no secret to rotate).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use azure_core::credentials::TokenCredential;
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::cloud::Cloud;
use super::IdpError;
use crate::config::ClientCredential;

/// The settings variable named by certificate errors.
const CERTIFICATE_VAR: &str = "OBOVAULT_CLIENT_CERTIFICATE_PATH";
/// `client_assertion_type` for both signed and federated assertions.
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a certificate-signed assertion in seconds; Entra accepts up to 10 minutes.
const ASSERTION_LIFETIME_SECONDS: i64 = 600;
/// Bound on getting a managed-identity token: the SDK's own retries may otherwise run for a
/// minute, longer than the database lease that guards a refresh.
const MANAGED_IDENTITY_TIMEOUT: Duration = Duration::from_secs(10);

/// The app's credential, ready to authenticate token requests. `Debug` shows only the kind.
pub enum AppCredential {
    /// `client_secret`.
    Secret(SecretString),
    /// A `client_assertion` signed RS256 with the certificate's private key.
    Certificate {
        /// The private key.
        key: EncodingKey,
        /// Base64url SHA-1 thumbprint of the certificate (DER), the header `x5t`.
        x5t: String,
        /// Base64url SHA-256 thumbprint of the certificate (DER), the header `x5t#S256`.
        x5t_s256: String,
    },
    /// A managed-identity token for the cloud's token-exchange audience as `client_assertion`.
    ManagedIdentity {
        /// The user-assigned identity's credential (it caches its token).
        credential: Arc<dyn TokenCredential>,
        /// `{token-exchange audience}/.default`.
        scope: String,
    },
}

impl fmt::Debug for AppCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Secret(_) => "AppCredential::Secret(..)",
            Self::Certificate { .. } => "AppCredential::Certificate(..)",
            Self::ManagedIdentity { .. } => "AppCredential::ManagedIdentity(..)",
        })
    }
}

/// Claims of a certificate-signed client assertion.
#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl AppCredential {
    /// Builds the credential from settings (reads and parses the certificate PEM at start;
    /// errors name OBOVAULT_CLIENT_CERTIFICATE_PATH). The managed identity's token audience
    /// follows the cloud of `authority`.
    ///
    /// The managed identity is reached the way `azure_identity` finds it: on App Service and
    /// Functions through `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (REST protocol 2019-08-01,
    /// a plain `http://` endpoint on the instance; the SDK requires https only of authority
    /// hosts, not of this endpoint), elsewhere through IMDS.
    pub fn from_settings(credential: &ClientCredential, authority: &Url) -> anyhow::Result<Self> {
        match credential {
            ClientCredential::Secret(secret) => Ok(Self::Secret(secret.clone())),
            ClientCredential::Certificate(path) => Self::from_pem_file(path),
            ClientCredential::ManagedIdentity { client_id } => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: Some(UserAssignedId::ClientId(client_id.clone())),
                    ..Default::default()
                };
                let credential = ManagedIdentityCredential::new(Some(options))
                    .context("OBOVAULT_CLIENT_ASSERTION: cannot set up the managed identity")?;
                let audience = Cloud::of_authority(authority).token_exchange_audience();
                Ok(Self::ManagedIdentity {
                    credential,
                    scope: format!("{audience}/.default"),
                })
            }
        }
    }

    /// Reads a PEM file holding the private key (PKCS#8 or PKCS#1 RSA) and the certificate;
    /// the first certificate is the one registered on the app.
    fn from_pem_file(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let text = std::fs::read(path)
            .with_context(|| format!("{CERTIFICATE_VAR}: cannot read {shown}"))?;
        // The parse error is dropped on purpose: it is generic, and the file holds a key.
        let blocks = pem::parse_many(&text)
            .map_err(|_| anyhow!("{CERTIFICATE_VAR}: {shown} is not a PEM file"))?;
        let certificate = blocks
            .iter()
            .find(|block| block.tag() == "CERTIFICATE")
            .ok_or_else(|| anyhow!("{CERTIFICATE_VAR}: {shown} holds no CERTIFICATE block"))?;
        let Some(key) = blocks
            .iter()
            .find(|b| matches!(b.tag(), "PRIVATE KEY" | "RSA PRIVATE KEY"))
        else {
            if blocks.iter().any(|b| b.tag() == "ENCRYPTED PRIVATE KEY") {
                return Err(anyhow!(
                    "{CERTIFICATE_VAR}: {shown}: encrypted private keys are not supported"
                ));
            }
            return Err(anyhow!(
                "{CERTIFICATE_VAR}: {shown} holds no RSA private key"
            ));
        };
        let key = EncodingKey::from_rsa_pem(pem::encode(key).as_bytes()).map_err(|_| {
            anyhow!("{CERTIFICATE_VAR}: {shown}: the private key is not an RSA key")
        })?;
        let x5t = URL_SAFE_NO_PAD.encode(Sha1::digest(certificate.contents()));
        let x5t_s256 = URL_SAFE_NO_PAD.encode(Sha256::digest(certificate.contents()));
        // Parsing the key does not prove it can sign; find out now rather than on the first
        // user's request.
        sign_assertion(
            &key,
            &x5t,
            &x5t_s256,
            "probe",
            "https://probe.invalid/token",
        )
        .map_err(|_| anyhow!("{CERTIFICATE_VAR}: {shown}: the private key cannot sign RS256"))?;
        Ok(Self::Certificate { key, x5t, x5t_s256 })
    }

    /// The form fields that authenticate `client_id` at `token_endpoint` (the assertion's
    /// audience).
    pub(super) async fn form_fields(
        &self,
        client_id: &str,
        token_endpoint: &str,
    ) -> Result<Vec<(&'static str, String)>, IdpError> {
        let assertion = match self {
            Self::Secret(secret) => {
                return Ok(vec![("client_secret", secret.expose_secret().to_owned())])
            }
            Self::Certificate { key, x5t, x5t_s256 } => {
                sign_assertion(key, x5t, x5t_s256, client_id, token_endpoint).map_err(|_| {
                    IdpError::Misconfigured {
                        error: "client_assertion".into(),
                        code: None,
                    }
                })?
            }
            Self::ManagedIdentity { credential, scope } => {
                federated_assertion(credential.as_ref(), scope).await?
            }
        };
        Ok(vec![
            ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned()),
            ("client_assertion", assertion),
        ])
    }
}

/// A `private_key_jwt` client assertion: RS256 with `x5t` (what `azure_identity` sends) and
/// `x5t#S256` (what current Entra docs describe).
fn sign_assertion(
    key: &EncodingKey,
    x5t: &str,
    x5t_s256: &str,
    client_id: &str,
    token_endpoint: &str,
) -> jsonwebtoken::errors::Result<String> {
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(x5t.to_owned());
    header.x5t_s256 = Some(x5t_s256.to_owned());
    let now = chrono::Utc::now().timestamp();
    let claims = AssertionClaims {
        aud: token_endpoint,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().to_string(),
        nbf: now,
        iat: now,
        exp: now + ASSERTION_LIFETIME_SECONDS,
    };
    jsonwebtoken::encode(&header, &claims, key)
}

/// A managed-identity token for the token-exchange audience. The credential caches it until
/// shortly before it expires, so this is cheap on the hot path.
async fn federated_assertion(
    credential: &dyn TokenCredential,
    scope: &str,
) -> Result<String, IdpError> {
    let scopes = [scope];
    let request = credential.get_token(&scopes, None);
    match tokio::time::timeout(MANAGED_IDENTITY_TIMEOUT, request).await {
        Ok(Ok(token)) => Ok(token.token.secret().to_owned()),
        Ok(Err(error)) => {
            // SDK errors describe the identity endpoint's failure; they never carry a token.
            tracing::error!(error = %error, "no managed-identity token for the client assertion: check the identity and its federated credential");
            Err(IdpError::Unavailable { retry_after: None })
        }
        Err(_) => Err(IdpError::Timeout),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::LazyLock;

    use jsonwebtoken::{DecodingKey, Validation};
    use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
    use rsa::traits::PublicKeyParts as _;

    use super::*;

    /// One RSA key for all idp tests: generating one is slow in debug builds.
    pub(in crate::idp) static TEST_KEY: LazyLock<rsa::RsaPrivateKey> = LazyLock::new(|| {
        let mut rng = rand::thread_rng();
        rsa::RsaPrivateKey::new(&mut rng, 2048).expect("RSA key generation")
    });

    /// The global cloud's authority.
    pub(in crate::idp) fn authority() -> Url {
        Url::parse("https://login.microsoftonline.com").expect("URL")
    }

    /// The test key in PKCS#8 PEM.
    pub(in crate::idp) fn test_key_pem() -> String {
        TEST_KEY
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding")
            .to_string()
    }

    /// The test key's public half for `jsonwebtoken`.
    pub(in crate::idp) fn test_decoding_key() -> DecodingKey {
        DecodingKey::from_rsa_raw_components(
            &TEST_KEY.n().to_bytes_be(),
            &TEST_KEY.e().to_bytes_be(),
        )
    }

    /// A PEM file with the test key and a self-signed certificate over it, plus the
    /// certificate's DER.
    pub(in crate::idp) fn certificate_file() -> (tempfile::NamedTempFile, Vec<u8>) {
        let key_pem = test_key_pem();
        let key_pair = rcgen::KeyPair::from_pem(&key_pem).expect("rcgen key");
        let certificate = rcgen::CertificateParams::new(vec!["obo-vault-test".to_owned()])
            .expect("certificate params")
            .self_signed(&key_pair)
            .expect("self-signed certificate");
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), format!("{key_pem}{}", certificate.pem())).expect("write PEM");
        (file, certificate.der().to_vec())
    }

    #[tokio::test]
    async fn certificate_assertions_are_signed_rs256_with_both_thumbprints() {
        let (file, der) = certificate_file();
        let credential = AppCredential::from_settings(
            &ClientCredential::Certificate(file.path().into()),
            &authority(),
        )
        .unwrap();
        assert_eq!(format!("{credential:?}"), "AppCredential::Certificate(..)");
        let endpoint = "https://login.example/tid/oauth2/v2.0/token";
        let fields = credential.form_fields("my-client", endpoint).await.unwrap();
        assert_eq!(
            fields[0],
            ("client_assertion_type", JWT_BEARER_ASSERTION.to_owned())
        );
        let assertion = &fields[1].1;
        let header = jsonwebtoken::decode_header(assertion).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(
            header.x5t.as_deref(),
            Some(URL_SAFE_NO_PAD.encode(Sha1::digest(&der)).as_str())
        );
        assert_eq!(
            header.x5t_s256.as_deref(),
            Some(URL_SAFE_NO_PAD.encode(Sha256::digest(&der)).as_str())
        );
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[endpoint]);
        validation.set_issuer(&["my-client"]);
        let claims =
            jsonwebtoken::decode::<serde_json::Value>(assertion, &test_decoding_key(), &validation)
                .unwrap()
                .claims;
        assert_eq!(claims["sub"], "my-client");
        assert!(uuid::Uuid::parse_str(claims["jti"].as_str().unwrap()).is_ok());
        let (nbf, exp) = (
            claims["nbf"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(claims["iat"].as_i64(), Some(nbf));
        assert_eq!(exp - nbf, 600);
    }

    #[test]
    fn certificate_errors_name_the_variable_and_not_the_key() {
        let missing = AppCredential::from_settings(
            &ClientCredential::Certificate("/nonexistent/cert.pem".into()),
            &authority(),
        );
        assert!(missing
            .unwrap_err()
            .to_string()
            .starts_with(CERTIFICATE_VAR));
        let key_only = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(key_only.path(), test_key_pem()).unwrap();
        let error = AppCredential::from_settings(
            &ClientCredential::Certificate(key_only.path().into()),
            &authority(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with(CERTIFICATE_VAR) && error.contains("CERTIFICATE"),
            "{error}"
        );
        assert!(!error.contains("MII"), "the message must not quote the key");
        let garbage = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(garbage.path(), "not a pem").unwrap();
        let error = AppCredential::from_settings(
            &ClientCredential::Certificate(garbage.path().into()),
            &authority(),
        );
        assert!(error.unwrap_err().to_string().starts_with(CERTIFICATE_VAR));
    }

    #[test]
    fn managed_identity_assertions_ask_for_the_clouds_exchange_audience() {
        let identity = ClientCredential::ManagedIdentity {
            client_id: "6b0e5e8c-2f3d-4a71-9c58-3e1d7a4b9f20".to_owned(),
        };
        for (authority, expected) in [
            (
                "https://login.microsoftonline.com",
                "api://AzureADTokenExchange/.default",
            ),
            (
                "https://login.microsoftonline.us",
                "api://AzureADTokenExchangeUSGov/.default",
            ),
            (
                "https://login.chinacloudapi.cn",
                "api://AzureADTokenExchangeChina/.default",
            ),
        ] {
            let credential =
                AppCredential::from_settings(&identity, &Url::parse(authority).unwrap()).unwrap();
            assert_eq!(
                format!("{credential:?}"),
                "AppCredential::ManagedIdentity(..)"
            );
            let AppCredential::ManagedIdentity { scope, .. } = credential else {
                panic!("{authority}: not a managed identity");
            };
            assert_eq!(scope, expected, "{authority}");
        }
    }

    #[tokio::test]
    async fn secrets_go_in_the_form_but_never_in_debug() {
        let credential = AppCredential::from_settings(
            &ClientCredential::Secret(SecretString::from("s3cret")),
            &authority(),
        )
        .unwrap();
        assert_eq!(format!("{credential:?}"), "AppCredential::Secret(..)");
        let fields = credential
            .form_fields("client", "https://login.example/t/oauth2/v2.0/token")
            .await
            .unwrap();
        assert_eq!(fields, vec![("client_secret", "s3cret".to_owned())]);
    }
}
