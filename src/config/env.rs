//! Where settings come from ([`Env`]), the error that names a wrong one, and the parsers the
//! setting groups share.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use url::Url;

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

pub(super) fn problem(
    variable: impl Into<Cow<'static, str>>,
    problem: impl Into<String>,
) -> SettingsError {
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
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub(super) fn required(&self, name: &'static str) -> Result<&str, SettingsError> {
        self.optional(name)
            .ok_or_else(|| problem(name, "is required"))
    }

    pub(super) fn or<'a>(&'a self, name: &'static str, default: &'a str) -> &'a str {
        self.optional(name).unwrap_or(default)
    }

    pub(super) fn flag(&self, name: &'static str) -> Result<bool, SettingsError> {
        match self.or(name, "false").to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(problem(name, "must be true or false")),
        }
    }

    pub(super) fn duration(
        &self,
        name: &'static str,
        default: &str,
    ) -> Result<Duration, SettingsError> {
        parse_duration(self.or(name, default))
            .ok_or_else(|| problem(name, "must be a duration such as 90s, 15m or 24h"))
    }

    pub(crate) fn https_url(&self, name: &'static str, value: &str) -> Result<Url, SettingsError> {
        https_url(name, value)
    }
}

/// An `https://host[:port][/path]` URL without credentials.
pub(super) fn https_url(
    name: impl Into<Cow<'static, str>>,
    value: &str,
) -> Result<Url, SettingsError> {
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
