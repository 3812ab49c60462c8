//! The Entra emulator's HTTP routes: OpenID configuration (v1 and v2, per tenant and
//! multi-tenant), JWKS, the token endpoint, and the `/_dev` token helpers of the local stack.

use std::{collections::HashMap, sync::atomic::Ordering, sync::Arc};

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

use super::{
    errors::EntraError,
    grants::{self, tenant_id},
    tokens::{v1_issuer, v2_issuer, TOKEN_LIFETIME_SECS},
    AppTokenSpec, Document, EntraEmulator, EntraState, TokenVersion, UserTokenSpec,
};
use crate::faults::Outcome;

/// Object id the `/_dev/user-token` helper uses when none is given.
const DEV_USER_OID: &str = "00000000-0000-0000-0000-00000000d0e0";
/// Client id the `/_dev/app-token` helper uses when none is given: a made-up workload.
const DEV_WORKLOAD_APP_ID: &str = "7d3c6a9e-5b1f-4e2a-9c8d-0f1e2d3c4b5a";

/// The emulator's router.
pub(crate) fn router(emulator: &EntraEmulator) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration_v2),
        )
        .route(
            "/{tenant}/.well-known/openid-configuration",
            get(openid_configuration_v1),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(jwks))
        .route("/{tenant}/discovery/keys", get(jwks))
        .route("/{tenant}/oauth2/v2.0/token", post(grants::token))
        .route("/_dev/user-token", get(dev_user_token))
        .route("/_dev/app-token", get(dev_app_token))
        .with_state(Arc::clone(&emulator.state))
}

/// Whose metadata a discovery or JWKS path names.
enum MetadataTenant {
    /// A tenant GUID: tenant-specific documents, the issuer naming the tenant.
    Tenant(String),
    /// `common` or `organizations`: the multi-tenant documents, whose issuer is the literal
    /// template `{authority}/{tenantid}/v2.0` (v1: `https://sts.windows.net/{tenantid}/`) and
    /// whose endpoints stay under the alias, as real Entra serves them: see
    /// <https://login.microsoftonline.com/common/v2.0/.well-known/openid-configuration>
    /// (a copy: github.com/panva/wellknown, `issuers/entra-common/entra-common.mjs`), Microsoft's
    /// "Convert single-tenant app to multitenant" ("update your code to handle multiple issuer
    /// values": the `/common` issuer is a template, not an issuer) and
    /// AzureAD/azure-activedirectory-identitymodel-extensions-for-dotnet#1731.
    MultiTenant(String),
}

impl MetadataTenant {
    /// The path segment as used in the documents' endpoints.
    fn segment(&self) -> &str {
        match self {
            Self::Tenant(tid) | Self::MultiTenant(tid) => tid,
        }
    }

    /// The `{tenantid}` of issuers: the tenant, or the literal template.
    fn issuer_tenant(&self) -> &str {
        match self {
            Self::Tenant(tid) => tid,
            Self::MultiTenant(_) => TENANT_TEMPLATE,
        }
    }
}

/// The placeholder Entra's multi-tenant issuers carry.
const TENANT_TEMPLATE: &str = "{tenantid}";

/// The tenant of a discovery path, counted per tenant as it arrives; a tenant that is neither a
/// GUID nor a multi-tenant alias fails the way Entra's discovery does (`invalid_tenant`).
/// (`consumers` is not emulated.)
fn metadata_tenant(
    state: &EntraState,
    tenant: &str,
    document: Document,
) -> Result<MetadataTenant, EntraError> {
    let lower = tenant.to_ascii_lowercase();
    state.count_metadata_request(&lower, document);
    if lower == "common" || lower == "organizations" {
        return Ok(MetadataTenant::MultiTenant(lower));
    }
    tenant_id(tenant).map(MetadataTenant::Tenant).map_err(|_| {
        EntraError::bad_request(
            "invalid_tenant",
            90002,
            "Tenant not found. Check to make sure you have the correct tenant ID and are signing \
             into the correct cloud.",
        )
    })
}

