//! The service's shared state: every client and cache built once from [`Settings`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::audit::AuditLog;
use crate::config::{DownstreamSettings, EntraSettings, KeySettings, RefreshSettings, Settings};
use crate::downstream::{Downstream, Work};
use crate::idp::{AppCredential, EntraClient, TokenValidator};
use crate::keys::{CachedKeys, KeyVaultKeys};
use crate::store::{self, TokenStore};
use crate::usecase::access_tokens::AccessTokenCache;

/// How long "latest key version" answers are trusted before Key Vault is asked again.
const LATEST_KEY_TTL: Duration = Duration::from_secs(300);

/// Everything a request or a timer run needs.
pub struct App {
    /// Inbound token validation.
    pub validator: TokenValidator,
    /// OBO and refresh grants.
    pub entra: EntraClient,
    /// Key Vault keys, cached.
    pub keys: CachedKeys,
    /// Sealed tokens.
    pub store: Arc<dyn TokenStore>,
    /// What do-work does with the user's token (the built-in downstream proxy).
    pub downstream: Arc<dyn Work>,
    /// Delegated access tokens in memory, with single flight per user.
    pub access_tokens: AccessTokenCache,
    /// Who acted for whom.
    pub audit: AuditLog,
    /// Entra settings (tenant rules, scope and role names).
    pub entra_settings: EntraSettings,
    /// Downstream settings.
    pub downstream_settings: DownstreamSettings,
    /// Key settings (key names).
    pub key_settings: KeySettings,
    /// Timer settings.
    pub refresh: RefreshSettings,
    /// Lease duration for work on one row.
    pub lease: Duration,
    /// Unique per process: the lease owner.
    pub instance_id: String,
}

impl App {
    /// Connects to the database (running migrations) and builds every client.
    pub async fn build(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let store = store::connect(&settings.database_url)
            .await
            .context("DATABASE_URL: cannot open the database")?;
        Self::with_store(settings, store)
    }

    /// Builds the app over an already opened store.
    pub fn with_store(settings: Settings, store: Arc<dyn TokenStore>) -> anyhow::Result<Arc<Self>> {
        let ca = settings.extra_ca_certs.as_deref();
        let entra_http = crate::outbound::client(ca, settings.entra.timeout)?;
        let key_vault_http = crate::outbound::client(ca, Duration::from_secs(10))?;
        let downstream_http = crate::outbound::client(ca, settings.downstream.timeout)?;
        let credential = AppCredential::from_settings(
            &settings.entra.credential,
            settings.keys.managed_identity_client_id.as_deref(),
        )?;
        let key_vault = KeyVaultKeys::new(&settings.keys, key_vault_http)?;
        let audit = AuditLog::start(store.clone());
        Ok(Arc::new(Self {
            validator: TokenValidator::new(
                entra_http.clone(),
                settings.entra.authority_host.clone(),
                settings.entra.client_id.clone(),
                settings.entra.allowed_tenants.clone(),
            ),
            entra: EntraClient::new(
                entra_http,
                settings.entra.authority_host.clone(),
                settings.entra.client_id.clone(),
                credential,
            ),
            keys: CachedKeys::new(Arc::new(key_vault), LATEST_KEY_TTL),
            store,
            downstream: Arc::new(Downstream::new(
                downstream_http,
                settings.downstream.clone(),
            )),
            access_tokens: AccessTokenCache::new(),
            audit,
            entra_settings: settings.entra,
            downstream_settings: settings.downstream,
            key_settings: settings.keys,
            refresh: settings.refresh,
            lease: settings.lease,
            instance_id: format!("obo-vault-{}", uuid::Uuid::new_v4()),
        }))
    }
}
