//! `OBOVAULT_EVENTS_URL` and `OBOVAULT_EVENTS_SECRET` (SPEC §4): both or neither. A wrong one
//! stops the process at start with a message naming the variable, never its value.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::{Env, SettingsError};

/// The Standard Webhooks secret prefix.
const SECRET_PREFIX: &str = "whsec_";

/// The fewest random bytes a signing secret may hold (SPEC §4; Standard Webhooks asks for
/// 24 to 64).
const MIN_SECRET_BYTES: usize = 24;

/// Where grant events go and how they are signed.
pub struct EventSettings {
    /// `OBOVAULT_EVENTS_URL`: an https URL without credentials.
    pub url: Url,
    /// `OBOVAULT_EVENTS_SECRET`: `whsec_` + base64 of at least 24 random bytes.
    pub secret: SecretString,
}

impl EventSettings {
    /// `None` when neither variable is set: the service sends no events.
    pub fn from_env(env: &Env) -> Result<Option<Self>, SettingsError> {
        let url = env.optional("OBOVAULT_EVENTS_URL");
        let secret = env.optional("OBOVAULT_EVENTS_SECRET");
        let (url, secret) = match (url, secret) {
            (None, None) => return Ok(None),
            (Some(url), Some(secret)) => (url, secret),
            (Some(_), None) => {
                return Err(SettingsError::new(
                    "OBOVAULT_EVENTS_SECRET",
                    "is required when OBOVAULT_EVENTS_URL is set (events are always signed)",
                ))
            }
            (None, Some(_)) => {
                return Err(SettingsError::new(
                    "OBOVAULT_EVENTS_URL",
                    "is required when OBOVAULT_EVENTS_SECRET is set",
                ))
            }
        };
        let url = env.https_url("OBOVAULT_EVENTS_URL", url)?;
        let secret = SecretString::from(secret.to_owned());
        check_secret(&secret)?;
        Ok(Some(Self { url, secret }))
    }
}

/// `whsec_` + standard base64 of at least [`MIN_SECRET_BYTES`] bytes.
fn check_secret(secret: &SecretString) -> Result<(), SettingsError> {
    let wrong = || {
        SettingsError::new(
            "OBOVAULT_EVENTS_SECRET",
            format!(
                "must be {SECRET_PREFIX} followed by the base64 of at least {MIN_SECRET_BYTES} random bytes"
            ),
        )
    };
    let encoded = secret
        .expose_secret()
        .strip_prefix(SECRET_PREFIX)
        .ok_or_else(wrong)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| wrong())?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(wrong());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Option<EventSettings>, SettingsError> {
        EventSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn neither_means_no_events() {
        assert!(parse(&[]).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_variable_and_never_the_secret() {
        let cases: [&[(&str, &str)]; 6] = [
            &[("OBOVAULT_EVENTS_URL", "https://hooks.example.com/x")],
            &[("OBOVAULT_EVENTS_SECRET", SECRET)],
            &[
                ("OBOVAULT_EVENTS_URL", "http://hooks.example.com/x"),
                ("OBOVAULT_EVENTS_SECRET", SECRET),
            ],
            &[
                ("OBOVAULT_EVENTS_URL", "https://hooks.example.com/x"),
                ("OBOVAULT_EVENTS_SECRET", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ],
            &[
                ("OBOVAULT_EVENTS_URL", "https://hooks.example.com/x"),
                ("OBOVAULT_EVENTS_SECRET", "whsec_c2hvcnQ="),
            ],
            &[
                ("OBOVAULT_EVENTS_URL", "https://hooks.example.com/x"),
                ("OBOVAULT_EVENTS_SECRET", "whsec_not base64!"),
            ],
        ];
        let expected = [
            "OBOVAULT_EVENTS_SECRET",
            "OBOVAULT_EVENTS_URL",
            "OBOVAULT_EVENTS_URL",
            "OBOVAULT_EVENTS_SECRET",
            "OBOVAULT_EVENTS_SECRET",
            "OBOVAULT_EVENTS_SECRET",
        ];
        for (pairs, variable) in cases.iter().zip(expected) {
            let Err(error) = parse(pairs) else {
                panic!("{pairs:?} was accepted")
            };
            assert_eq!(error.variable, variable, "{error}");
            assert!(!error.to_string().contains("MfKQ9r8"), "{error}");
        }
    }

    #[test]
    fn a_good_pair_is_accepted() {
        let settings = parse(&[
            ("OBOVAULT_EVENTS_URL", "https://hooks.example.com/obo"),
            ("OBOVAULT_EVENTS_SECRET", SECRET),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(settings.url.as_str(), "https://hooks.example.com/obo");
    }
}