/// Answers a metadata request under the metadata faults, counting the documents served.
async fn serve_metadata(
    state: &EntraState,
    tenant: &str,
    document: Document,
    render: impl FnOnce(&EntraState, &MetadataTenant) -> Value,
) -> Response {
    let tenant = match metadata_tenant(state, tenant, document) {
        Ok(tenant) => tenant,
        Err(error) => return error.into_response(),
    };
    state
        .metadata_faults
        .answer(|outcome| async {
            match outcome {
                Outcome::Proceed => {}
                Outcome::Respond {
                    status,
                    retry_after_secs,
                } => return EntraError::injected(status, retry_after_secs).into_response(),
                // Faults only Entra's token endpoint knows answer as a server error here.
                Outcome::InvalidClient => {
                    return EntraError::injected(StatusCode::INTERNAL_SERVER_ERROR, None)
                        .into_response()
                }
                Outcome::Drop(response) => return response,
            }
            let counter = match document {
                Document::Discovery => &state.counters.discovery_requests,
                Document::Jwks => &state.counters.jwks_requests,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Json(render(state, &tenant)).into_response()
        })
        .await
}

async fn openid_configuration_v2(
    State(state): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
) -> Response {
    serve_metadata(&state, &tenant, Document::Discovery, |state, tenant| {
        let host = &state.host;
        let tid = tenant.segment();
        json!({
            "issuer": v2_issuer(host, tenant.issuer_tenant()),
            "jwks_uri": format!("{host}/{tid}/discovery/v2.0/keys"),
            "token_endpoint": format!("{host}/{tid}/oauth2/v2.0/token"),
            "authorization_endpoint": format!("{host}/{tid}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{host}/{tid}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{host}/{tid}/oauth2/v2.0/logout"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "name", "oid", "tid", "ver"],
            "request_uri_parameter_supported": false,
            "tenant_region_scope": null,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        })
    })
    .await
}

async fn openid_configuration_v1(
    State(state): State<Arc<EntraState>>,
    Path(tenant): Path<String>,
) -> Response {
    serve_metadata(&state, &tenant, Document::Discovery, |state, tenant| {
        let host = &state.host;
        let tid = tenant.segment();
        json!({
            "issuer": v1_issuer(tenant.issuer_tenant()),
            "jwks_uri": format!("{host}/{tid}/discovery/keys"),
            "token_endpoint": format!("{host}/{tid}/oauth2/token"),
            "authorization_endpoint": format!("{host}/{tid}/oauth2/authorize"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": ["openid"],
            "tenant_region_scope": null,
            "cloud_instance_name": "microsoftonline.com",
        })
    })
    .await
}

/// The keys; each carries its `issuer` (the multi-tenant template on the `common` keys).
async fn jwks(State(state): State<Arc<EntraState>>, Path(tenant): Path<String>) -> Response {
    serve_metadata(&state, &tenant, Document::Jwks, |state, tenant| {
        state
            .keys
            .jwks(&v2_issuer(&state.host, tenant.issuer_tenant()))
    })
    .await
}

/// Query parameters, first occurrence wins (parsing never fails).
fn query_map(query: Option<&str>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        map.entry(name.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    map
}

fn bad_dev_request(detail: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "invalid_request", "error_description": detail})),
    )
        .into_response()
}

/// Shared `/_dev` parameters: tenant, audience, version.
fn dev_common(
    state: &EntraState,
    query: &HashMap<String, String>,
) -> Result<(String, Option<String>, TokenVersion), &'static str> {
    let tid = match query.get("tid").filter(|t| !t.is_empty()) {
        Some(tenant) => tenant_id(tenant).map_err(|_| "tid must be a GUID")?,
        None => state.tenant_id.clone(),
    };
    let version = match query.get("ver").map(String::as_str) {
        None | Some("" | "2" | "2.0") => TokenVersion::V2,
        Some("1" | "1.0") => TokenVersion::V1,
        Some(_) => return Err("ver must be 1 or 2"),
    };
    let aud = query.get("aud").filter(|a| !a.is_empty()).cloned();
    Ok((tid, aud, version))
}

fn dev_token_response(access_token: String) -> Response {
    Json(json!({
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS,
        "access_token": access_token,
    }))
    .into_response()
}

/// `GET /_dev/user-token?tid=&oid=&scp=&aud=&ver=`: a user access token for calling the
/// service (defaults: home tenant, a fixed demo user, `access_as_user`, the app's client id).
async fn dev_user_token(
    State(state): State<Arc<EntraState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query_map(query.as_deref());
    let (tid, aud, version) = match dev_common(&state, &query) {
        Ok(common) => common,
        Err(detail) => return bad_dev_request(detail),
    };
    let oid = query
        .get("oid")
        .filter(|o| !o.is_empty())
        .map_or(DEV_USER_OID, String::as_str);
    let mut spec = UserTokenSpec::new(tid, oid);
    if let Some(scp) = query.get("scp").filter(|s| !s.is_empty()) {
        spec.scp.clone_from(scp);
    }
    spec.aud = aud;
    spec.version = version;
    let emulator = EntraEmulator { state };
    dev_token_response(emulator.mint_user_token(&spec))
}

/// `GET /_dev/app-token?tid=&app_id=&roles=A,B&aud=&ver=`: an app-only token for calling
/// `do-work` (defaults: home tenant, a fixed workload app id, no roles).
async fn dev_app_token(
    State(state): State<Arc<EntraState>>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query_map(query.as_deref());
    let (tid, aud, version) = match dev_common(&state, &query) {
        Ok(common) => common,
        Err(detail) => return bad_dev_request(detail),
    };
    let app_id = query
        .get("app_id")
        .filter(|a| !a.is_empty())
        .map_or(DEV_WORKLOAD_APP_ID, String::as_str);
    let roles = query
        .get("roles")
        .map(|roles| {
            roles
                .split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut spec = AppTokenSpec::new(tid, app_id, roles);
    spec.aud = aud;
    spec.version = version;
    let emulator = EntraEmulator { state };
    dev_token_response(emulator.mint_app_token(&spec))
}
