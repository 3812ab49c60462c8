//! The downstream APIs do-work may call (SPEC §4 `OBOVAULT_DOWNSTREAMS`).
//!
//! Without `OBOVAULT_DOWNSTREAMS`, the unnamed `OBOVAULT_DOWNSTREAM_BASE_URL`, `_SCOPES` and
//! `_ALLOWED_PATHS` define one downstream named `default`, with Graph's defaults. With the list,
//! every name needs its own three settings and the unnamed ones must be absent: a deployment
//! where both are set would silently ignore one of them. Any `OBOVAULT_DOWNSTREAM_<NAME>_…`
//! setting for a name that is not listed is refused as well (a typo there would otherwise leave
//! an API unreachable or, worse, configured with another one's paths).

use std::time::Duration;

use url::Url;

use super::{problem, Env, SettingsError};

/// The list of names.
const LIST: &str = "OBOVAULT_DOWNSTREAMS";
/// The name of the one downstream the unnamed settings define.
pub const DEFAULT_NAME: &str = "default";
const UNNAMED: [&str; 3] = [
    "OBOVAULT_DOWNSTREAM_BASE_URL",
    "OBOVAULT_DOWNSTREAM_SCOPES",
    "OBOVAULT_DOWNSTREAM_ALLOWED_PATHS",
];
const SUFFIXES: [&str; 3] = ["_BASE_URL", "_SCOPES", "_ALLOWED_PATHS"];
const MAX_NAME_LEN: usize = 32;

/// One downstream API.
#[derive(Clone, Debug)]
pub struct DownstreamSettings {
    /// Its name (`default` without `OBOVAULT_DOWNSTREAMS`); do-work's `"downstream"`.
    pub name: String,
    /// `…_BASE_URL`, without a trailing slash.
    pub base_url: Url,
    /// `…_SCOPES`: scopes of one resource.
    pub scopes: Vec<String>,
    /// `…_ALLOWED_PATHS`: allowed path prefixes, each starting with `/`.
    pub allowed_paths: Vec<String>,
    /// `OBOVAULT_DOWNSTREAM_TIMEOUT`: overall timeout of one downstream call (shared).
    pub timeout: Duration,
}

/// Every configured downstream, in the order listed; never empty. The first is the default of
/// do-work and the one whose scopes setup's OBO exchange and the timer ask for.
#[derive(Clone, Debug)]
pub struct Downstreams {
    list: Vec<DownstreamSettings>,
}

impl Downstreams {
    /// One downstream (tests, tools).
    pub fn single(settings: DownstreamSettings) -> Self {
        Self {
            list: vec![settings],
        }
    }

    /// The first downstream.
    pub fn first(&self) -> &DownstreamSettings {
        &self.list[0]
    }

    /// All of them, in order.
    pub fn all(&self) -> &[DownstreamSettings] {
        &self.list
    }

    /// Reads the list, or the unnamed settings.
    pub(super) fn from_env(env: &Env) -> Result<Self, SettingsError> {
        let timeout = env.duration("OBOVAULT_DOWNSTREAM_TIMEOUT", "30s")?;
        let Some(list) = env.optional(LIST) else {
            refuse_unlisted(env, &[])?;
            return Ok(Self::single(unnamed(env, timeout)?));
        };
        if let Some(variable) = UNNAMED.iter().find(|v| env.optional(v).is_some()) {
            return Err(problem(
                *variable,
                format!("must not be set together with {LIST}: use OBOVAULT_DOWNSTREAM_<NAME>_… per listed name"),
            ));
        }
        let mut names: Vec<&str> = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !valid_name(name) {
                return Err(problem(
                    LIST,
                    format!("{name:?} is not a downstream name (1 to 32 of a-z, 0-9, -)"),
                ));
            }
            if names.contains(&name) {
                return Err(problem(LIST, format!("{name} is listed twice")));
            }
            names.push(name);
        }
        if names.is_empty() {
            return Err(problem(LIST, "must name at least one downstream"));
        }
        refuse_unlisted(env, &names)?;
        let list = names
            .iter()
            .map(|name| named(env, name, timeout))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { list })
    }
}

