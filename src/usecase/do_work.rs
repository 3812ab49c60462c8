//! do-work: act for a connected user. The row is read on every call (a disconnected or dead
//! grant is never used, even with a cached token); on a cache miss one refresh per user runs
//! under the row's lease, and the new refresh token is sealed and saved concurrently with the
//! downstream call. The answer waits for both, because a process frozen after answering would
//! lose the new token.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::access_tokens::CachedAccessToken;
use super::leases::HeldLease;
use super::{custody, FlowError};
use crate::app::App;
use crate::domain::{TenantId, TokenStatus, UserKey};
use crate::downstream::{DownstreamError, DownstreamRequest, DownstreamResponse};
use crate::downstreams::DownstreamApi;
use crate::idp::IdpError;
use crate::store::{AccessRecord, Lease, LeaseAttempt, TokenRecord};

/// How long a call waits for another instance's lease on the user's row.
const LEASE_WAIT: Duration = Duration::from_secs(20);
/// How often a call starts over when the grant it found dead was replaced meanwhile (a new
/// setup between its read and its reauth mark).
const REFRESH_ATTEMPTS: usize = 3;

/// What do-work did.
#[derive(Debug)]
pub struct WorkDone {
    /// The downstream answer.
    pub response: DownstreamResponse,
    /// Whether this call redeemed the refresh token.
    pub refreshed: bool,
}

/// The workload calling do-work, from its validated app-only token.
#[derive(Clone, Debug)]
pub struct Workload {
    /// `azp`/`appid`: the workload's app id.
    pub app_id: String,
    /// `tid`: the tenant the workload's service principal lives in.
    pub tenant_id: TenantId,
}

type PendingSave = JoinHandle<Result<bool, FlowError>>;

/// Calls the downstream API `api` for `owner` on behalf of `workload`.
#[tracing::instrument(skip_all, fields(tenant.id = %owner.tenant_id, user.id = %owner.user_id, downstream = %api.name()))]
pub async fn do_work(
    app: &Arc<App>,
    owner: &UserKey,
    api: &DownstreamApi,
    request: &DownstreamRequest,
    workload: &Workload,
) -> Result<WorkDone, FlowError> {
    // Tenancy first: nothing is read or redeemed for a user the workload may not act for.
    if !app.entra_settings.allowed_tenants.allows(&owner.tenant_id) {
        return Err(FlowError::TenantNotAllowed);
    }
    if let Err(refusal) = app
        .entra_settings
        .workload_tenants
        .check(&workload.tenant_id, &owner.tenant_id)
    {
        tracing::warn!(
            caller.app_id = %workload.app_id,
            caller.tenant_id = %workload.tenant_id,
            "refused a workload acting for a user of another tenant"
        );
        return Err(refusal.into());
    }
    let row = app
        .store
        .find(owner)
        .await?
        .ok_or(FlowError::NotConnected)?;
    if row.status != TokenStatus::Active {
        return Err(FlowError::ReauthRequired {
            reason: row.status_reason,
        });
    }
    let (mut response, mut refreshed) = attempt(app, owner, api, request, None).await?;
    if response.status == 401 {
        // The downstream API no longer accepts the token (revoked session, CAE): forget it.
        app.access_tokens.invalidate_one(owner, api.index).await;
        if let Some(claims) = response.claims_challenge.take() {
            // A claims challenge: redeem with its claims and retry once (the 401 means the API
            // did not act). A second 401 is the answer; there is no loop.
            tracing::info!("the downstream API sent a claims challenge; redeeming with its claims");
            let (retried, again) = attempt(app, owner, api, request, Some(claims.into())).await?;
            if retried.status == 401 {
                app.access_tokens.invalidate_one(owner, api.index).await;
            }
            response = retried;
            refreshed |= again;
        }
    }
    app.audit.record(AccessRecord {
        key: owner.clone(),
        at: Utc::now(),
        caller_app_id: workload.app_id.clone(),
        caller_tenant_id: Some(workload.tenant_id.clone()),
        downstream: Some(api.name().to_owned()),
        method: request.method().to_owned(),
        path: request.path().to_owned(),
        downstream_status: Some(i32::from(response.status)),
        refreshed,
    });
    Ok(WorkDone {
        response,
        refreshed,
    })
}

