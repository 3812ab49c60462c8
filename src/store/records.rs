//! The values the store takes and returns: rows, grants, leases, claims, failures, access
//! records and the operator's counts.

use std::time::Duration;

use chrono::{DateTime, Utc};

#[cfg(doc)]
use super::TokenStore;
use crate::domain::{TenantId, TokenStatus, UserKey};

/// A stored row of `user_tokens`.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    /// (`tenant_id`, `user_id`), the primary key.
    pub key: UserKey,
    /// The sealed refresh token (see `crypto`).
    pub sealed_refresh_token: Vec<u8>,
    /// Key Vault secret name of the key that sealed it.
    pub key_name: String,
    /// Key Vault secret version of the key that sealed it.
    pub key_version: String,
    /// Whether the grant still works.
    pub status: TokenStatus,
    /// Entra's error code when `status` is `reauth_required`.
    pub status_reason: Option<String>,
    /// Space-separated scopes granted to the downstream API.
    pub scopes: String,
    /// First connection of the user.
    pub created_at: DateTime<Utc>,
    /// Last time the grant was obtained or redeemed at Entra.
    pub refreshed_at: DateTime<Utc>,
    /// Incremented by every write of the token; the compare-and-set guard.
    pub revision: i64,
    /// The instance working on the row, while `lease_until` is in the future.
    pub lease_owner: Option<String>,
    /// End of the current lease.
    pub lease_until: Option<DateTime<Utc>>,
    /// Transient failures since the last success (timer back-off).
    pub failure_count: i32,
    /// The timer does not pick the row before this time.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Machine code of the last failure, for operators.
    pub last_error: Option<String>,
}

/// A freshly sealed refresh token and the key that sealed it.
#[derive(Clone, Debug)]
pub struct SealedGrant {
    /// The sealed bytes.
    pub sealed_refresh_token: Vec<u8>,
    /// Key Vault secret name.
    pub key_name: String,
    /// Key Vault secret version.
    pub key_version: String,
}

/// One compare-and-set save of a freshly sealed grant (see [`TokenStore::save_grants`]).
#[derive(Clone, Copy, Debug)]
pub struct GrantSave<'a> {
    /// Whose row.
    pub key: &'a UserKey,
    /// The revision the grant was read at; the save is refused if the row moved on.
    pub expected_revision: i64,
    /// The new sealed token.
    pub grant: &'a SealedGrant,
    /// `Some(now)` after a redeem (sets `refreshed_at`, clears failures); `None` for a
    /// re-seal under a newer key (keeps `refreshed_at` and the failure bookkeeping).
    pub refreshed_at: Option<DateTime<Utc>>,
}

/// The result of `connect`.
#[derive(Debug)]
pub struct Connected {
    /// The row as stored now.
    pub record: TokenRecord,
    /// `true` when the row did not exist before.
    pub created: bool,
}

/// The result of trying to take a row's lease.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// The lease is ours; the row as read while taking it.
    Acquired(TokenRecord),
    /// Another owner holds the lease until the given time.
    Held(DateTime<Utc>),
    /// There is no such row.
    Missing,
    /// The row exists but is not `active`.
    NotActive(TokenRecord),
}

/// Who asks for a lease and for how long.
#[derive(Clone, Debug)]
pub struct Lease {
    /// Unique per process (and per run for the timer).
    pub owner: String,
    /// The lease ends this long after the database stamps it, even if its owner dies.
    pub duration: Duration,
}

/// What the timer asks for when it claims a batch of due rows of one key.
#[derive(Clone, Debug)]
pub struct DueClaim {
    /// Only rows sealed under this key name.
    pub key_name: String,
    /// Rows on any other version are due for a re-seal.
    pub latest_version: String,
    /// Rows last refreshed longer ago than this (by the database's clock) are due for a
    /// refresh; `None`: only rows on another key version are due.
    pub refresh_after: Option<Duration>,
    /// The lease stamped on claimed rows.
    pub lease: Lease,
    /// At most this many rows.
    pub limit: i64,
}