/// `[a-z0-9-]{1,32}`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `OBOVAULT_DOWNSTREAM_<NAME><suffix>`: NAME upper-cased, `-` as `_`.
fn variable(name: &str, suffix: &str) -> String {
    format!(
        "OBOVAULT_DOWNSTREAM_{}{suffix}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Refuses a per-name setting whose name is not listed.
fn refuse_unlisted(env: &Env, names: &[&str]) -> Result<(), SettingsError> {
    let expected: Vec<String> = names
        .iter()
        .flat_map(|name| SUFFIXES.iter().map(|suffix| variable(name, suffix)))
        .collect();
    let mut stray: Vec<&str> = env
        .names()
        .filter(|n| n.starts_with("OBOVAULT_DOWNSTREAM_") && !UNNAMED.contains(n))
        .filter(|n| SUFFIXES.iter().any(|suffix| n.ends_with(suffix)))
        .filter(|n| env.optional(n).is_some() && !expected.iter().any(|e| e == n))
        .collect();
    stray.sort_unstable();
    match stray.first() {
        None => Ok(()),
        Some(name) => Err(problem(
            (*name).to_owned(),
            format!("names a downstream that {LIST} does not list"),
        )),
    }
}

fn unnamed(env: &Env, timeout: Duration) -> Result<DownstreamSettings, SettingsError> {
    let [base, scopes, paths] = UNNAMED;
    Ok(DownstreamSettings {
        name: DEFAULT_NAME.to_owned(),
        base_url: base_url(base, env.or(base, "https://graph.microsoft.com/v1.0"))?,
        scopes: parse_scopes(
            scopes,
            env.or(scopes, "https://graph.microsoft.com/.default"),
        )?,
        allowed_paths: parse_paths(paths, env.or(paths, "/me"))?,
        timeout,
    })
}

fn named(env: &Env, name: &str, timeout: Duration) -> Result<DownstreamSettings, SettingsError> {
    let [base, scopes, paths] = SUFFIXES.map(|suffix| variable(name, suffix));
    let required = |variable: &String| {
        env.optional(variable).ok_or_else(|| {
            problem(
                variable.clone(),
                format!("is required: {LIST} lists {name}"),
            )
        })
    };
    Ok(DownstreamSettings {
        name: name.to_owned(),
        base_url: base_url(base.clone(), required(&base)?)?,
        scopes: parse_scopes(scopes.clone(), required(&scopes)?)?,
        allowed_paths: parse_paths(paths.clone(), required(&paths)?)?,
        timeout,
    })
}

fn base_url(variable: impl Into<String>, value: &str) -> Result<Url, SettingsError> {
    let variable = variable.into();
    let url = super::https_url(variable.clone(), value.trim_end_matches('/'))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem(variable, "must not have a query or fragment"));
    }
    Ok(url)
}

/// Space- or comma-separated scopes, all of one resource: Entra issues an access token for
/// one resource per request.
fn parse_scopes(variable: impl Into<String>, value: &str) -> Result<Vec<String>, SettingsError> {
    let variable = variable.into();
    let scopes: Vec<String> = value
        .split([' ', ','])
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.is_empty() {
        return Err(problem(variable, "must name at least one scope"));
    }
    let resource = |scope: &str| scope.rsplit_once('/').map(|(r, _)| r.to_owned());
    let first = resource(&scopes[0]);
    if scopes.iter().any(|s| resource(s) != first) {
        return Err(problem(variable, "must be scopes of one resource"));
    }
    Ok(scopes)
}

