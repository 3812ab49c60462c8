//! Issuers and signing keys from Entra's OpenID metadata, kept as "last good".
//!
//! A [`KeySource`] is one metadata document and its JWKS: a tenant's own
//! (`{authority}/{tid}/v2.0/.well-known/openid-configuration`) for a deployment that lists its
//! tenants, or the authority's multi-tenant one (`{authority}/common/v2.0/…`, issuer template
//! `{authority}/{tenantid}/v2.0`) with `OBOVAULT_ALLOWED_TENANTS=*`, as Microsoft.Identity.Web
//! validates multi-tenant tokens. Either way the URL never depends on a value a caller chose.
//!
//! Keys are refreshed every [`Timings::refresh_after`] in the background and on an unknown `kid`
//! at most once per [`Timings::refetch_interval`]. A refresh that fails keeps the last good
//! keys (a short Entra outage must not refuse every token); only a source that never had keys
//! answers "unavailable", and then retries at most once per [`Timings::first_fetch_retry`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use url::Url;

use super::documents::{get_json, Discovery, FetchError, Fetcher, Jwk, JwkSet};
use super::TokenError;
use crate::domain::TenantId;

/// The placeholder in Entra's multi-tenant issuers.
pub(super) const TENANT_TEMPLATE: &str = "{tenantid}";

/// How often keys are refreshed and refetched.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timings {
    /// Age after which keys are refreshed in the background (Entra: "~every 24 h").
    pub(super) refresh_after: Duration,
    /// Minimum time between two fetches of a source that has keys (unknown `kid`, or a retry
    /// after a failed refresh).
    pub(super) refetch_interval: Duration,
    /// Minimum time between two attempts of a source that never had keys.
    pub(super) first_fetch_retry: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            refresh_after: Duration::from_secs(24 * 3600),
            refetch_interval: Duration::from_secs(60),
            first_fetch_retry: Duration::from_secs(5),
        }
    }
}

impl Timings {
    /// Refresh at `age`; the other intervals are the defaults, or `age` when that is shorter.
    pub(super) fn refreshing_every(age: Duration) -> Self {
        let defaults = Self::default();
        Self {
            refresh_after: age,
            refetch_interval: defaults.refetch_interval.min(age),
            first_fetch_retry: defaults.first_fetch_retry.min(age),
        }
    }
}

/// Which metadata a source reads.
#[derive(Clone, Debug)]
pub(super) enum Scope {
    /// One tenant's own documents.
    Tenant(TenantId),
    /// The authority's `common` documents, valid for every tenant.
    Common,
}

/// One source's issuer and keys as last fetched.
pub(super) struct KeySet {
    /// The v2 discovery `issuer`; the multi-tenant one holds [`TENANT_TEMPLATE`].
    issuer: String,
    jwks_uri: Url,
    keys: HashMap<String, SigningKey>,
    fetched_at: Instant,
}

struct SigningKey {
    key: DecodingKey,
    /// Entra's per-key `issuer`, possibly templated: the key signs only for that issuer.
    issuer: Option<String>,
}

impl KeySet {
    /// The v2 issuer of tokens of `tenant`.
    pub(super) fn issuer_for(&self, tenant: &TenantId) -> String {
        self.issuer.replace(TENANT_TEMPLATE, tenant.as_str())
    }

    /// The key `kid` if it may sign tokens of `tenant`: a key that names an issuer (the
    /// multi-tenant keys name the template, a personal-account key its own tenant) signs only
    /// for that issuer (Microsoft.IdentityModel's signing-key issuer validation).
    pub(super) fn key_for(&self, kid: &str, tenant: &TenantId) -> Option<&DecodingKey> {
        let key = self.keys.get(kid)?;
        match &key.issuer {
            Some(issuer)
                if issuer.replace(TENANT_TEMPLATE, tenant.as_str()) != self.issuer_for(tenant) =>
            {
                None
            }
            _ => Some(&key.key),
        }
    }

    fn has(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}

/// When this source last tried to fetch, and how that went.
#[derive(Default)]
struct Attempts {
    last: Option<Instant>,
    failed: bool,
}

impl Attempts {
    fn allowed(&self, interval: Duration) -> bool {
        self.last.is_none_or(|last| last.elapsed() >= interval)
    }

