//! The steps every flow shares: opening a stored token, sealing a new one, redeeming a grant
//! at Entra, and saving the result by compare-and-set with bounded retries.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use chrono::Utc;

use super::FlowError;
use crate::app::App;
use crate::crypto::{self, KeyLabel};
use crate::domain::{RefreshToken, UserKey};
use crate::idp::TokenSet;
use crate::keys::VersionedKey;
use crate::store::{GrantSave, SealedGrant, StoreError, TokenRecord};

/// Opens the refresh token stored on `row`.
pub(crate) async fn open_stored(app: &App, row: &TokenRecord) -> Result<RefreshToken, FlowError> {
    let key = app.keys.version(&row.key_name, &row.key_version).await?;
    let label = KeyLabel {
        name: &row.key_name,
        version: &row.key_version,
    };
    Ok(crypto::open(
        &row.sealed_refresh_token,
        &row.key,
        label,
        &key.key,
    )?)
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

/// The latest key of the user's tenant.
pub(crate) async fn latest_key(app: &App, owner: &UserKey) -> Result<VersionedKey, FlowError> {
    Ok(app
        .keys
        .latest(&app.key_settings.key_name(&owner.tenant_id))
        .await?)
}

/// Redeems `token` at Entra. The result carries the refresh token to store next: the new one,
/// or the one just used when Entra sent none (keeping it is what MSAL does).
pub(crate) async fn redeem(
    app: &App,
    owner: &UserKey,
    token: RefreshToken,
) -> Result<(TokenSet, RefreshToken), FlowError> {
    let mut set = app
        .entra
        .redeem_refresh_token(&owner.tenant_id, &token, &app.downstream_settings.scopes)
        .await?;
    let next = set.refresh_token.take().unwrap_or(token);
    Ok((set, next))
}

/// Saves a refreshed grant by compare-and-set, retrying while the database is unavailable.
/// `Ok(false)` means the row changed meanwhile (a new setup or a delete) and was left alone.
pub(crate) async fn save_refreshed(
    app: &App,
    row: &TokenRecord,
    grant: &SealedGrant,
    owner: &str,
) -> Result<bool, FlowError> {
    let attempt = || async {
        app.store
            .save_refreshed(&row.key, row.revision, grant, Utc::now(), owner)
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
    app: &App,
    saves: &[GrantSave<'_>],
    owner: &str,
) -> Result<Vec<bool>, FlowError> {
    let attempt = || async { app.store.save_grants(saves, owner).await };
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
