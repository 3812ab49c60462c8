//! Row shapes and decisions shared by both adapters.
//!
//! The backends differ only in how a timestamp is stored (`timestamptz` in Postgres,
//! fixed-width UTC text in SQLite), so the raw rows are generic over the dialect, whose
//! [`Dialect::unstamp`] reads their times.

use super::dialect::Dialect;
use super::{AccessRecord, Claimed, CorruptRow, LeaseAttempt, StoreError, TokenRecord};
use crate::domain::{TenantId, TokenStatus, UserId, UserKey};

/// A `user_tokens` row as the driver decodes it.
#[derive(sqlx::FromRow)]
pub(crate) struct RawRecord<D: Dialect> {
    tenant_id: String,
    user_id: String,
    sealed_refresh_token: Vec<u8>,
    key_name: String,
    key_version: String,
    status: String,
    status_reason: Option<String>,
    scopes: String,
    created_at: D::Stamp,
    refreshed_at: D::Stamp,
    revision: i64,
    lease_owner: Option<String>,
    lease_until: Option<D::Stamp>,
    failure_count: i32,
    next_attempt_at: Option<D::Stamp>,
    last_error: Option<String>,
}

impl<D: Dialect> RawRecord<D> {
    /// Like [`Self::into_record`], but a row that does not parse becomes a [`CorruptRow`]
    /// naming it by its raw ids.
    pub(super) fn into_claimed(self) -> Result<TokenRecord, CorruptRow> {
        let (tenant_id, user_id) = (self.tenant_id.clone(), self.user_id.clone());
        let (revision, failure_count) = (self.revision, self.failure_count);
        self.into_record().map_err(|error| CorruptRow {
            tenant_id,
            user_id,
            revision,
            failure_count,
            reason: match error {
                StoreError::Other(error) => format!("{error:#}"),
                other => other.to_string(),
            },
        })
    }

    /// Checks the ids and reads the timestamps.
    pub(super) fn into_record(self) -> Result<TokenRecord, StoreError> {
        Ok(TokenRecord {
            key: user_key(&self.tenant_id, &self.user_id)?,
            sealed_refresh_token: self.sealed_refresh_token,
            key_name: self.key_name,
            key_version: self.key_version,
            status: TokenStatus::from_column(&self.status),
            status_reason: self.status_reason,
            scopes: self.scopes,
            created_at: D::unstamp(self.created_at)?,
            refreshed_at: D::unstamp(self.refreshed_at)?,
            revision: self.revision,
            lease_owner: self.lease_owner,
            lease_until: self.lease_until.map(D::unstamp).transpose()?,
            failure_count: self.failure_count,
            next_attempt_at: self.next_attempt_at.map(D::unstamp).transpose()?,
            last_error: self.last_error,
        })
    }
}

/// A `user_token_accesses` row as the driver decodes it.
#[derive(sqlx::FromRow)]
pub(crate) struct RawAccess<D: Dialect> {
    tenant_id: String,
    user_id: String,
    at: D::Stamp,
    caller_app_id: String,
    method: String,
    path: String,
    downstream_status: Option<i32>,
    refreshed: bool,
    caller_tenant_id: Option<String>,
    downstream: Option<String>,
}

impl<D: Dialect> RawAccess<D> {
    /// Checks the ids and reads the timestamp.
    pub(super) fn into_access(self) -> Result<AccessRecord, StoreError> {
        Ok(AccessRecord {
            key: user_key(&self.tenant_id, &self.user_id)?,
            at: D::unstamp(self.at)?,
            caller_app_id: self.caller_app_id,
            downstream: self.downstream,
            method: self.method,
            path: self.path,
            downstream_status: self.downstream_status,
            refreshed: self.refreshed,
            caller_tenant_id: self
                .caller_tenant_id
                .as_deref()
                .map(TenantId::parse)
                .transpose()
                .map_err(|error| {
                    StoreError::Other(anyhow::Error::new(error).context("corrupt caller tenant id"))
                })?,
        })
    }
}

/// Ids are only ever written from parsed values, so a bad one means a corrupted row.
fn user_key(tenant_id: &str, user_id: &str) -> Result<UserKey, StoreError> {
    let corrupt = |error| StoreError::Other(anyhow::Error::new(error).context("corrupt row id"));
    Ok(UserKey {
        tenant_id: TenantId::parse(tenant_id).map_err(corrupt)?,
        user_id: UserId::parse(user_id).map_err(corrupt)?,
    })
}

/// Explains why the lease `UPDATE` matched no row, from the row read right after it.
/// `None` means the lease looks free now (it was released in between): try again. Whether
/// another owner's lease is still running was the database's call in the `UPDATE`; it is not
/// judged again here with this instance's clock.
pub(super) fn refused_lease(row: Option<TokenRecord>, owner: &str) -> Option<LeaseAttempt> {
    let Some(row) = row else {
        return Some(LeaseAttempt::Missing);
    };
    if row.status != TokenStatus::Active {
        return Some(LeaseAttempt::NotActive(row));
    }
    match (&row.lease_owner, row.lease_until) {
        (Some(holder), Some(until)) if holder != owner => Some(LeaseAttempt::Held(until)),
        _ => None,
    }
}

/// Splits a claimed batch into readable rows (oldest first) and corrupt ones.
pub(super) fn claimed<D: Dialect>(raws: Vec<RawRecord<D>>) -> Claimed {
    let mut batch = Claimed::default();
    for raw in raws {
        match raw.into_claimed() {
            Ok(row) => batch.rows.push(row),
            Err(corrupt) => batch.corrupt.push(corrupt),
        }
    }
    // RETURNING has no order; callers get the oldest first.
    batch.rows.sort_by_key(|row| row.refreshed_at);
    batch
}

/// The distinct users among `records`, in first-seen order, for the per-user history trim.
pub(super) fn distinct_users(records: &[AccessRecord]) -> Vec<&UserKey> {
    let mut users: Vec<&UserKey> = Vec::new();
    for record in records {
        if !users.contains(&&record.key) {
            users.push(&record.key);
        }
    }
    users
}

impl From<(String, String, i64)> for super::KeyVersionCount {
    fn from((key_name, key_version, rows): (String, String, i64)) -> Self {
        Self {
            key_name,
            key_version,
            rows,
        }
    }
}

/// The `SUMMARY` row of the operator's counts.
#[derive(sqlx::FromRow)]
pub(crate) struct Summary<D: Dialect> {
    pub(super) oldest: Option<D::Stamp>,
    pub(super) leased: i64,
    pub(super) backing_off: i64,
}
