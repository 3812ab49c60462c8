//! An in-memory [`TokenStore`] for the flows' unit tests: the compare-and-set, lease and due
//! rules of the SQL adapters (`store::sql`), on a map, with the test's clock as the database's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::fakes::FakeClock;
use crate::domain::{TokenStatus, UserKey};
use crate::ports::Clock as _;
use crate::store::{
    AccessRecord, Claimed, Connected, DueClaim, Failure, GrantSave, Lease, LeaseAttempt,
    SealedGrant, StatusReport, StoreError, TokenRecord, TokenStore,
};

type Id = (String, String);

/// Rows by (tenant id, user id).
pub(crate) struct MemoryStore {
    rows: Mutex<BTreeMap<Id, TokenRecord>>,
    accesses: Mutex<Vec<AccessRecord>>,
    clock: Arc<FakeClock>,
}

fn id(key: &UserKey) -> Id {
    (key.tenant_id.to_string(), key.user_id.to_string())
}

fn span(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap()
}

fn free_for(row: &TokenRecord, owner: &str, now: DateTime<Utc>) -> bool {
    row.lease_owner.as_deref() == Some(owner) || row.lease_until.is_none_or(|until| until < now)
}

fn release(row: &mut TokenRecord, owner: &str) {
    if row.lease_owner.as_deref() == Some(owner) {
        row.lease_owner = None;
        row.lease_until = None;
    }
}

impl MemoryStore {
    pub(crate) fn new(clock: Arc<FakeClock>) -> Self {
        Self {
            rows: Mutex::default(),
            accesses: Mutex::default(),
            clock,
        }
    }

