//! What the flows work with, built once by the edge (`app`) from the configuration, or by a
//! unit test from fakes: the ports, the store, the caches, the audit and the [`Policy`].

use std::sync::Arc;
use std::time::Duration;

use crate::access_tokens::AccessTokenCache;
use crate::audit::AuditLog;
use crate::config::{AllowedTenants, KeySettings};
use crate::domain::TenantId;
use crate::downstreams::DownstreamApis;
use crate::ports::{Clock, KeyRing, TokenEndpoint};
use crate::store::{Lease, TokenStore};
use crate::tenancy::WorkloadTenants;

/// Everything a flow reaches.
pub struct Deps {
    /// Entra's token endpoint (OBO and refresh grants).
    pub entra: Arc<dyn TokenEndpoint>,
    /// The encryption keys.
    pub keys: Arc<dyn KeyRing>,
    /// Sealed tokens.
    pub store: Arc<dyn TokenStore>,
    /// The instance's clock.
    pub clock: Arc<dyn Clock>,
    /// The downstream APIs do-work calls, by name (the first is the default).
    pub downstreams: Arc<DownstreamApis>,
    /// Delegated access tokens in memory per user and downstream.
    pub access_tokens: AccessTokenCache,
    /// Who acted for whom.
    pub audit: AuditLog,
    /// The settings the flows apply.
    pub policy: Policy,
}

/// The settings the flows apply, read from the configuration by the edge.
#[derive(Clone, Debug)]
pub struct Policy {
    /// `OBOVAULT_ALLOWED_TENANTS`.
    pub allowed_tenants: AllowedTenants,
    /// `OBOVAULT_WORKLOAD_TENANTS`.
    pub workload_tenants: WorkloadTenants,
    /// The key naming (`OBOVAULT_KEY_NAME`).
    pub keys: KeySettings,
    /// Lease duration for work on one row.
    pub lease: Duration,
    /// `OBOVAULT_REFRESH_AFTER`: rows older than this are redeemed by the timer.
    pub refresh_after: Duration,
    /// `OBOVAULT_ENTRA_TIMEOUT`: how long one Entra call may take.
    pub entra_timeout: Duration,
    /// Unique per process: the lease owner.
    pub instance_id: String,
}

impl Deps {
    /// The lease this instance takes on a row (do-work).
    pub(crate) fn lease(&self) -> Lease {
        Lease {
            owner: self.policy.instance_id.clone(),
            duration: self.policy.lease,
        }
    }

    /// The Key Vault secret name of a tenant's key.
    pub(crate) fn key_name(&self, tenant: &TenantId) -> String {
        self.policy.keys.key_name(tenant)
    }
}
