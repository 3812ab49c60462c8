//! do-work's cache miss: the user's lock (one redemption per user in the process, whatever
//! downstream), the row's lease (across instances), re-read, redeem for the downstream's
//! scopes, then the save in a task of its own so it completes even if the caller goes away.
//!
//! The lease is renewed in the background from the moment it is taken until the save is done,
//! so it outlives every step (Key Vault, Entra, Key Vault, the save's retries) however slow
//! each is; the lock is held as long, so the next redemption presents the rotated token.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tracing::Instrument as _;

use super::PendingSave;
use crate::access_tokens::CachedAccessToken;
use crate::domain::{RefreshToken, UserKey};
use crate::downstream::DownstreamError;
use crate::downstreams::DownstreamApi;
use crate::idp::TokenSet;
use crate::keys::VersionedKey;
use crate::store::{LeaseAttempt, TokenRecord};
use crate::usecase::dead_grant::DeadGrant;
use crate::usecase::leases::{HeldLease, KeepAlive};
use crate::usecase::{custody, Deps, FlowError};

/// How long a call waits for another instance's lease on the user's row.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// How often a call starts over when the grant it found dead was replaced meanwhile (a new
/// setup between its read and its reauth mark).
const REFRESH_ATTEMPTS: usize = 3;

/// A redeemed grant whose rotated refresh token is not saved yet.
struct Unsaved {
    /// The row as read under the lease.
    row: TokenRecord,
    /// Renews the lease until the save is done.
    keep_alive: KeepAlive,
    /// The key version that opened the row.
    current_key: VersionedKey,
    /// The refresh token to store.
    next: RefreshToken,
}

/// Redeems `owner`'s grant for the downstream at `downstream` (with a challenge's `claims`);
/// the access token for the cache, and the save it leaves running.
pub(super) async fn refresh(
    deps: Arc<Deps>,
    owner: UserKey,
    downstream: usize,
    claims: Option<Arc<str>>,
) -> Result<(CachedAccessToken, PendingSave), FlowError> {
    let Some(api) = deps.downstreams.get(downstream) else {
        return Err(FlowError::Downstream(DownstreamError::InvalidRequest(
            "the downstream is not configured".into(),
        )));
    };
    let user_lock = deps.access_tokens.lock_user(&owner).await;
    let (set, unsaved) = redeem_under_lease(&deps, &owner, api, claims.as_deref()).await?;
    let token = CachedAccessToken::new(set.access_token, set.expires_in, deps.clock.now());
    Ok((token, spawn_save(deps, owner, unsaved, user_lock)))
}

/// Takes the row's lease and redeems the grant it holds, starting over (a few times) when the
/// grant found dead was replaced meanwhile.
async fn redeem_under_lease(
    deps: &Arc<Deps>,
    owner: &UserKey,
    api: &DownstreamApi,
    claims: Option<&str>,
) -> Result<(TokenSet, Unsaved), FlowError> {
    for _ in 0..REFRESH_ATTEMPTS {
        if let Some(redeemed) = redeem_once(deps, owner, api, claims).await? {
            return Ok(redeemed);
        }
    }
    Err(FlowError::Busy)
}

/// One attempt: lease, open, redeem. `Ok(None)`: the grant Entra called dead was replaced
/// between the read and the mark; the caller starts over with the row as it is now.
async fn redeem_once(
    deps: &Arc<Deps>,
    owner: &UserKey,
    api: &DownstreamApi,
    claims: Option<&str>,
) -> Result<Option<(TokenSet, Unsaved)>, FlowError> {
    let requested_at = tokio::time::Instant::now();
    let row = acquire_lease(deps, owner).await?;
    let keep_alive = HeldLease::new(owner.clone(), row.revision, deps.lease(), requested_at)
        .keep_alive(deps.store.clone());
    let redeemed = async {
        let (stored, current_key) = custody::open_stored(deps, &row).await?;
        let scopes = &api.settings.scopes;
        let (set, next) = custody::redeem_for(deps, owner, stored, scopes, claims).await?;
        Ok::<_, FlowError>((set, current_key, next))
    }
    .await;
    match redeemed {
        Ok((set, current_key, next)) => Ok(Some((
            set,
            Unsaved {
                row,
                keep_alive,
                current_key,
                next,
            },
        ))),
        Err(error) => {
            drop(keep_alive);
            refused(deps, api, &row, error, claims).await.map(|()| None)
        }
    }
}

