//! Settings of SPEC §4, read once from the environment at start.
//!
//! Every error names the variable it is about. Secrets are `secrecy` types and no struct that
//! holds one derives `Debug`. No setting falls back to something insecure: a missing client
//! credential or an `http://` Key Vault stops the process.
//!
//! One file per group of settings: `entra.rs` (identity and trust), `keys.rs` (Key Vault),
//! `downstreams.rs` (the APIs do-work calls); `env.rs` is where values come from and how the
//! shared kinds (durations, https URLs, flags) are parsed. This file holds the top level and
//! the small groups.

mod database;
mod downstreams;
mod entra;
mod env;
mod keys;

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

pub use database::DatabaseAuth;
pub use downstreams::{
    valid_name as valid_downstream_name, DownstreamSettings, Downstreams,
    DEFAULT_NAME as DEFAULT_DOWNSTREAM,
};
pub use entra::{AllowedTenants, ClientCredential, EntraSettings};
pub use env::{parse_duration, Env, SettingsError};
pub use keys::KeySettings;

use env::{https_url, problem};

/// Everything the service is configured with.
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`: the port on 127.0.0.1 the host talks to (0 in tests).
    pub port: u16,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`.
    pub database_url: SecretString,
    /// `OBOVAULT_DATABASE_AUTH`: the URL's password, or managed-identity tokens.
    pub database_auth: DatabaseAuth,
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
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`, `OTEL_EXPORTER_OTLP_ENDPOINT`; `None`: no
    /// traces or metrics are exported (nor built).
    pub telemetry: Option<crate::telemetry::TelemetrySettings>,
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

impl Settings {
    /// Reads and checks every setting.
    pub fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let port = env
            .or("FUNCTIONS_CUSTOMHANDLER_PORT", "3000")
            .parse::<u16>()
            .map_err(|_| problem("FUNCTIONS_CUSTOMHANDLER_PORT", "must be a port number"))?;
        let database_url = database_url(env)?;
        let database_auth = database::database_auth(env, database_url.expose_secret())?;
        let entra = EntraSettings::from_env(env)?;
        let lease = lease(env, entra.timeout)?;
        let log_format = log_format(env)?;
        Ok(Self {
            port,
            database_url,
            database_auth,
            downstreams: Downstreams::from_env(env)?,
            keys: KeySettings::from_env(env)?,
            refresh: RefreshSettings::from_env(env)?,
            extra_ca_certs: env.optional("OBOVAULT_EXTRA_CA_CERTS").map(PathBuf::from),
            events: crate::events::EventSettings::from_env(env)?,
            telemetry: crate::telemetry::TelemetrySettings::from_env(env)?,
            entra,
            lease,
            log_format,
        })
    }
}

/// `DATABASE_URL`: Postgres or SQLite; SQLite in the working directory by default.
fn database_url(env: &Env) -> Result<SecretString, SettingsError> {
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
    Ok(SecretString::from(database_url.to_owned()))
}

/// `OBOVAULT_LEASE`: at least twice the Entra timeout plus 5 s, which is also the default.
fn lease(env: &Env, entra_timeout: Duration) -> Result<Duration, SettingsError> {
    let minimum_lease = entra_timeout * 2 + Duration::from_secs(5);
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
    Ok(lease)
}

/// Variables only the Functions host sets for the handler process. `FUNCTIONS_WORKER_RUNTIME`
/// is an app setting on Consumption and Premium plans, but Flex Consumption refuses it as an
/// app setting; the host itself sets `FUNCTIONS_CUSTOMHANDLER_WORKER_ID` (and the older
/// `FUNCTIONS_HTTPWORKER_ID`) on every custom handler it starts.
const FUNCTIONS_HOST_MARKERS: [&str; 3] = [
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_CUSTOMHANDLER_WORKER_ID",
    "FUNCTIONS_HTTPWORKER_ID",
];

/// `OBOVAULT_LOG_FORMAT`: JSON under the Functions host, text in a terminal, unless set.
fn log_format(env: &Env) -> Result<LogFormat, SettingsError> {
    let under_host = FUNCTIONS_HOST_MARKERS
        .iter()
        .any(|name| env.optional(name).is_some());
    Ok(match env.optional("OBOVAULT_LOG_FORMAT") {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        Some(_) => return Err(problem("OBOVAULT_LOG_FORMAT", "must be json or text")),
        None if under_host => LogFormat::Json,
        None => LogFormat::Text,
    })
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
mod tests;
