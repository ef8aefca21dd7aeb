//! `GET /api/v1/analytics/processing[?user_id=…]`: per-stage processing
//! statistics for the caller's jobs; an admin sees everyone's, or one user's.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::analytics;

#[derive(Deserialize)]
pub struct AnalyticsQuery {
    user_id: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/analytics/processing", operation_id = "analytics_processing", tag = "analytics",
    params(("user_id" = Option<Uuid>, Query, description = "admin: one user's jobs (default: everyone's)")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Per-stage statistics", body = crate::http::openapi::Analytics),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Another user's id (non-admin)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn processing(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = match (user.admin, q.user_id) {
        (true, None) => None,
        (true, Some(u)) => Some(u),
        (false, None) => Some(user.user_id),
        (false, Some(u)) if u == user.user_id => Some(u),
        // Another user's id looks like an unknown one.
        (false, Some(_)) => return Err(ApiError::NotFound("no such user".into())),
    };
    let (stages, by_content_type) = analytics::processing(&state.services.db, scope).await?;
    Ok(Json(json!({
        "scope": scope.map(|u| u.to_string()).unwrap_or_else(|| "all".into()),
        "stages": stages,
        "by_content_type": by_content_type,
    })))
}
