//! Documents: upload (multipart files, or `{"url": ...}`), list, inspect,
//! delete. Uploads go to the job lifecycle ([`crate::jobs::submit`]): every
//! file stored and queued, or none; an `Idempotency-Key` makes a retry safe;
//! a file the user already has answers with its document (`on_duplicate`).

use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::AuthUser;
use super::error::ApiError;
use super::AppState;
use crate::db;
use crate::domain::job_id_for;
use crate::jobs::submit::{OnDuplicate, Submission, SubmitError, Upload};

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

/// Counts `n` uploads against the user's per-minute budget (shared by
/// every instance); above it: 429 with the seconds until the window turns.
pub async fn charge_uploads(state: &AppState, user: Uuid, n: u32) -> Result<(), ApiError> {
    crate::jobs::limits::charge_uploads(&state.services, user, n)
        .await
        .map_err(|e| ApiError::TooManyRequests {
            message: e.to_string(),
            retry_after_secs: e.retry_after_secs,
        })
}

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::BadRequest("Idempotency-Key must be 1–255 visible ASCII characters".into()))?;
    Ok(Some(key.to_string()))
}

/// `on_duplicate` from the query string and/or a multipart form field:
/// `existing` (the default), `replace` or `keep`; anything else, or two
/// different values, is refused.
pub fn on_duplicate(query: Option<&str>, form: Option<&str>) -> Result<OnDuplicate, ApiError> {
    let parse = |raw: &str| {
        OnDuplicate::parse(raw.trim()).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "on_duplicate must be one of {} (got “{raw}”)",
                OnDuplicate::ALLOWED
            ))
        })
    };
    let q = query.map(parse).transpose()?;
    let f = form.map(parse).transpose()?;
    match (q, f) {
        (Some(a), Some(b)) if a != b => Err(ApiError::BadRequest(format!(
            "on_duplicate is {} in the query but {} in the form; send one",
            a.as_str(),
            b.as_str()
        ))),
        (a, b) => Ok(a.or(b).unwrap_or_default()),
    }
}

