//! The configured downstream APIs by name: which one a do-work call names, and which app roles
//! grant it.
//!
//! The role `OBOVAULT_WORKLOAD_ROLE` grants every downstream; `<OBOVAULT_WORKLOAD_ROLE>.<name>`
//! grants that one only. Both are ordinary app roles of the app registration, so an admin
//! assigns least privilege per workload in Entra and the token carries it (SPEC §3).

use std::sync::Arc;

use crate::config::{DownstreamSettings, Downstreams};
use crate::downstream::{Downstream, Work};

/// One downstream API: its settings and what do-work does with a token for it.
pub struct DownstreamApi {
    /// Position in `OBOVAULT_DOWNSTREAMS` (0: the first); keys the access-token cache.
    pub index: usize,
    /// Its settings (name, scopes, paths).
    pub settings: DownstreamSettings,
    /// The built-in proxy to it.
    pub work: Arc<dyn Work>,
}

impl DownstreamApi {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }
}

/// Every configured downstream, in order; never empty.
pub struct DownstreamApis {
    list: Vec<DownstreamApi>,
}

/// A do-work named a downstream that is not configured (400 `invalid_request`).
#[derive(Debug, thiserror::Error)]
#[error("downstream {0:?} is not configured")]
pub struct UnknownDownstream(pub String);

impl DownstreamApis {
    /// One [`Downstream`] per configured API, sharing `http`.
    pub fn new(http: &reqwest::Client, downstreams: &Downstreams) -> Self {
        Self::with_work(downstreams, |settings| {
            Arc::new(Downstream::new(http.clone(), settings.clone()))
        })
    }

    /// One API per configured downstream, each doing the [`Work`] `work` makes for it (the
    /// built-in proxy, or a fake in tests).
    pub fn with_work(
        downstreams: &Downstreams,
        work: impl Fn(&DownstreamSettings) -> Arc<dyn Work>,
    ) -> Self {
        let list = downstreams
            .all()
            .iter()
            .enumerate()
            .map(|(index, settings)| DownstreamApi {
                index,
                settings: settings.clone(),
                work: work(settings),
            })
            .collect();
        Self { list }
    }

    /// The first downstream: do-work's default, and the scopes of setup and the timer.
    pub fn first(&self) -> &DownstreamApi {
        &self.list[0]
    }

    /// The downstream at `index` (its [`DownstreamApi::index`]).
    pub fn get(&self, index: usize) -> Option<&DownstreamApi> {
        self.list.get(index)
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The downstream `name` names, or the first one.
    pub fn pick(&self, name: Option<&str>) -> Result<&DownstreamApi, UnknownDownstream> {
        match name {
            None => Ok(self.first()),
            Some(name) => self
                .list
                .iter()
                .find(|api| api.name() == name)
                .ok_or_else(|| UnknownDownstream(name.chars().take(40).collect())),
        }
    }
}

/// Whether a workload holding `roles` may act on `downstream`.
pub fn grants(roles: &[String], workload_role: &str, downstream: &str) -> bool {
    roles.iter().any(|role| {
        role == workload_role
            || role
                .strip_prefix(workload_role)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|name| name == downstream)
    })
}

/// Whether `roles` grant at least one of the configured downstreams.
pub fn grants_any(roles: &[String], workload_role: &str, apis: &DownstreamApis) -> bool {
    apis.list
        .iter()
        .any(|api| grants(roles, workload_role, api.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_role_grants_every_downstream_and_a_suffixed_one_only_its_own() {
        let plain = vec!["OboVault.Act".to_owned()];
        let crm = vec!["OboVault.Act.crm-api".to_owned()];
        assert!(grants(&plain, "OboVault.Act", "graph"));
        assert!(grants(&plain, "OboVault.Act", "crm-api"));
        assert!(grants(&crm, "OboVault.Act", "crm-api"));
        assert!(!grants(&crm, "OboVault.Act", "graph"));
        for other in [
            "OboVault.Actor",
            "OboVault.Act.",
            "OboVault.Act.crm-api.x",
            "OboVault.Act.CRM-API",
            "obovault.act",
            "X.OboVault.Act.crm-api",
        ] {
            assert!(
                !grants(&[other.to_owned()], "OboVault.Act", "crm-api"),
                "{other}"
            );
        }
        assert!(!grants(&[], "OboVault.Act", "graph"));
    }
}
