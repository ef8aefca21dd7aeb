//! Documents: upload (multipart files, or `{"url": ...}`), list, inspect,
//! delete. An accepted document is stored, gets its `queued` job row and
//! first event, and is enqueued on the arq queue as `doc:{id}`.

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::db::{self, EventRecord, NewDocument};
use crate::domain::{job_id_for, EventType, ProgressEvent, Stage};

/// A file name safe to store and show: no path, no control characters, at
/// most 255 characters.
pub fn clean_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or(raw);
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim().trim_matches('.').trim();
    if cleaned.is_empty() {
        "upload".to_string()
    } else {
        cleaned.to_string()
    }
}

/// A declared content type, reduced to `type/subtype` (it is only a hint).
pub fn clean_content_type(raw: Option<&str>) -> String {
    let ct = raw.unwrap_or("application/octet-stream");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let valid = essence.len() <= 100
        && essence.split('/').count() == 2
        && essence
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/.+-_".contains(c));
    if valid {
        essence
    } else {
        "application/octet-stream".into()
    }
}

/// Counts `n` uploads against the user's per-minute budget (a fixed window
/// in Redis, so every instance shares it). Above the budget: 429 with the
/// seconds until the window turns.
pub async fn charge_uploads(state: &AppState, user: Uuid, n: u32) -> Result<(), ApiError> {
    let limit = state.services.settings.http.uploads_per_minute;
    if limit == 0 || n == 0 {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp();
    let window = now / 60;
    let key = format!("doculearn:ratelimit:uploads:{user}:{window}");
    let mut con = state.services.redis.clone();
    let used: Result<(u64, ()), _> = redis::pipe()
        .atomic()
        .incr(&key, n)
        .expire(&key, 120)
        .query_async(&mut con)
        .await;
    match used {
        Ok((used, ())) if used > limit as u64 => Err(ApiError::TooManyRequests {
            message: format!("more than {limit} uploads in a minute; try again shortly"),
            retry_after_secs: (60 - now % 60).max(1) as u64,
        }),
        Ok(_) => Ok(()),
        // Without Redis the upload could not be queued anyway; let it report that.
        Err(e) => {
            tracing::warn!(error = %e, "upload rate limit unavailable");
            Ok(())
        }
    }
}

/// One document to accept.
pub struct Incoming<'a> {
    pub name: &'a str,
    pub content_type: &'a str,
    pub content: Option<&'a [u8]>,
    pub url: Option<&'a str>,
    pub batch_id: Option<Uuid>,
    /// `false`: the caller's own arq client enqueues the job.
    pub enqueue: bool,
}

