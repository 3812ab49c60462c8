//! Unit tests of the three flows on in-memory fakes (`tests/fakes`, `tests/memory_store`): no
//! emulator, no database, no wall clock. The emulator-backed tests in `tests/api` cover the
//! same flows end to end over HTTP, TLS and SQL.

mod do_work;
mod fakes;
mod memory_store;
mod refresh_all;
mod setup;

use std::sync::Arc;
use std::time::Duration;

use fakes::{FakeClock, FakeEntra, FakeKeys, FakeWork};
use memory_store::MemoryStore;

use super::do_work::{WorkDone, Workload};
use super::refresh_all::{RunOptions, Summary};
use super::{Deps, FlowError, Policy};
use crate::access_tokens::AccessTokenCache;
use crate::audit::AuditLog;
use crate::config::{AllowedTenants, DownstreamSettings, Downstreams, KeySettings};
use crate::crypto::{self, KeyLabel};
use crate::domain::{InboundToken, TenantId, UserId, UserKey};
use crate::downstreams::DownstreamApis;
use crate::idp::ValidatedToken;
use crate::ports::KeyRing as _;
use crate::tenancy::WorkloadTenants;

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// `OBOVAULT_REFRESH_AFTER` of every instance.
const REFRESH_AFTER: Duration = Duration::from_secs(24 * 3600);

/// One Entra, one Key Vault, one database and one downstream API, shared by any number of
/// service instances.
struct World {
    clock: Arc<FakeClock>,
    entra: Arc<FakeEntra>,
    keys: Arc<FakeKeys>,
    store: Arc<MemoryStore>,
    work: Arc<FakeWork>,
    downstreams: Arc<DownstreamApis>,
}

impl World {
    fn new() -> Self {
        let clock = Arc::new(FakeClock::new());
        let settings = DownstreamSettings {
            name: "default".into(),
            base_url: "https://api.example".parse().unwrap(),
            scopes: vec!["api://downstream/.default".into()],
            allowed_paths: vec!["/me".into()],
            timeout: Duration::from_secs(10),
        };
        let work = Arc::new(FakeWork::new(&settings));
        let shared = work.clone();
        let downstreams =
            DownstreamApis::with_work(&Downstreams::single(settings), |_| shared.clone());
        Self {
            store: Arc::new(MemoryStore::new(clock.clone())),
            clock,
            entra: Arc::default(),
            keys: Arc::default(),
            work,
            downstreams: Arc::new(downstreams),
        }
    }

    /// A service instance over the world: its own access-token cache and lease owner.
    fn instance(&self) -> Arc<Deps> {
        let tenant = TenantId::parse(TENANT).unwrap();
        let policy = Policy {
            allowed_tenants: AllowedTenants::Any,
            workload_tenants: WorkloadTenants::new(tenant, Vec::new()),
            keys: KeySettings {
                vault_url: "https://vault.example".parse().unwrap(),
                key_name_template: "obo-{tenant}".into(),
                auto_create: true,
                emulator: false,
                managed_identity_client_id: None,
            },
            lease: Duration::from_secs(30),
            refresh_after: REFRESH_AFTER,
            entra_timeout: Duration::from_secs(10),
            instance_id: format!("instance-{}", uuid::Uuid::new_v4()),
        };
        Arc::new(Deps {
            entra: self.entra.clone(),
            keys: self.keys.clone(),
            store: self.store.clone(),
            access_tokens: AccessTokenCache::new(self.downstreams.len(), self.clock.clone()),
            clock: self.clock.clone(),
            downstreams: self.downstreams.clone(),
            audit: AuditLog::start(self.store.clone()),
            policy,
        })
    }

    /// A world, an instance and user 1, connected.
    async fn with_connected_user() -> (Self, Arc<Deps>, UserKey) {
        let world = Self::new();
        let deps = world.instance();
        let user = Self::user(1);
        world.connect(&deps, &user).await;
        (world, deps, user)
    }

    /// The user numbered `n` of the home tenant.
    fn user(n: u8) -> UserKey {
        UserKey {
            tenant_id: TenantId::parse(TENANT).unwrap(),
            user_id: UserId::parse(&format!("00000000-0000-0000-0000-0000000000{n:02x}")).unwrap(),
        }
    }

    /// Runs setup for `user` (the fake Entra takes the object id as the assertion).
    async fn connect(&self, deps: &Deps, user: &UserKey) -> super::setup::Connection {
        let caller = ValidatedToken {
            tenant_id: user.tenant_id.clone(),
            object_id: Some(user.user_id.clone()),
            app_id: Some("spa".into()),
            scopes: vec!["Setup".into()],
            roles: Vec::new(),
            app_only: false,
            expires_at: self.clock_now(),
        };
        let assertion = InboundToken::new(user.user_id.to_string());
        super::setup::connect(deps, &caller, &assertion)
            .await
            .unwrap()
    }

    fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        crate::ports::Clock::now(self.clock.as_ref())
    }

    /// The refresh token stored on the user's row, opened.
    async fn stored_token(&self, user: &UserKey) -> String {
        let row = self.store.row(user);
        let key = self
            .keys
            .version(&row.key_name, &row.key_version)
            .await
            .unwrap();
        let label = KeyLabel {
            name: &row.key_name,
            version: &row.key_version,
        };
        let token = crypto::open(&row.sealed_refresh_token, user, label, &key.key).unwrap();
        token.expose().to_owned()
    }

    /// A do-work call on the default downstream by a workload of the home tenant.
    async fn do_work(&self, deps: &Arc<Deps>, user: &UserKey) -> Result<WorkDone, FlowError> {
        let workload = Workload {
            app_id: "workload".into(),
            tenant_id: TenantId::parse(TENANT).unwrap(),
        };
        let api = deps.downstreams.first();
        let request = api.work.prepare(None).unwrap();
        super::do_work::do_work(deps, user, api, &request, &workload).await
    }

    /// One timer run with room for every row.
    async fn run_timer(&self, deps: &Arc<Deps>, reseal_only: bool) -> Summary {
        let options = RunOptions {
            reseal_only,
            time_budget: Duration::from_secs(60),
            concurrency: 4,
        };
        super::refresh_all::run(deps, options, &|_| {})
            .await
            .unwrap()
    }
}