/// Stores and queues everything, or nothing; maps the lifecycle's errors.
/// 202 when something was queued, 200 when every file was a duplicate
/// answered with the user's existing document.
pub async fn submit(state: &AppState, sub: Submission) -> Result<(StatusCode, Json<Value>), ApiError> {
    match crate::jobs::submit::submit(&state.services, sub).await {
        Ok(done) => {
            if done.replayed {
                tracing::info!("idempotent retry answered from the stored response");
            }
            let status = if done.queued {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(done.body)))
        }
        Err(e @ SubmitError::ReplaceBusy { .. }) => Err(ApiError::Conflict(e.to_string())),
        Err(SubmitError::KeyReused) => Err(ApiError::Unprocessable(
            "this Idempotency-Key was used for a different request".into(),
        )),
        Err(SubmitError::Db(e)) => Err(e.into()),
        Err(SubmitError::Injected(k)) => Err(ApiError::Internal(anyhow::anyhow!(
            "injected fault while storing file {k}; nothing was stored"
        ))),
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

impl UploadedFile {
    pub fn into_upload(self) -> Upload {
        Upload {
            name: self.name,
            content_type: self.content_type,
            content: Some(self.bytes),
            url: None,
        }
    }
}

/// The files of a multipart body, and its `on_duplicate` form field.
pub struct UploadedForm {
    pub files: Vec<UploadedFile>,
    pub on_duplicate: Option<String>,
}

/// Longest plain form field kept (`on_duplicate`).
const MAX_FORM_FIELD: usize = 64;

/// Reads every file field of a multipart body, enforcing the per-file
/// limit, and the `on_duplicate` field.
pub async fn read_files(mut multipart: Multipart, max_file: u64) -> Result<UploadedForm, ApiError> {
    let mut files = Vec::new();
    let mut on_duplicate = None;
    loop {
        let field = multipart.next_field().await.map_err(multipart_error)?;
        let Some(mut field) = field else { break };
        let Some(file_name) = field.file_name().map(clean_name) else {
            if field.name() == Some("on_duplicate") {
                let value = field.text().await.map_err(multipart_error)?;
                if value.len() > MAX_FORM_FIELD {
                    return Err(ApiError::BadRequest(format!(
                        "on_duplicate must be one of {}",
                        OnDuplicate::ALLOWED
                    )));
                }
                on_duplicate = Some(value);
            }
            // Other plain form fields carry no file; ignore them.
            continue;
        };
        let content_type = clean_content_type(field.content_type());
        let mut bytes = Vec::new();
        while let Some(piece) = field.chunk().await.map_err(multipart_error)? {
            if bytes.len() as u64 + piece.len() as u64 > max_file {
                return Err(ApiError::PayloadTooLarge(format!(
                    "“{file_name}” is larger than the upload limit of {}",
                    crate::units::human_bytes(max_file)
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
    Ok(UploadedForm { files, on_duplicate })
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
    /// `existing` (default), `replace` or `keep`.
    on_duplicate: Option<String>,
}

/// `POST /api/v1/documents`: 202 with `{document_id, job_id, status}` for one
/// file or a URL, a JSON array of those for several files; 200 when every
/// file is one the user already has (each entry then names it in `duplicate_of`).
#[utoipa::path(post, path = "/api/v1/documents", operation_id = "documents_upload", tag = "documents",
    params(
        ("enqueue" = Option<bool>, Query, description = "false: store only; the caller's arq client enqueues `doc:{id}`"),
        ("on_duplicate" = Option<crate::http::openapi::OnDuplicateParam>, Query, description = "What a file whose bytes you already have in a document that has not failed does: `existing` (default: answer with that document, store nothing), `replace` (re-process that document, same ids; 409 while its job is queued or running), `keep` (a second document). Also accepted as a multipart form field. URL uploads are not deduplicated."),
    ),
    request_body(content(
        (crate::http::openapi::UploadForm = "multipart/form-data"),
        (UrlUpload = "application/json"),
    )),
    responses(
        (status = 200, description = "Every file is one you already have: the existing documents (`duplicate_of`), nothing stored", body = crate::http::openapi::UploadAccepted),
        (status = 202, description = "Accepted and queued (entries that are duplicates carry `duplicate_of`; a replaced one `replaced: true`)", body = crate::http::openapi::UploadAccepted),
        (status = 409, description = "on_duplicate=replace of a document whose job is still queued or running", body = crate::http::openapi::ErrorBody),
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
    let key = idempotency_key(req.headers())?;
    // Checked up front (a URL upload too), so a typo is never silently ignored.
    let query_dup = on_duplicate(q.on_duplicate.as_deref(), None)?;
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
        let upload = Upload {
            name,
            content_type: "application/octet-stream".into(),
            content: None,
            url: Some(url.to_string()),
        };
        return submit(
            &state,
            Submission {
                owner: user.user_id,
                uploads: vec![upload],
                batch: false,
                enqueue,
                idempotency_key: key,
                on_duplicate: query_dup,
            },
        )
        .await;
    }
    if !ct.starts_with("multipart/form-data") {
        return Err(ApiError::UnsupportedMediaType(
            "send multipart/form-data with one or more files, or JSON {\"url\": ...}".into(),
        ));
    }
    let multipart = Multipart::from_request(req, &state)
        .await
        .map_err(|e| ApiError::BadRequest(format!("the multipart body is malformed: {}", e.body_text())))?;
    let form = read_files(multipart, state.services.settings.http.max_upload_bytes).await?;
    let on_duplicate = on_duplicate(q.on_duplicate.as_deref(), form.on_duplicate.as_deref())?;
    let files = form.files;
    if files.is_empty() {
        return Err(ApiError::BadRequest(
            "the upload has no file (send a multipart field with a filename)".into(),
        ));
    }
    charge_uploads(&state, user.user_id, files.len() as u32).await?;
    submit(
        &state,
        Submission {
            owner: user.user_id,
            uploads: files.into_iter().map(UploadedFile::into_upload).collect(),
            batch: false,
            enqueue,
            idempotency_key: key,
            on_duplicate,
        },
    )
    .await
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

#[derive(Deserialize)]
pub struct TextQuery {
    page: Option<String>,
}

/// `GET /api/v1/documents/{id}/text?page=N`: the stored text of one page
/// (or, without `page`, the whole text), with its character range in the
/// document's text, so a client can show what a search hit cites.
#[utoipa::path(get, path = "/api/v1/documents/{id}/text", operation_id = "documents_text", tag = "documents",
    params(
        ("id" = String, Path, description = "Document id"),
        ("page" = Option<i32>, Query, minimum = 1, description = "1-based page; without it, the whole text"),
    ),
    responses(
        (status = 200, description = "The page's text and where it is in the document's text", body = crate::db::PageText),
        (status = 400, description = "A page that is not a number of the document's pages", body = crate::http::openapi::ErrorBody),
        (status = 401, description = "No valid token", body = crate::http::openapi::ErrorBody),
        (status = 404, description = "Not found (or not yours)", body = crate::http::openapi::ErrorBody),
        (status = 409, description = "The text is not stored yet (the job has not completed)", body = crate::http::openapi::ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn text(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    Query(q): Query<TextQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let page = match q.page.as_deref() {
        None => None,
        Some(p) => Some(
            p.parse::<i32>()
                .map_err(|_| ApiError::BadRequest("page must be a positive integer".into()))?,
        ),
    };
    match db::page_text(&state.services.db, user.user_id, id, page).await? {
        db::PageLookup::NoDocument => Err(ApiError::NotFound("no such document".into())),
        db::PageLookup::NotStored => Err(ApiError::Conflict(
            "the document's text is not stored yet: its job has not completed".into(),
        )),
        db::PageLookup::NoPage { pages } => Err(ApiError::BadRequest(format!("page must be between 1 and {pages}"))),
        db::PageLookup::Found(t) => Ok(Json(serde_json::to_value(t).map_err(anyhow::Error::from)?)),
    }
}