    /// Records a fetch that started now and ended with `outcome`: a failure is logged with
    /// `what` and makes the caller's keys unavailable (and the next attempt wait).
    fn settle<T>(
        &mut self,
        outcome: Result<T, FetchError>,
        what: &'static str,
    ) -> Result<T, TokenError> {
        self.failed = outcome.is_err();
        outcome.map_err(|error| {
            tracing::warn!(error = %error, "{what}");
            TokenError::MetadataUnavailable
        })
    }
}

/// One metadata document and its keys, with last-good semantics.
pub(super) struct KeySource {
    scope: Scope,
    discovery_url: String,
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching: concurrent misses share one fetch.
    attempts: Arc<tokio::sync::Mutex<Attempts>>,
}

impl KeySource {
    /// A source for `scope` under `authority`.
    pub(super) fn new(authority: &Url, scope: Scope) -> Arc<Self> {
        let path = match &scope {
            Scope::Tenant(tenant) => tenant.as_str(),
            Scope::Common => "common",
        };
        let authority = authority.as_str().trim_end_matches('/');
        Arc::new(Self {
            discovery_url: format!("{authority}/{path}/v2.0/.well-known/openid-configuration"),
            scope,
            current: RwLock::new(None),
            attempts: Arc::default(),
        })
    }

