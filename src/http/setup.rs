//! `POST|GET|DELETE /api/setup`: connect, inspect and disconnect the caller.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::problem::ApiError;
use super::{auth, body};
use crate::app::App;
use crate::store::{AccessRecord, TokenRecord};
use crate::usecase::setup;

/// `POST /api/setup`: 201 on the first connection, 200 on a reconnection.
pub(crate) async fn connect(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw_body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw_body = body::bytes(raw_body)?;
    let user = auth::user(&app, &headers).await?;
    // The contract's body is empty or `{}`; anything else is a client mistake worth naming.
    if let Some(fields) = body::json_object::<serde_json::Map<String, Value>>(&headers, &raw_body)?
    {
        if !fields.is_empty() {
            return Err(ApiError::InvalidRequest(
                "the setup body must be empty or {}".into(),
            ));
        }
    }
    let connection = setup::connect(&app.deps, &user.token, &user.assertion).await?;
    let status = if connection.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&connection.record, None))).into_response())
}

/// `GET /api/setup`: the caller's own row and who acted for them recently.
pub(crate) async fn status(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = auth::user(&app, &headers).await?;
    let (record, accesses) = setup::status(&app.deps, &user.key).await?;
    Ok(Json(view(&record, Some(&accesses))).into_response())
}

/// `DELETE /api/setup`: 204 whether or not a row existed.
pub(crate) async fn disconnect(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let user = auth::user(&app, &headers).await?;
    setup::disconnect(&app.deps, &user.key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The public view of a row: never any token material.
fn view(record: &TokenRecord, accesses: Option<&[AccessRecord]>) -> Value {
    let mut body = json!({
        "tenantId": record.key.tenant_id.as_str(),
        "userId": record.key.user_id.as_str(),
        "status": record.status.as_str(),
        "scopes": record.scopes.split_whitespace().collect::<Vec<_>>(),
        "keyName": record.key_name,
        "keyVersion": record.key_version,
        "connectedAt": record.created_at.to_rfc3339(),
        "refreshedAt": record.refreshed_at.to_rfc3339(),
    });
    if let Some(reason) = &record.status_reason {
        body["statusReason"] = json!(reason);
    }
    if let Some(accesses) = accesses {
        body["recentAccess"] = accesses
            .iter()
            .map(|a| {
                json!({
                    "at": a.at.to_rfc3339(),
                    "callerAppId": a.caller_app_id,
                    "callerTenantId": a.caller_tenant_id.as_ref().map(|t| t.as_str()),
                    "downstream": a.downstream,
                    "method": a.method,
                    "path": a.path,
                    "downstreamStatus": a.downstream_status,
                    "refreshed": a.refreshed,
                })
            })
            .collect();
    }
    body
}