/// One call with the user's token for `api` (redeeming the grant on a miss, with `claims`
/// when answering a challenge), waiting for the rotated token's save too. The boolean says
/// whether this call redeemed.
async fn attempt(
    app: &Arc<App>,
    owner: &UserKey,
    api: &DownstreamApi,
    request: &DownstreamRequest,
    claims: Option<Arc<str>>,
) -> Result<(DownstreamResponse, bool), FlowError> {
    let (save_sender, save_receiver) = oneshot::channel::<PendingSave>();
    let refresh = refresh(app.clone(), owner.clone(), api.index, claims, save_sender);
    let token = app
        .access_tokens
        .get_or_refresh(owner, api.index, refresh)
        .await
        .map_err(unshare)?;
    let pending_save = save_receiver.await.ok();
    let refreshed = pending_save.is_some();
    let (response, saved) = tokio::join!(api.work.call(request, token.token()), async {
        match pending_save {
            Some(handle) => Some(handle.await),
            None => None,
        }
    });
    match saved {
        Some(Ok(Ok(true))) | None => {}
        Some(Ok(Ok(false))) => tracing::info!(
            "the row changed while this call refreshed (a new setup, a delete, or another \
             writer): the stored row was left as that writer made it, and the token this call \
             obtained was not stored"
        ),
        // The previous refresh token is still on the row and Entra keeps it valid, so nothing
        // is lost; the next refresh rotates again.
        Some(Ok(Err(error))) => {
            tracing::error!(alert = true, error = %error, "failed to save the rotated refresh token")
        }
        Some(Err(error)) => tracing::error!(alert = true, error = %error, "the save task failed"),
    }
    Ok((response?, refreshed))
}

/// The cache-miss path: the user's lock (one redemption per user in the process, whatever
/// downstream), the row's lease (across instances), re-read, redeem for the downstream's
/// scopes, then hand the save to a task of its own so it completes even if the caller goes
/// away. The lease is renewed in the background from the moment it is taken until the save is
/// done, so it outlives every step (Key Vault, Entra, Key Vault, the save's retries) however
/// slow each is; the lock is held as long, so the next redemption presents the rotated token.
async fn refresh(
    app: Arc<App>,
    owner: UserKey,
    downstream: usize,
    claims: Option<Arc<str>>,
    save_sender: oneshot::Sender<PendingSave>,
) -> Result<Arc<CachedAccessToken>, FlowError> {
    let Some(api) = app.downstreams.get(downstream) else {
        return Err(FlowError::Downstream(DownstreamError::InvalidRequest(
            "the downstream is not configured".into(),
        )));
    };
    let user_lock = app.access_tokens.lock_user(&owner).await;
    let mut attempts = 0;
    let (row, keep_alive, current_key, set, next) = loop {
        attempts += 1;
        let requested_at = tokio::time::Instant::now();
        let row = acquire_lease(&app, &owner).await?;
        let lease = Lease {
            owner: app.instance_id.clone(),
            duration: app.lease,
        };
        let keep_alive = HeldLease::new(owner.clone(), row.revision, lease, requested_at)
            .keep_alive(app.store.clone());
        let (stored, current_key) = match custody::open_stored(&app, &row).await {
            Ok(opened) => opened,
            Err(error) => {
                drop(keep_alive);
                release(&app, &owner).await;
                return Err(error);
            }
        };
        let scopes = &api.settings.scopes;
        match custody::redeem_for(&app, &owner, stored, scopes, claims.as_deref()).await {
            Ok((set, next)) => break (row, keep_alive, current_key, set, next),
            Err(FlowError::Idp(error)) if error.is_consent_required() => {
                // Consent for this API is missing; the grant itself is fine for the others.
                drop(keep_alive);
                tracing::warn!(downstream = %api.name(), "Entra has no consent for the downstream's resource");
                release(&app, &owner).await;
                return Err(FlowError::ConsentRequired {
                    downstream: api.name().to_owned(),
                });
            }
            Err(FlowError::Idp(IdpError::Reauth {
                error,
                code,
                claims: entra_claims,
                ..
            })) => {
                drop(keep_alive);
                let reason = code.map_or(error.clone(), |code| format!("{error}:{code}"));
                let marked = app
                    .store
                    .mark_reauth_required(&owner, row.revision, &reason, &app.instance_id)
                    .await?;
                if marked {
                    tracing::warn!(reason = %reason, "the stored grant is dead; marked reauth_required");
                    app.access_tokens.invalidate(&owner).await;
                    // What the next sign-in must satisfy: Entra's own challenge, else the
                    // downstream's.
                    return Err(
                        match entra_claims.or(claims.as_deref().map(str::to_owned)) {
                            Some(claims) => FlowError::ReauthRequiredWithClaims {
                                reason: Some(reason),
                                claims,
                            },
                            None => FlowError::ReauthRequired {
                                reason: Some(reason),
                            },
                        },
                    );
                }
                // The row moved on between our read and the mark: the user connected again
                // (or another instance saved a newer token). The dead grant is gone; use the
                // row as it is now.
                tracing::info!(reason = %reason, "the grant found dead was replaced meanwhile; using the new one");
                if attempts >= REFRESH_ATTEMPTS {
                    return Err(FlowError::Busy);
                }
            }
            Err(error) => {
                drop(keep_alive);
                release(&app, &owner).await;
                return Err(error);
            }
        }
    };
    let lease_owner = app.instance_id.clone();
    let save_app = app.clone();
    let handle = tokio::spawn(async move {
        // Renewals go on until the save is done, and the user's next redemption waits for it.
        let _keep_alive = keep_alive;
        let _user_lock = user_lock;
        // Entra already rotated the token; dropping it would lose the grant wherever redeemed
        // tokens stop working. So the latest key seals it, or the version that just opened the
        // row when that one is newer than a stale cached "latest" or "latest" is unavailable.
        let key = custody::sealing_key(&save_app, &owner, &current_key).await;
        let grant = key.and_then(|key| custody::seal_with(&key, &owner, &next));
        match grant {
            Ok(grant) => custody::save_refreshed(&save_app, &row, &grant, &lease_owner).await,
            Err(error) => {
                release(&save_app, &owner).await;
                Err(error)
            }
        }
    });
    // The receiver only disappears if the caller was cancelled; the task still saves.
    let _ = save_sender.send(handle);
    Ok(Arc::new(CachedAccessToken::new(
        set.access_token,
        set.expires_in,
    )))
}

