//! Who is calling: a signed-in user (setup) or a trusted workload (do-work).

use axum::http::{header, HeaderMap};

use super::problem::{ApiError, TENANT_NOT_ALLOWED};
use crate::app::App;
use crate::domain::{InboundToken, UserKey};
use crate::idp::{TokenError, ValidatedToken};
use crate::usecase::do_work::Workload;

/// A user calling setup, with the raw token for the OBO exchange.
pub(crate) struct User {
    /// The validated claims.
    pub(crate) token: ValidatedToken,
    /// The caller's row key.
    pub(crate) key: UserKey,
    /// The inbound token itself; it is the OBO assertion and must not be logged.
    pub(crate) assertion: InboundToken,
}

/// Validates a user token carrying `OBOVAULT_SETUP_SCOPE`.
pub(crate) async fn user(app: &App, headers: &HeaderMap) -> Result<User, ApiError> {
    let assertion = bearer(headers)?;
    let token = validate(app, &assertion).await?;
    let scope = &app.entra_settings.setup_scope;
    let user_id = match (&token.object_id, token.app_only) {
        (Some(user_id), false) => user_id.clone(),
        _ => {
            return Err(ApiError::InsufficientScope(format!(
                "setup needs a user token with the scope {scope}"
            )))
        }
    };
    if !token.scopes.iter().any(|s| s == scope) {
        return Err(ApiError::InsufficientScope(format!(
            "the token lacks the scope {scope}"
        )));
    }
    let key = UserKey {
        tenant_id: token.tenant_id.clone(),
        user_id,
    };
    Ok(User {
        token,
        key,
        assertion,
    })
}

/// A workload calling do-work, with the app roles its token carries.
pub(crate) struct WorkloadCaller {
    /// Who it is.
    pub(crate) workload: Workload,
    /// Its `roles`: which downstreams it may act on (see [`WorkloadCaller::may_call`]).
    roles: Vec<String>,
}

impl WorkloadCaller {
    /// `403 insufficient_role` unless the roles grant `downstream`: `OBOVAULT_WORKLOAD_ROLE`
    /// or `<OBOVAULT_WORKLOAD_ROLE>.<name>`.
    pub(crate) fn may_call(&self, app: &App, downstream: &str) -> Result<(), ApiError> {
        let role = &app.entra_settings.workload_role;
        if crate::downstreams::grants(&self.roles, role, downstream) {
            return Ok(());
        }
        tracing::warn!(
            caller.app_id = %self.workload.app_id,
            downstream = %downstream,
            "refused a workload whose roles do not grant the downstream"
        );
        Err(ApiError::InsufficientRole(format!(
            "the token lacks the role {role} or {role}.{downstream}"
        )))
    }
}

/// Validates an app-only token carrying `OBOVAULT_WORKLOAD_ROLE` (or a role of one downstream,
/// `<OBOVAULT_WORKLOAD_ROLE>.<name>`) from a tenant listed in `OBOVAULT_WORKLOAD_TENANTS`.
pub(crate) async fn workload(app: &App, headers: &HeaderMap) -> Result<WorkloadCaller, ApiError> {
    let token = validate(app, &bearer(headers)?).await?;
    let role = &app.entra_settings.workload_role;
    if !token.app_only {
        return Err(ApiError::InsufficientRole(format!(
            "do-work needs an app-only token with the role {role}"
        )));
    }
    if !crate::downstreams::grants_any(&token.roles, role, &app.deps.downstreams) {
        return Err(ApiError::InsufficientRole(format!(
            "the token lacks the role {role}"
        )));
    }
    let workload = Workload {
        app_id: token.app_id.unwrap_or_else(|| "unknown".into()),
        tenant_id: token.tenant_id,
    };
    let span = tracing::Span::current();
    span.record("caller.app_id", workload.app_id.as_str());
    span.record("caller.tenant_id", workload.tenant_id.as_str());
    if let Err(refusal) = app
        .entra_settings
        .workload_tenants
        .check_workload(&workload.tenant_id)
    {
        tracing::warn!(
            caller.app_id = %workload.app_id,
            caller.tenant_id = %workload.tenant_id,
            "refused a workload of a tenant not in OBOVAULT_WORKLOAD_TENANTS"
        );
        return Err(refusal.into());
    }
    Ok(WorkloadCaller {
        workload,
        roles: token.roles,
    })
}

async fn validate(app: &App, token: &InboundToken) -> Result<ValidatedToken, ApiError> {
    app.validator
        .validate(token)
        .await
        .map_err(|error| match error {
            TokenError::TenantNotAllowed => ApiError::TenantNotAllowed(TENANT_NOT_ALLOWED),
            TokenError::MetadataUnavailable => ApiError::Unavailable {
                what: "Entra ID",
                retry_after: std::time::Duration::from_secs(5),
            },
            other => ApiError::InvalidToken {
                detail: other.to_string(),
                missing: false,
            },
        })
}

/// The bearer token of the one `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<InboundToken, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::InvalidToken {
            detail: "a bearer token is required".into(),
            missing: true,
        });
    };
    // Two credentials are ambiguous (a proxy may have checked the other one): refuse both.
    if values.next().is_some() {
        return Err(ApiError::InvalidToken {
            detail: "more than one Authorization header".into(),
            missing: false,
        });
    }
    let malformed = || ApiError::InvalidToken {
        detail: "the Authorization header is not a bearer token".into(),
        missing: false,
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(InboundToken::new(token.to_owned()))
}
