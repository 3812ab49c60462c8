//! Settings of SPEC §4, read once from the environment at start.
//!
//! Every error names the variable it is about. Secrets are `secrecy` types and no struct that
//! holds one derives `Debug`. No setting falls back to something insecure: a missing client
//! credential or an `http://` Key Vault stops the process.

mod downstreams;

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::domain::TenantId;
use crate::tenancy::WorkloadTenants;
pub use downstreams::{
    valid_name as valid_downstream_name, DownstreamSettings, Downstreams,
    DEFAULT_NAME as DEFAULT_DOWNSTREAM,
};

/// Everything the service is configured with.
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`: the port on 127.0.0.1 the host talks to (0 in tests).
    pub port: u16,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`.
    pub database_url: SecretString,
    /// Entra ID: who we are and whom we trust.
    pub entra: EntraSettings,
    /// The APIs do-work calls (`OBOVAULT_DOWNSTREAMS`, or the one unnamed downstream).
    pub downstreams: Downstreams,
    /// Key Vault keys.
    pub keys: KeySettings,
    /// The timer.
    pub refresh: RefreshSettings,
    /// `OBOVAULT_EXTRA_CA_CERTS`: PEM file of extra CAs for every outbound TLS connection.
    pub extra_ca_certs: Option<PathBuf>,
    /// `OBOVAULT_LEASE`: how long one instance may work on a row before another may take it
    /// over. At least twice the Entra timeout plus 5 s, so a lease outlives the call it guards.
    pub lease: Duration,
    /// `OBOVAULT_LOG_FORMAT`: `json` or `text`; JSON when running under the Functions host.
    pub log_format: LogFormat,
    /// `OBOVAULT_EVENTS_URL` and `OBOVAULT_EVENTS_SECRET`; `None`: no grant events.
    pub events: Option<crate::events::EventSettings>,
}

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

/// Key Vault settings.
#[derive(Clone, Debug)]
pub struct KeySettings {
    /// `OBOVAULT_KEY_VAULT_URL`: must be `https://`.
    pub vault_url: Url,
    /// `OBOVAULT_KEY_NAME`: `{tenant}` becomes the tenant id.
    pub key_name_template: String,
    /// `OBOVAULT_KEY_AUTO_CREATE`.
    pub auto_create: bool,
    /// `OBOVAULT_KEY_VAULT_EMULATOR`: dummy bearer token, no challenge-domain check.
    pub emulator: bool,
    /// `AZURE_CLIENT_ID`: a user-assigned managed identity for Key Vault (and the assertion).
    pub managed_identity_client_id: Option<String>,
}

impl KeySettings {
    /// The Key Vault secret name of a tenant's key.
    pub fn key_name(&self, tenant: &TenantId) -> String {
        self.key_name_template.replace("{tenant}", tenant.as_str())
    }
}

/// The timer's settings.
#[derive(Clone, Debug)]
pub struct RefreshSettings {
    /// `OBOVAULT_REFRESH_AFTER`: rows older than this are refreshed.
    pub after: Duration,
    /// `OBOVAULT_REFRESH_CONCURRENCY`: parallel refreshes in one run.
    pub concurrency: usize,
    /// `OBOVAULT_REFRESH_TIME_BUDGET`: no new rows are claimed after this.
    pub time_budget: Duration,
}

/// Log output format.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub enum LogFormat {
    /// One JSON object per line (Azure).
    Json,
    /// Human-readable lines (a terminal).
    Text,
}

/// A setting that is missing or wrong; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct SettingsError {
    /// The environment variable.
    pub variable: Cow<'static, str>,
    /// What is wrong with it (never its value when it is a secret).
    pub problem: String,
}

impl SettingsError {
    /// A problem with `variable`.
    pub(crate) fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        self::problem(variable, problem)
    }
}

fn problem(variable: impl Into<Cow<'static, str>>, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        variable: variable.into(),
        problem: problem.into(),
    }
}

/// A source of variables: the process environment, or a map in tests.
pub struct Env(HashMap<String, String>);

