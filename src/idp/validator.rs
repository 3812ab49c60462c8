//! Validation of inbound Entra access tokens (reference A4): signature against the keys of
//! the tenant's OpenID metadata (or, with `OBOVAULT_ALLOWED_TENANTS=*`, the authority's
//! multi-tenant `common` metadata), issuer v1 or v2, audience, lifetime with 5 minutes of skew,
//! and an allowed tenant.
//!
//! Order matters for safety: size, structure and algorithm are checked first, then the tenant
//! named by the still unverified token is checked against the allow-list, and only then may the
//! network be used, at URLs no caller chooses: a listed tenant's metadata, or the `common`
//! metadata. A forged token therefore never makes us fetch anything for a tenant it names, and
//! garbage key ids cause at most one JWKS refetch per minute per key source ([`keys`]).

mod documents;
#[cfg(test)]
mod fake_entra;
mod keys;
#[cfg(test)]
mod multi_tenant_tests;
#[cfg(test)]
mod tests;
mod verified;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use self::documents::Fetcher;
use self::keys::{KeySource, Scope, Timings};
use super::cloud::Cloud;
use crate::config::AllowedTenants;
use crate::domain::{TenantId, UserId};

/// Tokens larger than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew accepted on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 300;

/// Why an inbound token was refused. The texts are safe to show to the client.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT we can read, too large, or missing a required claim.
    #[error("the token is malformed")]
    Malformed,
    /// Not signed with RS256.
    #[error("the token is not signed with an accepted algorithm")]
    UnsupportedAlgorithm,
    /// Signed with a key the tenant does not publish.
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    /// The signature does not match.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` is in the past (beyond the allowed skew).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the allowed skew).
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Issued for another application.
    #[error("the token was not issued for this application")]
    WrongAudience,
    /// Not issued by the tenant's Entra issuer.
    #[error("the token was not issued by the expected issuer")]
    WrongIssuer,
    /// The token's tenant may not use this service.
    #[error("the token's tenant is not allowed to use this service")]
    TenantNotAllowed,
    /// Discovery or JWKS fetch failed: the caller answers 503.
    #[error("the identity provider's signing keys are not available")]
    MetadataUnavailable,
}

/// The claims of a valid inbound token that the service acts on.
#[derive(Clone, Debug)]
pub struct ValidatedToken {
    /// `tid`.
    pub tenant_id: TenantId,
    /// `oid`: the user, or the calling app's service principal for app-only tokens.
    pub object_id: Option<UserId>,
    /// `azp` (v2) or `appid` (v1): the calling client application.
    pub app_id: Option<String>,
    /// `scp` split on spaces (delegated permissions).
    pub scopes: Vec<String>,
    /// `roles` (app roles).
    pub roles: Vec<String>,
    /// An app-only token: `idtyp == "app"`, or no `scp` and `oid == sub`.
    pub app_only: bool,
    /// `exp`.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// Validates inbound access tokens for this app; keeps the metadata's keys.
pub struct TokenValidator {
    fetcher: Arc<Fetcher>,
    /// Accepted `aud` values: the client id and `api://{client id}`.
    audiences: [String; 2],
    allowed_tenants: AllowedTenants,
    sources: Sources,
    timings: Timings,
    /// The authority's cloud, whose v1 issuer host v1 tokens carry.
    cloud: Cloud,
    /// Tokens that passed every check a moment ago ([`verified`]).
    verified: verified::Verified,
}

/// Where keys come from: each listed tenant's own metadata, or the `common` metadata for all.
enum Sources {
    Tenants(HashMap<TenantId, Arc<KeySource>>),
    Common(Arc<KeySource>),
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct UnverifiedClaims {
    tid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    tid: String,
    oid: Option<String>,
    sub: Option<String>,
    azp: Option<String>,
    appid: Option<String>,
    scp: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    idtyp: Option<String>,
    exp: i64,
}

impl TokenValidator {
    /// A validator for tokens issued to `client_id` by tenants in `allowed_tenants`.
    pub fn new(
        http: reqwest::Client,
        authority_host: Url,
        client_id: String,
        allowed_tenants: AllowedTenants,
    ) -> Self {
        Self::with_timings(
            http,
            authority_host,
            client_id,
            allowed_tenants,
            Timings::default(),
        )
    }

    /// Refreshes the metadata and keys when they are `age` old (default 24 h); unknown-`kid`
    /// refetches and retries after a failure then wait at most as long.
    #[must_use]
    pub fn refreshing_keys_every(mut self, age: Duration) -> Self {
        self.timings = Timings::refreshing_every(age);
        self
    }

    fn with_timings(
        http: reqwest::Client,
        authority_host: Url,
        client_id: String,
        allowed_tenants: AllowedTenants,
        timings: Timings,
    ) -> Self {
        let sources = match &allowed_tenants {
            AllowedTenants::Any => Sources::Common(KeySource::new(&authority_host, Scope::Common)),
            AllowedTenants::Only(tenants) => Sources::Tenants(
                tenants
                    .iter()
                    .map(|tenant| {
                        let scope = Scope::Tenant(tenant.clone());
                        (tenant.clone(), KeySource::new(&authority_host, scope))
                    })
                    .collect(),
            ),
        };
        Self {
            cloud: Cloud::of_authority(&authority_host),
            fetcher: Arc::new(Fetcher {
                http,
                authority: authority_host,
            }),
            audiences: [format!("api://{client_id}"), client_id],
            allowed_tenants,
            sources,
            timings,
            verified: verified::Verified::default(),
        }
    }

