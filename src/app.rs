//! The service's shared state: every client and cache built once from [`Settings`], and the
//! [`Deps`] the flows receive.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use crate::access_tokens::AccessTokenCache;
use crate::audit::AuditLog;
use crate::config::{EntraSettings, KeySettings, RefreshSettings, Settings};
use crate::downstreams::DownstreamApis;
use crate::idp::{AppCredential, EntraClient, TokenValidator};
use crate::keys::{CachedKeys, KeyVaultKeys};
use crate::ports::{Clock, InboundValidator, SystemClock};
use crate::store::{self, TokenStore};
use crate::usecase::{Deps, Policy};

/// How long "latest key version" answers are trusted before Key Vault is asked again.
const LATEST_KEY_TTL: Duration = Duration::from_secs(300);

/// Everything a request, a timer run or an operator command needs.
pub struct App {
    /// What the flows work with.
    pub deps: Arc<Deps>,
    /// Inbound token validation.
    pub validator: Arc<dyn InboundValidator>,
    /// Key Vault keys, cached (the same cache the flows use); the operator commands rotate.
    pub keys: CachedKeys,
    /// Sealed tokens (the flows' store); the operator commands report and offboard.
    pub store: Arc<dyn TokenStore>,
    /// Entra settings (tenant rules, scope and role names).
    pub entra_settings: EntraSettings,
    /// Key settings (key names).
    pub key_settings: KeySettings,
    /// Timer settings.
    pub refresh: RefreshSettings,
    /// Sends grant events, when `OBOVAULT_EVENTS_URL` is set.
    pub events: Option<Arc<crate::events::Delivery>>,
    /// Traces and metrics, when an exporter is configured.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
}

impl App {
    /// Connects to the database (running migrations) and builds every client.
    pub async fn build(settings: Settings) -> anyhow::Result<Arc<Self>> {
        let prepared = Self::prepare(settings)?;
        let settings = &prepared.settings;
        let store = store::open_as(
            &settings.database_url,
            &settings.database_auth,
            prepared.emits_events(),
        )
        .await
        .context("DATABASE_URL: cannot open the database")?;
        Ok(prepared.with_store(store))
    }

    /// Builds the app over an already opened store.
    pub fn with_store(settings: Settings, store: Arc<dyn TokenStore>) -> anyhow::Result<Arc<Self>> {
        Ok(Self::prepare(settings)?.with_store(store))
    }

    /// Builds every client that needs no database, so that bad settings stop the process
    /// before it listens, while the database may still be coming up.
    pub fn prepare(settings: Settings) -> anyhow::Result<Prepared> {
        let ca = settings.extra_ca_certs.as_deref();
        let entra_http = crate::outbound::client(ca, settings.entra.timeout)?;
        let key_vault_http = crate::outbound::client(ca, Duration::from_secs(10))?;
        let downstream_http = crate::outbound::client(ca, settings.downstreams.first().timeout)?;
        let credential = AppCredential::from_settings(
            &settings.entra.credential,
            &settings.entra.authority_host,
        )?;
        let key_vault = KeyVaultKeys::new(&settings.keys, key_vault_http)?;
        let events = settings
            .events
            .as_ref()
            .map(|events| crate::events::Sender::new(events, ca))
            .transpose()?;
        let entra = &settings.entra;
        let telemetry = settings
            .telemetry
            .as_ref()
            .map(|telemetry| crate::telemetry::Telemetry::start(telemetry, ca))
            .transpose()?;
        Ok(Prepared {
            events,
            telemetry,
            validator: TokenValidator::new(
                entra_http.clone(),
                entra.authority_host.clone(),
                entra.client_id.clone(),
                entra.allowed_tenants.clone(),
            )
            .refreshing_keys_every(entra.signing_keys_refresh),
            entra: EntraClient::new(
                entra_http,
                entra.authority_host.clone(),
                entra.client_id.clone(),
                credential,
            )
            .with_client_capabilities(&entra.client_capabilities),
            keys: CachedKeys::new(Arc::new(key_vault), LATEST_KEY_TTL),
            downstreams: DownstreamApis::new(&downstream_http, &settings.downstreams),
            settings,
        })
    }
}

/// Every client of an [`App`] except the database, built from valid settings.
pub struct Prepared {
    validator: TokenValidator,
    entra: EntraClient,
    keys: CachedKeys,
    downstreams: DownstreamApis,
    events: Option<crate::events::Sender>,
    telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    settings: Settings,
}

impl Prepared {
    /// The telemetry exporters, to flush when the process stops.
    pub fn telemetry(&self) -> Option<Arc<crate::telemetry::Telemetry>> {
        self.telemetry.clone()
    }

    /// The database URL the app is to open.
    pub fn database_url(&self) -> &secrecy::SecretString {
        &self.settings.database_url
    }

    /// How the app signs in to the database.
    pub fn database_auth(&self) -> &crate::config::DatabaseAuth {
        &self.settings.database_auth
    }

    /// Whether the store is to write grant events (`OBOVAULT_EVENTS_URL` is set).
    pub fn emits_events(&self) -> bool {
        self.events.is_some()
    }

    /// The app over an opened (and migrated) store.
    pub fn with_store(self, store: Arc<dyn TokenStore>) -> Arc<App> {
        let settings = self.settings;
        let events = self
            .events
            .map(|sender| Arc::new(crate::events::Delivery::new(sender, store.events())));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let policy = Policy {
            allowed_tenants: settings.entra.allowed_tenants.clone(),
            workload_tenants: settings.entra.workload_tenants.clone(),
            keys: settings.keys.clone(),
            lease: settings.lease,
            refresh_after: settings.refresh.after,
            entra_timeout: settings.entra.timeout,
            instance_id: format!("obo-vault-{}", uuid::Uuid::new_v4()),
        };
        let deps = Deps {
            entra: Arc::new(self.entra),
            keys: Arc::new(self.keys.clone()),
            store: store.clone(),
            access_tokens: AccessTokenCache::new(self.downstreams.len(), clock.clone()),
            clock,
            downstreams: Arc::new(self.downstreams),
            audit: AuditLog::start(store.clone()),
            policy,
        };
        Arc::new(App {
            deps: Arc::new(deps),
            validator: Arc::new(self.validator),
            keys: self.keys,
            store,
            entra_settings: settings.entra,
            key_settings: settings.keys,
            refresh: settings.refresh,
            events,
            telemetry: self.telemetry,
        })
    }
}
