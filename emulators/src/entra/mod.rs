//! The Entra ID emulator: OIDC discovery and JWKS (tenant-specific and the multi-tenant
//! `common`/`organizations` documents, counted per tenant, with injectable outages), the v2.0
//! token endpoint (OBO, refresh token, client credentials) and token minting for tests.
//!
//! [`EntraEmulator`] is a cheap, cloneable handle; the server and every clone share one state.
//! Tests steer it (revocation, interaction required, faults, key rotation) through the handle
//! while the service talks to it over HTTPS.

mod claims;
mod client_auth;
mod errors;
mod grants;
mod routes;
mod stats;
mod steering;
mod tokens;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use parking_lot::Mutex;
use rand::RngCore as _;
use serde_json::{json, Value};

pub use client_auth::FederatedCredential;
pub(crate) use routes::router;
pub(crate) use stats::Document;
pub use stats::{EntraStats, MetadataRequests};
pub(crate) use tokens::display_name;
pub use tokens::{AppTokenSpec, TokenVersion, UserTokenSpec, TEST_CLIENT_APP_ID};

use crate::{
    faults::Faults,
    signing::{KeyStore, SignWith},
};
use stats::Counters;
use tokens::Issuer;

/// A user, as Entra keys refresh tokens: (tenant id, object id).
type UserKey = (String, String);

/// Which user grant a [`GrantRecord`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// The on-behalf-of exchange.
    OnBehalfOf,
    /// A refresh-token grant.
    RefreshToken,
}

/// One OBO or refresh grant the token endpoint answered after authenticating the client.
#[derive(Debug, Clone)]
pub struct GrantRecord {
    /// Which grant.
    pub grant: GrantKind,
    /// The `scope` parameter as sent.
    pub scope: String,
    /// The `claims` parameter, parsed (`None`: absent or not JSON).
    pub claims: Option<Value>,
    /// Whether a token was issued.
    pub succeeded: bool,
}

/// One refresh token the emulator issued.
#[derive(Debug, Clone)]
struct RefreshRecord {
    tid: String,
    oid: String,
    /// The scopes of the grant that issued it (used when a refresh names none).
    scopes: String,
    revoked: bool,
    /// Redeemed at least once (only matters in strict single-use mode).
    redeemed: bool,
}

/// The mutable grant state, behind one lock so checks and updates are atomic.
#[derive(Debug, Default)]
struct Grants {
    refresh_tokens: HashMap<String, RefreshRecord>,
    latest: HashMap<UserKey, String>,
    interaction: HashMap<UserKey, String>,
    app_roles: HashMap<String, Vec<String>>,
    strict_single_use: bool,
    omit_refresh_token_next: u32,
    /// Tenants whose token requests answer 429, with the Retry-After in seconds.
    throttled_tenants: HashMap<String, u64>,
    /// (tenant, user, resource) without consent; every other resource is consented.
    no_consent: std::collections::HashSet<(String, String, String)>,
    /// Every OBO and refresh grant since start or the last reset.
    log: Vec<GrantRecord>,
}

impl Grants {
    /// Whether the user (or an admin) consented to the app acting on `resource`.
    fn consented(&self, tid: &str, oid: &str, resource: &str) -> bool {
        !self
            .no_consent
            .contains(&(tid.to_owned(), oid.to_owned(), resource.to_owned()))
    }

    /// Creates and records a new refresh token for the user.
    fn issue_refresh_token(&mut self, tid: &str, oid: &str, scopes: &str) -> String {
        let token = new_refresh_token();
        self.refresh_tokens.insert(
            token.clone(),
            RefreshRecord {
                tid: tid.to_owned(),
                oid: oid.to_owned(),
                scopes: scopes.to_owned(),
                revoked: false,
                redeemed: false,
            },
        );
        self.latest
            .insert((tid.to_owned(), oid.to_owned()), token.clone());
        token
    }
}

/// Shared state of one Entra emulator.
struct EntraState {
    tenant_id: String,
    client_id: String,
    client_secret: String,
    /// Default resource of refresh tokens issued in bulk.
    downstream_resource: String,
    /// `https://127.0.0.1:{port}`.
    host: String,
    keys: Arc<KeyStore>,
    faults: Faults,
    /// Faults of the OpenID configuration and JWKS routes (an Entra metadata outage).
    metadata_faults: Faults,
    counters: Counters,
    /// Metadata requests per tenant path segment (lower-cased).
    metadata_requests: Mutex<BTreeMap<String, MetadataRequests>>,
    grants: Mutex<Grants>,
    /// Certificates and federated credentials registered on the app.
    credentials: Mutex<client_auth::AppCredentials>,
    /// Every token and refresh token ever handed out, for leak scans.
    issued: Mutex<Vec<String>>,
}

impl EntraState {
    fn issuer(&self) -> Issuer<'_> {
        Issuer {
            host: &self.host,
            client_id: &self.client_id,
            now: now(),
        }
    }

    /// Signs claims as a token of the given format and remembers it as issued.
    fn issue_token(&self, claims: &Value, version: TokenVersion) -> String {
        let header = match version {
            TokenVersion::V2 => json!({"typ": "JWT", "alg": "RS256"}),
            // v1 tokens carry `x5t` next to `kid`.
            TokenVersion::V1 => {
                json!({"typ": "JWT", "alg": "RS256", "x5t": self.keys.current().kid()})
            }
        };
        let token = self.keys.sign(header, claims, SignWith::Current);
        self.remember(token.clone());
        token
    }

    fn remember(&self, secret: String) {
        self.issued.lock().push(secret);
    }
}

