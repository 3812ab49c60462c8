//! Validation of inbound Entra access tokens (reference A4): signature against the tenant's
//! JWKS from OIDC discovery, issuer v1 or v2, audience, lifetime with 5 minutes of skew, and
//! an allowed tenant.
//!
//! Order matters for safety: size, structure and algorithm are checked first, then the
//! tenant named by the still unverified token is checked against the allow-list, and only then
//! may the network be used. A forged token can therefore never make us fetch metadata for a
//! tenant we do not serve, and garbage key ids cause at most one JWKS refetch per minute per
//! tenant.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::client::read_limited;
use super::cloud::Cloud;
use crate::config::AllowedTenants;
use crate::domain::{TenantId, UserId};

/// Tokens larger than this are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew accepted on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 300;
/// How long a tenant's discovery document and keys are trusted (Entra: "~every 24 h").
const KEYS_TTL: Duration = Duration::from_secs(24 * 3600);
/// Minimum time between two JWKS fetches for one tenant caused by an unknown `kid`.
const REFETCH_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on cached tenants (only reachable with `OBOVAULT_ALLOWED_TENANTS=*`).
const MAX_TENANTS: u64 = 10_000;
/// Bound on a discovery document or JWKS (real ones are a few KiB).
const MAX_METADATA_BYTES: usize = 256 * 1024;

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

/// Validates inbound access tokens for this app; caches each tenant's metadata.
pub struct TokenValidator {
    http: reqwest::Client,
    /// Authority host without a trailing slash.
    authority: String,
    /// Accepted `aud` values: the client id and `api://{client id}`.
    audiences: [String; 2],
    allowed_tenants: AllowedTenants,
    /// Discovery + JWKS per tenant; `try_get_with` makes concurrent misses share one fetch.
    tenants: Cache<TenantId, Arc<TenantKeys>>,
    /// The outcome of the last unknown-`kid` refetch per tenant, kept for `refetch_interval`:
    /// while it lives, no other refetch happens for the tenant, whatever the outcome.
    refetches: Cache<TenantId, Option<Arc<TenantKeys>>>,
    refetch_interval: Duration,
}

/// One tenant's issuer and signing keys.
struct TenantKeys {
    /// The `issuer` of the tenant's v2 discovery document.
    issuer: String,
    jwks_uri: Url,
    keys: HashMap<String, DecodingKey>,
    fetched_at: Instant,
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

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    /// Entra's per-key issuer (A4 step 3), possibly templated with `{tenantid}`.
    issuer: Option<String>,
}

/// Why metadata could not be fetched; only logged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FetchError(String);

impl TokenValidator {
    /// A validator for tokens issued to `client_id` by tenants in `allowed_tenants`.
    pub fn new(
        http: reqwest::Client,
        authority_host: Url,
        client_id: String,
        allowed_tenants: AllowedTenants,
    ) -> Self {
        let audiences = [format!("api://{client_id}"), client_id];
        Self {
            http,
            authority: authority_host.as_str().trim_end_matches('/').to_owned(),
            audiences,
            allowed_tenants,
            tenants: Cache::builder()
                .max_capacity(MAX_TENANTS)
                .time_to_live(KEYS_TTL)
                .build(),
            refetches: refetch_gate(REFETCH_INTERVAL),
            refetch_interval: REFETCH_INTERVAL,
        }
    }

