//! The steps every flow shares: opening a stored token, choosing the key version to seal
//! under, sealing, redeeming a grant at Entra, and saving the result by compare-and-set with
//! bounded retries.

use std::cmp::Ordering;
use std::time::Duration;

use super::{Deps, FlowError};
use crate::crypto::{self, KeyLabel};
use crate::domain::{RefreshToken, UserKey};
use crate::idp::TokenSet;
use crate::keys::VersionedKey;
use crate::store::{GrantSave, SealedGrant, StoreError, TokenRecord};
use backon::{ExponentialBuilder, Retryable as _};

/// Opens the refresh token stored on `row`; also returns the key version that opened it. A
/// version Key Vault refuses is [`FlowError::KeyVersionUnavailable`]: the operator's doing,
/// not the row's.
pub(crate) async fn open_stored(
    deps: &Deps,
    row: &TokenRecord,
) -> Result<(RefreshToken, VersionedKey), FlowError> {
    let key = deps
        .keys
        .version(&row.key_name, &row.key_version)
        .await
        .map_err(|cause| match cause {
            cause if cause.is_refusal() => FlowError::KeyVersionUnavailable {
                key_name: row.key_name.clone(),
                key_version: row.key_version.clone(),
                cause,
            },
            cause => FlowError::Keys(cause),
        })?;
    let label = KeyLabel {
        name: &row.key_name,
        version: &row.key_version,
    };
    let token = crypto::open(&row.sealed_refresh_token, &row.key, label, &key.key)?;
    Ok((token, key))
}

/// The newer of the run's fresh `latest` and the version a row is sealed under now
/// (`current`); on a tie or when they cannot be compared, `latest`, which Key Vault gave
/// within this run. A row is never moved to an older version.
pub(crate) fn newest<'k>(latest: &'k VersionedKey, current: &'k VersionedKey) -> &'k VersionedKey {
    match latest.compare_age(current) {
        Some(Ordering::Less) => current,
        _ => latest,
    }
}

/// The key to seal a row's new token under when "latest" may be minutes old (do-work): the
/// tenant's latest key, unless the version the row is sealed under now (`current`) is newer.
///
/// Every instance caches "latest" for five minutes, so after a rotation and a re-seal run by
/// another instance this one may still believe the old version is the latest; sealing under it
/// would move the row back onto a version the operator is told is unused. Key Vault's creation
/// times decide, at no extra call; only two versions created within the same second (or
/// without times) cost one fresh "latest". If "latest" cannot be had, `current` seals: the new
/// refresh token must be saved, and the timer moves the row later.
pub(crate) async fn sealing_key(
    deps: &Deps,
    owner: &UserKey,
    current: &VersionedKey,
) -> Result<VersionedKey, FlowError> {
    let latest = match latest_key(deps, owner).await {
        Ok(latest) => latest,
        Err(error) => {
            tracing::warn!(error = %error, "latest key unavailable; sealing under the row's key version");
            return Ok(current.clone());
        }
    };
    if latest.name != current.name {
        // The configured key name changed: the row moves to the new key.
        return Ok(latest);
    }
    match latest.compare_age(current) {
        Some(Ordering::Greater | Ordering::Equal) => Ok(latest),
        Some(Ordering::Less) => {
            tracing::info!(
                key.version = %current.version,
                cached_latest = %latest.version,
                "the cached latest key version is older than the row's; keeping the row's"
            );
            deps.keys.forget_latest(&latest.name).await;
            Ok(current.clone())
        }
        None => match deps.keys.fresh_latest(&latest.name).await {
            Ok(fresh) => Ok(newest(&fresh, current).clone()),
            Err(error) => {
                tracing::warn!(error = %error, "latest key unavailable; sealing under the row's key version");
                Ok(current.clone())
            }
        },
    }
}

/// Seals `token` for `owner` under `key`.
pub(crate) fn seal_with(
    key: &VersionedKey,
    owner: &UserKey,
    token: &RefreshToken,
) -> Result<SealedGrant, FlowError> {
    let label = KeyLabel {
        name: &key.name,
        version: &key.version,
    };
    Ok(SealedGrant {
        sealed_refresh_token: crypto::seal(token, owner, label, &key.key)?,
        key_name: key.name.clone(),
        key_version: key.version.clone(),
    })
}

