//! The managed-identity endpoint App Service and Azure Functions give an app: a local plain
//! HTTP endpoint named by `IDENTITY_ENDPOINT`, guarded by the `X-IDENTITY-HEADER` secret from
//! `IDENTITY_HEADER`, speaking REST protocol `2019-08-01`.
//!
//! Sources: "How to use managed identities for App Service and Azure Functions", REST endpoint
//! reference (learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference),
//! and `azure_identity` 1.0 (`AppServiceManagedIdentityCredential`,
//! `ImdsManagedIdentityCredential`): `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…`
//! with `client_id`, `object_id` / `principal_id` or `mi_res_id` to pick a user-assigned
//! identity, header `X-IDENTITY-HEADER`; the answer is JSON `access_token`, `expires_on` (a
//! *string* of Unix seconds), `resource`, `token_type`, `client_id`. The SDK reads a 400 as "the
//! requested identity has not been assigned to this resource"; the error body
//! `{"statusCode", "message", "correlationId"}` is the one App Service sends.
//!
//! Tokens are Entra tokens of the identity's tenant, signed by the Entra emulator: real
//! managed-identity tokens come from Entra too, which is why an app can trust them through a
//! federated identity credential with issuer `{authority}/{tenant}/v2.0`. Any `resource` is
//! served (Key Vault, `api://AzureADTokenExchange`, Azure Database for PostgreSQL
//! `https://ossrdbms-aad.database.windows.net` …), and every token handed out is recorded.
//!
//! Like the real endpoint, it caches: "the managed identities for Azure resources subsystem
//! does cache tokens" (learn.microsoft.com/entra/identity/managed-identities-azure-resources/
//! how-to-use-vm-token#token-caching), so asking again returns the same token. A cached token
//! is handed out while more than half of its lifetime is left, then a new one is minted (the
//! proactive refresh MSAL applies to managed-identity tokens, `refresh_in` = half the
//! lifetime). Tests shorten the lifetime ([`ManagedIdentityEmulator::set_token_lifetime`]) to
//! see tokens change while traffic runs, and may act on each new token before it is answered
//! ([`ManagedIdentityEmulator::on_new_token`]), e.g. make it a database role's password.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use parking_lot::Mutex;
use serde_json::json;

use crate::entra::EntraEmulator;

/// The REST protocol version App Service's `IDENTITY_ENDPOINT` speaks.
const API_VERSION: &str = "2019-08-01";
/// Path of the token route (App Service's own is similar: `/msi/token`).
const TOKEN_PATH: &str = "/msi/token";
/// Default lifetime of an issued token (Entra's managed-identity tokens live about 24 h; one
/// hour is enough for tests and keeps the cached token of a long local run fresh).
const TOKEN_LIFETIME_SECS: i64 = 3600;

/// What [`ManagedIdentityEmulator::on_new_token`] runs, awaited before the token is answered.
pub type NewTokenHook =
    Arc<dyn Fn(NewIdentityToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A token just minted for an identity and a resource.
#[derive(Clone)]
pub struct NewIdentityToken {
    /// The identity's client id.
    pub client_id: String,
    /// The requested resource.
    pub resource: String,
    /// The token itself (a secret: never print it).
    pub access_token: String,
}

impl std::fmt::Debug for NewIdentityToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewIdentityToken")
            .field("client_id", &self.client_id)
            .field("resource", &self.resource)
            .finish_non_exhaustive()
    }
}

/// A token the endpoint hands out again while enough of its lifetime is left.
#[derive(Clone)]
struct CachedToken {
    access_token: String,
    issued_at: i64,
    expires_on: i64,
}

impl CachedToken {
    fn reusable_at(&self, now: i64) -> bool {
        // More than half of the lifetime left.
        2 * (self.expires_on - now) > self.expires_on - self.issued_at
    }
}

/// A user-assigned managed identity assigned to the emulated app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAssignedIdentity {
    /// Client (application) id: what `AZURE_CLIENT_ID` names.
    pub client_id: String,
    /// Object (principal) id: the `sub` of its tokens and the subject of federated credentials.
    pub object_id: String,
}

/// One token the endpoint handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedIdentityToken {
    /// The identity's client id.
    pub client_id: String,
    /// The requested resource.
    pub resource: String,
    /// Unix seconds.
    pub expires_on: i64,
    /// `false` when the endpoint answered a token it had handed out before (its cache).
    pub fresh: bool,
}

struct ManagedIdentityState {
    endpoint: String,
    secret: String,
    tenant_id: String,
    entra: EntraEmulator,
    identities: Mutex<Vec<UserAssignedIdentity>>,
    issued: Mutex<Vec<IssuedIdentityToken>>,
    refused: Mutex<u64>,
    lifetime_secs: Mutex<i64>,
    /// By (client id, resource).
    cache: Mutex<HashMap<(String, String), CachedToken>>,
    on_new_token: Mutex<Option<NewTokenHook>>,
}

/// Handle to a running managed-identity endpoint; clones share it.
#[derive(Clone)]
pub struct ManagedIdentityEmulator {
    state: Arc<ManagedIdentityState>,
}

impl std::fmt::Debug for ManagedIdentityEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The identity header is a secret.
        f.debug_struct("ManagedIdentityEmulator")
            .field("endpoint", &self.state.endpoint)
            .finish_non_exhaustive()
    }
}

