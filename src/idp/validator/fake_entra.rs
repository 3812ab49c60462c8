//! A fake Entra for the validator's tests: discovery and JWKS over plain HTTP, tenant-specific
//! and `common` (issuer template), counting requests per tenant path, able to fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};
use url::Url;

use super::keys::Timings;
use super::{TokenError, TokenValidator};
use crate::config::AllowedTenants;
use crate::domain::TenantId;
use crate::idp::credential::tests::{test_key_pem, TEST_KEY};

pub(super) const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub(super) const OTHER_TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub(super) const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
pub(super) const CALLER_APP: &str = "0b2e3d4f-0000-4000-8000-000000000001";
pub(super) const USER: &str = "6902e2b4-8f51-4a9e-a2c5-3c1f9d6a2b10";

static SIGNING_KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_rsa_pem(test_key_pem().as_bytes()).expect("test key"));

/// Requests per tenant path segment: (discovery, jwks).
type Counts = HashMap<String, (usize, usize)>;

/// A fake Entra serving discovery and JWKS, counting requests.
#[derive(Default)]
pub(super) struct Entra {
    base: Mutex<String>,
    counts: Mutex<Counts>,
    pub(super) down: AtomicBool,
    /// The published key ids, each with the issuer its JWK names (`None`: the template).
    pub(super) kids: Mutex<Vec<(String, Option<String>)>>,
}

impl Entra {
    pub(super) fn base(&self) -> String {
        self.base.lock().unwrap().clone()
    }

    /// (discovery, jwks) requests for every tenant path together.
    pub(super) fn requests(&self) -> (usize, usize) {
        self.counts
            .lock()
            .unwrap()
            .values()
            .fold((0, 0), |(d, j), (d2, j2)| (d + d2, j + j2))
    }

    /// (discovery, jwks) requests for one tenant path segment.
    pub(super) fn requests_for(&self, tenant: &str) -> (usize, usize) {
        self.counts
            .lock()
            .unwrap()
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    /// Publishes another key id (same key material).
    pub(super) fn publish(&self, kid: &str, issuer: Option<String>) {
        self.kids.lock().unwrap().push((kid.into(), issuer));
    }

    fn count(&self, tenant: &str, jwks: bool) {
        let mut counts = self.counts.lock().unwrap();
        let entry = counts.entry(tenant.to_owned()).or_default();
        if jwks {
            entry.1 += 1;
        } else {
            entry.0 += 1;
        }
    }
}

async fn discovery(State(entra): State<Arc<Entra>>, Path(tid): Path<String>) -> Response {
    entra.count(&tid, false);
    if entra.down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let base = entra.base();
    let issuer_tenant = if tid == "common" { "{tenantid}" } else { &tid };
    Json(json!({
        "issuer": format!("{base}/{issuer_tenant}/v2.0"),
        "jwks_uri": format!("{base}/{tid}/discovery/v2.0/keys"),
        "token_endpoint": format!("{base}/{tid}/oauth2/v2.0/token"),
    }))
    .into_response()
}

async fn jwks(State(entra): State<Arc<Entra>>, Path(tid): Path<String>) -> Response {
    entra.count(&tid, true);
    if entra.down.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let (n, e) = (
        URL_SAFE_NO_PAD.encode(TEST_KEY.n().to_bytes_be()),
        URL_SAFE_NO_PAD.encode(TEST_KEY.e().to_bytes_be()),
    );
    let template = format!("{}/{{tenantid}}/v2.0", entra.base());
    let keys: Vec<_> = entra
        .kids
        .lock()
        .unwrap()
        .iter()
        .map(|(kid, issuer)| {
            let issuer = issuer.clone().unwrap_or_else(|| template.clone());
            json!({"kty": "RSA", "use": "sig", "kid": kid, "n": n, "e": e, "issuer": issuer})
        })
        .collect();
    Json(json!({ "keys": keys })).into_response()
}

/// Starts a fake Entra publishing the key id `k1`.
pub(super) async fn entra() -> Arc<Entra> {
    let entra = Arc::new(Entra::default());
    entra.publish("k1", None);
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
/// A fake Entra and a validator for `TENANT` that trusts it.
pub(super) async fn entra_and_validator() -> (Arc<Entra>, TokenValidator) {
    let entra = entra().await;
    let validator = validator(&entra);
    (entra, validator)
}

pub(super) fn validator(entra: &Entra) -> TokenValidator {
    let tenants = AllowedTenants::Only(vec![TenantId::parse(TENANT).unwrap()]);
    validator_with(entra, tenants, Timings::default())
}

/// A validator over plain HTTP with the given tenants and timings.
pub(super) fn validator_with(
    entra: &Entra,
    tenants: AllowedTenants,
    timings: Timings,
) -> TokenValidator {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    TokenValidator::with_timings(
        http,
        Url::parse(&entra.base()).unwrap(),
        CLIENT_ID.into(),
        tenants,
        timings,
    )
}

pub(super) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(super) fn v2_user_claims(entra: &Entra) -> Value {
    json!({
        "aud": CLIENT_ID, "iss": format!("{}/{TENANT}/v2.0", entra.base()), "tid": TENANT,
        "oid": USER, "sub": "pairwise-subject", "azp": CALLER_APP, "scp": "access_as_user  User.Read",
        "ver": "2.0", "iat": now() - 10, "nbf": now() - 10, "exp": now() + 3600,
    })
}

/// The same claims for a user of `tenant`.
pub(super) fn v2_user_claims_of(entra: &Entra, tenant: &str) -> Value {
    with(
        v2_user_claims(entra),
        json!({"tid": tenant, "iss": format!("{}/{tenant}/v2.0", entra.base())}),
    )
}

pub(super) fn mint(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &SIGNING_KEY).unwrap()
}

/// A token whose signature is another token's: the classic forgery of a payload.
pub(super) fn forged(kid: &str, claims: &Value) -> String {
    let signature = mint(kid, &json!({"aud": "someone else"}))
        .rsplit('.')
        .next()
        .unwrap()
        .to_owned();
    let genuine = mint(kid, claims);
    let (signed, _) = genuine.rsplit_once('.').unwrap();
    format!("{signed}.{signature}")
}

pub(super) fn with(mut claims: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// Asserts that `claims`, each time with one set of `changes`, is refused with its error.
pub(super) async fn assert_refused(
    validator: &TokenValidator,
    claims: &Value,
    cases: impl IntoIterator<Item = (Value, TokenError)>,
) {
    for (changes, expected) in cases {
        let token = mint("k1", &with(claims.clone(), changes.clone()));
        assert_eq!(
            validator.validate(&token).await.unwrap_err(),
            expected,
            "{changes}"
        );
    }
}

/// Asserts that each of `tokens` is refused with `expected`.
pub(super) async fn assert_each_refused(
    validator: &TokenValidator,
    tokens: impl IntoIterator<Item = impl AsRef<str>>,
    expected: TokenError,
) {
    for token in tokens {
        let token = token.as_ref();
        assert_eq!(
            validator.validate(token).await.unwrap_err(),
            expected,
            "{token}"
        );
    }
}

pub(super) fn unsigned(header: Value, claims: &Value) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap());
    format!("{}.{}.", part(&header), part(claims))
}