async fn acquire_lease(app: &App, owner: &UserKey) -> Result<TokenRecord, FlowError> {
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    let mut pause = Duration::from_millis(25);
    loop {
        let lease = Lease {
            owner: app.instance_id.clone(),
            duration: app.lease,
        };
        match app.store.acquire_lease(owner, &lease).await? {
            LeaseAttempt::Acquired(row) => return Ok(row),
            LeaseAttempt::Missing => return Err(FlowError::NotConnected),
            LeaseAttempt::NotActive(row) => {
                return Err(FlowError::ReauthRequired {
                    reason: row.status_reason,
                })
            }
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

async fn release(app: &App, owner: &UserKey) {
    if let Err(error) = app.store.release_lease(owner, &app.instance_id).await {
        // The lease ends by itself; this only delays the next attempt.
        tracing::warn!(error = %error, "failed to release a lease");
    }
}

/// Errors from a coalesced refresh are shared between waiters; re-create an owned one.
fn unshare(error: Arc<FlowError>) -> FlowError {
    Arc::try_unwrap(error).unwrap_or_else(|shared| shared_copy(&shared))
}

fn shared_copy(error: &FlowError) -> FlowError {
    use crate::store::StoreError;
    match error {
        FlowError::Busy => FlowError::Busy,
        FlowError::Crypto(error) => FlowError::Crypto(error.clone()),
        FlowError::Downstream(error) => FlowError::Downstream(error.clone()),
        FlowError::Idp(error) => FlowError::Idp(error.clone()),
        FlowError::InteractionRequired { claims } => FlowError::InteractionRequired {
            claims: claims.clone(),
        },
        FlowError::Keys(error) => FlowError::Keys(error.clone()),
        FlowError::KeyVersionUnavailable {
            key_name,
            key_version,
            cause,
        } => FlowError::KeyVersionUnavailable {
            key_name: key_name.clone(),
            key_version: key_version.clone(),
            cause: cause.clone(),
        },
        FlowError::NotConnected => FlowError::NotConnected,
        FlowError::ReauthRequired { reason } => FlowError::ReauthRequired {
            reason: reason.clone(),
        },
        FlowError::ReauthRequiredWithClaims { reason, claims } => {
            FlowError::ReauthRequiredWithClaims {
                reason: reason.clone(),
                claims: claims.clone(),
            }
        }
        FlowError::ConsentRequired { downstream } => FlowError::ConsentRequired {
            downstream: downstream.clone(),
        },
        // sqlx errors cannot be cloned; the waiter gets the same kind, the cause was logged by
        // the caller whose refresh failed.
        FlowError::Store(StoreError::Unavailable(_)) => {
            FlowError::Store(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
        }
        FlowError::Store(StoreError::Other(error)) => {
            FlowError::Store(StoreError::Other(anyhow::anyhow!("{error:#}")))
        }
        FlowError::TenantNotAllowed => FlowError::TenantNotAllowed,
        FlowError::Tenancy(refusal) => FlowError::Tenancy(*refusal),
    }
}