/// Stores a document and enqueues its job. Returns `{document_id, job_id, status}`.
pub async fn accept(state: &AppState, owner: Uuid, incoming: Incoming<'_>) -> Result<Value, ApiError> {
    let Incoming {
        name,
        content_type,
        content,
        url,
        batch_id,
        enqueue,
    } = incoming;
    let s = &state.services;
    let id = Uuid::new_v4();
    let job_id = job_id_for(id);
    let sha = content.map(|c| hex::encode(Sha256::digest(c)));
    let doc = NewDocument {
        id,
        owner_id: owner,
        name,
        content_type,
        content,
        sha256: sha.as_deref(),
        source_url: url,
        batch_id,
    };
    let message = "Document processing queued";
    let details = json!({});
    let timestamp = chrono::Utc::now();
    let mut tx = s.db.begin().await?;
    db::insert_document(&mut tx, &doc, &job_id, enqueue).await?;
    let seq = db::record_event(
        &mut *tx,
        &EventRecord {
            job_id: &job_id,
            attempt: 0,
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
    .ok_or_else(|| anyhow::anyhow!("new job row not found"))?;
    tx.commit().await?;

    if enqueue {
        match crate::fairness::admit(s, owner, &job_id, id).await {
            Ok(admission) => {
                if admission == crate::fairness::Admission::Held {
                    tracing::info!(job_id = %job_id, user_id = %owner, "job held back for fairness");
                }
            }
            Err(e) => {
                tracing::error!(job_id = %job_id, error = %e, "cannot enqueue");
                let _ = db::delete_document(&s.db, owner, id).await;
                return Err(ApiError::Unavailable(
                    "the job queue is unavailable; try again shortly".into(),
                ));
            }
        }
    }
    let event = ProgressEvent {
        kind: EventType::JobQueued,
        job_id: job_id.clone(),
        document_id: Some(id),
        batch_id,
        stage: Stage::Queued,
        progress: 0.0,
        message: message.into(),
        details,
        error: None,
        seq,
        attempt: 0,
        timestamp,
        document_name: Some(name.to_string()),
    };
    s.publisher.publish(owner, &event).await;
    tracing::info!(document_id = %id, job_id = %job_id, user_id = %owner, bytes = content.map(|c| c.len()).unwrap_or(0), "document accepted");
    if enqueue {
        Ok(json!({ "document_id": id, "job_id": job_id, "status": "queued" }))
    } else {
        Ok(json!({ "document_id": id, "job_id": job_id, "status": "queued", "enqueued": false }))
    }
}

/// `{"url": "https://…"}`: a document to fetch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UrlUpload {
    /// An http or https URL.
    #[schema(pattern = "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$", max_length = 4096)]
    url: String,
    /// Display name (default: the URL's last path segment).
    name: Option<String>,
}

/// One file read from a multipart upload.
pub struct UploadedFile {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Reads every file field of a multipart body, enforcing the per-file limit.
pub async fn read_files(mut multipart: Multipart, max_file: u64) -> Result<Vec<UploadedFile>, ApiError> {
    let mut files = Vec::new();
    loop {
        let field = multipart.next_field().await.map_err(multipart_error)?;
        let Some(mut field) = field else { break };
        let Some(file_name) = field.file_name().map(clean_name) else {
            // Plain form fields carry no file; ignore them.
            continue;
        };
        let content_type = clean_content_type(field.content_type());
        let mut bytes = Vec::new();
        while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
            if bytes.len() as u64 + piece.len() as u64 > max_file {
                return Err(ApiError::PayloadTooLarge(format!(
                    "“{file_name}” is larger than the upload limit of {max_file} bytes"
                )));
            }
            bytes.extend_from_slice(&piece);
        }
        files.push(UploadedFile {
            name: file_name,
            content_type,
            bytes,
        });
    }
    Ok(files)
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge("the upload is larger than the request limit".into())
    } else {
        ApiError::BadRequest(format!("the multipart body is malformed: {}", e.body_text()))
    }
}

fn url_name(url: &reqwest::Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .filter(|s| !s.is_empty());
    clean_name(&last.unwrap_or_else(|| url.host_str().unwrap_or("download").to_string()))
}

#[derive(Deserialize)]
pub struct UploadQuery {
    /// `false`: store the document and its `queued` job row, but leave the
    /// enqueueing to the caller's own arq client (a Python backend).
    enqueue: Option<bool>,
}

/// `POST /api/v1/documents`: 202 with `{document_id, job_id, status}` for one
/// file or a URL, a JSON array of those for several files.
#[utoipa::path(post, path = "/api/v1/documents", operation_id = "documents_upload", tag = "documents",
    params(("enqueue" = Option<bool>, Query, description = "false: store only; the caller's arq client enqueues `doc:{id}`")),
    request_body(content(
        (crate::http::openapi::UploadForm = "multipart/form-data"),
        (UrlUpload = "application/json"),
    )),
    responses(
        (status = 202, description = "Accepted and queued", body = crate::http::openapi::UploadAccepted),
        (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 413, description = "A file is above http.max_upload_bytes", body = crate::http::openapi::ErrorBody),
        (status = 415, description = "Neither multipart nor JSON", body = crate::http::openapi::ErrorBody),
        (status = 429, description = "Too many uploads this minute (Retry-After)", body = crate::http::openapi::ErrorBody),
        (status = 503, description = "Queue or database unavailable", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<UploadQuery>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let enqueue = q.enqueue.unwrap_or(true);
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/json") {
        let Json(body) = Json::<UrlUpload>::from_request(req, &state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"url\": \"https://...\"}}: {}", e.body_text())))?;
        let url = reqwest::Url::parse(body.url.trim())
            .map_err(|_| ApiError::BadRequest(format!("“{}” is not a valid URL", body.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ApiError::BadRequest("only http and https URLs can be ingested".into()));
        }
        let name = body.name.as_deref().map(clean_name).unwrap_or_else(|| url_name(&url));
        charge_uploads(&state, user.user_id, 1).await?;
        let incoming = Incoming {
            name: &name,
            content_type: "application/octet-stream",
            content: None,
            url: Some(url.as_str()),
            batch_id: None,
            enqueue,
        };
        let out = accept(&state, user.user_id, incoming).await?;
        return Ok((StatusCode::ACCEPTED, Json(out)));
    }
    if !ct.starts_with("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType(
            "send multipart/form-data with one or more files, or JSON {\"url\": ...}".into(),
        ));
    }
    let multipart = Multipart::from_request(req, &state)
        .await
        .map_err(|e| ApiError::BadRequest(format!("the multipart body is malformed: {}", e.body_text())))?;
    let files = read_files(multipart, state.services.settings.http.max_upload_bytes).await?;
    if files.is_empty() {
        return Err(ApiError::BadRequest(
            "the upload has no file (send a multipart field with a filename)".into(),
        ));
    }
    charge_uploads(&state, user.user_id, files.len() as u32).await?;
    let mut out = Vec::with_capacity(files.len());
    for f in &files {
        let incoming = Incoming {
            name: &f.name,
            content_type: &f.content_type,
            content: Some(&f.bytes),
            url: None,
            batch_id: None,
            enqueue,
        };
        out.push(accept(&state, user.user_id, incoming).await?);
    }
    let body = if out.len() == 1 {
        out.pop().expect("one")
    } else {
        Value::Array(out)
    };
    Ok((StatusCode::ACCEPTED, Json(body)))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/documents", operation_id = "documents_list", tag = "documents",
    params(("limit" = Option<i64>, Query, description = "1–1000, default 200")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "The caller's documents, newest first", body = crate::http::openapi::DocumentList),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let docs = db::list_documents(&state.services.db, user.user_id, limit).await?;
    Ok(Json(json!({ "documents": docs })))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("no such document".into()))
}

