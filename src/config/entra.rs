//! Entra ID settings: who the app is, how it proves it, and whose users and workloads it serves.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::{problem, Env, SettingsError};
use crate::domain::TenantId;
use crate::tenancy::WorkloadTenants;

/// Entra ID settings.
pub struct EntraSettings {
    /// `OBOVAULT_TENANT_ID`: the app's home tenant.
    pub tenant_id: TenantId,
    /// `OBOVAULT_CLIENT_ID`: the app (client) id.
    pub client_id: String,
    /// `OBOVAULT_CLIENT_SECRET` | `OBOVAULT_CLIENT_CERTIFICATE_PATH` |
    /// `OBOVAULT_CLIENT_ASSERTION=managed-identity`: exactly one.
    pub credential: ClientCredential,
    /// `OBOVAULT_AUTHORITY_HOST`, without a trailing slash.
    pub authority_host: Url,
    /// `OBOVAULT_ALLOWED_TENANTS`.
    pub allowed_tenants: AllowedTenants,
    /// `OBOVAULT_WORKLOAD_TENANTS`: whose workloads may call do-work, for whom.
    pub workload_tenants: WorkloadTenants,
    /// `OBOVAULT_SETUP_SCOPE`: the delegated scope a setup token must carry.
    pub setup_scope: String,
    /// `OBOVAULT_WORKLOAD_ROLE`: the app role a do-work caller must carry.
    pub workload_role: String,
    /// `OBOVAULT_ENTRA_TIMEOUT`: overall timeout of one call to Entra.
    pub timeout: Duration,
    /// `OBOVAULT_SIGNING_KEYS_REFRESH`: age at which Entra's metadata and signing keys are
    /// fetched again.
    pub signing_keys_refresh: Duration,
    /// `OBOVAULT_CLIENT_CAPABILITIES`: client capabilities (`cp1`) declared on every grant.
    pub client_capabilities: Vec<String>,
}

/// How the app proves itself to Entra.
pub enum ClientCredential {
    /// A client secret.
    Secret(SecretString),
    /// A PEM file with the private key and the certificate; a signed client assertion.
    Certificate(PathBuf),
    /// A token of a user-assigned managed identity (`AZURE_CLIENT_ID`) for the cloud's
    /// token-exchange audience as client assertion (a federated identity credential).
    ManagedIdentity {
        /// The managed identity's client id.
        client_id: String,
    },
}

/// Tenants whose users and workloads are served.
#[derive(Clone, Debug)]
pub enum AllowedTenants {
    /// `*`: any tenant.
    Any,
    /// Only these.
    Only(Vec<TenantId>),
}

impl AllowedTenants {
    /// Whether `tenant` may use the service.
    pub fn allows(&self, tenant: &TenantId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(list) => list.contains(tenant),
        }
    }
}

impl EntraSettings {
    pub(super) fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let tenant_id = TenantId::parse(env.required("OBOVAULT_TENANT_ID")?)
            .map_err(|_| problem("OBOVAULT_TENANT_ID", "must be a tenant GUID"))?;
        let client_id = env.required("OBOVAULT_CLIENT_ID")?.to_owned();
        if uuid::Uuid::try_parse(&client_id).is_err() {
            return Err(problem(
                "OBOVAULT_CLIENT_ID",
                "must be the app's client id (a GUID)",
            ));
        }
        let authority = env.or(
            "OBOVAULT_AUTHORITY_HOST",
            "https://login.microsoftonline.com",
        );
        let authority_host =
            env.https_url("OBOVAULT_AUTHORITY_HOST", authority.trim_end_matches('/'))?;
        let allowed_tenants = match env.optional("OBOVAULT_ALLOWED_TENANTS") {
            Some("*") => AllowedTenants::Any,
            Some(list) => AllowedTenants::Only(
                list.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(TenantId::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        problem(
                            "OBOVAULT_ALLOWED_TENANTS",
                            "must be * or comma-separated tenant GUIDs",
                        )
                    })?,
            ),
            None => AllowedTenants::Only(vec![tenant_id.clone()]),
        };
        let workload_tenants = workload_tenants(env, &tenant_id, &allowed_tenants)?;
        Ok(Self {
            credential: ClientCredential::from_env(env)?,
            tenant_id,
            client_id,
            authority_host,
            allowed_tenants,
            workload_tenants,
            setup_scope: env.or("OBOVAULT_SETUP_SCOPE", "access_as_user").to_owned(),
            workload_role: env.or("OBOVAULT_WORKLOAD_ROLE", "OboVault.Act").to_owned(),
            timeout: env.duration("OBOVAULT_ENTRA_TIMEOUT", "15s")?,
            signing_keys_refresh: env.duration("OBOVAULT_SIGNING_KEYS_REFRESH", "24h")?,
            client_capabilities: client_capabilities(env)?,
        })
    }
}

