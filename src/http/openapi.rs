//! The OpenAPI 3.1 document of the HTTP API, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types' schemas, served at
//! `GET /api/v1/openapi.json`.

use axum::Json;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

use crate::analytics::{ContentTypeStats, StageStats};
use crate::batches::{BatchDocument, BatchView};
use crate::db::{AdminJob, DocumentView, JobView, PageText};
use crate::domain::{EventType, ProgressEvent, Stage};
use crate::recovery::Action;
use crate::search::{HighlightRange, SearchHit};

/// Every error: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unsupported_media_type`, `rate_limited`, `unavailable`, `internal`.
    pub code: String,
    pub message: String,
}

/// A document accepted for processing, or the existing document a
/// duplicate file is answered with.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub document_id: Uuid,
    /// `doc:{document_id}`
    pub job_id: String,
    /// `queued` for a new (or replaced) document; for a duplicate, the
    /// existing document's current stage.
    pub status: String,
    /// Present (false) when the upload asked `?enqueue=false`.
    pub enqueued: Option<bool>,
    /// Present when the file's bytes are those of a document you already
    /// have (or of an earlier file of the same request): that document's
    /// id, the same as `document_id`. Nothing new was stored for it.
    pub duplicate_of: Option<Uuid>,
    /// Present (true) when `on_duplicate=replace` re-queued that document.
    pub replaced: Option<bool>,
    /// With `replaced`: the `seq` of the new run's `job_queued` event (the
    /// job's events up to it are the earlier run's).
    pub seq: Option<i64>,
}

/// `on_duplicate`: what a file you already have does.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum OnDuplicateParam {
    /// Answer with the existing document (the default).
    Existing,
    /// Re-process the existing document into the same ids.
    Replace,
    /// Store a second document on purpose.
    Keep,
}

/// One file or a URL: one object; several files: an array, in upload order.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum UploadAccepted {
    One(Accepted),
    Many(Vec<Accepted>),
}

/// Multipart form: one or more parts with a filename.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1)]
    pub file: Vec<Vec<u8>>,
    /// As the `on_duplicate` query parameter (the two must agree when both are sent).
    pub on_duplicate: Option<OnDuplicateParam>,
}

#[derive(Serialize, ToSchema)]
pub struct DocumentList {
    pub documents: Vec<DocumentView>,
}

#[derive(Serialize, ToSchema)]
pub struct History {
    pub job_id: String,
    pub events: Vec<ProgressEvent>,
}

#[derive(Serialize, ToSchema)]
pub struct JobQueued {
    pub job_id: String,
    pub document_id: Uuid,
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct CancelResult {
    pub job_id: String,
    /// `cancelled`, or `cancelling` when the worker has not confirmed yet.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProgressAck {
    pub status: String,
    pub seq: i64,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub query: String,
    /// The mode used: hybrid, semantic or keyword.
    pub mode: String,
    pub model: String,
    pub results: Vec<SearchHit>,
}

#[derive(Serialize, ToSchema)]
pub struct BatchAccepted {
    /// Null when every file was a duplicate (no batch was created).
    pub batch_id: Option<Uuid>,
    /// `batch:{batch_id}`: the batch's own progress job (null without a batch).
    pub job_id: Option<String>,
    /// The documents the batch created (its members).
    pub total: i64,
    /// Entries answered with an existing document (`duplicate_of`): not members.
    pub duplicates: i64,
    /// `queued`, or `duplicate` when no batch was created.
    pub status: String,
    /// Every file, in upload order.
    pub documents: Vec<Accepted>,
}

#[derive(Serialize, ToSchema)]
pub struct Analytics {
    /// The caller's user id, another user's (admin), or `all` (admin).
    pub scope: String,
    pub stages: Vec<StageStats>,
    pub by_content_type: Vec<ContentTypeStats>,
}

#[derive(Serialize, ToSchema)]
pub struct Recovery {
    pub dry_run: bool,
    pub actions: Vec<Action>,
}

#[derive(Serialize, ToSchema)]
pub struct ReembedStarted {
    /// The configured model the documents are re-embedded with.
    pub model: String,
    /// Re-embeds queued by this call.
    pub queued: i64,
    /// Re-embeds queued or running from before.
    pub under_way: i64,
    /// Documents being processed normally (they get the configured model anyway).
    pub processing: i64,
    /// Users whose search moved to the configured model in this call.
    pub users_switched: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ModelCount {
    pub model: String,
    pub documents: i64,
}

#[derive(Serialize, ToSchema)]
pub struct ReembedStatus {
    pub model: String,
    pub engine: String,
    /// Documents by the model search uses for them.
    pub documents_by_model: Vec<ModelCount>,
    pub on_configured_model: i64,
    /// Documents still searched with another model.
    pub remaining: i64,
    /// Re-embed jobs queued or running.
    pub pending: i64,
    /// Re-embed jobs that failed (a new start runs them again).
    pub failed: i64,
    /// Every document is on the configured model.
    pub done: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AdminJobs {
    pub jobs: Vec<AdminJob>,
}

#[derive(Serialize, ToSchema)]
pub struct Alive {
    /// `ok`, or `dead` with a reason.
    pub status: String,
    /// Which actor of the tree did not answer.
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    pub database: bool,
    pub redis: bool,
    /// The actor tree answered its liveness ping.
    pub workers: bool,
    /// Which actor of the tree did not answer, if any.
    pub tree: Option<String>,
    pub draining: bool,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "doculearn",
        description = "Turns uploaded documents into searchable vectors and shows every user, live, how far each document has come. Progress also streams on `GET /api/v1/ws/{user_id}` (WebSocket).",
    ),
    paths(
        super::documents::upload,
        super::documents::list,
        super::documents::get,
        super::documents::delete,
        super::documents::text,
        super::batches::create,
        super::batches::get,
        super::jobs::get,
        super::jobs::history,
        super::jobs::retry,
        super::jobs::cancel,
        super::jobs::external_progress,
        super::search::search,
        super::analytics::processing,
        super::admin::recover_stalled,
        super::admin::jobs,
        super::admin::reembed_start,
        super::admin::reembed_status,
        super::ws::handler,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, Accepted, OnDuplicateParam, UploadAccepted, UploadForm, DocumentList, DocumentView, JobView,
        History, ProgressEvent, EventType, Stage, JobQueued, CancelResult, ProgressAck, SearchResults, SearchHit, HighlightRange, PageText,
        BatchAccepted, BatchView, BatchDocument, Analytics, StageStats, ContentTypeStats, Recovery, Action,
        AdminJobs, AdminJob, Alive, Readiness, ReembedStarted, ReembedStatus, ModelCount,
        super::documents::UrlUpload, super::search::SearchRequest, super::jobs::ExternalProgress,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "documents"), (name = "batches"), (name = "jobs"), (name = "search"),
        (name = "analytics"), (name = "admin"), (name = "progress"), (name = "operations"),
    )
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