    /// Validates an inbound access token for this app. Never fetches metadata for a tenant
    /// the token names: only a listed tenant's or the `common` metadata. The same token
    /// presented again within two minutes (and before its `exp`) is not checked again
    /// ([`verified`]).
    pub async fn validate(&self, unverified_token: &str) -> Result<ValidatedToken, TokenError> {
        if unverified_token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        if let Some(claims) = self.verified.get(unverified_token) {
            return Ok(claims);
        }
        let claims = self.verify(unverified_token).await?;
        self.verified.keep(unverified_token, &claims);
        Ok(claims)
    }

    async fn verify(&self, unverified_token: &str) -> Result<ValidatedToken, TokenError> {
        let (tenant, kid) = Self::precheck(unverified_token)?;
        if !self.allowed_tenants.allows(&tenant) {
            return Err(TokenError::TenantNotAllowed);
        }
        let kid = kid.ok_or(TokenError::UnknownKey)?;
        let source = match &self.sources {
            Sources::Common(source) => source,
            Sources::Tenants(sources) => {
                sources.get(&tenant).ok_or(TokenError::TenantNotAllowed)?
            }
        };
        let keys = source.keys(&self.fetcher, &kid, &self.timings).await?;
        let key = keys.key_for(&kid, &tenant).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(
            unverified_token,
            key,
            &self.validation(&tenant, &keys.issuer_for(&tenant)),
        )
        .map_err(|error| token_error(error.kind()))?
        .claims;
        validated(tenant, claims)
    }

    /// The checks [`Self::validate`] makes before any key lookup or network use: size,
    /// structure, header, algorithm, `crit` and `tid`. Returns the still unverified tenant and
    /// key id. Public so that the fuzz targets in `fuzz/` reach the token parsing; it proves
    /// nothing about the token.
    pub fn precheck(unverified_token: &str) -> Result<(TenantId, Option<String>), TokenError> {
        if unverified_token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (header, unverified) = peek(unverified_token)?;
        // Before any key lookup: `none` and HS* (signed with a public key as "secret") are the
        // classic JWT forgeries.
        if header.alg != "RS256" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed);
        }
        let tid = unverified.tid.ok_or(TokenError::Malformed)?;
        let tenant = TenantId::parse(&tid).map_err(|_| TokenError::Malformed)?;
        Ok((tenant, header.kid))
    }

    /// Reads a token payload (JSON) into the claims the service acts on, as
    /// [`Self::validate`] does once the signature and time checks passed. Public so that the
    /// fuzz targets in `fuzz/` reach the claims parsing; it checks no signature.
    pub fn claims_from_json(
        tenant: TenantId,
        payload: &[u8],
    ) -> Result<ValidatedToken, TokenError> {
        let claims: Claims = serde_json::from_slice(payload).map_err(|_| TokenError::Malformed)?;
        validated(tenant, claims)
    }

    fn validation(&self, tenant: &TenantId, issuer: &str) -> Validation {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        validation.set_audience(&self.audiences);
        validation.set_issuer(&[issuer, &self.cloud.v1_issuer(tenant.as_str())]);
        validation
    }
}

/// Splits a compact JWS and reads its header and `tid` without verifying anything.
fn peek(token: &str) -> Result<(RawHeader, UnverifiedClaims), TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    Ok((decode_part(header)?, decode_part(payload)?))
}

fn decode_part<T: DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

fn token_error(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::WrongIssuer,
        ErrorKind::InvalidAlgorithm => TokenError::UnsupportedAlgorithm,
        _ => TokenError::Malformed,
    }
}

fn validated(tenant: TenantId, claims: Claims) -> Result<ValidatedToken, TokenError> {
    // The unverified tid chose the keys; the signed one must agree (it is the same payload,
    // so this only guards against a parser disagreement).
    if TenantId::parse(&claims.tid).ok().as_ref() != Some(&tenant) {
        return Err(TokenError::Malformed);
    }
    let object_id = claims
        .oid
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .map_err(|_| TokenError::Malformed)?;
    let app_only = claims.idtyp.as_deref() == Some("app")
        || (claims.scp.is_none() && claims.oid.is_some() && claims.oid == claims.sub);
    let scopes = claims
        .scp
        .as_deref()
        .map(|scp| {
            scp.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let expires_at =
        chrono::DateTime::from_timestamp(claims.exp, 0).ok_or(TokenError::Malformed)?;
    Ok(ValidatedToken {
        tenant_id: tenant,
        object_id,
        app_id: claims.azp.or(claims.appid),
        scopes,
        roles: claims.roles,
        app_only,
        expires_at,
    })
}