    fn rows(&self) -> MutexGuard<'_, BTreeMap<Id, TokenRecord>> {
        self.rows.lock().unwrap()
    }

    /// The user's row as stored now.
    pub(crate) fn row(&self, key: &UserKey) -> TokenRecord {
        self.rows()[&id(key)].clone()
    }

    fn new_row(
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
    ) -> TokenRecord {
        TokenRecord {
            key: key.clone(),
            sealed_refresh_token: grant.sealed_refresh_token.clone(),
            key_name: grant.key_name.clone(),
            key_version: grant.key_version.clone(),
            status: TokenStatus::Active,
            status_reason: None,
            scopes: scopes.to_owned(),
            created_at: now,
            refreshed_at: now,
            revision: now.timestamp_micros(),
            lease_owner: None,
            lease_until: None,
            failure_count: 0,
            next_attempt_at: None,
            last_error: None,
        }
    }

    fn due(row: &TokenRecord, claim: &DueClaim, now: DateTime<Utc>) -> bool {
        let by_age = claim
            .refresh_after
            .is_some_and(|after| row.refreshed_at < now - span(after));
        row.key_name == claim.key_name
            && row.status == TokenStatus::Active
            && row.next_attempt_at.is_none_or(|at| at <= now)
            && row.lease_until.is_none_or(|until| until < now)
            && (by_age || row.key_version != claim.latest_version)
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn connect(
        &self,
        key: &UserKey,
        grant: &SealedGrant,
        scopes: &str,
        now: DateTime<Utc>,
    ) -> Result<Connected, StoreError> {
        let mut rows = self.rows();
        let fresh = Self::new_row(key, grant, scopes, now);
        let created = !rows.contains_key(&id(key));
        let row = rows.entry(id(key)).or_insert_with(|| fresh.clone());
        if !created {
            *row = TokenRecord {
                created_at: row.created_at,
                revision: row.revision + 1,
                ..fresh
            };
        }
        Ok(Connected {
            record: row.clone(),
            created,
        })
    }

    async fn find(&self, key: &UserKey) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.rows().get(&id(key)).cloned())
    }

    async fn delete(&self, key: &UserKey) -> Result<bool, StoreError> {
        Ok(self.rows().remove(&id(key)).is_some())
    }

    async fn acquire_lease(
        &self,
        key: &UserKey,
        lease: &Lease,
    ) -> Result<LeaseAttempt, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(&id(key)) else {
            return Ok(LeaseAttempt::Missing);
        };
        if row.status != TokenStatus::Active {
            return Ok(LeaseAttempt::NotActive(row.clone()));
        }
        if !free_for(row, &lease.owner, now) {
            return Ok(LeaseAttempt::Held(row.lease_until.unwrap_or(now)));
        }
        row.lease_owner = Some(lease.owner.clone());
        row.lease_until = Some(now + span(lease.duration));
        Ok(LeaseAttempt::Acquired(row.clone()))
    }

    async fn extend_lease(
        &self,
        key: &UserKey,
        expected_revision: i64,
        lease: &Lease,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(&id(key)) else {
            return Ok(false);
        };
        let ok = row.status == TokenStatus::Active
            && row.revision == expected_revision
            && free_for(row, &lease.owner, now);
        if ok {
            row.lease_owner = Some(lease.owner.clone());
            row.lease_until = Some(now + span(lease.duration));
        }
        Ok(ok)
    }

    async fn release_lease(&self, key: &UserKey, owner: &str) -> Result<(), StoreError> {
        if let Some(row) = self.rows().get_mut(&id(key)) {
            release(row, owner);
        }
        Ok(())
    }

    async fn save_grants(
        &self,
        saves: &[GrantSave<'_>],
        owner: &str,
    ) -> Result<Vec<bool>, StoreError> {
        let mut rows = self.rows();
        let saved = saves.iter().map(|save| {
            let Some(row) = rows.get_mut(&id(save.key)) else {
                return false;
            };
            if row.revision != save.expected_revision {
                return false;
            }
            row.sealed_refresh_token = save.grant.sealed_refresh_token.clone();
            row.key_name = save.grant.key_name.clone();
            row.key_version = save.grant.key_version.clone();
            row.revision += 1;
            if let Some(at) = save.refreshed_at {
                row.refreshed_at = at;
                row.failure_count = 0;
                row.next_attempt_at = None;
                row.last_error = None;
            }
            release(row, owner);
            true
        });
        Ok(saved.collect())
    }

    async fn mark_reauth_required(
        &self,
        key: &UserKey,
        expected_revision: i64,
        reason: &str,
        owner: &str,
    ) -> Result<bool, StoreError> {
        let mut rows = self.rows();
        let Some(row) = rows
            .get_mut(&id(key))
            .filter(|row| row.revision == expected_revision)
        else {
            return Ok(false);
        };
        row.status = TokenStatus::ReauthRequired;
        row.status_reason = Some(reason.to_owned());
        row.revision += 1;
        release(row, owner);
        Ok(true)
    }

    async fn record_failure(&self, failure: &Failure<'_>) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        let row_id = (
            failure.row.tenant_id.to_owned(),
            failure.row.user_id.to_owned(),
        );
        let Some(row) = rows.get_mut(&row_id) else {
            return Ok(false);
        };
        let owner_ok =
            row.lease_owner.is_none() || row.lease_owner.as_deref() == Some(failure.owner);
        if row.revision != failure.expected_revision || !owner_ok {
            return Ok(false);
        }
        row.failure_count += i32::from(failure.counts);
        row.last_error = Some(failure.error_code.to_owned());
        row.next_attempt_at = Some(now + span(failure.retry_in));
        row.lease_owner = None;
        row.lease_until = None;
        Ok(true)
    }

    async fn key_names(&self) -> Result<Vec<String>, StoreError> {
        let rows = self.rows();
        let mut names: Vec<String> = rows
            .values()
            .filter(|row| row.status == TokenStatus::Active)
            .map(|row| row.key_name.clone())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn claim_due(&self, claim: &DueClaim) -> Result<Claimed, StoreError> {
        let now = self.clock.now();
        let mut rows = self.rows();
        let mut due: Vec<&mut TokenRecord> = rows
            .values_mut()
            .filter(|row| Self::due(row, claim, now))
            .collect();
        due.sort_by_key(|row| row.refreshed_at);
        let limit = usize::try_from(claim.limit).unwrap();
        let claimed = due.into_iter().take(limit).map(|row| {
            row.lease_owner = Some(claim.lease.owner.clone());
            row.lease_until = Some(now + span(claim.lease.duration));
            row.clone()
        });
        Ok(Claimed {
            rows: claimed.collect(),
            corrupt: Vec::new(),
        })
    }

    async fn record_accesses(&self, records: &[AccessRecord], _: i64) -> Result<(), StoreError> {
        self.accesses.lock().unwrap().extend_from_slice(records);
        Ok(())
    }

    async fn recent_accesses(
        &self,
        key: &UserKey,
        limit: i64,
    ) -> Result<Vec<AccessRecord>, StoreError> {
        let accesses = self.accesses.lock().unwrap();
        let mine = accesses.iter().rev().filter(|record| record.key == *key);
        Ok(mine
            .take(usize::try_from(limit).unwrap())
            .cloned()
            .collect())
    }

    async fn status_report(&self) -> Result<StatusReport, StoreError> {
        Ok(StatusReport::default())
    }

    fn events(&self) -> Arc<dyn crate::events::EventStore> {
        unreachable!("the flows never touch the outbox")
    }
}
