//! Key Vault settings: where the tenants' keys live and what they are called.

use url::Url;

use super::{problem, Env, SettingsError};
use crate::domain::TenantId;

/// Key Vault settings.
#[derive(Clone, Debug)]
pub struct KeySettings {
    /// `OBOVAULT_KEY_VAULT_URL`: must be `https://`.
    pub vault_url: Url,
    /// `OBOVAULT_KEY_NAME`: `{tenant}` becomes the tenant id.
    pub key_name_template: String,
    /// `OBOVAULT_KEY_AUTO_CREATE`.
    pub auto_create: bool,
    /// `OBOVAULT_KEY_VAULT_EMULATOR`: dummy bearer token, no challenge-domain check.
    pub emulator: bool,
    /// `AZURE_CLIENT_ID`: a user-assigned managed identity for Key Vault (and the assertion).
    pub managed_identity_client_id: Option<String>,
}

impl KeySettings {
    /// The Key Vault secret name of a tenant's key.
    pub fn key_name(&self, tenant: &TenantId) -> String {
        self.key_name_template.replace("{tenant}", tenant.as_str())
    }

    pub(super) fn from_env(env: &Env) -> Result<Self, SettingsError> {
        const VAR: &str = "OBOVAULT_KEY_VAULT_URL";
        let vault_url = env.https_url(VAR, env.required(VAR)?)?;
        let key_name_template = env.or("OBOVAULT_KEY_NAME", "obo-vault-{tenant}").to_owned();
        let sample = key_name_template.replace("{tenant}", "00000000-0000-0000-0000-000000000000");
        if sample.is_empty()
            || sample.len() > 127
            || !sample
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(problem(
                "OBOVAULT_KEY_NAME",
                "must be a Key Vault secret name (letters, digits, -) with an optional {tenant}",
            ));
        }
        Ok(Self {
            vault_url,
            key_name_template,
            auto_create: env.flag("OBOVAULT_KEY_AUTO_CREATE")?,
            emulator: env.flag("OBOVAULT_KEY_VAULT_EMULATOR")?,
            managed_identity_client_id: env.optional("AZURE_CLIENT_ID").map(str::to_owned),
        })
    }
}
