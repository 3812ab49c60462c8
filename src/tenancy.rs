//! Workload tenancy (SPEC §3): which workloads may act for which users.
//!
//! An admin of any tenant that uses a multi-tenant deployment can grant `OboVault.Act` to an
//! app of their own tenant, so the role alone must never let one tenant act for another
//! tenant's users. A workload's tenant (the `tid` of its app-only token) must be listed in
//! `OBOVAULT_WORKLOAD_TENANTS`; a workload of the home tenant (the operator's own) may act for
//! users of every allowed tenant, a workload of another listed tenant only for users of its own
//! tenant. `*` is refused at start: a wildcard here would reopen exactly that hole.

use crate::domain::TenantId;

/// `OBOVAULT_WORKLOAD_TENANTS` with the home tenant it is judged against.
#[derive(Clone, Debug)]
pub struct WorkloadTenants {
    home: TenantId,
    listed: Vec<TenantId>,
}

/// Why a workload may not act; each maps to `403 tenant_not_allowed`.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
pub enum TenancyRefusal {
    /// The workload's tenant is not in `OBOVAULT_WORKLOAD_TENANTS`.
    #[error("workloads of this tenant may not call do-work")]
    WorkloadTenantNotListed,
    /// A workload of a listed tenant other than the home tenant named a user of another tenant.
    #[error("a workload of another tenant may act only for users of its own tenant")]
    OtherTenantsUser,
}

impl WorkloadTenants {
    /// The listed tenants, judged against the app's `home` tenant. An empty list means the
    /// default: the home tenant only.
    pub fn new(home: TenantId, listed: Vec<TenantId>) -> Self {
        let listed = if listed.is_empty() {
            vec![home.clone()]
        } else {
            listed
        };
        Self { home, listed }
    }

    /// The tenants whose workloads may call do-work.
    pub fn listed(&self) -> &[TenantId] {
        &self.listed
    }

    /// Whether workloads of `tenant` may call do-work at all (checked with the token, before
    /// the body is read).
    pub fn check_workload(&self, workload: &TenantId) -> Result<(), TenancyRefusal> {
        if self.listed.contains(workload) {
            Ok(())
        } else {
            Err(TenancyRefusal::WorkloadTenantNotListed)
        }
    }

    /// Whether a workload of tenant `workload` may act for a user of tenant `user` (checked
    /// before any row is read). Whether `user` is an allowed tenant is checked separately.
    pub fn check(&self, workload: &TenantId, user: &TenantId) -> Result<(), TenancyRefusal> {
        self.check_workload(workload)?;
        if *workload == self.home || workload == user {
            Ok(())
        } else {
            Err(TenancyRefusal::OtherTenantsUser)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u8) -> TenantId {
        TenantId::parse(&format!("{n:08}-0000-4000-8000-000000000000")).unwrap()
    }

    #[test]
    fn the_default_is_the_home_tenant_acting_for_everyone() {
        let policy = WorkloadTenants::new(tenant(1), vec![]);
        assert_eq!(policy.listed(), [tenant(1)]);
        assert_eq!(policy.check(&tenant(1), &tenant(1)), Ok(()));
        assert_eq!(policy.check(&tenant(1), &tenant(2)), Ok(()));
        for user in [tenant(1), tenant(2)] {
            assert_eq!(
                policy.check(&tenant(2), &user),
                Err(TenancyRefusal::WorkloadTenantNotListed)
            );
        }
    }

    #[test]
    fn a_listed_foreign_tenant_acts_only_for_its_own_users() {
        let policy = WorkloadTenants::new(tenant(1), vec![tenant(1), tenant(2)]);
        assert_eq!(policy.check(&tenant(2), &tenant(2)), Ok(()));
        assert_eq!(
            policy.check(&tenant(2), &tenant(1)),
            Err(TenancyRefusal::OtherTenantsUser)
        );
        assert_eq!(
            policy.check(&tenant(2), &tenant(3)),
            Err(TenancyRefusal::OtherTenantsUser)
        );
        assert_eq!(policy.check(&tenant(1), &tenant(3)), Ok(()));
        assert_eq!(
            policy.check(&tenant(3), &tenant(3)),
            Err(TenancyRefusal::WorkloadTenantNotListed)
        );
    }

    #[test]
    fn a_list_without_the_home_tenant_shuts_the_home_tenant_out() {
        let policy = WorkloadTenants::new(tenant(1), vec![tenant(2)]);
        assert_eq!(
            policy.check(&tenant(1), &tenant(1)),
            Err(TenancyRefusal::WorkloadTenantNotListed)
        );
        assert_eq!(policy.check(&tenant(2), &tenant(2)), Ok(()));
        assert_eq!(
            policy.check(&tenant(2), &tenant(1)),
            Err(TenancyRefusal::OtherTenantsUser)
        );
    }
}