/// `OBOVAULT_WORKLOAD_TENANTS`: tenant GUIDs, each also an allowed tenant; `*` is refused
/// (see [`crate::tenancy`]).
fn workload_tenants(
    env: &Env,
    home: &TenantId,
    allowed: &AllowedTenants,
) -> Result<WorkloadTenants, SettingsError> {
    const VAR: &str = "OBOVAULT_WORKLOAD_TENANTS";
    let Some(list) = env.optional(VAR) else {
        return Ok(WorkloadTenants::new(home.clone(), Vec::new()));
    };
    let mut listed = Vec::new();
    for item in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if item == "*" {
            return Err(problem(
                VAR,
                "* is not accepted: list the tenants whose workloads may act for users",
            ));
        }
        let tenant = TenantId::parse(item)
            .map_err(|_| problem(VAR, "must be comma-separated tenant GUIDs"))?;
        if !allowed.allows(&tenant) {
            return Err(problem(
                VAR,
                format!("{tenant} is not in OBOVAULT_ALLOWED_TENANTS"),
            ));
        }
        listed.push(tenant);
    }
    Ok(WorkloadTenants::new(home.clone(), listed))
}

impl ClientCredential {
    fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let secret = env.optional("OBOVAULT_CLIENT_SECRET");
        let certificate = env.optional("OBOVAULT_CLIENT_CERTIFICATE_PATH");
        let assertion = env.optional("OBOVAULT_CLIENT_ASSERTION");
        match (secret, certificate, assertion) {
            (Some(secret), None, None) => Ok(Self::Secret(SecretString::from(secret.to_owned()))),
            (None, Some(path), None) => Ok(Self::Certificate(PathBuf::from(path))),
            (None, None, Some("managed-identity")) => Ok(Self::ManagedIdentity {
                client_id: user_assigned_identity(env)?,
            }),
            (None, None, Some(_)) => {
                Err(problem("OBOVAULT_CLIENT_ASSERTION", "the only supported value is managed-identity"))
            }
            (None, None, None) => Err(problem(
                "OBOVAULT_CLIENT_SECRET",
                "no client credential: set OBOVAULT_CLIENT_SECRET, OBOVAULT_CLIENT_CERTIFICATE_PATH or OBOVAULT_CLIENT_ASSERTION=managed-identity",
            )),
            _ => Err(problem(
                "OBOVAULT_CLIENT_SECRET",
                "set only one of OBOVAULT_CLIENT_SECRET, OBOVAULT_CLIENT_CERTIFICATE_PATH, OBOVAULT_CLIENT_ASSERTION",
            )),
        }
    }
}

/// The client id of the user-assigned managed identity that `OBOVAULT_CLIENT_ASSERTION=
/// managed-identity` presents. Entra accepts only user-assigned managed identities as an app's
/// federated credential ("Configure an application to trust a managed identity": "Only
/// user-assigned managed identities can be used as a federated credential for apps.
/// system-assigned identities aren't supported."), so a missing `AZURE_CLIENT_ID` would only
/// fail at the first token exchange; it stops the start instead.
fn user_assigned_identity(env: &Env) -> Result<String, SettingsError> {
    const VAR: &str = "OBOVAULT_CLIENT_ASSERTION";
    let Some(client_id) = env.optional("AZURE_CLIENT_ID") else {
        return Err(problem(
            VAR,
            "managed-identity needs a user-assigned managed identity: set AZURE_CLIENT_ID to its \
             client id (system-assigned identities cannot be an app's federated credential)",
        ));
    };
    if uuid::Uuid::try_parse(client_id).is_err() {
        return Err(problem(
            VAR,
            "managed-identity: AZURE_CLIENT_ID must be the user-assigned identity's client id (a GUID)",
        ));
    }
    Ok(client_id.to_owned())
}

/// `OBOVAULT_CLIENT_CAPABILITIES`: comma-separated capability names such as `cp1` (the only
/// one Entra documents today: "Claims challenges, claims requests and client capabilities",
/// learn.microsoft.com/entra/identity-platform/claims-challenge).
fn client_capabilities(env: &Env) -> Result<Vec<String>, SettingsError> {
    const VAR: &str = "OBOVAULT_CLIENT_CAPABILITIES";
    let mut capabilities: Vec<String> = Vec::new();
    for item in env
        .or(VAR, "")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let valid = item.len() <= 32
            && item
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(problem(
                VAR,
                "must be comma-separated capability names such as cp1",
            ));
        }
        if !capabilities.iter().any(|c| c == item) {
            capabilities.push(item.to_owned());
        }
    }
    Ok(capabilities)
}
