//! How tests steer the emulated Entra and read what it did: revocation, interaction and
//! consent per user, single-use refresh tokens, tenant throttling, app roles, faults and
//! latency, and the log of grants and secrets it issued.

use std::time::Duration;

use super::{EntraEmulator, GrantRecord};
use crate::faults::Fault;

impl EntraEmulator {
    /// Revokes every refresh token the user holds now: redeeming one answers `invalid_grant`
    /// AADSTS50173. Tokens issued later (after a new OBO) are valid again.
    pub fn revoke_user(&self, tid: &str, oid: &str) {
        let mut grants = self.state.grants.lock();
        for record in grants.refresh_tokens.values_mut() {
            if record.tid == tid && record.oid == oid {
                record.revoked = true;
            }
        }
    }

    /// Makes OBO and refresh grants for the user answer `interaction_required` (AADSTS50079,
    /// `suberror: basic_action`) carrying `claims`, until [`Self::clear_interaction`].
    pub fn require_interaction(&self, tid: &str, oid: &str, claims: &str) {
        self.state
            .grants
            .lock()
            .interaction
            .insert((tid.to_owned(), oid.to_owned()), claims.to_owned());
    }

    /// Lifts [`Self::require_interaction`] for the user.
    pub fn clear_interaction(&self, tid: &str, oid: &str) {
        self.state
            .grants
            .lock()
            .interaction
            .remove(&(tid.to_owned(), oid.to_owned()));
    }

    /// When on, a refresh token is invalid after its first successful redemption
    /// (`invalid_grant` AADSTS70008), so tests catch concurrent refreshes of one user. Real
    /// Entra keeps old refresh tokens valid; this is a test aid. A redemption answered without a
    /// new refresh token (see [`Self::omit_refresh_token_next`]) does not use the token up.
    pub fn set_strict_single_use(&self, on: bool) {
        self.state.grants.lock().strict_single_use = on;
    }

    /// Answers every token request for tenant `tid` with `429` (AADSTS90055
    /// `TenantThrottlingError`) and `Retry-After: {retry_after_secs}`, until
    /// [`Self::clear_tenant_throttling`]; other tenants are served as usual. Entra's request
    /// limits are per tenant (<https://learn.microsoft.com/en-us/entra/external-id/customers/reference-service-limits>
    /// lists them per tenant; AADSTS90055 is the tenant's throttling error), and a throttled
    /// token request answers 429 with `Retry-After`
    /// (<https://learn.microsoft.com/en-us/entra/msal/dotnet/advanced/client-and-server-throttling>).
    pub fn throttle_tenant(&self, tid: &str, retry_after_secs: u64) {
        self.state
            .grants
            .lock()
            .throttled_tenants
            .insert(tid.to_ascii_lowercase(), retry_after_secs);
    }

    /// Lifts [`Self::throttle_tenant`] for `tid`.
    pub fn clear_tenant_throttling(&self, tid: &str) {
        self.state
            .grants
            .lock()
            .throttled_tenants
            .remove(&tid.to_ascii_lowercase());
    }

    /// The next `n` successful refresh grants answer without a `refresh_token`.
    pub fn omit_refresh_token_next(&self, n: u32) {
        self.state.grants.lock().omit_refresh_token_next = n;
    }

    /// Sets the app roles the emulated app gets in its own client-credentials tokens
    /// (`app_id` is the requesting client id; default none).
    pub fn set_app_roles(&self, app_id: &str, roles: Vec<String>) {
        self.state
            .grants
            .lock()
            .app_roles
            .insert(app_id.to_owned(), roles);
    }

    /// Queues a fault for the next `fault.times` token-endpoint calls (all grants), after any
    /// faults already queued.
    pub fn inject(&self, fault: Fault) {
        self.state.faults.inject(fault);
    }

    /// Drops every queued token-endpoint fault.
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Answers every token-endpoint call this long after it arrived, the signing done within
    /// it (zero turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.state.faults.set_latency(latency);
    }

    /// Queues a fault for the next `fault.times` OpenID configuration and JWKS requests (an
    /// Entra metadata outage); [`FaultKind::InvalidClient`](crate::FaultKind) answers 500 here.
    pub fn inject_metadata_fault(&self, fault: Fault) {
        self.state.metadata_faults.inject(fault);
    }

    /// Drops every queued metadata fault.
    pub fn clear_metadata_faults(&self) {
        self.state.metadata_faults.clear();
    }

    /// Every OBO and refresh grant answered since start or the last [`Self::reset_stats`],
    /// with its scopes and `claims`.
    pub fn grant_log(&self) -> Vec<GrantRecord> {
        self.state.grants.lock().log.clone()
    }

    /// Withdraws the consent for `resource` of the user: OBO and refresh grants asking for it
    /// answer `invalid_grant` AADSTS65001 (`suberror: consent_required`) until
    /// [`Self::grant_consent`]. Every resource is consented by default.
    pub fn withhold_consent(&self, tid: &str, oid: &str, resource: &str) {
        self.state.grants.lock().no_consent.insert((
            tid.to_owned(),
            oid.to_owned(),
            resource.to_owned(),
        ));
    }

    /// Gives back the consent [`Self::withhold_consent`] took.
    pub fn grant_consent(&self, tid: &str, oid: &str, resource: &str) {
        self.state.grants.lock().no_consent.remove(&(
            tid.to_owned(),
            oid.to_owned(),
            resource.to_owned(),
        ));
    }

    /// Issues valid refresh tokens for many users of a tenant at once, as if each had done an
    /// OBO for `{downstream resource}/.default offline_access openid profile`. Returned in the
    /// order of `users` (object ids).
    pub fn issue_refresh_tokens(&self, tid: &str, users: &[String]) -> Vec<String> {
        let scopes = format!(
            "{}/.default offline_access openid profile",
            self.state.downstream_resource
        );
        let tokens: Vec<String> = {
            let mut grants = self.state.grants.lock();
            users
                .iter()
                .map(|oid| grants.issue_refresh_token(tid, oid, &scopes))
                .collect()
        };
        self.state.issued.lock().extend(tokens.iter().cloned());
        tokens
    }

    /// The newest refresh token issued for the user, if any (revoked or not).
    pub fn latest_refresh_token(&self, tid: &str, oid: &str) -> Option<String> {
        self.state
            .grants
            .lock()
            .latest
            .get(&(tid.to_owned(), oid.to_owned()))
            .cloned()
    }

    /// Every secret this emulator issued: the client secret, each access, id and app token
    /// (minted or granted, including `sign_raw` output) and each refresh token.
    pub fn issued_secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.state.client_secret.clone()];
        secrets.extend(self.state.issued.lock().iter().cloned());
        secrets
    }
}
