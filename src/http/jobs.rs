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
use crate::arq::queue::RESULT_PREFIX;
use crate::arq::{now_ms, JobDef, PyValue};
use crate::db::{self, EventRecord};
use crate::domain::{document_id_of, EventType, ProgressEvent, Stage};
use crate::jobs::PROCESS_DOCUMENT;

fn not_found() -> ApiError {
    ApiError::NotFound("no such job".into())
}

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