impl ManagedIdentityEmulator {
    /// An endpoint at `origin` (`http://127.0.0.1:{port}`) issuing tokens of `tenant_id`.
    pub(crate) fn new(origin: &str, tenant_id: &str, entra: EntraEmulator) -> Self {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        Self {
            state: Arc::new(ManagedIdentityState {
                endpoint: format!("{origin}{TOKEN_PATH}"),
                secret,
                tenant_id: tenant_id.to_owned(),
                entra,
                identities: Mutex::new(Vec::new()),
                issued: Mutex::new(Vec::new()),
                refused: Mutex::new(0),
                lifetime_secs: Mutex::new(TOKEN_LIFETIME_SECS),
                cache: Mutex::new(HashMap::new()),
                on_new_token: Mutex::new(None),
            }),
        }
    }

    /// `IDENTITY_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        self.state.endpoint.clone()
    }

    /// `IDENTITY_HEADER`: the value `X-IDENTITY-HEADER` must carry.
    pub fn identity_header(&self) -> String {
        self.state.secret.clone()
    }

    /// Assigns a user-assigned identity to the app.
    pub fn assign(&self, identity: UserAssignedIdentity) {
        self.state.identities.lock().push(identity);
    }

    /// Every token handed out so far, oldest first.
    pub fn issued(&self) -> Vec<IssuedIdentityToken> {
        self.state.issued.lock().clone()
    }

    /// Requests answered with an error.
    pub fn refused(&self) -> u64 {
        *self.state.refused.lock()
    }

    /// Tokens minted from now on live this long (whole seconds, at least one); cached
    /// tokens keep theirs.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX).max(1);
        *self.state.lifetime_secs.lock() = secs;
    }

    /// Runs `hook` on every token minted from now on, before the endpoint answers it.
    pub fn on_new_token(&self, hook: NewTokenHook) {
        *self.state.on_new_token.lock() = Some(hook);
    }
}

/// The endpoint's router.
pub(crate) fn router(emulator: &ManagedIdentityEmulator) -> Router {
    Router::new()
        .route(TOKEN_PATH, get(token))
        .with_state(Arc::clone(&emulator.state))
}

fn refuse(state: &ManagedIdentityState, status: StatusCode, message: &str) -> Response {
    *state.refused.lock() += 1;
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "correlationId": uuid::Uuid::new_v4().to_string(),
    });
    (status, Json(body)).into_response()
}

async fn token(
    State(state): State<Arc<ManagedIdentityState>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let presented = headers
        .get("x-identity-header")
        .and_then(|value| value.to_str().ok());
    if presented != Some(state.secret.as_str()) {
        return refuse(
            &state,
            StatusCode::UNAUTHORIZED,
            "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.",
        );
    }
    if param("api-version") != Some(API_VERSION) {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "The api-version is missing or not supported; use 2019-08-01.",
        );
    }
    let Some(resource) = param("resource").map(str::to_owned) else {
        return refuse(&state, StatusCode::BAD_REQUEST, "The resource is required.");
    };
    if param("mi_res_id").is_some() {
        // Only ids are kept here; a resource id names no identity the emulator knows.
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "Unable to load the proper Managed Identity.",
        );
    }
    let identity = {
        let identities = state.identities.lock();
        identities
            .iter()
            .find(|identity| {
                match (
                    param("client_id"),
                    param("object_id"),
                    param("principal_id"),
                ) {
                    (Some(id), _, _) => identity.client_id == id,
                    (None, Some(id), _) | (None, None, Some(id)) => identity.object_id == id,
                    // No id asks for the system-assigned identity; the emulated app has none.
                    (None, None, None) => false,
                }
            })
            .cloned()
    };
    let Some(identity) = identity else {
        return refuse(
            &state,
            StatusCode::BAD_REQUEST,
            "Unable to load the proper Managed Identity.",
        );
    };
    let (access_token, expires_on, fresh) = cached_or_new(&state, &identity, &resource).await;
    state.issued.lock().push(IssuedIdentityToken {
        client_id: identity.client_id.clone(),
        resource: resource.clone(),
        expires_on,
        fresh,
    });
    Json(json!({
        "access_token": access_token,
        "expires_on": expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    }))
    .into_response()
}

/// The identity's cached token for `resource` while it is reusable, else a new one (run
/// through the hook first). `(token, expires_on, fresh)`.
async fn cached_or_new(
    state: &ManagedIdentityState,
    identity: &UserAssignedIdentity,
    resource: &str,
) -> (String, i64, bool) {
    let now = chrono::Utc::now().timestamp();
    let key = (identity.client_id.clone(), resource.to_owned());
    if let Some(cached) = state.cache.lock().get(&key).filter(|c| c.reusable_at(now)) {
        return (cached.access_token.clone(), cached.expires_on, false);
    }
    let lifetime = *state.lifetime_secs.lock();
    let access_token = state.entra.mint_managed_identity_token(
        &state.tenant_id,
        &identity.client_id,
        &identity.object_id,
        resource,
        lifetime,
    );
    let hook = state.on_new_token.lock().clone();
    if let Some(hook) = hook {
        hook(NewIdentityToken {
            client_id: identity.client_id.clone(),
            resource: resource.to_owned(),
            access_token: access_token.clone(),
        })
        .await;
    }
    let cached = CachedToken {
        access_token: access_token.clone(),
        issued_at: now,
        expires_on: now + lifetime,
    };
    state.cache.lock().insert(key, cached);
    (access_token, now + lifetime, true)
}
