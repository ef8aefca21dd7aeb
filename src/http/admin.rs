//! Operator routes (`role: admin` in the token): jobs across users, and the
//! stall watchdog on demand.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::{db, recovery, reembed};

fn require_admin(user: &AuthUser) -> Result<(), ApiError> {
    if user.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this route needs an admin token (role: admin)".into(),
        ))
    }
}

#[derive(Deserialize)]
pub struct RecoverQuery {
    dry_run: Option<bool>,
}

/// `POST /api/v1/admin/jobs/recover-stalled[?dry_run=true]`: runs the stall
/// watchdog and reconciler now; answers each job with the action taken (or,
/// in a dry run, that would be taken).
#[utoipa::path(post, path = "/api/v1/admin/jobs/recover-stalled", operation_id = "admin_recover_stalled", tag = "admin",
    params(("dry_run" = Option<bool>, Query, description = "list what would be done")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Jobs and actions", body = crate::http::openapi::Recovery),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn recover_stalled(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<RecoverQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let dry_run = q.dry_run.unwrap_or(false);
    let actions = recovery::recover(&state.services, dry_run).await?;
    Ok(Json(json!({ "dry_run": dry_run, "actions": actions })))
}

#[derive(Deserialize)]
pub struct JobsQuery {
    stage: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/admin/jobs?stage=…`: jobs across users, newest first.
#[utoipa::path(get, path = "/api/v1/admin/jobs", operation_id = "admin_jobs", tag = "admin",
    params(("stage" = Option<String>, Query, description = "only jobs in this stage"), ("limit" = Option<i64>, Query, description = "1–1000")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Jobs across users", body = crate::http::openapi::AdminJobs),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn jobs(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<JobsQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let jobs = db::admin_jobs(&state.services.db, q.stage.as_deref(), limit).await?;
    Ok(Json(json!({ "jobs": jobs })))
}

#[derive(Deserialize)]
pub struct ReembedQuery {
    user_id: Option<uuid::Uuid>,
}

/// `POST /api/v1/admin/reembed[?user_id=…]`: queues the re-embed of every
/// document (of that user, or everyone's) whose vectors are of another
/// model than the configured one. Resumable: what is done or under way is
/// left alone, failed re-embeds run again.
#[utoipa::path(post, path = "/api/v1/admin/reembed", operation_id = "admin_reembed_start", tag = "admin",
    params(("user_id" = Option<uuid::Uuid>, Query, description = "only this user's documents")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "What was queued", body = crate::http::openapi::ReembedStarted),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn reembed_start(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ReembedQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    Ok(Json(reembed::start(&state.services, q.user_id).await?))
}

/// `GET /api/v1/admin/reembed[?user_id=…]`: documents by the model search
/// uses for them, re-embeds pending and failed.
#[utoipa::path(get, path = "/api/v1/admin/reembed", operation_id = "admin_reembed_status", tag = "admin",
    params(("user_id" = Option<uuid::Uuid>, Query, description = "only this user's documents")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Where re-embedding stands", body = crate::http::openapi::ReembedStatus),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn reembed_status(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ReembedQuery>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&user)?;
    Ok(Json(reembed::status(&state.services, q.user_id).await?))
}
