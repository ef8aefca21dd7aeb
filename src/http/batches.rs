//! `POST /api/v1/batches` (several files as one batch: all stored and
//! queued, or none; `Idempotency-Key` and `on_duplicate` honoured; files the
//! user already has are reported, not made members) and
//! `GET /api/v1/batches/{id}` (its aggregated state and documents).

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use uuid::Uuid;

use super::auth::AuthUser;
use super::documents::{charge_uploads, idempotency_key, on_duplicate, read_files, submit, UploadedFile};
use super::error::ApiError;
use super::AppState;
use crate::batches;
use crate::jobs::submit::Submission;

/// Most files one batch may hold.
pub const MAX_BATCH_FILES: usize = 1000;

#[derive(serde::Deserialize)]
pub struct BatchQuery {
    /// `existing` (default), `replace` or `keep`.
    on_duplicate: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/batches", operation_id = "batches_create", tag = "batches",
    params(("on_duplicate" = Option<crate::http::openapi::OnDuplicateParam>, Query, description = "As for `POST /api/v1/documents`. Duplicates are listed in `documents` with `duplicate_of` and counted in `duplicates`, not in `total`: the batch holds only the documents it created.")),
    request_body(content = crate::http::openapi::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Every file is one you already have: no batch is created (`batch_id` null)", body = crate::http::openapi::BatchAccepted),
        (status = 202, description = "Batch accepted", body = crate::http::openapi::BatchAccepted),
        (status = 409, description = "on_duplicate=replace of a document whose job is still queued or running", body = crate::http::openapi::ErrorBody),
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
    Query(q): Query<BatchQuery>,
    multipart: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = idempotency_key(&headers)?;
    on_duplicate(q.on_duplicate.as_deref(), None)?;
    let form = read_files(multipart, state.services.settings.http.max_upload_bytes).await?;
    let on_duplicate = on_duplicate(q.on_duplicate.as_deref(), form.on_duplicate.as_deref())?;
    let files = form.files;
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
            on_duplicate,
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