/// Handle to a running Entra ID emulator. Clones share the same emulator.
#[derive(Clone)]
pub struct EntraEmulator {
    state: Arc<EntraState>,
}

impl std::fmt::Debug for EntraEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No secret in debug output.
        f.debug_struct("EntraEmulator")
            .field("authority_host", &self.state.host)
            .field("tenant_id", &self.state.tenant_id)
            .field("client_id", &self.state.client_id)
            .finish_non_exhaustive()
    }
}

/// The fixed facts an Entra emulator is created with.
pub(crate) struct EntraConfig<'a> {
    pub(crate) tenant_id: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) client_secret: &'a str,
    pub(crate) downstream_resource: &'a str,
    pub(crate) host: String,
    pub(crate) keys: Arc<KeyStore>,
}

impl EntraEmulator {
    /// Creates the emulator state (the server is started separately with [`router`]).
    pub(crate) fn new(config: EntraConfig<'_>) -> Self {
        let state = EntraState {
            tenant_id: config.tenant_id.to_owned(),
            client_id: config.client_id.to_owned(),
            client_secret: config.client_secret.to_owned(),
            downstream_resource: config.downstream_resource.to_owned(),
            host: config.host,
            keys: config.keys,
            faults: Faults::default(),
            metadata_faults: Faults::default(),
            counters: Counters::default(),
            metadata_requests: Mutex::new(BTreeMap::new()),
            grants: Mutex::new(Grants::default()),
            credentials: Mutex::new(client_auth::AppCredentials::default()),
            issued: Mutex::new(Vec::new()),
        };
        Self {
            state: Arc::new(state),
        }
    }

    /// `https://127.0.0.1:{port}`, without a trailing slash (`OBOVAULT_AUTHORITY_HOST`).
    pub fn authority_host(&self) -> String {
        self.state.host.clone()
    }

    /// `{authority}/{tid}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self, tid: &str) -> String {
        format!("{}/{tid}/oauth2/v2.0/token", self.state.host)
    }

    /// `{authority}/{tid}/v2.0` (the v2 issuer, as published in discovery).
    pub fn issuer(&self, tid: &str) -> String {
        tokens::v2_issuer(&self.state.host, tid)
    }

    /// The emulated app's home tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.state.tenant_id
    }

    /// The emulated app's client id.
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// The emulated app's client secret.
    pub fn client_secret(&self) -> &str {
        &self.state.client_secret
    }

    /// A delegated user access token signed with the current key (for calling the service).
    pub fn mint_user_token(&self, spec: &UserTokenSpec) -> String {
        let claims = self.state.issuer().user_claims(spec);
        self.state.issue_token(&claims, spec.version)
    }

    /// An app-only access token signed with the current key (for calling `do-work`).
    pub fn mint_app_token(&self, spec: &AppTokenSpec) -> String {
        let claims = self.state.issuer().app_claims(spec);
        self.state.issue_token(&claims, spec.version)
    }

    /// Signs arbitrary header and claims (for hostile tests). See [`SignWith`]; a header object
    /// missing `typ`, `alg` or `kid` gets them filled in.
    pub fn sign_raw(&self, header: Value, claims: Value, with: SignWith) -> String {
        let token = self.state.keys.sign(header, &claims, with);
        self.state.remember(token.clone());
        token
    }

    /// Registers a certificate (PEM, RSA) on the app: client assertions naming it by `x5t`
    /// or `x5t#S256` and signed by its key authenticate the app.
    pub fn register_certificate(&self, certificate_pem: &str) -> anyhow::Result<()> {
        let certificate = client_auth::RegisteredCertificate::from_pem(certificate_pem)?;
        self.state.credentials.lock().certificates.push(certificate);
        Ok(())
    }

    /// Adds a federated identity credential to the app.
    pub fn add_federated_credential(&self, credential: FederatedCredential) {
        self.state.credentials.lock().federated.push(credential);
    }

    /// A managed identity's token for `resource`, valid for `lifetime_secs`, signed like every
    /// Entra token (so Entra trusts it as a federated assertion when a federated credential
    /// names the identity).
    pub(crate) fn mint_managed_identity_token(
        &self,
        tid: &str,
        client_id: &str,
        object_id: &str,
        resource: &str,
        lifetime_secs: i64,
    ) -> String {
        let mut claims = self
            .state
            .issuer()
            .managed_identity_claims(tid, client_id, object_id, resource);
        let issued_at = claims["iat"].as_i64().unwrap_or_default();
        claims["exp"] = json!(issued_at + lifetime_secs);
        self.state.issue_token(&claims, TokenVersion::V2)
    }

    /// The `kid` of the key that signs new tokens.
    pub fn current_kid(&self) -> String {
        self.state.keys.current().kid().to_owned()
    }

    /// The JWKS document as served for `tid`.
    pub fn jwks(&self, tid: &str) -> Value {
        self.state.keys.jwks(&self.issuer(tid))
    }

    /// Makes a new key (new `kid`) the signing key; old keys stay in the JWKS, so tokens they
    /// signed keep verifying.
    pub fn rotate_signing_key(&self) {
        if let Err(error) = self.state.keys.rotate() {
            tracing::error!(%error, "could not generate a new signing key");
        }
    }
}

/// Unix seconds now.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An opaque refresh token shaped like Entra's: `1.AX` and 120 base64url characters.
fn new_refresh_token() -> String {
    let mut bytes = [0u8; 90];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("1.AX{}", URL_SAFE_NO_PAD.encode(bytes))
}
