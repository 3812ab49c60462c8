//! Which exporters to start: `APPLICATIONINSIGHTS_CONNECTION_STRING` (Application Insights),
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over HTTP), both, or neither (no telemetry at all).

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

use super::sampling::Sampling;
use crate::config::{Env, SettingsError};

/// The telemetry settings; `None` from [`TelemetrySettings::from_env`] means no exporter.
#[derive(Debug)]
pub struct TelemetrySettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL; `/v1/traces` and `/v1/metrics`
    /// are appended, as the OTLP/HTTP specification says for this variable.
    pub otlp_endpoint: Option<Url>,
    /// `APPLICATIONINSIGHTS_CONNECTION_STRING`.
    pub app_insights: Option<AppInsightsConnection>,
    /// `OTEL_SERVICE_NAME` (Application Insights' cloud role name), default `obo-vault`.
    pub service_name: String,
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds): how often finished spans are sent, 5000.
    pub span_delay: Duration,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds): how often metrics are sent, 60000.
    pub metric_interval: Duration,
    /// `OTEL_TRACES_SAMPLER` when it names one of Microsoft's samplers, or its default with
    /// Application Insights; `None` leaves the sampler to the SDK ([`super::sampling`]).
    pub sampling: Option<Sampling>,
}

/// An Application Insights connection string, checked. The instrumentation key is not a
/// credential, but it lets anyone write into the resource: it stays out of Debug and logs.
pub struct AppInsightsConnection {
    value: SecretString,
    /// `IngestionEndpoint` (default `https://dc.services.visualstudio.com`).
    pub ingestion_endpoint: Url,
}

impl std::fmt::Debug for AppInsightsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppInsightsConnection")
            .field("ingestion_endpoint", &self.ingestion_endpoint.as_str())
            .finish_non_exhaustive()
    }
}

const CONNECTION_STRING: &str = "APPLICATIONINSIGHTS_CONNECTION_STRING";
const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

impl AppInsightsConnection {
    /// Parses `InstrumentationKey=…;IngestionEndpoint=…` (keys case-insensitive, as the
    /// Application Insights SDKs read them).
    pub fn parse(value: &str) -> Result<Self, SettingsError> {
        let mut key = None;
        let mut endpoint = None;
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((name, field)) = part.split_once('=') else {
                return Err(SettingsError::new(
                    CONNECTION_STRING,
                    "must be Name=value pairs separated by ;",
                ));
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "instrumentationkey" => key = Some(field.trim()),
                "ingestionendpoint" => endpoint = Some(field.trim()),
                _ => {}
            }
        }
        if key.is_none_or(str::is_empty) {
            return Err(SettingsError::new(
                CONNECTION_STRING,
                "has no InstrumentationKey",
            ));
        }
        let endpoint = endpoint.unwrap_or("https://dc.services.visualstudio.com");
        let ingestion_endpoint = collector_url(CONNECTION_STRING, endpoint)?;
        Ok(Self {
            value: SecretString::from(value.to_owned()),
            ingestion_endpoint,
        })
    }

    /// The whole connection string, for the exporter.
    pub(crate) fn expose(&self) -> &str {
        self.value.expose_secret()
    }
}

impl TelemetrySettings {
    /// Reads the settings; `Ok(None)` when no exporter is configured.
    pub fn from_env(env: &Env) -> Result<Option<Self>, SettingsError> {
        let app_insights = env
            .optional(CONNECTION_STRING)
            .map(AppInsightsConnection::parse)
            .transpose()?;
        let otlp_endpoint = env
            .optional(OTLP_ENDPOINT)
            .map(|value| collector_url(OTLP_ENDPOINT, value))
            .transpose()?;
        if app_insights.is_none() && otlp_endpoint.is_none() {
            return Ok(None);
        }
        let sampling = Sampling::from_env(env, app_insights.is_some())?;
        Ok(Some(Self {
            otlp_endpoint,
            app_insights,
            service_name: env
                .optional("OTEL_SERVICE_NAME")
                .unwrap_or("obo-vault")
                .to_owned(),
            span_delay: milliseconds(env, "OTEL_BSP_SCHEDULE_DELAY", 5_000)?,
            metric_interval: milliseconds(env, "OTEL_METRIC_EXPORT_INTERVAL", 60_000)?,
            sampling,
        }))
    }
}

/// An `https://` URL, or `http://` to a loopback collector (a sidecar or a local agent):
/// telemetry must not cross a network in clear text.
fn collector_url(variable: &'static str, value: &str) -> Result<Url, SettingsError> {
    let url = Url::parse(value).map_err(|_| SettingsError::new(variable, "must be a URL"))?;
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(SettingsError::new(
            variable,
            "must be an https:// URL (http:// only to localhost)",
        )),
    }
}

fn milliseconds(
    env: &Env,
    variable: &'static str,
    default: u64,
) -> Result<Duration, SettingsError> {
    match env.optional(variable) {
        None => Ok(Duration::from_millis(default)),
        Some(value) => value
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| SettingsError::new(variable, "must be a number of milliseconds")),
    }
}

#[cfg(test)]
mod tests;
