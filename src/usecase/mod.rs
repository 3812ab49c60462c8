//! The three flows as plain async functions over [`Deps`]: the ports, the store, the caches
//! and the few settings the flows apply. No HTTP types and no configuration here, so the
//! forwarded requests, the JSON invocations, the operator CLI and the unit tests on fakes
//! share them.

mod custody;
mod dead_grant;
mod deps;
pub mod do_work;
mod leases;
pub mod refresh_all;
pub mod setup;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use crate::crypto::CryptoError;
use crate::downstream::DownstreamError;
use crate::idp::IdpError;
use crate::keys::KeyError;
use crate::store::StoreError;
use crate::tenancy::TenancyRefusal;

pub use deps::{Deps, Policy};

/// Why a flow failed; `http::problem` maps each variant to its answer. Cloneable, so that
/// every caller waiting on one coalesced refresh gets its error.
#[derive(Clone, Debug, thiserror::Error)]
pub enum FlowError {
    /// Another instance held the user's lease for longer than we wait.
    #[error("another instance is refreshing this user's token")]
    Busy,
    /// A stored value does not open (corruption or a key mix-up): an operator must look.
    #[error("a stored token does not open")]
    Crypto(#[from] CryptoError),
    /// The downstream call failed or was refused.
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    /// Entra refused or failed.
    #[error("Entra ID: {0}")]
    Idp(#[from] IdpError),
    /// Setup only: Entra wants the user to interact (MFA, consent, policy).
    #[error("Entra ID requires interaction")]
    InteractionRequired {
        /// Entra's claims challenge.
        claims: Option<String>,
    },
    /// Entra has no consent for this downstream's resource (AADSTS65001); the grant is fine.
    #[error(
        "consent for the downstream API {downstream} is missing; the user or an admin must consent"
    )]
    ConsentRequired {
        /// The downstream's name.
        downstream: String,
    },
    /// Key Vault failed.
    #[error("Key Vault: {0}")]
    Keys(#[from] KeyError),
    /// Key Vault will not give the key version a stored token is sealed under (disabled,
    /// deleted, forbidden). The grant itself is fine: the row stays active and works again
    /// once an operator restores the version.
    #[error("key version {key_name}/{key_version} is not available: {cause}")]
    KeyVersionUnavailable {
        /// The secret name.
        key_name: String,
        /// The version the row is sealed under.
        key_version: String,
        /// What Key Vault answered.
        cause: KeyError,
    },
    /// There is no row for the user.
    #[error("the user is not connected")]
    NotConnected,
    /// The stored grant is dead: the user must run setup again.
    #[error("the user must run setup again")]
    ReauthRequired {
        /// Entra's error code (`invalid_grant:70008`).
        reason: Option<String>,
        /// The claims (JSON) the client passes to its next interactive sign-in, when Entra
        /// (or the downstream's claims challenge) said what it must satisfy.
        claims: Option<String>,
    },
    /// The database failed.
    #[error("database: {0}")]
    Store(#[source] Arc<StoreError>),
    /// The tenant is not in `OBOVAULT_ALLOWED_TENANTS`.
    #[error("tenant not allowed")]
    TenantNotAllowed,
    /// The workload's tenant may not act for this user (`OBOVAULT_WORKLOAD_TENANTS`).
    #[error("{0}")]
    Tenancy(#[from] TenancyRefusal),
}

impl From<StoreError> for FlowError {
    fn from(error: StoreError) -> Self {
        Self::Store(Arc::new(error))
    }
}

impl FlowError {
    /// A row that is not active (any more): its grant is dead, for `reason`.
    pub(crate) fn reauth(reason: Option<String>) -> Self {
        Self::ReauthRequired {
            reason,
            claims: None,
        }
    }
}
