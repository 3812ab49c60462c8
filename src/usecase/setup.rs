//! setup: exchange the user's token On-Behalf-Of, seal the refresh token under the tenant's
//! latest key, and keep it; plus reading and removing the caller's own row.

use super::{custody, Deps, FlowError};
use crate::domain::{InboundToken, TenantId, UserId, UserKey};
use crate::idp::{IdpError, ValidatedToken};
use crate::store::{AccessRecord, TokenRecord};

/// How many recent accesses `GET /api/setup` shows.
pub const RECENT_ACCESSES: i64 = 20;

/// The caller's row after setup.
#[derive(Debug)]
pub struct Connection {
    /// The stored row.
    pub record: TokenRecord,
    /// `true` when the user had no row before.
    pub created: bool,
}

/// Runs the OBO exchange for the caller and stores the sealed refresh token.
/// `assertion` is the caller's access token, already validated into `caller`.
#[tracing::instrument(skip_all, fields(tenant.id = %caller.tenant_id))]
pub async fn connect(
    deps: &Deps,
    caller: &ValidatedToken,
    assertion: &InboundToken,
) -> Result<Connection, FlowError> {
    let tenant = &caller.tenant_id;
    // The first downstream's: other downstreams' tokens come from refresh grants.
    let scopes = &deps.downstreams.first().settings.scopes;
    let set = deps
        .entra
        .on_behalf_of(tenant, assertion, scopes)
        .await
        .map_err(|error| match error {
            IdpError::Reauth { claims, .. } => FlowError::InteractionRequired { claims },
            other => FlowError::Idp(other),
        })?;
    let owner = identify(caller, set.identity.as_ref())?;
    let Some(refresh_token) = set.refresh_token.as_ref() else {
        return Err(FlowError::Idp(IdpError::Protocol(
            "Entra returned no refresh token (is offline_access consented?)".into(),
        )));
    };
    let key = custody::key_for_new_grant(deps, &owner).await?;
    let grant = custody::seal_with(&key, &owner, refresh_token)?;
    let granted_scopes = if set.scope.trim().is_empty() {
        scopes.join(" ")
    } else {
        set.scope.clone()
    };
    let connected = deps
        .store
        .connect(&owner, &grant, &granted_scopes, deps.clock.now())
        .await?;
    // A new grant replaces whatever the process had cached for the user.
    deps.access_tokens.invalidate(&owner).await;
    tracing::info!(
        user.id = %owner.user_id,
        created = connected.created,
        key.version = %key.version,
        "user connected"
    );
    Ok(Connection {
        record: connected.record,
        created: connected.created,
    })
}

/// The caller's row and its recent accesses.
pub async fn status(
    deps: &Deps,
    owner: &UserKey,
) -> Result<(TokenRecord, Vec<AccessRecord>), FlowError> {
    let record = deps
        .store
        .find(owner)
        .await?
        .ok_or(FlowError::NotConnected)?;
    let accesses = deps.store.recent_accesses(owner, RECENT_ACCESSES).await?;
    Ok((record, accesses))
}

/// Removes the caller's row; the in-memory access token goes with it.
#[tracing::instrument(skip_all, fields(tenant.id = %owner.tenant_id, user.id = %owner.user_id))]
pub async fn disconnect(deps: &Deps, owner: &UserKey) -> Result<bool, FlowError> {
    let existed = deps.store.delete(owner).await?;
    deps.access_tokens.invalidate(owner).await;
    tracing::info!(existed, "user disconnected");
    Ok(existed)
}

/// The user is identified by the id_token Entra returned; it must be the caller.
fn identify(
    caller: &ValidatedToken,
    identity: Option<&(TenantId, UserId)>,
) -> Result<UserKey, FlowError> {
    let Some((tenant_id, user_id)) = identity else {
        return Err(FlowError::Idp(IdpError::Protocol(
            "Entra returned no id_token".into(),
        )));
    };
    if *tenant_id != caller.tenant_id || caller.object_id.as_ref() != Some(user_id) {
        return Err(FlowError::Idp(IdpError::Protocol(
            "the id_token names another user than the caller".into(),
        )));
    }
    Ok(UserKey {
        tenant_id: tenant_id.clone(),
        user_id: user_id.clone(),
    })
}
