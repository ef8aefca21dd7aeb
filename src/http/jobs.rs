//! Jobs as their owner sees them: current state, stored history, retry.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::arq::queue::{CancelOutcome, RESULT_PREFIX};
use crate::arq::wire::cancelled_error;
use crate::arq::JobResult;
use crate::arq::{now_ms, JobDef, PyValue};
use crate::db::{self, EventRecord};
use crate::domain::{document_id_of, EventType, ProgressEvent, Stage};
use crate::jobs::PROCESS_DOCUMENT;

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
    let s = &state.services;
    let job = db::get_job(&s.db, user.user_id, &job_id).await?.ok_or_else(not_found)?;
    let document_id = document_id_of(&job_id)
        .filter(|_| job.document_id.is_some())
        .ok_or_else(not_found)?;
    if job.stage != "failed" {
        return Err(ApiError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            job.stage
        )));
    }
    let attempt = db::requeue(&s.db, user.user_id, &job_id)
        .await?
        .ok_or_else(|| ApiError::Conflict("the job changed meanwhile; reload and try again".into()))?;
    let details = json!({ "retry": true });
    let message = "Retry queued";
    let timestamp = chrono::Utc::now();
    let seq = db::record_event(
        &s.db,
        &EventRecord {
            job_id: &job_id,
            attempt,
            kind: EventType::JobQueued,
            stage: Stage::Queued,
            failed_stage: None,
            progress: 0.0,
            message,
            details: &details,
            error: None,
            timestamp,
        },
    )
    .await?
    .ok_or_else(|| ApiError::Conflict("the job changed meanwhile; reload and try again".into()))?;
    // The failed run's arq result would make arq refuse the same job id.
    let mut con = s.queue.connection();
    con.del::<_, ()>(format!("{RESULT_PREFIX}{job_id}"))
        .await
        .map_err(crate::arq::QueueError::from)?;
    let def = JobDef {
        job_try: None,
        function: PROCESS_DOCUMENT.into(),
        args: vec![
            PyValue::Str(document_id.to_string()),
            PyValue::Str(user.user_id.to_string()),
        ],
        kwargs: vec![],
        enqueue_time_ms: now_ms(),
    };
    let expires_ms = (s.settings.queue.job_expires_secs * 1000) as i64;
    if !s.queue.enqueue(&job_id, &def, 0, Some(expires_ms)).await? {
        return Err(ApiError::Conflict("the job is already queued".into()));
    }
    let event = ProgressEvent {
        kind: EventType::JobQueued,
        job_id: job_id.clone(),
        document_id: Some(document_id),
        batch_id: job.batch_id,
        stage: Stage::Queued,
        progress: 0.0,
        message: message.into(),
        details,
        error: None,
        seq,
        attempt,
        timestamp,
        document_name: job.document_name.clone(),
    };
    s.publisher.publish(user.user_id, &event).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "job_id": job_id, "document_id": document_id, "status": "queued" })),
    ))
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
    let timestamp = chrono::Utc::now();
    let message = if body.message.is_empty() {
        format!("{stage}")
    } else {
        body.message.clone()
    };
    let seq = db::record_event(
        &s.db,
        &EventRecord {
            job_id: &body.job_id,
            attempt: job.attempt,
            kind,
            stage,
            failed_stage,
            progress,
            message: &message,
            details: &details,
            error: body.error.as_deref(),
            timestamp,
        },
    )
    .await?
    .ok_or_else(|| ApiError::Conflict("the job changed meanwhile; send the update again".into()))?;
    let event = ProgressEvent {
        kind,
        job_id: body.job_id.clone(),
        document_id: job.document_id,
        batch_id: job.batch_id,
        stage,
        progress,
        message,
        details,
        error: body.error.clone(),
        seq,
        attempt: job.attempt,
        timestamp,
        document_name: job.document_name,
    };
    s.publisher.publish(job.user_id, &event).await;
    if let Some(batch) = job.batch_id {
        crate::batches::refresh(&s.db, &s.publisher, batch).await?;
    }
    Ok(Json(json!({ "status": "ok", "seq": seq })))
}

pub const CANCELLED: &str = "cancelled";

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
    let s = &state.services;
    let job = db::get_job(&s.db, user.user_id, &job_id).await?.ok_or_else(not_found)?;
    if job.stage == "completed" || job.stage == "failed" {
        return Err(ApiError::Conflict(format!("the job has already {}", job.stage)));
    }
    let document_id = job.document_id.map(|d| d.to_string()).unwrap_or_default();
    let result = JobResult {
        job_try: 0,
        function: PROCESS_DOCUMENT.into(),
        args: vec![PyValue::Str(document_id), PyValue::Str(user.user_id.to_string())],
        kwargs: vec![],
        enqueue_time_ms: job.created_at.timestamp_millis(),
        success: false,
        result: cancelled_error(),
        start_ms: now_ms(),
        finish_ms: now_ms(),
        queue: s.queue.name.clone(),
        job_id: job_id.clone(),
    };
    let keep_ms = (s.settings.queue.keep_result_secs * 1000) as i64;
    match s.queue.cancel(&job_id, &result, keep_ms).await? {
        CancelOutcome::Queued | CancelOutcome::Unknown => {
            crate::jobs::record_failure(s, &job_id, CANCELLED).await;
        }
        CancelOutcome::Running => {
            // Wait (briefly) for the worker to confirm.
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                let now = db::get_job(&s.db, user.user_id, &job_id).await?.ok_or_else(not_found)?;
                if now.stage == "failed" || now.stage == "completed" {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok((
                        StatusCode::ACCEPTED,
                        Json(json!({ "job_id": job_id, "status": "cancelling" })),
                    ));
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    let now = db::get_job(&s.db, user.user_id, &job_id).await?.ok_or_else(not_found)?;
    let status = if now.stage == "failed" {
        "cancelled"
    } else {
        now.stage.as_str()
    };
    Ok((StatusCode::OK, Json(json!({ "job_id": job_id, "status": status }))))
}
