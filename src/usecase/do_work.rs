//! do-work: act for a connected user. The row is read on every call (a disconnected or dead
//! grant is never used, even with a cached token); on a cache miss one refresh per user runs
//! under the row's lease (`do_work/refresh`), and the new refresh token is sealed and saved
//! concurrently with the downstream call. The answer waits for both, because a process frozen
//! after answering would lose the new token.

mod refresh;

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{Deps, FlowError};
use crate::domain::{TenantId, TokenStatus, UserKey};
use crate::downstream::{DownstreamRequest, DownstreamResponse};
use crate::downstreams::DownstreamApi;
use crate::store::AccessRecord;

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

/// The save of a rotated refresh token, running in a task of its own; `Ok(false)` when the
/// row changed meanwhile and was left alone.
type PendingSave = JoinHandle<Result<bool, FlowError>>;

/// Calls the downstream API `api` for `owner` on behalf of `workload`.
#[tracing::instrument(skip_all, fields(tenant.id = %owner.tenant_id, user.id = %owner.user_id, downstream = %api.name()))]
pub async fn do_work(
    deps: &Arc<Deps>,
    owner: &UserKey,
    api: &DownstreamApi,
    request: &DownstreamRequest,
    workload: &Workload,
) -> Result<WorkDone, FlowError> {
    // Tenancy first: nothing is read or redeemed for a user the workload may not act for.
    check_tenancy(deps, owner, workload)?;
    let row = deps
        .store
        .find(owner)
        .await?
        .ok_or(FlowError::NotConnected)?;
    if row.status != TokenStatus::Active {
        return Err(FlowError::reauth(row.status_reason));
    }
    let (response, refreshed) = call(deps, owner, api, request).await?;
    deps.audit.record(AccessRecord {
        key: owner.clone(),
        at: deps.clock.now(),
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

/// `OBOVAULT_ALLOWED_TENANTS` and `OBOVAULT_WORKLOAD_TENANTS` for this workload and user.
fn check_tenancy(deps: &Deps, owner: &UserKey, workload: &Workload) -> Result<(), FlowError> {
    if !deps.policy.allowed_tenants.allows(&owner.tenant_id) {
        return Err(FlowError::TenantNotAllowed);
    }
    if let Err(refusal) = deps
        .policy
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
    Ok(())
}

/// The downstream call, answering a claims challenge once. The boolean says whether a
/// redemption happened.
async fn call(
    deps: &Arc<Deps>,
    owner: &UserKey,
    api: &DownstreamApi,
    request: &DownstreamRequest,
) -> Result<(DownstreamResponse, bool), FlowError> {
    let (mut response, refreshed) = attempt(deps, owner, api, request, None).await?;
    if response.status != 401 {
        return Ok((response, refreshed));
    }
    // The downstream API no longer accepts the token (revoked session, CAE): forget it.
    deps.access_tokens.invalidate_one(owner, api.index).await;
    let Some(claims) = response.claims_challenge.take() else {
        return Ok((response, refreshed));
    };
    // A claims challenge: redeem with its claims and retry once (the 401 means the API did
    // not act). A second 401 is the answer; there is no loop.
    tracing::info!("the downstream API sent a claims challenge; redeeming with its claims");
    let (retried, again) = attempt(deps, owner, api, request, Some(claims.into())).await?;
    if retried.status == 401 {
        deps.access_tokens.invalidate_one(owner, api.index).await;
    }
    Ok((retried, refreshed || again))
}

/// One call with the user's token for `api` (redeeming the grant on a miss, with `claims`
/// when answering a challenge), waiting for the rotated token's save too. The boolean says
/// whether this call redeemed.
async fn attempt(
    deps: &Arc<Deps>,
    owner: &UserKey,
    api: &DownstreamApi,
    request: &DownstreamRequest,
    claims: Option<Arc<str>>,
) -> Result<(DownstreamResponse, bool), FlowError> {
    let refresh = || refresh::refresh(deps.clone(), owner.clone(), api.index, claims);
    let fetched = deps
        .access_tokens
        .get_or_refresh(owner, api.index, refresh)
        .await?;
    let refreshed = fetched.refreshed.is_some();
    let (response, ()) = tokio::join!(
        api.work.call(request, fetched.token.token()),
        saved(fetched.refreshed)
    );
    Ok((response?, refreshed))
}

/// Waits for this call's save, if it redeemed; a failed save is logged here, once.
async fn saved(pending: Option<PendingSave>) {
    let Some(pending) = pending else { return };
    match pending.await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::info!(
            "the row changed while this call refreshed (a new setup, a delete, or another \
             writer): the stored row was left as that writer made it, and the token this call \
             obtained was not stored"
        ),
        // The previous refresh token is still on the row and Entra keeps it valid, so nothing
        // is lost; the next refresh rotates again.
        Ok(Err(error)) => {
            tracing::error!(alert = true, error = %error, "failed to save the rotated refresh token")
        }
        Err(error) => tracing::error!(alert = true, error = %error, "the save task failed"),
    }
}