impl Env {
    /// Snapshot of the process environment.
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    /// A fixed set of variables (tests, tools).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// Every variable name (set, possibly empty).
    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    fn required(&self, name: &'static str) -> Result<&str, SettingsError> {
        self.optional(name)
            .ok_or_else(|| problem(name, "is required"))
    }

    fn or<'a>(&'a self, name: &'static str, default: &'a str) -> &'a str {
        self.optional(name).unwrap_or(default)
    }

    fn flag(&self, name: &'static str) -> Result<bool, SettingsError> {
        match self.or(name, "false").to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(problem(name, "must be true or false")),
        }
    }

    fn duration(&self, name: &'static str, default: &str) -> Result<Duration, SettingsError> {
        parse_duration(self.or(name, default))
            .ok_or_else(|| problem(name, "must be a duration such as 90s, 15m or 24h"))
    }

    pub(crate) fn https_url(&self, name: &'static str, value: &str) -> Result<Url, SettingsError> {
        https_url(name, value)
    }
}

/// An `https://host[:port][/path]` URL without credentials.
fn https_url(name: impl Into<Cow<'static, str>>, value: &str) -> Result<Url, SettingsError> {
    let name = name.into();
    let url = Url::parse(value).map_err(|_| problem(name.clone(), "must be an absolute URL"))?;
    if url.scheme() != "https" {
        return Err(problem(name, "must be an https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.host().is_none() {
        return Err(problem(
            name,
            "must be https://host[:port][/path] without credentials",
        ));
    }
    Ok(url)
}

/// Parses `90s`, `15m`, `24h`, `2d`, `500ms` (also combinations such as `1h30m`).
pub fn parse_duration(value: &str) -> Option<Duration> {
    let duration = humantime::parse_duration(value).ok()?;
    (!duration.is_zero()).then_some(duration)
}

impl Settings {
    /// Reads and checks every setting.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let port = env
            .or("FUNCTIONS_CUSTOMHANDLER_PORT", "3000")
            .parse::<u16>()
            .map_err(|_| problem("FUNCTIONS_CUSTOMHANDLER_PORT", "must be a port number"))?;
        let database_url = env.or("DATABASE_URL", "sqlite://obo-vault.db?mode=rwc");
        if !(database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://")
            || database_url.starts_with("sqlite:"))
        {
            return Err(problem(
                "DATABASE_URL",
                "must start with postgres:// or sqlite:",
            ));
        }
        let entra = EntraSettings::from_env(env)?;
        let minimum_lease = entra.timeout * 2 + Duration::from_secs(5);
        let lease = match env.optional("OBOVAULT_LEASE") {
            None => minimum_lease,
            Some(_) => env.duration("OBOVAULT_LEASE", "")?,
        };
        if lease < minimum_lease {
            return Err(problem(
                "OBOVAULT_LEASE",
                format!(
                    "must be at least twice OBOVAULT_ENTRA_TIMEOUT plus 5s ({}s)",
                    minimum_lease.as_secs()
                ),
            ));
        }
        let log_format = match env.optional("OBOVAULT_LOG_FORMAT") {
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(_) => return Err(problem("OBOVAULT_LOG_FORMAT", "must be json or text")),
            None if env.optional("FUNCTIONS_WORKER_RUNTIME").is_some() => LogFormat::Json,
            None => LogFormat::Text,
        };
        Ok(Self {
            port,
            database_url: SecretString::from(database_url.to_owned()),
            downstreams: Downstreams::from_env(env)?,
            keys: KeySettings::from_env(env)?,
            refresh: RefreshSettings::from_env(env)?,
            extra_ca_certs: env.optional("OBOVAULT_EXTRA_CA_CERTS").map(PathBuf::from),
            events: crate::events::EventSettings::from_env(env)?,
            entra,
            lease,
            log_format,
        })
    }
}

impl EntraSettings {
    fn from_env(env: &Env) -> Result<Self, SettingsError> {
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

impl KeySettings {
    fn from_env(env: &Env) -> Result<Self, SettingsError> {
        const VAR: &str = "OBOVAULT_KEY_VAULT_URL";
        let vault_url = env.https_url(VAR, env.required(VAR)?)?;
        let key_name_template = env.or("OBOVAULT_KEY_NAME", "obo-vault-{tenant}").to_owned();
        let sample = key_name_template.replace("{tenant}", "00000000-0000-0000-0000-000000000000");
        if sample.is_empty()
            || sample.len() > 127
            || !sample
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(problem(
                "OBOVAULT_KEY_NAME",
                "must be a Key Vault secret name (letters, digits, -) with an optional {tenant}",
            ));
        }
        Ok(Self {
            vault_url,
            key_name_template,
            auto_create: env.flag("OBOVAULT_KEY_AUTO_CREATE")?,
            emulator: env.flag("OBOVAULT_KEY_VAULT_EMULATOR")?,
            managed_identity_client_id: env.optional("AZURE_CLIENT_ID").map(str::to_owned),
        })
    }
}

impl RefreshSettings {
    fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let concurrency = env
            .or("OBOVAULT_REFRESH_CONCURRENCY", "16")
            .parse::<usize>()
            .ok()
            .filter(|c| (1..=1024).contains(c))
            .ok_or_else(|| {
                problem(
                    "OBOVAULT_REFRESH_CONCURRENCY",
                    "must be a number from 1 to 1024",
                )
            })?;
        Ok(Self {
            after: env.duration("OBOVAULT_REFRESH_AFTER", "24h")?,
            concurrency,
            time_budget: env.duration("OBOVAULT_REFRESH_TIME_BUDGET", "240s")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("OBOVAULT_TENANT_ID", "11111111-1111-1111-1111-111111111111"),
            ("OBOVAULT_CLIENT_ID", "22222222-2222-2222-2222-222222222222"),
            ("OBOVAULT_CLIENT_SECRET", "s3cret"),
            ("OBOVAULT_KEY_VAULT_URL", "https://vault.example/"),
        ]
    }

    fn error_with(extra: &[(&'static str, &'static str)]) -> SettingsError {
        let mut pairs = base();
        for (k, v) in extra {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k, v));
        }
        match Settings::from_env(&Env::from_pairs(pairs)) {
            Ok(_) => panic!("settings {extra:?} must be refused"),
            Err(error) => error,
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let settings = Settings::from_env(&Env::from_pairs(base())).unwrap();
        assert_eq!(settings.port, 3000);
        assert_eq!(settings.refresh.after, Duration::from_secs(86_400));
        assert_eq!(settings.refresh.concurrency, 16);
        assert_eq!(settings.refresh.time_budget, Duration::from_secs(240));
        assert_eq!(settings.entra.setup_scope, "access_as_user");
        assert_eq!(
            settings.entra.signing_keys_refresh,
            Duration::from_secs(86_400)
        );
        assert_eq!(settings.entra.workload_role, "OboVault.Act");
        assert_eq!(settings.downstreams.first().allowed_paths, vec!["/me"]);
        assert!(settings.entra.client_capabilities.is_empty());
        assert_eq!(
            settings.downstreams.first().base_url.as_str(),
            "https://graph.microsoft.com/v1.0"
        );
        let tenant = TenantId::parse("11111111-1111-1111-1111-111111111111").unwrap();
        assert_eq!(
            settings.keys.key_name(&tenant),
            format!("obo-vault-{tenant}")
        );
        assert!(settings.entra.allowed_tenants.allows(&tenant));
        assert_eq!(settings.entra.workload_tenants.listed(), [tenant]);
        assert!(!settings.keys.auto_create && !settings.keys.emulator);
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("OBOVAULT_TENANT_ID", "")], "OBOVAULT_TENANT_ID"),
            (
                &[("OBOVAULT_KEY_VAULT_URL", "http://vault.example/")],
                "OBOVAULT_KEY_VAULT_URL",
            ),
            (
                &[("OBOVAULT_REFRESH_AFTER", "soon")],
                "OBOVAULT_REFRESH_AFTER",
            ),
            (
                &[("OBOVAULT_REFRESH_CONCURRENCY", "0")],
                "OBOVAULT_REFRESH_CONCURRENCY",
            ),
            (&[("OBOVAULT_CLIENT_SECRET", "")], "OBOVAULT_CLIENT_SECRET"),
            (
                &[("OBOVAULT_CLIENT_ASSERTION", "managed-identity")],
                "OBOVAULT_CLIENT_SECRET",
            ),
            (
                &[
                    ("OBOVAULT_CLIENT_SECRET", ""),
                    ("OBOVAULT_CLIENT_ASSERTION", "managed-identity"),
                ],
                "OBOVAULT_CLIENT_ASSERTION",
            ),
            (
                &[
                    ("OBOVAULT_CLIENT_SECRET", ""),
                    ("OBOVAULT_CLIENT_ASSERTION", "managed-identity"),
                    ("AZURE_CLIENT_ID", "my-identity"),
                ],
                "OBOVAULT_CLIENT_ASSERTION",
            ),
            (
                &[("OBOVAULT_ALLOWED_TENANTS", "contoso")],
                "OBOVAULT_ALLOWED_TENANTS",
            ),
            (
                &[("OBOVAULT_AUTHORITY_HOST", "http://login")],
                "OBOVAULT_AUTHORITY_HOST",
            ),
            (
                &[("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "me")],
                "OBOVAULT_DOWNSTREAM_ALLOWED_PATHS",
            ),
            (
                &[("OBOVAULT_CLIENT_CAPABILITIES", "cp1,\"x\"")],
                "OBOVAULT_CLIENT_CAPABILITIES",
            ),
            (
                &[("OBOVAULT_KEY_AUTO_CREATE", "maybe")],
                "OBOVAULT_KEY_AUTO_CREATE",
            ),
            (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
            (
                &[("OBOVAULT_SIGNING_KEYS_REFRESH", "0s")],
                "OBOVAULT_SIGNING_KEYS_REFRESH",
            ),
            (
                &[("OBOVAULT_WORKLOAD_TENANTS", "*")],
                "OBOVAULT_WORKLOAD_TENANTS",
            ),
            (
                &[(
                    "OBOVAULT_WORKLOAD_TENANTS",
                    "33333333-3333-3333-3333-333333333333",
                )],
                "OBOVAULT_WORKLOAD_TENANTS",
            ),
        ];
        for (extra, variable) in cases {
            let error = error_with(extra);
            assert_eq!(error.variable, *variable, "{extra:?}");
            assert!(!error.to_string().contains("s3cret"));
        }
    }

    #[test]
    fn workload_tenants_are_allowed_tenants() {
        let (home, other) = (
            "11111111-1111-1111-1111-111111111111",
            "33333333-3333-3333-3333-333333333333",
        );
        let mut pairs = base();
        pairs.push(("OBOVAULT_ALLOWED_TENANTS", "*"));
        pairs.push((
            "OBOVAULT_WORKLOAD_TENANTS",
            "33333333-3333-3333-3333-333333333333, 11111111-1111-1111-1111-111111111111",
        ));
        let settings = Settings::from_env(&Env::from_pairs(pairs)).unwrap();
        let listed: Vec<&str> = settings
            .entra
            .workload_tenants
            .listed()
            .iter()
            .map(TenantId::as_str)
            .collect();
        assert_eq!(listed, [other, home]);
    }

    #[test]
    fn managed_identity_assertions_name_a_user_assigned_identity() {
        let mut pairs = base();
        pairs.retain(|(name, _)| *name != "OBOVAULT_CLIENT_SECRET");
        pairs.push(("OBOVAULT_CLIENT_ASSERTION", "managed-identity"));
        pairs.push(("AZURE_CLIENT_ID", "0d3c5e3a-6f2b-4c8e-9a1d-7b2e4f6a8c0e"));
        let settings = Settings::from_env(&Env::from_pairs(pairs)).unwrap();
        assert!(matches!(
            settings.entra.credential,
            ClientCredential::ManagedIdentity { ref client_id }
                if client_id == "0d3c5e3a-6f2b-4c8e-9a1d-7b2e4f6a8c0e"
        ));
    }

    #[test]
    fn durations_use_the_short_form() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("forever"), None);
    }
}