#[utoipa::path(get, path = "/api/v1/documents/{id}", operation_id = "documents_get", tag = "documents",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 200, description = "The document and its job's state", body = crate::db::DocumentView),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let doc = db::get_document(&state.services.db, user.user_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such document".into()))?;
    Ok(Json(serde_json::to_value(doc).map_err(anyhow::Error::from)?))
}

#[utoipa::path(delete, path = "/api/v1/documents/{id}", operation_id = "documents_delete", tag = "documents",
    params(("id" = String, Path, description = "Document id")),
    responses(
        (status = 400, description = "Malformed path, query or body", body = crate::http::openapi::ErrorBody),
        (status = 204, description = "Deleted with its vectors"),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if !db::delete_document(&state.services.db, user.user_id, id).await? {
        return Err(ApiError::NotFound("no such document".into()));
    }
    // A queued job would only find its document gone; stop it early if it is still here.
    let job_id = job_id_for(id);
    let _ = ractor::call_t!(
        state.supervisor,
        |reply| crate::actors::SupervisorMsg::Cancel { job_id, reply },
        1000
    );
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever a client sends as a file name, what we store is a bare,
        /// printable name of at most 255 characters.
        #[test]
        fn any_upload_name_is_cleaned(raw in any::<String>()) {
            let name = clean_name(&raw);
            prop_assert!(!name.is_empty());
            prop_assert!(name.chars().count() <= 255);
            prop_assert!(!name.contains('/') && !name.contains('\\'));
            prop_assert!(!name.chars().any(char::is_control));
            prop_assert!(name != "." && name != "..");
        }

        /// Whatever a client declares as a content type, we keep a harmless
        /// `type/subtype` (it is only ever a hint; the bytes decide).
        #[test]
        fn any_content_type_is_cleaned(raw in any::<Option<String>>()) {
            let ct = clean_content_type(raw.as_deref());
            prop_assert!(ct.len() <= 100);
            prop_assert_eq!(ct.matches('/').count(), 1);
            prop_assert!(ct.chars().all(|c| c.is_ascii_alphanumeric() || "/.+-_".contains(c)));
        }

        /// Sniffing never panics on any bytes and never calls a non-PDF a PDF.
        #[test]
        fn sniffing_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048), name in ".{0,40}") {
            let kind = crate::pipeline::extract::sniff::sniff(&bytes, &name, "application/pdf");
            if kind == crate::pipeline::extract::Kind::Pdf {
                prop_assert!(bytes.windows(5).any(|w| w == b"%PDF-"));
            }
        }
    }

    #[test]
    fn names_and_types_are_cleaned() {
        assert_eq!(clean_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_name("C:\\x\\report.pdf"), "report.pdf");
        assert_eq!(clean_name("a\u{0}b\nc.pdf"), "abc.pdf");
        assert_eq!(clean_name(""), "upload");
        assert_eq!(clean_name(".."), "upload");
        assert_eq!(clean_name(&"x".repeat(1000)).len(), 255);
        assert_eq!(
            clean_content_type(Some("Application/PDF; charset=x")),
            "application/pdf"
        );
        assert_eq!(clean_content_type(Some("evil\r\nheader")), "application/octet-stream");
        assert_eq!(clean_content_type(None), "application/octet-stream");
    }
}