/// A batch claimed by [`TokenStore::claim_due`].
#[derive(Debug, Default)]
pub struct Claimed {
    /// Claimed rows, oldest first.
    pub rows: Vec<TokenRecord>,
    /// Claimed rows that cannot be read (ids or timestamps that do not parse). They carry
    /// this claim's lease like the others; the caller backs them off so they do not come
    /// first in every later claim.
    pub corrupt: Vec<CorruptRow>,
}

/// A claimed row that does not parse, addressed by its raw ids.
#[derive(Clone, Debug)]
pub struct CorruptRow {
    /// The stored `tenant_id`, as is.
    pub tenant_id: String,
    /// The stored `user_id`, as is.
    pub user_id: String,
    /// The row's revision (the guard of the back-off write).
    pub revision: i64,
    /// The row's failures so far (the back-off's exponent).
    pub failure_count: i32,
    /// What does not parse.
    pub reason: String,
}

/// A row addressed by its stored ids, parsed or not.
#[derive(Clone, Copy, Debug)]
pub struct RowId<'a> {
    /// `tenant_id`.
    pub tenant_id: &'a str,
    /// `user_id`.
    pub user_id: &'a str,
}

impl<'a> From<&'a UserKey> for RowId<'a> {
    fn from(key: &'a UserKey) -> Self {
        Self {
            tenant_id: key.tenant_id.as_str(),
            user_id: key.user_id.as_str(),
        }
    }
}

impl<'a> From<&'a CorruptRow> for RowId<'a> {
    fn from(row: &'a CorruptRow) -> Self {
        Self {
            tenant_id: &row.tenant_id,
            user_id: &row.user_id,
        }
    }
}

/// A failed attempt on a row, for [`TokenStore::record_failure`].
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// Whose row.
    pub row: RowId<'a>,
    /// The revision the worker read; the write is refused if the row moved on.
    pub expected_revision: i64,
    /// The lease owner; the write is refused if someone else holds the lease.
    pub owner: &'a str,
    /// Machine code for `last_error`.
    pub error_code: &'a str,
    /// The timer does not pick the row again before this long from now (database clock).
    pub retry_in: Duration,
    /// `false` for a pause that is not the row's fault: `failure_count` stays.
    pub counts: bool,
}

/// One act on behalf of a user, kept so the user can see who acted for them.
#[derive(Clone, Debug)]
pub struct AccessRecord {
    /// Whose token was used.
    pub key: UserKey,
    /// When.
    pub at: DateTime<Utc>,
    /// The workload's app id (`azp`/`appid`).
    pub caller_app_id: String,
    /// The workload's tenant (`tid`); `None` on records kept before it was recorded.
    pub caller_tenant_id: Option<TenantId>,
    /// The downstream API's name; `None` on records kept before it was recorded.
    pub downstream: Option<String>,
    /// Downstream method.
    pub method: String,
    /// Downstream path (no query).
    pub path: String,
    /// Downstream status, if the call was made.
    pub downstream_status: Option<i32>,
    /// Whether this call redeemed the refresh token.
    pub refreshed: bool,
}

/// Counts for the operator `status` command.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StatusReport {
    /// Rows per status.
    pub by_status: Vec<(String, i64)>,
    /// Rows per (key name, key version), whatever their status.
    pub by_key_version: Vec<KeyVersionCount>,
    /// Oldest `refreshed_at` among active rows.
    pub oldest_refreshed_at: Option<DateTime<Utc>>,
    /// Rows whose lease is still running.
    pub leased: i64,
    /// Active rows in back-off after a failure.
    pub backing_off: i64,
}

/// Rows sealed under one key version.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyVersionCount {
    /// Key Vault secret name.
    pub key_name: String,
    /// Key Vault secret version.
    pub key_version: String,
    /// Number of rows.
    pub rows: i64,
}
