//! `POST /api/do-work`: a trusted workload acts for a connected user.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::problem::ApiError;
use super::{auth, body};
use crate::app::App;
use crate::domain::{TenantId, UserId, UserKey};
use crate::downstream::UnverifiedRequest;
use crate::usecase::do_work;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DoWorkBody {
    tenant_id: String,
    user_id: String,
    #[serde(default)]
    request: Option<UnverifiedRequest>,
    /// One of `OBOVAULT_DOWNSTREAMS`; default: the first.
    #[serde(default)]
    downstream: Option<String>,
}

/// Authorizes the workload, checks the body, picks the downstream and checks the workload may
/// act on it, runs the flow. Every refusal comes before any row is read or token redeemed.
pub(crate) async fn do_work(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    raw_body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw_body = body::bytes(raw_body)?;
    let caller = auth::workload(&app, &headers).await?;
    let unverified: DoWorkBody = body::json_object(&headers, &raw_body)?.ok_or_else(|| {
        ApiError::InvalidRequest("a JSON body with tenantId and userId is required".into())
    })?;
    let parse = |error: crate::domain::InvalidId| ApiError::InvalidRequest(error.to_string());
    let owner = UserKey {
        tenant_id: TenantId::parse(&unverified.tenant_id).map_err(parse)?,
        user_id: UserId::parse(&unverified.user_id).map_err(parse)?,
    };
    let api = app
        .deps
        .downstreams
        .pick(unverified.downstream.as_deref())
        .map_err(|unknown| ApiError::InvalidRequest(unknown.to_string()))?;
    caller.may_call(&app, api.name())?;
    let request = api
        .work
        .prepare(unverified.request)
        .map_err(|error| ApiError::from(crate::usecase::FlowError::Downstream(error)))?;
    let done = do_work::do_work(&app.deps, &owner, api, &request, &caller.workload).await?;
    Ok(Json(done.response).into_response())
}