    /// Validates an inbound access token for this app. Never fetches metadata for a tenant
    /// that is not allowed.
    pub async fn validate(&self, unverified_token: &str) -> Result<ValidatedToken, TokenError> {
        let (tenant, kid) = Self::precheck(unverified_token)?;
        if !self.allowed_tenants.allows(&tenant) {
            return Err(TokenError::TenantNotAllowed);
        }
        let kid = kid.ok_or(TokenError::UnknownKey)?;
        let keys = self.keys_with(&tenant, &kid).await?;
        let key = keys.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(
            unverified_token,
            key,
            &self.validation(&tenant, &keys.issuer),
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
        validation.set_issuer(&[
            issuer,
            &Cloud::of_authority_str(&self.authority).v1_issuer(tenant.as_str()),
        ]);
        validation
    }

    /// The tenant's keys, refetched at most once per `refetch_interval` when `kid` is unknown.
    async fn keys_with(&self, tenant: &TenantId, kid: &str) -> Result<Arc<TenantKeys>, TokenError> {
        let keys = self
            .tenants
            .try_get_with_by_ref(tenant, self.fetch_tenant(tenant))
            .await
            .map_err(|error| {
                tracing::warn!(tenant.id = %tenant, error = %error, "cannot fetch the tenant's OpenID metadata");
                TokenError::MetadataUnavailable
            })?;
        if keys.keys.contains_key(kid) || keys.fetched_at.elapsed() < self.refetch_interval {
            return Ok(keys);
        }
        // Keys rotate: an unknown kid may be new. Concurrent callers share this refetch, and
        // its outcome (even a failure) is remembered so the next one waits for the interval.
        let refetched = self
            .refetches
            .get_with_by_ref(tenant, async {
                match self.fetch_keys(tenant, &keys.issuer, &keys.jwks_uri).await {
                    Ok(fresh) => {
                        let fresh = Arc::new(TenantKeys {
                            issuer: keys.issuer.clone(),
                            jwks_uri: keys.jwks_uri.clone(),
                            keys: fresh,
                            fetched_at: Instant::now(),
                        });
                        self.tenants.insert(tenant.clone(), fresh.clone()).await;
                        Some(fresh)
                    }
                    Err(error) => {
                        tracing::warn!(tenant.id = %tenant, error = %error, "cannot refetch the tenant's signing keys");
                        None
                    }
                }
            })
            .await;
        refetched.ok_or(TokenError::MetadataUnavailable)
    }

    async fn fetch_tenant(&self, tenant: &TenantId) -> Result<Arc<TenantKeys>, FetchError> {
        let url = format!(
            "{}/{tenant}/v2.0/.well-known/openid-configuration",
            self.authority
        );
        let discovery: Discovery = self.get_json(&url).await?;
        // A tenant-specific document names the tenant; a templated (multi-tenant) issuer is
        // made concrete, so that tokens of one tenant can never pass as another's.
        let issuer = discovery.issuer.replace("{tenantid}", tenant.as_str());
        if !issuer.contains(tenant.as_str()) {
            return Err(FetchError(format!(
                "the discovery issuer does not name the tenant ({issuer})"
            )));
        }
        let jwks_uri = Url::parse(&discovery.jwks_uri)
            .map_err(|_| FetchError("jwks_uri is not a URL".into()))?;
        // Keys must come from the authority itself, not from wherever a document points.
        let authority =
            Url::parse(&self.authority).map_err(|_| FetchError("bad authority".into()))?;
        if jwks_uri.origin() != authority.origin() {
            return Err(FetchError(format!(
                "jwks_uri is not on the authority host ({jwks_uri})"
            )));
        }
        let keys = self.fetch_keys(tenant, &issuer, &jwks_uri).await?;
        Ok(Arc::new(TenantKeys {
            issuer,
            jwks_uri,
            keys,
            fetched_at: Instant::now(),
        }))
    }

    async fn fetch_keys(
        &self,
        tenant: &TenantId,
        issuer: &str,
        jwks_uri: &Url,
    ) -> Result<HashMap<String, DecodingKey>, FetchError> {
        let set: JwkSet = self.get_json(jwks_uri.as_str()).await?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .into_iter()
            .filter_map(|jwk| signing_key(jwk, tenant, issuer))
            .collect();
        if keys.is_empty() {
            return Err(FetchError("the JWKS holds no RS256 signing key".into()));
        }
        tracing::debug!(tenant.id = %tenant, keys = keys.len(), "fetched the tenant's signing keys");
        Ok(keys)
    }

    async fn get_json<T: DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| FetchError(format!("GET {url}: {error}")))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError(format!("GET {url}: HTTP {}", status.as_u16())));
        }
        let body = read_limited(response, MAX_METADATA_BYTES)
            .await
            .map_err(|error| FetchError(format!("GET {url}: {error}")))?;
        serde_json::from_slice(&body)
            .map_err(|_| FetchError(format!("GET {url}: not the expected JSON")))
    }
}

#[cfg(test)]
impl TokenValidator {
    /// Shortens the minimum time between unknown-`kid` refetches.
    fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetches = refetch_gate(interval);
        self.refetch_interval = interval;
        self
    }
}

fn refetch_gate(interval: Duration) -> Cache<TenantId, Option<Arc<TenantKeys>>> {
    Cache::builder()
        .max_capacity(MAX_TENANTS)
        .time_to_live(interval)
        .build()
}

