//! What the use cases need from the outside world, as traits: Entra's token endpoint, the
//! inbound-token validator, the encryption keys and the instance's clock.
//!
//! `app` wires the real implementations (this module's children: Entra through
//! [`EntraClient`](crate::idp::EntraClient) and [`TokenValidator`](crate::idp::TokenValidator),
//! Key Vault through [`CachedKeys`](crate::keys::CachedKeys), the system clock); the use
//! cases' unit tests wire in-memory fakes. The store ([`crate::store::TokenStore`]) and the
//! downstream call ([`crate::downstream::Work`]) are ports of their own.

mod clock;
mod entra;
mod keys;

use async_trait::async_trait;

use crate::domain::{InboundToken, RefreshToken, TenantId};
use crate::idp::{IdpError, TokenError, TokenSet, ValidatedToken};
use crate::keys::{KeyError, VersionedKey};

pub use clock::{Clock, SystemClock};

/// Entra's token endpoint: the two grants the flows run.
#[async_trait]
pub trait TokenEndpoint: Send + Sync {
    /// The On-Behalf-Of exchange of a user's inbound token (setup), for `scopes` plus a
    /// refresh token and an id_token.
    async fn on_behalf_of(
        &self,
        tenant: &TenantId,
        assertion: &InboundToken,
        scopes: &[String],
    ) -> Result<TokenSet, IdpError>;

    /// The refresh-token grant for `scopes`, with a claims challenge's `claims` (JSON) when
    /// answering one.
    async fn redeem(
        &self,
        tenant: &TenantId,
        refresh_token: &RefreshToken,
        scopes: &[String],
        claims: Option<&str>,
    ) -> Result<TokenSet, IdpError>;
}

/// Checks the access tokens callers bring (signature, issuer, audience, lifetime, tenant).
#[async_trait]
pub trait InboundValidator: Send + Sync {
    /// The token's claims, or why it is refused.
    async fn validate(&self, token: &InboundToken) -> Result<ValidatedToken, TokenError>;
}

/// The encryption keys as the flows use them: cached "latest" answers, specific versions.
#[async_trait]
pub trait KeyRing: Send + Sync {
    /// The newest enabled version of `name`, possibly a few minutes old.
    async fn latest(&self, name: &str) -> Result<VersionedKey, KeyError>;
    /// The newest enabled version of `name` as Key Vault has it now.
    async fn fresh_latest(&self, name: &str) -> Result<VersionedKey, KeyError>;
    /// Forgets a cached "latest" of `name` found older than a version in use.
    async fn forget_latest(&self, name: &str);
    /// One version of `name`.
    async fn version(&self, name: &str, version: &str) -> Result<VersionedKey, KeyError>;
}
