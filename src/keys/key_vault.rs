//! Keys stored as Key Vault secrets, read and written through the official SDK.
//!
//! In Azure the vault is reached with a managed identity. Against the local emulator
//! (`OBOVAULT_KEY_VAULT_EMULATOR=true`) a dummy bearer token is sent and the challenge-domain
//! check is off, because the emulator's host is not a `*.vault.azure.net` name. The SDK's own
//! retries are off: a throttled or failing vault must surface promptly as a 503 with
//! `Retry-After` instead of holding a request for up to a minute.
//!
//! Key Vault's "latest" is the newest version even when an operator disabled it (to roll a
//! bad rotation back): `GET /secrets/{name}` then answers `403` with inner error
//! `SecretDisabled`. [`KeyVaultKeys::latest`] then lists the versions and takes the newest
//! enabled one by `attributes.created`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::{ErrorKind, ErrorResponse};
use azure_core::http::headers::HeaderName;
use azure_core::http::{ClientOptions, RetryOptions, Transport};
use azure_identity::{ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId};
use azure_security_keyvault_secrets::models::{SecretClientGetSecretOptions, SetSecretParameters};
use azure_security_keyvault_secrets::{ResourceExt as _, SecretClient, SecretClientOptions};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use zeroize::Zeroizing;

use super::{KeyError, KeySource, VersionedKey};

mod shred;
use crate::config::KeySettings;
use crate::crypto::DataKey;
pub use shred::Shredded;

/// A [`KeySource`] over one Key Vault.
pub struct KeyVaultKeys {
    client: SecretClient,
    auto_create: bool,
}

impl KeyVaultKeys {
    /// Builds the SDK client; `http` is the transport (it carries `OBOVAULT_EXTRA_CA_CERTS`).
    pub fn new(settings: &KeySettings, http: reqwest::Client) -> anyhow::Result<Self> {
        let credential: Arc<dyn TokenCredential> = if settings.emulator {
            Arc::new(EmulatorCredential)
        } else {
            let user_assigned_id = settings
                .managed_identity_client_id
                .clone()
                .map(UserAssignedId::ClientId);
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id,
                ..Default::default()
            }))
            .context("Failed to create the managed identity credential for Key Vault")?
        };
        let options = SecretClientOptions {
            client_options: ClientOptions {
                transport: Some(Transport::new(crate::outbound::TracedTransport::new(
                    http,
                    crate::outbound::Dependency::KeyVault,
                ))),
                retry: RetryOptions::none(),
                ..Default::default()
            },
            verify_challenge_resource: Some(!settings.emulator),
            ..Default::default()
        };
        let client = SecretClient::new(settings.vault_url.as_str(), credential, Some(options))
            .context("OBOVAULT_KEY_VAULT_URL: cannot create the Key Vault client")?;
        Ok(Self {
            client,
            auto_create: settings.auto_create,
        })
    }

    async fn fetch(&self, name: &str, version: Option<&str>) -> Result<VersionedKey, KeyError> {
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..Default::default()
        };
        let label = match version {
            Some(version) => format!("{name}/{version}"),
            None => name.to_owned(),
        };
        let secret = self
            .client
            .get_secret(name, Some(options))
            .await
            .map_err(|error| classify(&label, &error))?
            .into_model()
            .map_err(|_| KeyError::Misconfigured(format!("{name}: unreadable secret")))?;
        let version = secret
            .resource_id()
            .ok()
            .and_then(|id| id.version)
            .ok_or_else(|| KeyError::Misconfigured(format!("{name}: secret has no version")))?;
        let value = Zeroizing::new(secret.value.unwrap_or_default());
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| KeyError::Misconfigured(format!("{name}: value is not base64")))?,
        );
        let key = DataKey::from_bytes(&bytes)
            .map_err(|_| KeyError::Misconfigured(format!("{name}: value is not 32 bytes")))?;
        Ok(VersionedKey {
            name: name.to_owned(),
            version,
            created: secret
                .attributes
                .and_then(|attributes| attributes.created)
                .and_then(to_chrono),
            key: Arc::new(key),
        })
    }

    /// The newest enabled version of `name`, from the list of its versions (the list carries
    /// attributes, never values; it comes in no particular order, so `created` decides).
    async fn newest_enabled(&self, name: &str) -> Result<VersionedKey, KeyError> {
        let mut pager = self
            .client
            .list_secret_properties_versions(name, None)
            .map_err(|error| classify(name, &error))?;
        let mut newest: Option<(DateTime<Utc>, String)> = None;
        while let Some(properties) = pager
            .try_next()
            .await
            .map_err(|error| classify(name, &error))?
        {
            let attributes = properties.attributes.as_ref();
            if attributes.and_then(|a| a.enabled) != Some(true) {
                continue;
            }
            let (Some(created), Some(version)) = (
                attributes.and_then(|a| a.created).and_then(to_chrono),
                properties.resource_id().ok().and_then(|id| id.version),
            ) else {
                continue;
            };
            // Ties (two versions created within one second) go to the larger id, so that every
            // instance picks the same one.
            if newest
                .as_ref()
                .is_none_or(|best| (created, &version) > (best.0, &best.1))
            {
                newest = Some((created, version));
            }
        }
        let Some((_, version)) = newest else {
            return Err(KeyError::Disabled(name.to_owned()));
        };
        tracing::warn!(key.name = %name, key.version = %version, "the newest key version is disabled; sealing under the newest enabled one");
        self.fetch(name, Some(&version)).await
    }
}

