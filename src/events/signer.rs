//! Standard Webhooks signatures, through the specification's own Rust library
//! (`standardwebhooks`): `v1,` + base64(HMAC-SHA256(key = base64-decoded secret after
//! `whsec_`, message = `{webhook-id}.{webhook-timestamp}.{body}`)).

use secrecy::{ExposeSecret, SecretString};

/// Signs event bodies. Holds the decoded key; deliberately not `Debug`.
pub struct Signer {
    webhook: standardwebhooks::Webhook,
}

/// The secret is not `whsec_` + base64 (settings check this at start).
#[derive(Debug, thiserror::Error)]
#[error("OBOVAULT_EVENTS_SECRET: not a Standard Webhooks secret")]
pub struct BadSecret;

impl Signer {
    /// Decodes `whsec_…`.
    pub fn new(secret: &SecretString) -> Result<Self, BadSecret> {
        let encoded = secret
            .expose_secret()
            .strip_prefix("whsec_")
            .ok_or(BadSecret)?;
        let webhook = standardwebhooks::Webhook::new(encoded).map_err(|_| BadSecret)?;
        Ok(Self { webhook })
    }

    /// The `webhook-signature` header value for one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        self.webhook
            .sign(id, timestamp, body.as_bytes())
            // `sign` fails only for a body that is not UTF-8, which a `&str` cannot be.
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (spec/standard-webhooks.md, and the
    /// reference libraries' tests): secret, id, timestamp, body and the published signature.
    #[test]
    fn signs_the_specification_example() {
        let signer = Signer::new(&SecretString::from(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        ))
        .unwrap();
        let signature = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn refuses_a_secret_without_the_prefix() {
        assert!(Signer::new(&SecretString::from(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()
        ))
        .is_err());
    }
}