/// Keeps RSA signature keys whose own `issuer` (if any) is the tenant's.
fn signing_key(jwk: Jwk, tenant: &TenantId, issuer: &str) -> Option<(String, DecodingKey)> {
    if jwk.kty != "RSA" || jwk.usage.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    if jwk.alg.as_deref().is_some_and(|alg| alg != "RS256") {
        return None;
    }
    if let Some(key_issuer) = &jwk.issuer {
        if key_issuer.replace("{tenantid}", tenant.as_str()) != issuer {
            return None;
        }
    }
    let key = DecodingKey::from_rsa_components(jwk.n.as_deref()?, jwk.e.as_deref()?).ok()?;
    Some((jwk.kid?, key))
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{LazyLock, Mutex};

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::{Json, Router};
    use jsonwebtoken::{EncodingKey, Header};
    use rsa::traits::PublicKeyParts as _;
    use serde_json::json;

    use super::*;
    use crate::idp::credential::tests::{test_key_pem, TEST_KEY};

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const OTHER_TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
    const CALLER_APP: &str = "0b2e3d4f-0000-4000-8000-000000000001";
    const USER: &str = "6902e2b4-8f51-4a9e-a2c5-3c1f9d6a2b10";

    static SIGNING_KEY: LazyLock<EncodingKey> =
        LazyLock::new(|| EncodingKey::from_rsa_pem(test_key_pem().as_bytes()).expect("test key"));

    /// A fake Entra serving discovery and JWKS, counting requests.
    #[derive(Default)]
    struct Entra {
        base: Mutex<String>,
        discovery: AtomicUsize,
        jwks: AtomicUsize,
        down: AtomicBool,
        kids: Mutex<Vec<String>>,
    }

    impl Entra {
        fn base(&self) -> String {
            self.base.lock().unwrap().clone()
        }

        fn requests(&self) -> (usize, usize) {
            (
                self.discovery.load(Ordering::SeqCst),
                self.jwks.load(Ordering::SeqCst),
            )
        }
    }

    async fn discovery(State(entra): State<Arc<Entra>>, Path(tid): Path<String>) -> Response {
        entra.discovery.fetch_add(1, Ordering::SeqCst);
        if entra.down.load(Ordering::SeqCst) {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let base = entra.base();
        Json(json!({
            "issuer": format!("{base}/{tid}/v2.0"),
            "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
            "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
        }))
        .into_response()
    }

    async fn jwks(State(entra): State<Arc<Entra>>) -> Response {
        entra.jwks.fetch_add(1, Ordering::SeqCst);
        if entra.down.load(Ordering::SeqCst) {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let (n, e) = (
            URL_SAFE_NO_PAD.encode(TEST_KEY.n().to_bytes_be()),
            URL_SAFE_NO_PAD.encode(TEST_KEY.e().to_bytes_be()),
        );
        let issuer = format!("{}/{{tenantid}}/v2.0", entra.base());
        let keys: Vec<_> = entra
            .kids
            .lock()
            .unwrap()
            .iter()
            .map(|kid| json!({"kty": "RSA", "use": "sig", "kid": kid, "n": n, "e": e, "issuer": issuer}))
            .collect();
        Json(json!({ "keys": keys })).into_response()
    }

    async fn entra() -> Arc<Entra> {
        let entra = Arc::new(Entra::default());
        entra.kids.lock().unwrap().push("k1".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *entra.base.lock().unwrap() = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route(
                "/{tid}/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/{tid}/discovery/v2.0/keys", get(jwks))
            .with_state(entra.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        entra
    }

    /// A validator over plain HTTP (the real client is https-only), allowing only `TENANT`.
    fn validator(entra: &Entra) -> TokenValidator {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let tenants = AllowedTenants::Only(vec![TenantId::parse(TENANT).unwrap()]);
        TokenValidator::new(
            http,
            Url::parse(&entra.base()).unwrap(),
            CLIENT_ID.into(),
            tenants,
        )
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn v2_user_claims(entra: &Entra) -> serde_json::Value {
        json!({
            "aud": CLIENT_ID, "iss": format!("{}/{TENANT}/v2.0", entra.base()), "tid": TENANT,
            "oid": USER, "sub": "pairwise-subject", "azp": CALLER_APP, "scp": "access_as_user  User.Read",
            "ver": "2.0", "iat": now() - 10, "nbf": now() - 10, "exp": now() + 3600,
        })
    }

    fn mint(kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &SIGNING_KEY).unwrap()
    }

    fn with(mut claims: serde_json::Value, changes: serde_json::Value) -> serde_json::Value {
        for (name, value) in changes.as_object().unwrap() {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn unsigned(header: serde_json::Value, claims: &serde_json::Value) -> String {
        let part =
            |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
        format!("{}.{}.", part(&header), part(claims))
    }

    #[tokio::test]
    async fn v2_user_tokens_are_accepted_with_their_claims() {
        let entra = entra().await;
        let token = validator(&entra)
            .validate(&mint("k1", &v2_user_claims(&entra)))
            .await
            .unwrap();
        assert_eq!(token.tenant_id.as_str(), TENANT);
        assert_eq!(token.object_id.as_ref().map(UserId::as_str), Some(USER));
        assert_eq!(token.app_id.as_deref(), Some(CALLER_APP));
        assert_eq!(token.scopes, vec!["access_as_user", "User.Read"]);
        assert!(!token.app_only && token.roles.is_empty());
        assert!((token.expires_at.timestamp() - (now() + 3600)).abs() <= 5);
        assert_eq!(entra.requests(), (1, 1));
    }

    #[tokio::test]
    async fn v1_app_only_tokens_with_the_app_id_uri_audience_are_accepted() {
        let entra = entra().await;
        let claims = json!({
            "aud": format!("api://{CLIENT_ID}"), "iss": format!("https://sts.windows.net/{TENANT}/"), "tid": TENANT,
            "oid": USER, "sub": USER, "appid": CALLER_APP, "roles": ["OboVault.Act"], "ver": "1.0", "exp": now() + 600,
        });
        let token = validator(&entra)
            .validate(&mint("k1", &claims))
            .await
            .unwrap();
        assert!(token.app_only);
        assert_eq!(token.roles, vec!["OboVault.Act"]);
        assert_eq!(token.app_id.as_deref(), Some(CALLER_APP));
        assert!(token.scopes.is_empty());
        let marked = with(v2_user_claims(&entra), json!({"idtyp": "app", "scp": null}));
        assert!(
            validator(&entra)
                .validate(&mint("k1", &marked))
                .await
                .unwrap()
                .app_only
        );
    }

    #[tokio::test]
    async fn wrong_audiences_and_issuers_are_refused() {
        let entra = entra().await;
        let validator = validator(&entra);
        let base = v2_user_claims(&entra);
        let cases = [
            (
                json!({"aud": "00000003-0000-0000-c000-000000000000"}),
                TokenError::WrongAudience,
            ),
            (json!({"aud": null}), TokenError::WrongAudience),
            (
                json!({"iss": format!("{}/{OTHER_TENANT}/v2.0", entra.base())}),
                TokenError::WrongIssuer,
            ),
            (
                json!({"iss": format!("https://sts.windows.net/{OTHER_TENANT}/")}),
                TokenError::WrongIssuer,
            ),
            (json!({"iss": null}), TokenError::WrongIssuer),
        ];
        for (changes, expected) in cases {
            let token = mint("k1", &with(base.clone(), changes.clone()));
            assert_eq!(
                validator.validate(&token).await.unwrap_err(),
                expected,
                "{changes}"
            );
        }
    }

    #[tokio::test]
    async fn lifetime_is_checked_with_five_minutes_of_skew() {
        let entra = entra().await;
        let validator = validator(&entra);
        let base = v2_user_claims(&entra);
        let within_skew = mint(
            "k1",
            &with(
                base.clone(),
                json!({"exp": now() - 200, "nbf": now() + 200}),
            ),
        );
        assert!(validator.validate(&within_skew).await.is_ok());
        let cases = [
            (json!({"exp": now() - 400}), TokenError::Expired),
            (json!({"nbf": now() + 400}), TokenError::NotYetValid),
            (json!({"exp": null}), TokenError::Malformed),
        ];
        for (changes, expected) in cases {
            let token = mint("k1", &with(base.clone(), changes.clone()));
            assert_eq!(
                validator.validate(&token).await.unwrap_err(),
                expected,
                "{changes}"
            );
        }
    }

    #[tokio::test]
    async fn unsigned_and_symmetric_tokens_are_refused_before_any_request() {
        let entra = entra().await;
        let validator = validator(&entra);
        let claims = v2_user_claims(&entra);
        let none = unsigned(json!({"alg": "none", "typ": "JWT", "kid": "k1"}), &claims);
        assert_eq!(
            validator.validate(&none).await.unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hs256 = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(b"public key as secret"),
        )
        .unwrap();
        assert_eq!(
            validator.validate(&hs256).await.unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );
        let ps256 = unsigned(json!({"alg": "PS256", "kid": "k1"}), &claims);
        assert_eq!(
            validator.validate(&ps256).await.unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );
        assert_eq!(entra.requests(), (0, 0));
    }

    #[tokio::test]
    async fn tampered_tokens_fail_the_signature() {
        let entra = entra().await;
        let good = mint("k1", &v2_user_claims(&entra));
        let other = mint(
            "k1",
            &with(
                v2_user_claims(&entra),
                json!({"oid": "00000000-0000-4000-8000-000000000000"}),
            ),
        );
        let [header, _, signature] = good.split('.').collect::<Vec<_>>()[..] else {
            unreachable!()
        };
        let payload = other.split('.').nth(1).unwrap();
        let forged = format!("{header}.{payload}.{signature}");
        assert_eq!(
            validator(&entra).validate(&forged).await.unwrap_err(),
            TokenError::BadSignature
        );
    }

    #[tokio::test]
    async fn foreign_tenants_and_junk_are_refused_without_a_request() {
        let entra = entra().await;
        let validator = validator(&entra);
        let foreign = mint(
            "k1",
            &with(v2_user_claims(&entra), json!({"tid": OTHER_TENANT})),
        );
        assert_eq!(
            validator.validate(&foreign).await.unwrap_err(),
            TokenError::TenantNotAllowed
        );
        let common = mint(
            "k1",
            &with(v2_user_claims(&entra), json!({"tid": "common"})),
        );
        assert_eq!(
            validator.validate(&common).await.unwrap_err(),
            TokenError::Malformed
        );
        let no_tid = mint("k1", &with(v2_user_claims(&entra), json!({"tid": null})));
        assert_eq!(
            validator.validate(&no_tid).await.unwrap_err(),
            TokenError::Malformed
        );
        for junk in ["", "abc", "a.b.c", "a.b.c.d.e", "eyJ.eyJ.x"] {
            assert_eq!(
                validator.validate(junk).await.unwrap_err(),
                TokenError::Malformed,
                "{junk}"
            );
        }
        let oversized = format!("{}.{}.sig", "a".repeat(8 * 1024), "b".repeat(8 * 1024));
        assert_eq!(
            validator.validate(&oversized).await.unwrap_err(),
            TokenError::Malformed
        );
        assert_eq!(entra.requests(), (0, 0));
    }

    #[tokio::test]
    async fn unknown_kids_cause_at_most_one_refetch_per_interval() {
        let entra = entra().await;
        let interval = Duration::from_millis(300);
        let validator = validator(&entra).with_refetch_interval(interval);
        let claims = v2_user_claims(&entra);
        validator.validate(&mint("k1", &claims)).await.unwrap();
        // Keys fetched just now are current: no refetch.
        assert_eq!(
            validator
                .validate(&mint("garbage", &claims))
                .await
                .unwrap_err(),
            TokenError::UnknownKey
        );
        assert_eq!(entra.requests(), (1, 1));
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        for _ in 0..3 {
            assert_eq!(
                validator
                    .validate(&mint("garbage", &claims))
                    .await
                    .unwrap_err(),
                TokenError::UnknownKey
            );
        }
        assert_eq!(entra.requests(), (1, 2), "one refetch, then the gate holds");
        // A rotated-in key is found by the next allowed refetch.
        entra.kids.lock().unwrap().push("k2".into());
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        assert!(validator.validate(&mint("k2", &claims)).await.is_ok());
        assert_eq!(entra.requests(), (1, 3));
        assert!(validator.validate(&mint("k1", &claims)).await.is_ok());
        assert_eq!(entra.requests(), (1, 3));
    }

    #[tokio::test]
    async fn concurrent_misses_for_a_tenant_share_one_fetch() {
        let entra = entra().await;
        let validator = validator(&entra);
        let token = mint("k1", &v2_user_claims(&entra));
        let results = futures::future::join_all((0..8).map(|_| validator.validate(&token))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(entra.requests(), (1, 1));
    }

    #[tokio::test]
    async fn metadata_failures_are_unavailable_and_retried_later() {
        let entra = entra().await;
        let validator = validator(&entra);
        let token = mint("k1", &v2_user_claims(&entra));
        entra.down.store(true, Ordering::SeqCst);
        assert_eq!(
            validator.validate(&token).await.unwrap_err(),
            TokenError::MetadataUnavailable
        );
        entra.down.store(false, Ordering::SeqCst);
        assert!(validator.validate(&token).await.is_ok());
    }

    #[test]
    fn error_texts_are_for_clients() {
        assert_eq!(TokenError::Expired.to_string(), "the token has expired");
        assert_eq!(
            TokenError::TenantNotAllowed.to_string(),
            "the token's tenant is not allowed to use this service"
        );
    }
}
