//! What the Entra emulator counts for tests: grants by kind, failures, the token endpoint's
//! time, and metadata (OpenID configuration, JWKS) requests per tenant path segment.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{EntraEmulator, EntraState};

/// Counters of what the Entra emulator answered since start or the last
/// [`EntraEmulator::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntraStats {
    /// Successful on-behalf-of grants.
    pub obo_grants: u64,
    /// Successful refresh-token grants.
    pub refresh_grants: u64,
    /// Token-endpoint calls answered with an error (including injected status faults).
    pub failed_grants: u64,
    /// Successful client-credentials grants.
    pub client_credentials_grants: u64,
    /// OpenID configuration documents served (v1 and v2).
    pub discovery_requests: u64,
    /// JWKS documents served (v1 and v2 paths).
    pub jwks_requests: u64,
    /// Time the token endpoint took to answer, summed over its calls, in microseconds: the
    /// configured latency (the signing is done within it), plus whatever the work or a wait
    /// for a thread added past it. Divided by the number of grants it is the latency Entra
    /// actually served.
    pub token_endpoint_micros: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) obo_grants: AtomicU64,
    pub(super) refresh_grants: AtomicU64,
    pub(super) failed_grants: AtomicU64,
    pub(super) client_credentials_grants: AtomicU64,
    pub(super) discovery_requests: AtomicU64,
    pub(super) jwks_requests: AtomicU64,
    pub(super) token_endpoint_micros: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> EntraStats {
        EntraStats {
            obo_grants: self.obo_grants.load(Ordering::Relaxed),
            refresh_grants: self.refresh_grants.load(Ordering::Relaxed),
            failed_grants: self.failed_grants.load(Ordering::Relaxed),
            client_credentials_grants: self.client_credentials_grants.load(Ordering::Relaxed),
            discovery_requests: self.discovery_requests.load(Ordering::Relaxed),
            jwks_requests: self.jwks_requests.load(Ordering::Relaxed),
            token_endpoint_micros: self.token_endpoint_micros.load(Ordering::Relaxed),
        }
    }

    pub(super) fn reset(&self) {
        for counter in [
            &self.obo_grants,
            &self.refresh_grants,
            &self.failed_grants,
            &self.client_credentials_grants,
            &self.discovery_requests,
            &self.jwks_requests,
            &self.token_endpoint_micros,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Metadata requests that arrived for one tenant path segment (a tenant id, `common`, or
/// whatever a caller put there), served or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetadataRequests {
    /// OpenID configuration requests (v1 and v2).
    pub discovery: u64,
    /// JWKS requests (v1 and v2 paths).
    pub jwks: u64,
}

/// Which metadata document a request asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Document {
    Discovery,
    Jwks,
}

impl EntraState {
    /// Counts a metadata request for the tenant path segment as it arrived.
    pub(super) fn count_metadata_request(&self, tenant: &str, document: Document) {
        let mut requests = self.metadata_requests.lock();
        let entry = requests.entry(tenant.to_owned()).or_default();
        match document {
            Document::Discovery => entry.discovery += 1,
            Document::Jwks => entry.jwks += 1,
        }
    }
}

impl EntraEmulator {
    /// Counters since start or the last reset.
    pub fn stats(&self) -> EntraStats {
        self.state.counters.snapshot()
    }

    /// Sets every counter to zero, the per-tenant metadata counts and the
    /// [`Self::grant_log`] too.
    pub fn reset_stats(&self) {
        self.state.counters.reset();
        self.state.metadata_requests.lock().clear();
        self.state.grants.lock().log.clear();
    }

    /// Metadata requests (OpenID configuration, JWKS) that arrived for `tenant` (a tenant id or
    /// `common`, compared lower-cased) since start or the last reset, answered or not.
    pub fn metadata_requests(&self, tenant: &str) -> MetadataRequests {
        self.state
            .metadata_requests
            .lock()
            .get(&tenant.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    /// Every tenant path segment metadata was requested for, with its counts.
    pub fn metadata_requests_by_tenant(&self) -> BTreeMap<String, MetadataRequests> {
        self.state.metadata_requests.lock().clone()
    }
}
