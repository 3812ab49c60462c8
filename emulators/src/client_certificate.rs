//! Client certificates for the app's certificate credential: an RSA 2048 key and a
//! self-signed certificate over it, as `New-SelfSignedCertificate` or `openssl req -x509`
//! would make for an app registration (Entra accepts self-signed certificates).

use anyhow::Context as _;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};

/// A private key and its certificate.
pub struct ClientCertificate {
    /// `PRIVATE KEY` (PKCS#8) then `CERTIFICATE`: the file `OBOVAULT_CLIENT_CERTIFICATE_PATH`
    /// names.
    pub key_and_certificate_pem: String,
    /// The `CERTIFICATE` alone: what is uploaded to the app registration.
    pub certificate_pem: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of debug output.
        f.debug_struct("ClientCertificate").finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Generates a fresh key and certificate (CPU work: call it off the async threads).
    pub fn generate(common_name: &str) -> anyhow::Result<Self> {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .context("generating the certificate's RSA key")?;
        let key_pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the certificate's key")?
            .to_string();
        let key_pair = rcgen::KeyPair::from_pem(&key_pem).context("loading the RSA key")?;
        let certificate = rcgen::CertificateParams::new(vec![common_name.to_owned()])
            .context("certificate parameters")?
            .self_signed(&key_pair)
            .context("self-signing the certificate")?;
        let certificate_pem = certificate.pem();
        Ok(Self {
            key_and_certificate_pem: format!("{key_pem}{certificate_pem}"),
            certificate_pem,
        })
    }

    /// Writes the key and certificate to `path`, readable by the owner only.
    pub fn write_to(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.key_and_certificate_pem)
            .with_context(|| format!("writing {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", path.display()))?;
        }
        Ok(())
    }
}