/// A failed open or redeem of `row`. A dead grant is marked (the mark releases the lease)
/// and answered; `Ok(())` when it was replaced meanwhile. Anything else gives the lease back.
async fn refused(
    deps: &Deps,
    api: &DownstreamApi,
    row: &TokenRecord,
    error: FlowError,
    claims: Option<&str>,
) -> Result<(), FlowError> {
    if let FlowError::Idp(idp) = &error {
        if idp.is_consent_required() {
            // Consent for this API is missing; the grant itself is fine for the others.
            tracing::warn!(downstream = %api.name(), "Entra has no consent for the downstream's resource");
            release(deps, &row.key).await;
            return Err(FlowError::ConsentRequired {
                downstream: api.name().to_owned(),
            });
        }
    }
    let Some(dead) = DeadGrant::of(&error) else {
        release(deps, &row.key).await;
        return Err(error);
    };
    if dead.mark(deps, row, &deps.policy.instance_id).await? {
        return Err(dead.into_error(claims));
    }
    Ok(())
}

/// Seals and saves the rotated token in a task of its own, holding the lease's renewals and
/// the user's lock until the save is done.
fn spawn_save(
    deps: Arc<Deps>,
    owner: UserKey,
    unsaved: Unsaved,
    user_lock: OwnedMutexGuard<()>,
) -> PendingSave {
    // Under the invocation's span and trace context: the save's statements are part of the
    // call that redeemed the token, even when they end after its answer.
    tokio::spawn(crate::telemetry::carry(
        async move {
            let Unsaved {
                row,
                keep_alive,
                current_key,
                next,
            } = unsaved;
            // Renewals go on until the save is done, and the user's next redemption waits for it.
            let _renewing = keep_alive;
            let _user_lock = user_lock;
            // Entra already rotated the token; dropping it would lose the grant wherever redeemed
            // tokens stop working. So the latest key seals it, or the version that just opened the
            // row when that one is newer than a stale cached "latest" or "latest" is unavailable.
            let key = custody::sealing_key(&deps, &owner, &current_key).await;
            match key.and_then(|key| custody::seal_with(&key, &owner, &next)) {
                Ok(grant) => {
                    custody::save_refreshed(&deps, &row, &grant, &deps.policy.instance_id).await
                }
                Err(error) => {
                    release(&deps, &owner).await;
                    Err(error)
                }
            }
        }
        .in_current_span(),
    ))
}

async fn acquire_lease(deps: &Deps, owner: &UserKey) -> Result<TokenRecord, FlowError> {
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    let mut pause = Duration::from_millis(25);
    loop {
        match deps.store.acquire_lease(owner, &deps.lease()).await? {
            LeaseAttempt::Acquired(row) => return Ok(row),
            LeaseAttempt::Missing => return Err(FlowError::NotConnected),
            LeaseAttempt::NotActive(row) => return Err(FlowError::reauth(row.status_reason)),
            LeaseAttempt::Held(_) if tokio::time::Instant::now() + pause > deadline => {
                return Err(FlowError::Busy)
            }
            LeaseAttempt::Held(_) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        }
    }
}

async fn release(deps: &Deps, owner: &UserKey) {
    if let Err(error) = deps
        .store
        .release_lease(owner, &deps.policy.instance_id)
        .await
    {
        // The lease ends by itself; this only delays the next attempt.
        tracing::warn!(error = %error, "failed to release a lease");
    }
}
