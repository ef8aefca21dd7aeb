//! Jobs as their owner sees them: current state, stored history, retry and
//! cancel (both in the job lifecycle, [`crate::jobs::control`]), and the
//! external workers' progress route.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::db;
use crate::domain::{EventType, ProgressEvent, Stage};
use crate::events::{JobMeta, NewEvent};
use crate::jobs::control::{Cancelled, RunningJobs};

fn not_found() -> ApiError {
    ApiError::NotFound("no such job".into())
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}", operation_id = "jobs_get", tag = "jobs",
    params(("job_id" = String, Path, description = "`doc:{document_id}` or `batch:{batch_id}`"), ),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Current stage, progress, attempt, error", body = crate::db::JobView),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = db::get_job(&state.services.db, user.user_id, &job_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(serde_json::to_value(job).map_err(anyhow::Error::from)?))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    after: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/jobs/{job_id}/history", operation_id = "jobs_history", tag = "jobs",
    params(("job_id" = String, Path, description = "`doc:{document_id}` or `batch:{batch_id}`"), ("after" = Option<i64>, Query, description = "only events with a larger seq"),),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Every stored event", body = crate::http::openapi::History),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let events = db::history(&state.services.db, user.user_id, &job_id, q.after.unwrap_or(0))
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({ "job_id": job_id, "events": events })))
}

/// `POST /api/v1/jobs/{job_id}/retry`: a failed document job runs again.
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/retry", operation_id = "jobs_retry", tag = "jobs",
    params(("job_id" = String, Path, description = "`doc:{document_id}` or `batch:{batch_id}`"), ),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 202, description = "Queued again", body = crate::http::openapi::JobQueued), (status = 409, description = "Only a failed job can be retried", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = crate::jobs::control::retry(&state.services, user.user_id, &job_id).await?;
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Progress reported by an external worker (seed plan 1.6).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalProgress {
    job_id: String,
    document_id: Option<uuid::Uuid>,
    user_id: Option<uuid::Uuid>,
    /// One of queued, downloading, extracting, chunking, embedding, storing, completed, failed.
    stage: String,
    #[schema(minimum = 0.0, maximum = 1.0)]
    progress: f64,
    #[serde(default)]
    #[schema(max_length = 1000)]
    message: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

fn service_token_ok(state: &AppState, headers: &axum::http::HeaderMap) -> bool {
    use secrecy::ExposeSecret;
    let expected = state.services.settings.auth.service_token.expose_secret().as_bytes();
    if expected.is_empty() {
        return false;
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .as_bytes();
    // Constant-time comparison.
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// `POST /api/v1/jobs/progress`: stored and broadcast like our own events.
#[utoipa::path(post, path = "/api/v1/jobs/progress", operation_id = "jobs_external_progress", tag = "progress",
    request_body = ExternalProgress,
    responses(
        (status = 415, description = "Wrong content type", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Stored and broadcast", body = crate::http::openapi::ProgressAck),
        (status = 400, description = "Invalid update", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "Not the service token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "No such job for that user", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn external_progress(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    Json(body): Json<ExternalProgress>,
) -> Result<Json<Value>, ApiError> {
    if !service_token_ok(&state, &headers) {
        return Err(ApiError::Unauthorized(
            "this route needs the service token (auth.service_token)".into(),
        ));
    }
    let stage = Stage::parse(&body.stage)
        .filter(|s| *s != Stage::BatchProcessing)
        .ok_or_else(|| ApiError::BadRequest(format!("unknown stage “{}”", body.stage)))?;
    if !body.progress.is_finite() || !(0.0..=1.0).contains(&body.progress) {
        return Err(ApiError::BadRequest("progress must be a number between 0 and 1".into()));
    }
    if body.message.chars().count() > 1000 || body.error.as_ref().is_some_and(|e| e.chars().count() > 2000) {
        return Err(ApiError::BadRequest("message or error is too long".into()));
    }
    let details = body.details.unwrap_or_else(|| json!({}));
    if !details.is_object() || details.to_string().len() > 16 * 1024 {
        return Err(ApiError::BadRequest(
            "details must be a JSON object of at most 16 KiB".into(),
        ));
    }
    let s = &state.services;
    let job = db::job_owner(&s.db, &body.job_id).await?.ok_or_else(not_found)?;
    // The reporter cannot publish into a user's stream for a document that user does not own.
    if body.user_id.is_some_and(|u| u != job.user_id) || body.document_id.is_some_and(|d| Some(d) != job.document_id) {
        return Err(not_found());
    }
    let kind = match stage {
        Stage::Completed => EventType::JobCompleted,
        Stage::Failed => EventType::JobFailed,
        Stage::Queued => EventType::JobQueued,
        _ => EventType::JobProgress,
    };
    let same_attempt_floor = if stage == Stage::Queued { 0.0 } else { job.progress };
    let progress = body.progress.max(same_attempt_floor);
    let failed_stage = (stage == Stage::Failed).then(|| Stage::parse(&job.stage).unwrap_or(Stage::Queued));
    let message = if body.message.is_empty() {
        format!("{stage}")
    } else {
        body.message.clone()
    };
    let meta = JobMeta {
        job_id: body.job_id.clone(),
        user_id: job.user_id,
        document_id: job.document_id,
        batch_id: job.batch_id,
        document_name: job.document_name.clone(),
    };
    let event = NewEvent {
        attempt: job.attempt,
        kind,
        stage,
        failed_stage,
        progress,
        message,
        details,
        error: body.error.clone(),
    };
    let moves_batch = job.stage != stage.as_str() || stage.is_terminal();
    let sent = s
        .events
        .emit(&meta, event, moves_batch)
        .await?
        .ok_or_else(|| ApiError::Conflict("the job changed meanwhile; send the update again".into()))?;
    Ok(Json(json!({ "status": "ok", "seq": sent.seq })))
}

/// `POST /api/v1/jobs/{job_id}/cancel`: stops a queued or running job,
/// wherever it runs (the owning instance sees `arq:abort` within half a second).
#[utoipa::path(post, path = "/api/v1/jobs/{job_id}/cancel", operation_id = "jobs_cancel", tag = "jobs",
    params(("job_id" = String, Path, description = "`doc:{document_id}` or `batch:{batch_id}`"), ),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "Cancelled", body = crate::http::openapi::CancelResult), (status = 202, description = "Cancelling (the worker has not confirmed yet)", body = crate::http::openapi::CancelResult), (status = 409, description = "The job has already ended", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(job_id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let here = ThisProcess(&state);
    match crate::jobs::control::cancel(&state.services, &here, user.user_id, &job_id).await? {
        Cancelled::Ended { status } => Ok((StatusCode::OK, Json(json!({ "job_id": job_id, "status": status })))),
        Cancelled::Cancelling => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "job_id": job_id, "status": "cancelling" })),
        )),
    }
}

/// The actor tree of this process, as cancel needs it.
struct ThisProcess<'a>(&'a AppState);

impl RunningJobs for ThisProcess<'_> {
    fn stop_here<'a>(&'a self, job_id: &'a str) -> futures::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            ractor::call_t!(
                self.0.supervisor,
                |reply| crate::actors::SupervisorMsg::Cancel {
                    job_id: job_id.to_string(),
                    reply
                },
                1000
            )
            .unwrap_or(false)
        })
    }

    fn watch_end(&self, job_id: &str) -> Option<tokio::sync::oneshot::Receiver<ProgressEvent>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0
            .registry
            .cast(crate::actors::registry::RegistryMsg::WatchEnd {
                job_id: job_id.to_string(),
                reply: tx,
            })
            .then_some(rx)
    }
}