    /// The keys to check a token signed with `kid` against. `Ok` does not mean `kid` is among
    /// them; `Err` only when no usable keys could be had.
    pub(super) async fn keys(
        self: &Arc<Self>,
        fetcher: &Arc<Fetcher>,
        kid: &str,
        timings: &Timings,
    ) -> Result<Arc<KeySet>, TokenError> {
        match self.current() {
            Some(set) if set.has(kid) => {
                if set.fetched_at.elapsed() >= timings.refresh_after {
                    self.refresh_in_background(fetcher, timings);
                }
                Ok(set)
            }
            Some(_) => self.refetch_for_unknown_kid(fetcher, kid, timings).await,
            None => self.first_fetch(fetcher, timings).await,
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn store(&self, set: Arc<KeySet>) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(set);
    }

    /// Keys rotate: an unknown `kid` may be new. At most one refetch per interval, whatever
    /// the `kid`s; a failed refetch keeps the keys and makes unknown `kid`s "unavailable"
    /// until the next attempt (a new key cannot be checked, an old one still can).
    async fn refetch_for_unknown_kid(
        &self,
        fetcher: &Fetcher,
        kid: &str,
        timings: &Timings,
    ) -> Result<Arc<KeySet>, TokenError> {
        let mut attempts = self.attempts.lock().await;
        let Some(set) = self.current() else {
            return Err(TokenError::MetadataUnavailable);
        };
        if set.has(kid) {
            return Ok(set); // found by the refetch this call waited for
        }
        if !attempts.allowed(timings.refetch_interval) {
            return if attempts.failed {
                Err(TokenError::MetadataUnavailable)
            } else {
                Ok(set)
            };
        }
        attempts.last = Some(Instant::now());
        let keys = attempts.settle(
            self.fetch_keys(fetcher, &set.issuer, &set.jwks_uri).await,
            "cannot refetch the signing keys; keeping the last good ones",
        )?;
        let fresh = Arc::new(KeySet {
            issuer: set.issuer.clone(),
            jwks_uri: set.jwks_uri.clone(),
            keys,
            fetched_at: Instant::now(),
        });
        self.store(fresh.clone());
        Ok(fresh)
    }

    /// Refreshes stale keys without holding up the request, which uses the current ones.
    fn refresh_in_background(self: &Arc<Self>, fetcher: &Arc<Fetcher>, timings: &Timings) {
        let Ok(mut attempts) = self.attempts.clone().try_lock_owned() else {
            return; // a fetch is running
        };
        if !attempts.allowed(timings.refetch_interval) {
            return;
        }
        attempts.last = Some(Instant::now());
        let (source, fetcher) = (self.clone(), fetcher.clone());
        tokio::spawn(async move {
            match source.fetch(&fetcher).await {
                Ok(set) => {
                    attempts.failed = false;
                    source.store(Arc::new(set));
                }
                Err(error) => {
                    attempts.failed = true;
                    let age_h = source
                        .current()
                        .map_or(0, |set| set.fetched_at.elapsed().as_secs() / 3600);
                    tracing::warn!(error = %error, keys.age_h = age_h, "cannot refresh the OpenID metadata; serving the last good keys");
                }
            }
        });
    }

    /// No keys yet: fetch them now (concurrent callers share the fetch).
    async fn first_fetch(
        &self,
        fetcher: &Fetcher,
        timings: &Timings,
    ) -> Result<Arc<KeySet>, TokenError> {
        let mut attempts = self.attempts.lock().await;
        if let Some(set) = self.current() {
            return Ok(set);
        }
        if attempts.failed && !attempts.allowed(timings.first_fetch_retry) {
            return Err(TokenError::MetadataUnavailable);
        }
        attempts.last = Some(Instant::now());
        let set = attempts.settle(
            self.fetch(fetcher).await,
            "cannot fetch the OpenID metadata",
        )?;
        let set = Arc::new(set);
        self.store(set.clone());
        Ok(set)
    }

    /// Discovery, then its JWKS.
    async fn fetch(&self, fetcher: &Fetcher) -> Result<KeySet, FetchError> {
        let discovery: Discovery = get_json(fetcher, &self.discovery_url).await?;
        let issuer = discovery.issuer;
        // A tenant's document names the tenant (a templated one is made concrete, so that
        // tokens of one tenant never pass as another's); the multi-tenant one is a template.
        let issuer = match &self.scope {
            Scope::Tenant(tenant) => {
                let issuer = issuer.replace(TENANT_TEMPLATE, tenant.as_str());
                if !issuer.contains(tenant.as_str()) {
                    return Err(FetchError(format!(
                        "the discovery issuer does not name the tenant ({issuer})"
                    )));
                }
                issuer
            }
            Scope::Common if issuer.matches(TENANT_TEMPLATE).count() == 1 => issuer,
            Scope::Common => {
                return Err(FetchError(format!(
                    "the multi-tenant issuer is not a {TENANT_TEMPLATE} template ({issuer})"
                )))
            }
        };
        let jwks_uri = Url::parse(&discovery.jwks_uri)
            .map_err(|_| FetchError("jwks_uri is not a URL".into()))?;
        // Keys must come from the authority itself, not from wherever a document points.
        if jwks_uri.origin() != fetcher.authority.origin() {
            return Err(FetchError(format!(
                "jwks_uri is not on the authority host ({jwks_uri})"
            )));
        }
        let keys = self.fetch_keys(fetcher, &issuer, &jwks_uri).await?;
        Ok(KeySet {
            issuer,
            jwks_uri,
            keys,
            fetched_at: Instant::now(),
        })
    }

    async fn fetch_keys(
        &self,
        fetcher: &Fetcher,
        issuer: &str,
        jwks_uri: &Url,
    ) -> Result<HashMap<String, SigningKey>, FetchError> {
        let set: JwkSet = get_json(fetcher, jwks_uri.as_str()).await?;
        let keys: HashMap<String, SigningKey> = set
            .keys
            .into_iter()
            .filter_map(|jwk| signing_key(jwk, &self.scope, issuer))
            .collect();
        if keys.is_empty() {
            return Err(FetchError("the JWKS holds no RS256 signing key".into()));
        }
        tracing::debug!(keys = keys.len(), jwks_uri = %jwks_uri, "fetched signing keys");
        Ok(keys)
    }
}

/// Keeps RSA signature keys. A tenant's keys must name the tenant's issuer (if they name one);
/// the multi-tenant keys keep theirs, checked per token in [`KeySet::key_for`].
fn signing_key(jwk: Jwk, scope: &Scope, issuer: &str) -> Option<(String, SigningKey)> {
    if jwk.kty != "RSA" || jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if jwk.alg.as_deref().is_some_and(|alg| alg != "RS256") {
        return None;
    }
    if let (Scope::Tenant(tenant), Some(key_issuer)) = (scope, &jwk.issuer) {
        if key_issuer.replace(TENANT_TEMPLATE, tenant.as_str()) != issuer {
            return None;
        }
    }
    let key = DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?;
    Some((
        jwk.kid?,
        SigningKey {
            key,
            issuer: jwk.issuer,
        },
    ))
}