/// The key setup seals a new grant under: the latest, or the version the user's existing row
/// is sealed under when that one is newer (a reconnect on an instance with a stale "latest"
/// must not move the row backwards either). A version Key Vault no longer gives is ignored.
pub(crate) async fn key_for_new_grant(
    deps: &Deps,
    owner: &UserKey,
) -> Result<VersionedKey, FlowError> {
    let latest = latest_key(deps, owner).await?;
    let Some(row) = deps.store.find(owner).await? else {
        return Ok(latest);
    };
    if row.key_name != latest.name || row.key_version == latest.version {
        return Ok(latest);
    }
    match deps.keys.version(&row.key_name, &row.key_version).await {
        Ok(current) => sealing_key(deps, owner, &current).await,
        Err(refused) if refused.is_refusal() => Ok(latest),
        Err(error) => Err(error.into()),
    }
}

/// The latest key of the user's tenant.
pub(crate) async fn latest_key(deps: &Deps, owner: &UserKey) -> Result<VersionedKey, FlowError> {
    Ok(deps.keys.latest(&deps.key_name(&owner.tenant_id)).await?)
}

/// Redeems `token` at Entra. The result carries the refresh token to store next: the new one,
/// or the one just used when Entra sent none (keeping it is what MSAL does).
/// The first downstream's scopes are asked for (the timer's keep-alive).
pub(crate) async fn redeem(
    deps: &Deps,
    owner: &UserKey,
    token: RefreshToken,
) -> Result<(TokenSet, RefreshToken), FlowError> {
    let scopes = &deps.downstreams.first().settings.scopes;
    redeem_for(deps, owner, token, scopes, None).await
}

/// Like [`redeem`], for a downstream's `scopes`, with a claims challenge's `claims` (JSON).
pub(crate) async fn redeem_for(
    deps: &Deps,
    owner: &UserKey,
    token: RefreshToken,
    scopes: &[String],
    claims: Option<&str>,
) -> Result<(TokenSet, RefreshToken), FlowError> {
    let mut set = deps
        .entra
        .redeem(&owner.tenant_id, &token, scopes, claims)
        .await?;
    let next = set.refresh_token.take().unwrap_or(token);
    Ok((set, next))
}

/// Saves a refreshed grant by compare-and-set, retrying while the database is unavailable.
/// `Ok(false)` means the row changed meanwhile (a new setup or a delete) and was left alone.
pub(crate) async fn save_refreshed(
    deps: &Deps,
    row: &TokenRecord,
    grant: &SealedGrant,
    owner: &str,
) -> Result<bool, FlowError> {
    let now = deps.clock.now();
    let attempt = || async {
        deps.store
            .save_refreshed(&row.key, row.revision, grant, now, owner)
            .await
    };
    Ok(attempt
        .retry(save_backoff())
        .when(|error| matches!(error, StoreError::Unavailable(_)))
        .await?)
}

/// Saves the timer's grants in one transaction, retrying the whole batch while the database
/// is unavailable. The answer says, in order, which rows were saved (`false`: the row changed
/// meanwhile and was left alone).
pub(crate) async fn save_batch(
    deps: &Deps,
    saves: &[GrantSave<'_>],
    owner: &str,
) -> Result<Vec<bool>, FlowError> {
    let attempt = || async { deps.store.save_grants(saves, owner).await };
    Ok(attempt
        .retry(save_backoff())
        .when(|error| matches!(error, StoreError::Unavailable(_)))
        .await?)
}

fn save_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_max_times(4)
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::DataKey;

    fn key(version: &str, created: i64) -> VersionedKey {
        VersionedKey {
            name: "k".into(),
            version: version.into(),
            created: chrono::DateTime::from_timestamp(created, 0),
            key: Arc::new(DataKey::generate()),
        }
    }

    #[test]
    fn the_timer_never_seals_under_a_version_older_than_the_rows() {
        let (old, new) = (key("a", 100), key("b", 200));
        // The run's latest is older than the row's version (rotated during the run).
        assert_eq!(newest(&old, &new).version, "b");
        assert_eq!(newest(&new, &old).version, "b");
        // Same second: the run's fresh latest.
        let twin = key("c", 200);
        assert_eq!(newest(&twin, &new).version, "c");
    }
}