fn parse_paths(variable: impl Into<String>, value: &str) -> Result<Vec<String>, SettingsError> {
    let paths: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.trim_end_matches('/').to_owned())
        .collect();
    if paths.is_empty()
        || paths
            .iter()
            .any(|p| !p.starts_with('/') || p.contains("..") || p.contains("//"))
    {
        return Err(problem(
            variable.into(),
            "must be comma-separated path prefixes starting with / (not / alone)",
        ));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<Downstreams, SettingsError> {
        Downstreams::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    fn two() -> Vec<(&'static str, &'static str)> {
        vec![
            ("OBOVAULT_DOWNSTREAMS", "graph, crm-api"),
            (
                "OBOVAULT_DOWNSTREAM_GRAPH_BASE_URL",
                "https://graph.microsoft.com/v1.0/",
            ),
            (
                "OBOVAULT_DOWNSTREAM_GRAPH_SCOPES",
                "https://graph.microsoft.com/.default",
            ),
            ("OBOVAULT_DOWNSTREAM_GRAPH_ALLOWED_PATHS", "/me"),
            (
                "OBOVAULT_DOWNSTREAM_CRM_API_BASE_URL",
                "https://crm.example",
            ),
            (
                "OBOVAULT_DOWNSTREAM_CRM_API_SCOPES",
                "api://crm/Accounts.Read api://crm/Accounts.Write",
            ),
            (
                "OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS",
                "/accounts,/contacts",
            ),
        ]
    }

    #[test]
    fn without_the_list_the_unnamed_settings_are_the_default_downstream() {
        let downstreams = read(&[]).unwrap();
        assert_eq!(downstreams.all().len(), 1);
        let first = downstreams.first();
        assert_eq!(first.name, "default");
        assert_eq!(first.base_url.as_str(), "https://graph.microsoft.com/v1.0");
        assert_eq!(first.scopes, ["https://graph.microsoft.com/.default"]);
        assert_eq!(first.allowed_paths, ["/me"]);
        assert_eq!(first.timeout, Duration::from_secs(30));
    }

    #[test]
    fn named_downstreams_keep_their_order_and_settings() {
        let downstreams = read(&two()).unwrap();
        let names: Vec<&str> = downstreams.all().iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["graph", "crm-api"]);
        let crm = &downstreams.all()[1];
        assert_eq!(crm.base_url.as_str(), "https://crm.example/");
        assert_eq!(crm.scopes.len(), 2);
        assert_eq!(crm.allowed_paths, ["/accounts", "/contacts"]);
    }

    /// `two()` without the setting `name`.
    fn without(name: &str) -> Vec<(&'static str, &'static str)> {
        let mut pairs = two();
        pairs.retain(|(n, _)| *n != name);
        pairs
    }

    /// `two()` with `extra` set, in place of its own value of that setting if it has one.
    fn with(extra: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
        let mut pairs = without(extra.0);
        pairs.push(extra);
        pairs
    }

    /// Every settings set of `cases` is refused with an error naming its variable.
    fn assert_refused(cases: &[(Vec<(&str, &str)>, &str)]) {
        for (pairs, variable) in cases {
            match read(pairs) {
                Ok(_) => panic!("{pairs:?} must be refused"),
                Err(error) => assert_eq!(error.variable, *variable, "{pairs:?}"),
            }
        }
    }

    #[test]
    fn a_missing_setting_names_its_variable() {
        assert_refused(&[
            (
                without("OBOVAULT_DOWNSTREAM_CRM_API_SCOPES"),
                "OBOVAULT_DOWNSTREAM_CRM_API_SCOPES",
            ),
            (
                without("OBOVAULT_DOWNSTREAM_GRAPH_BASE_URL"),
                "OBOVAULT_DOWNSTREAM_GRAPH_BASE_URL",
            ),
            (
                without("OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS"),
                "OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS",
            ),
            // The list names a downstream whose settings are left over from another.
            (
                with(("OBOVAULT_DOWNSTREAMS", "graph")),
                "OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS",
            ),
        ]);
        // A per-name setting without the list is refused too.
        let error = read(&[("OBOVAULT_DOWNSTREAM_GRAPH_SCOPES", "https://g/.default")])
            .expect_err("refused");
        assert_eq!(error.variable, "OBOVAULT_DOWNSTREAM_GRAPH_SCOPES");
    }

    #[test]
    fn unnamed_settings_beside_the_list_are_refused() {
        assert_refused(&[
            (
                with(("OBOVAULT_DOWNSTREAM_BASE_URL", "https://x.example")),
                "OBOVAULT_DOWNSTREAM_BASE_URL",
            ),
            (
                with(("OBOVAULT_DOWNSTREAM_ALLOWED_PATHS", "/me")),
                "OBOVAULT_DOWNSTREAM_ALLOWED_PATHS",
            ),
        ]);
    }

    #[test]
    fn a_malformed_list_is_refused() {
        assert_refused(&[
            (with(("OBOVAULT_DOWNSTREAMS", "graph,graph")), LIST),
            (with(("OBOVAULT_DOWNSTREAMS", "Graph")), LIST),
            (with(("OBOVAULT_DOWNSTREAMS", "crm_api")), LIST),
            (with(("OBOVAULT_DOWNSTREAMS", " , ")), LIST),
        ]);
    }

    #[test]
    fn a_wrong_value_names_its_variable() {
        assert_refused(&[
            (
                with((
                    "OBOVAULT_DOWNSTREAM_SHAREPOINT_SCOPES",
                    "https://sp/.default",
                )),
                "OBOVAULT_DOWNSTREAM_SHAREPOINT_SCOPES",
            ),
            (
                with((
                    "OBOVAULT_DOWNSTREAM_CRM_API_SCOPES",
                    "api://crm/.default https://graph.microsoft.com/User.Read",
                )),
                "OBOVAULT_DOWNSTREAM_CRM_API_SCOPES",
            ),
            (
                with(("OBOVAULT_DOWNSTREAM_GRAPH_BASE_URL", "http://graph")),
                "OBOVAULT_DOWNSTREAM_GRAPH_BASE_URL",
            ),
            (
                with(("OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS", "accounts")),
                "OBOVAULT_DOWNSTREAM_CRM_API_ALLOWED_PATHS",
            ),
        ]);
    }

    #[test]
    fn names_are_short_lower_case_words() {
        for good in ["graph", "crm-api", "a", "x1-2", &"a".repeat(32)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Graph", "crm_api", "a b", "é", &"a".repeat(33)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