fn to_chrono(at: time::OffsetDateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond())
}

#[async_trait]
impl KeySource for KeyVaultKeys {
    #[tracing::instrument(skip_all, fields(key.name = %name))]
    async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError> {
        match self.fetch(name, None).await {
            Err(KeyError::Disabled(_)) => self.newest_enabled(name).await,
            Err(KeyError::NotFound(_)) if self.auto_create => {
                tracing::warn!(key.name = %name, "key missing in Key Vault; creating it (OBOVAULT_KEY_AUTO_CREATE)");
                self.rotate(name).await
            }
            other => other,
        }
    }

    #[tracing::instrument(skip_all, fields(key.name = %name, key.version = %version))]
    async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError> {
        // A version id is a path segment; refuse anything that could change the request path.
        if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(KeyError::NotFound(format!("{name}/{version}")));
        }
        self.fetch(name, Some(version)).await
    }

    #[tracing::instrument(skip_all, fields(key.name = %name))]
    async fn rotate(&self, name: &str) -> Result<VersionedKey, KeyError> {
        let key = DataKey::generate();
        let value = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(key.expose()));
        let parameters = SetSecretParameters {
            value: Some(value.to_string()),
            content_type: Some("application/octet-stream; obo-vault=aes-256-gcm-key".into()),
            ..Default::default()
        };
        let content = parameters
            .try_into()
            .map_err(|_| KeyError::Misconfigured("cannot encode the new key".into()))?;
        let created = self
            .client
            .set_secret(name, content, None)
            .await
            .map_err(|error| classify(name, &error))?
            .into_model()
            .map_err(|_| KeyError::Misconfigured(format!("{name}: unreadable answer to set")))?;
        let version = created
            .resource_id()
            .ok()
            .and_then(|id| id.version)
            .ok_or_else(|| KeyError::Misconfigured(format!("{name}: new secret has no version")))?;
        tracing::info!(key.name = %name, key.version = %version, "new key version created");
        Ok(VersionedKey {
            name: name.to_owned(),
            version,
            created: created
                .attributes
                .and_then(|attributes| attributes.created)
                .and_then(to_chrono),
            key: Arc::new(key),
        })
    }
}

fn classify(name: &str, error: &azure_core::Error) -> KeyError {
    let kind = error.kind();
    let ErrorKind::HttpResponse {
        status,
        error_code,
        raw_response,
    } = kind
    else {
        tracing::warn!(key.name = %name, error.kind = %kind, "Key Vault unreachable");
        return KeyError::Unavailable;
    };
    let status = u16::from(*status);
    let retry_after = raw_response.as_ref().and_then(|raw| {
        raw.headers()
            .get_optional_str(&HeaderName::from_static("retry-after"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs)
    });
    // Key Vault's body is `{"error": {"code", "message", "innererror": {"code"}}}`; a disabled
    // version is `403 Forbidden` with inner code `SecretDisabled` (REST specification,
    // `common.json` `KeyVaultError`; the answer seen in Azure/azure-sdk-for-js#24756).
    let inner_code = raw_response
        .as_ref()
        .and_then(|raw| serde_json::from_slice::<ErrorResponse>(raw.body().as_ref()).ok())
        .and_then(|body| body.error?.inner_error?.code);
    tracing::warn!(key.name = %name, http.status = status, error.code = ?error_code, error.inner_code = ?inner_code, "Key Vault refused the request");
    match status {
        404 => KeyError::NotFound(name.to_owned()),
        403 if inner_code.as_deref() == Some("SecretDisabled") => {
            KeyError::Disabled(name.to_owned())
        }
        429 => KeyError::Throttled(retry_after),
        408 | 500..=599 => KeyError::Unavailable,
        _ => KeyError::Misconfigured(format!(
            "{name}: Key Vault answered {status} {}",
            error_code.as_deref().unwrap_or("")
        )),
    }
}

/// The token sent to a Key Vault emulator, which accepts any bearer token.
#[derive(Debug)]
struct EmulatorCredential;

#[async_trait]
impl TokenCredential for EmulatorCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            "emulator-dummy-token",
            time::OffsetDateTime::now_utc() + time::Duration::hours(1),
        ))
    }
}
