//! A grant Entra declared dead: the one place where a refused redemption becomes a row marked
//! `reauth_required` and the answer "run setup again".

use super::{Deps, FlowError};
use crate::idp::IdpError;
use crate::store::TokenRecord;

/// Why a stored grant is dead, and what the next sign-in must satisfy.
pub(crate) struct DeadGrant {
    /// Entra's error code (`invalid_grant:70008`), stored as the row's `status_reason`.
    reason: String,
    /// Entra's own claims challenge, if it sent one.
    claims: Option<String>,
}

impl DeadGrant {
    /// The dead grant `error` reports: Entra's `invalid_grant`, `interaction_required` and
    /// the like (classified by `idp` as [`IdpError::Reauth`]); `None` for any other failure.
    pub(crate) fn of(error: &FlowError) -> Option<Self> {
        match error {
            FlowError::Idp(idp @ IdpError::Reauth { claims, .. }) => Some(Self {
                reason: idp.code(),
                claims: claims.clone(),
            }),
            _ => None,
        }
    }

    /// Marks `row` `reauth_required` by compare-and-set at the revision read, which releases
    /// `owner`'s lease, and forgets the user's cached access tokens. `Ok(false)`: the row moved
    /// on meanwhile (a new setup, another writer) and was left as it is.
    pub(crate) async fn mark(
        &self,
        deps: &Deps,
        row: &TokenRecord,
        owner: &str,
    ) -> Result<bool, FlowError> {
        let marked = deps
            .store
            .mark_reauth_required(&row.key, row.revision, &self.reason, owner)
            .await?;
        if marked {
            tracing::warn!(reason = %self.reason, "the stored grant is dead; marked reauth_required");
            deps.access_tokens.invalidate(&row.key).await;
        } else {
            tracing::info!(reason = %self.reason, "the grant found dead was replaced meanwhile");
        }
        Ok(marked)
    }

    /// What the caller is told: run setup again, satisfying Entra's claims challenge, else the
    /// downstream's `challenge` the redemption answered.
    pub(crate) fn into_error(self, challenge: Option<&str>) -> FlowError {
        FlowError::ReauthRequired {
            reason: Some(self.reason),
            claims: self.claims.or(challenge.map(str::to_owned)),
        }
    }
}
