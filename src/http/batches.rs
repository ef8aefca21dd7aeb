//! `POST /api/v1/batches` (several files as one batch) and
//! `GET /api/v1/batches/{id}` (its aggregated state and documents).

use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::AuthUser;
use super::documents::{accept, charge_uploads, read_files, Incoming};
use super::error::ApiError;
use super::AppState;
use crate::batches;

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
    multipart: Multipart,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let s = &state.services;
    let id = Uuid::new_v4();
    let mut tx = s.db.begin().await?;
    batches::create(&mut tx, id, user.user_id, files.len()).await?;
    tx.commit().await?;
    let mut documents = Vec::with_capacity(files.len());
    for f in &files {
        let incoming = Incoming {
            name: &f.name,
            content_type: &f.content_type,
            content: Some(&f.bytes),
            url: None,
            batch_id: Some(id),
            enqueue: true,
        };
        documents.push(accept(&state, user.user_id, incoming).await?);
    }
    batches::refresh(&s.db, &s.publisher, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "batch_id": id,
            "job_id": batches::batch_job_id(id),
            "total": files.len(),
            "status": "queued",
            "documents": documents,
        })),
    ))
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
