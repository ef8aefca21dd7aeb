//! `POST /api/v1/batches` (several files as one batch: all stored and
//! queued, or none; `Idempotency-Key` honoured) and `GET /api/v1/batches/{id}`
//! (its aggregated state and documents).

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use uuid::Uuid;

use super::auth::AuthUser;
use super::documents::{charge_uploads, idempotency_key, read_files, submit, UploadedFile};
use super::error::ApiError;
use super::AppState;
use crate::batches;
use crate::jobs::submit::Submission;

/// Most files one batch may hold.
pub const MAX_BATCH_FILES: usize = 1000;

#[utoipa::path(post, path = "/api/v1/batches", operation_id = "batches_create", tag = "batches",
    request_body(content = crate::http::openapi::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Batch accepted", body = crate::http::openapi::BatchAccepted),
        (status = 400, description = "No file, or too many", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "A file is too large", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "Too many uploads this minute", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    multipart: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = idempotency_key(&headers)?;
    let files = read_files(multipart, state.services.settings.http.max_upload_bytes).await?;
    if files.is_empty() {
        return Err(ApiError::BadRequest(
            "the batch has no file (send multipart fields with filenames)".into(),
        ));
    }
    if files.len() > MAX_BATCH_FILES {
        return Err(ApiError::BadRequest(format!(
            "a batch holds at most {MAX_BATCH_FILES} files"
        )));
    }
    charge_uploads(&state, user.user_id, files.len() as u32).await?;
    submit(
        &state,
        Submission {
            owner: user.user_id,
            uploads: files.into_iter().map(UploadedFile::into_upload).collect(),
            batch: true,
            enqueue: true,
            idempotency_key: key,
        },
    )
    .await
}

#[utoipa::path(get, path = "/api/v1/batches/{id}", operation_id = "batches_get", tag = "batches",
    params(("id" = String, Path, description = "Batch id")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "The batch", body = crate::batches::BatchView),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::NotFound("no such batch".into());
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let view = batches::view(&state.services.db, user.user_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(serde_json::to_value(view).map_err(anyhow::Error::from)?))
}
