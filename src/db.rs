//! Every SQL statement the daemon runs, grouped by table. Writes that a
//! worker makes on behalf of a job are fenced by the job's `attempt`: a stale
//! worker's write matches no row and changes nothing.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, ConnectOptions, Executor, PgPool, Postgres, Row};
use std::str::FromStr;
use uuid::Uuid;

use crate::domain::{EventType, ProgressEvent, Stage};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The small pool `resume` replays run on. Its few connections are the
/// back-pressure of a reconnect storm: waiting for one is expected there,
/// so a slow acquire is not a warning each (10,000 sockets resuming at once
/// logged 10,000 of them), and a replay waits up to a minute for one rather
/// than fail after 10 s: a failed replay closes its socket, and the client's
/// reconnect and second `resume` only add to the queue it was in (measured
/// with the fan-out bench: 10,000 sockets told to resync at once, ~2,000 of
/// them closed that way after 10 s). Live events wait meanwhile, in the
/// socket's bounded channel.
pub async fn connect_history(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(60))
        .acquire_slow_threshold(std::time::Duration::from_secs(3600))
        .connect_with(PgConnectOptions::from_str(url)?)
        .await?;
    Ok(pool)
}

/// Opens the pool, creating the database first when allowed and missing.
pub async fn connect(url: &str, max_connections: u32, create_if_missing: bool) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?;
    if create_if_missing {
        let db_name = options.get_database().unwrap_or("postgres").to_string();
        let admin = options.clone().database("postgres");
        let mut conn = admin.connect().await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&db_name)
            .fetch_one(&mut conn)
            .await?;
        if !exists {
            let ident = db_name.replace('"', "\"\"");
            // CREATE DATABASE takes no bind parameters; the name is quoted above.
            match conn
                .execute(AssertSqlSafe(format!("CREATE DATABASE \"{ident}\"")))
                .await
            {
                Ok(_) => tracing::info!(database = %db_name, "created database"),
                // Two instances starting at once: the loser sees duplicate_database.
                Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect_with(options)
        .await?;
    Ok(pool)
}

// ---------------------------------------------------------------- documents

/// A document as its owner sees it, with its job's state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DocumentView {
    pub id: Uuid,
    pub name: String,
    pub content_type: String,
    pub detected_type: Option<String>,
    pub size_bytes: i64,
    pub sha256: Option<String>,
    pub source_url: Option<String>,
    pub batch_id: Option<Uuid>,
    pub pages: Option<i32>,
    pub chunk_count: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub job_id: String,
    pub stage: String,
    pub progress: f64,
    pub message: Option<String>,
    pub error: Option<String>,
    pub failed_stage: Option<String>,
    pub attempt: i32,
    pub seq: i64,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Text lost while reading the document, in sentences (empty: none).
    pub warnings: Vec<String>,
    /// 1-based pages whose text came from OCR (empty: none).
    pub ocr_pages: Vec<i32>,
    /// Tesseract's mean word confidence over those pages, 0–100.
    pub ocr_confidence: Option<f32>,
}

const DOCUMENT_VIEW_SQL: &str =
    "SELECT d.id, d.name, d.content_type, d.detected_type, d.size_bytes, d.sha256, d.source_url, \
     d.batch_id, d.pages, d.chunk_count, d.created_at, j.job_id, j.stage, j.progress, j.message, j.error, \
     j.failed_stage, j.attempt, j.seq, j.started_at, j.completed_at, d.warnings, d.ocr_pages, d.ocr_confidence \
     FROM documents d JOIN job_progress j ON j.document_id = d.id";

fn document_view(row: &sqlx::postgres::PgRow) -> Result<DocumentView, sqlx::Error> {
    Ok(DocumentView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        content_type: row.try_get("content_type")?,
        detected_type: row.try_get("detected_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        source_url: row.try_get("source_url")?,
        batch_id: row.try_get("batch_id")?,
        pages: row.try_get("pages")?,
        chunk_count: row.try_get("chunk_count")?,
        created_at: row.try_get("created_at")?,
        job_id: row.try_get("job_id")?,
        stage: row.try_get("stage")?,
        progress: row.try_get("progress")?,
        message: row.try_get("message")?,
        error: row.try_get("error")?,
        failed_stage: row.try_get("failed_stage")?,
        attempt: row.try_get("attempt")?,
        seq: row.try_get("seq")?,
        started_at: row.try_get("started_at")?,
        completed_at: row.try_get("completed_at")?,
        warnings: row.try_get("warnings")?,
        ocr_pages: row.try_get("ocr_pages")?,
        ocr_confidence: row.try_get("ocr_confidence")?,
    })
}

pub struct NewDocument<'a> {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: &'a str,
    pub content_type: &'a str,
    pub content: Option<&'a [u8]>,
    pub sha256: Option<&'a str>,
    pub source_url: Option<&'a str>,
    pub batch_id: Option<Uuid>,
}

/// Inserts the document and its `queued` job row. `managed`: doculearn
/// enqueues the job (else the caller's own arq client does).
pub async fn insert_document(
    conn: &mut sqlx::PgConnection,
    doc: &NewDocument<'_>,
    job_id: &str,
    managed: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO documents (id, owner_id, name, content_type, size_bytes, sha256, content, source_url, batch_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(doc.id)
    .bind(doc.owner_id)
    .bind(doc.name)
    .bind(doc.content_type)
    .bind(doc.content.map(|c| c.len() as i64).unwrap_or(0))
    .bind(doc.sha256)
    .bind(doc.content)
    .bind(doc.source_url)
    .bind(doc.batch_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO job_progress (job_id, document_id, user_id, batch_id, stage, progress, message, managed) \
         VALUES ($1, $2, $3, $4, 'queued', 0.0, 'Document processing queued', $5)",
    )
    .bind(job_id)
    .bind(doc.id)
    .bind(doc.owner_id)
    .bind(doc.batch_id)
    .bind(managed)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn list_documents(pool: &PgPool, owner: Uuid, limit: i64) -> Result<Vec<DocumentView>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "{DOCUMENT_VIEW_SQL} WHERE d.owner_id = $1 ORDER BY d.created_at DESC, d.id LIMIT $2"
    )))
    .bind(owner)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(document_view).collect()
}

/// The document if it exists and belongs to `owner` (else `None`: callers answer 404).
pub async fn get_document(pool: &PgPool, owner: Uuid, id: Uuid) -> Result<Option<DocumentView>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "{DOCUMENT_VIEW_SQL} WHERE d.owner_id = $1 AND d.id = $2"
    )))
    .bind(owner)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(document_view).transpose()
}

pub async fn get_document_by_job(
    pool: &PgPool,
    owner: Uuid,
    job_id: &str,
) -> Result<Option<DocumentView>, sqlx::Error> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "{DOCUMENT_VIEW_SQL} WHERE d.owner_id = $1 AND j.job_id = $2"
    )))
    .bind(owner)
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(document_view).transpose()
}

/// Deletes a document with its chunks and job rows; true if it existed.
pub async fn delete_document(pool: &PgPool, owner: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM documents WHERE owner_id = $1 AND id = $2")
        .bind(owner)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What a worker needs to know about a document before processing it.
#[derive(Debug, Clone)]
pub struct DocumentSource {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub content_type: String,
    pub source_url: Option<String>,
    pub has_content: bool,
    pub size_bytes: i64,
}

pub async fn document_source(pool: &PgPool, id: Uuid) -> Result<Option<DocumentSource>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, owner_id, name, content_type, source_url, content IS NOT NULL AS has_content, size_bytes \
         FROM documents WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(DocumentSource {
            id: r.try_get("id")?,
            owner_id: r.try_get("owner_id")?,
            name: r.try_get("name")?,
            content_type: r.try_get("content_type")?,
            source_url: r.try_get("source_url")?,
            has_content: r.try_get("has_content")?,
            size_bytes: r.try_get("size_bytes")?,
        })
    })
    .transpose()
}

pub async fn document_content(pool: &PgPool, id: Uuid) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT content FROM documents WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
}

/// Keeps the bytes a URL document's downloading stage fetched.
pub async fn save_downloaded(
    pool: &PgPool,
    id: Uuid,
    bytes: &[u8],
    sha256: &str,
    content_type: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE documents SET content = $2, size_bytes = $3, sha256 = $4, content_type = $5, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(bytes)
    .bind(bytes.len() as i64)
    .bind(sha256)
    .bind(content_type)
    .execute(pool)
    .await?;
    Ok(())
}

/// What the extracting stage found: the real type, pages and the warnings
/// about lost text (replacing those of an earlier attempt).
pub async fn set_extraction(
    pool: &PgPool,
    id: Uuid,
    detected: &str,
    pages: Option<i32>,
    warnings: &[String],
    ocr: Option<&crate::pipeline::extract::OcrSummary>,
) -> Result<(), sqlx::Error> {
    let ocr_pages: Vec<i32> = ocr
        .map(|o| o.pages.iter().map(|p| *p as i32).collect())
        .unwrap_or_default();
    sqlx::query(
        "UPDATE documents SET detected_type = $2, pages = $3, warnings = $4, ocr_pages = $5, ocr_confidence = $6, \
         updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(detected)
    .bind(pages)
    .bind(warnings)
    .bind(&ocr_pages)
    .bind(ocr.and_then(|o| o.mean_confidence))
    .execute(pool)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- jobs

/// The job row as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub job_id: String,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub stage: String,
    pub progress: f64,
    pub message: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
    pub error: Option<String>,
    pub failed_stage: Option<String>,
    pub attempt: i32,
    pub seq: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub last_update: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub document_name: Option<String>,
    /// Text lost while reading the document, in sentences (empty: none).
    pub warnings: Vec<String>,
}

pub async fn get_job(pool: &PgPool, owner: Uuid, job_id: &str) -> Result<Option<JobView>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT j.job_id, j.document_id, j.batch_id, j.stage, j.progress, j.message, j.details, j.error, \
         j.failed_stage, j.attempt, j.seq, j.created_at, j.started_at, j.last_update, j.completed_at, d.name, \
         COALESCE(d.warnings, '{}') AS warnings \
         FROM job_progress j LEFT JOIN documents d ON d.id = j.document_id \
         WHERE j.job_id = $1 AND j.user_id = $2",
    )
    .bind(job_id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(JobView {
            job_id: r.try_get("job_id")?,
            document_id: r.try_get("document_id")?,
            batch_id: r.try_get("batch_id")?,
            stage: r.try_get("stage")?,
            progress: r.try_get("progress")?,
            message: r.try_get("message")?,
            details: r.try_get::<Option<Json<serde_json::Value>>, _>("details")?.map(|j| j.0),
            error: r.try_get("error")?,
            failed_stage: r.try_get("failed_stage")?,
            attempt: r.try_get("attempt")?,
            seq: r.try_get("seq")?,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            last_update: r.try_get("last_update")?,
            completed_at: r.try_get("completed_at")?,
            document_name: r.try_get("name")?,
            warnings: r.try_get("warnings")?,
        })
    })
    .transpose()
}

/// Makes sure a job row exists for a document job that was enqueued by
/// someone else (a Python backend's `enqueue_job`) rather than our upload route.
pub async fn ensure_job_row(pool: &PgPool, job_id: &str, document_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO job_progress (job_id, document_id, user_id, batch_id, stage, progress, message) \
         SELECT $1, d.id, d.owner_id, d.batch_id, 'queued', 0.0, 'Document processing queued' \
         FROM documents d WHERE d.id = $2 ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(job_id)
    .bind(document_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Who a job belongs to and where it is (for external progress reports).
#[derive(Debug, Clone)]
pub struct JobOwner {
    pub user_id: Uuid,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub document_name: Option<String>,
    pub attempt: i32,
    pub stage: String,
    pub progress: f64,
}

pub async fn job_owner(pool: &PgPool, job_id: &str) -> Result<Option<JobOwner>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT j.user_id, j.document_id, j.batch_id, d.name, j.attempt, j.stage, j.progress \
         FROM job_progress j LEFT JOIN documents d ON d.id = j.document_id WHERE j.job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(JobOwner {
            user_id: r.try_get("user_id")?,
            document_id: r.try_get("document_id")?,
            batch_id: r.try_get("batch_id")?,
            document_name: r.try_get("name")?,
            attempt: r.try_get("attempt")?,
            stage: r.try_get("stage")?,
            progress: r.try_get("progress")?,
        })
    })
    .transpose()
}

/// A job that has not reported for a while.
#[derive(Debug, Clone)]
pub struct IdleJob {
    pub job_id: String,
    pub stage: String,
    pub attempt: i32,
    pub progress: f64,
    pub idle_secs: f64,
    pub user_id: Uuid,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub document_name: Option<String>,
    /// Ever put into Redis (held jobs and jobs a caller has yet to enqueue are not).
    pub enqueued: bool,
    /// The arq function the job row runs.
    pub function: String,
}

/// Unfinished jobs whose last event is older than `min_idle`, longest idle first.
pub async fn idle_jobs(pool: &PgPool, min_idle: std::time::Duration) -> Result<Vec<IdleJob>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT j.job_id, j.stage, j.attempt, j.progress, EXTRACT(EPOCH FROM (now() - j.last_update))::float8 AS idle, \
                j.user_id, j.document_id, j.batch_id, d.name, j.enqueued_at IS NOT NULL AS enqueued, j.function \
         FROM job_progress j LEFT JOIN documents d ON d.id = j.document_id \
         WHERE j.stage NOT IN ('completed', 'failed') AND j.document_id IS NOT NULL \
           AND j.last_update < now() - make_interval(secs => $1) \
         ORDER BY j.last_update LIMIT 1000",
    )
    .bind(min_idle.as_secs_f64())
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(IdleJob {
                job_id: r.try_get("job_id")?,
                stage: r.try_get("stage")?,
                attempt: r.try_get("attempt")?,
                progress: r.try_get("progress")?,
                idle_secs: r.try_get("idle")?,
                user_id: r.try_get("user_id")?,
                document_id: r.try_get("document_id")?,
                batch_id: r.try_get("batch_id")?,
                document_name: r.try_get("name")?,
                enqueued: r.try_get("enqueued")?,
                function: r.try_get("function")?,
            })
        })
        .collect()
}

/// Starts a new attempt only if `seen` is still the current one (so of
/// several instances acting on the same observation, one wins).
pub async fn bump_attempt_if(pool: &PgPool, job_id: &str, seen: i32) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE job_progress SET attempt = attempt + 1, last_update = now() WHERE job_id = $1 AND attempt = $2 RETURNING attempt",
    )
    .bind(job_id)
    .bind(seen)
    .fetch_optional(pool)
    .await
}

/// A job as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AdminJob {
    pub job_id: String,
    pub user_id: Uuid,
    pub document_id: Option<Uuid>,
    pub document_name: Option<String>,
    pub stage: String,
    pub progress: f64,
    pub attempt: i32,
    pub error: Option<String>,
    pub failed_stage: Option<String>,
    pub last_update: DateTime<Utc>,
}

pub async fn admin_jobs(pool: &PgPool, stage: Option<&str>, limit: i64) -> Result<Vec<AdminJob>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT j.job_id, j.user_id, j.document_id, d.name, j.stage, j.progress, j.attempt, j.error, j.failed_stage, j.last_update \
         FROM job_progress j LEFT JOIN documents d ON d.id = j.document_id \
         WHERE ($1::text IS NULL OR j.stage = $1) ORDER BY j.last_update DESC LIMIT $2",
    )
    .bind(stage)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AdminJob {
                job_id: r.try_get("job_id")?,
                user_id: r.try_get("user_id")?,
                document_id: r.try_get("document_id")?,
                document_name: r.try_get("name")?,
                stage: r.try_get("stage")?,
                progress: r.try_get("progress")?,
                attempt: r.try_get("attempt")?,
                error: r.try_get("error")?,
                failed_stage: r.try_get("failed_stage")?,
                last_update: r.try_get("last_update")?,
            })
        })
        .collect()
}

/// Identity of a job as a worker starts it.
#[derive(Debug, Clone)]
pub struct JobStart {
    pub attempt: i32,
    pub user_id: Uuid,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub document_name: Option<String>,
    pub stage: Stage,
    /// Progress the job had reached before this attempt.
    pub progress: f64,
}

/// Begins a new attempt: every later write of this worker is fenced by the
/// returned number. `None` when the job row does not exist (document deleted).
pub async fn begin_attempt(pool: &PgPool, job_id: &str) -> Result<Option<JobStart>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE job_progress j SET attempt = j.attempt + 1, started_at = now(), last_update = now(), \
         error = NULL, failed_stage = NULL, completed_at = NULL, enqueued_at = COALESCE(j.enqueued_at, now()) \
         FROM job_progress old LEFT JOIN documents d ON d.id = old.document_id \
         WHERE j.job_id = $1 AND old.id = j.id \
         RETURNING j.attempt, j.user_id, j.document_id, j.batch_id, d.name, old.stage AS previous_stage, \
                   old.progress AS previous_progress",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        let stage: String = r.try_get("previous_stage")?;
        Ok(JobStart {
            attempt: r.try_get("attempt")?,
            user_id: r.try_get("user_id")?,
            document_id: r.try_get("document_id")?,
            batch_id: r.try_get("batch_id")?,
            document_name: r.try_get("name")?,
            stage: Stage::parse(&stage).unwrap_or(Stage::Queued),
            progress: r.try_get("previous_progress")?,
        })
    })
    .transpose()
}

/// Fields of an event before it has a number.
#[derive(Debug, Clone)]
pub struct EventRecord<'a> {
    pub job_id: &'a str,
    pub attempt: i32,
    pub kind: EventType,
    pub stage: Stage,
    /// The stage a failure happened in (only with `Stage::Failed`).
    pub failed_stage: Option<Stage>,
    pub progress: f64,
    pub message: &'a str,
    pub details: &'a serde_json::Value,
    pub error: Option<&'a str>,
    pub timestamp: DateTime<Utc>,
}

/// Writes the event into `job_progress` and `job_progress_history` in one
/// statement and returns its `seq`; `None` when `attempt` is no longer the
/// job's current attempt (the write was fenced off).
pub async fn record_event<'e, E>(exec: E, ev: &EventRecord<'_>) -> Result<Option<i64>, sqlx::Error>
where
    E: Executor<'e, Database = Postgres>,
{
    let terminal = ev.stage.is_terminal();
    sqlx::query_scalar(
        "WITH upd AS ( \
           UPDATE job_progress SET stage = $3, progress = $4, message = $5, details = $6, error = $7, \
             failed_stage = $8, seq = seq + 1, last_update = $9, \
             completed_at = CASE WHEN $11 THEN $9 ELSE NULL END \
           WHERE job_id = $1 AND attempt = $2 RETURNING seq) \
         INSERT INTO job_progress_history (job_id, seq, attempt, event_type, stage, progress, message, details, error, timestamp) \
         SELECT $1, seq, $2, $10, $3, $4, $5, $6, $7, $9 FROM upd RETURNING seq",
    )
    .bind(ev.job_id)
    .bind(ev.attempt)
    .bind(ev.stage.as_str())
    .bind(ev.progress)
    .bind(ev.message)
    .bind(Json(ev.details))
    .bind(ev.error)
    .bind(ev.failed_stage.map(Stage::as_str))
    .bind(ev.timestamp)
    .bind(ev.kind.as_str())
    .bind(terminal)
    .fetch_optional(exec)
    .await
}

/// Stored events of a job (owned by `owner`) with `seq > after`, in order.
pub async fn history(
    pool: &PgPool,
    owner: Uuid,
    job_id: &str,
    after: i64,
) -> Result<Option<Vec<ProgressEvent>>, sqlx::Error> {
    use futures::TryStreamExt;
    let known: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM job_progress WHERE job_id = $1 AND user_id = $2)")
            .bind(job_id)
            .bind(owner)
            .fetch_one(pool)
            .await?;
    if !known {
        return Ok(None);
    }
    let (jobs, seqs) = ([job_id.to_string()], [after]);
    Ok(Some(history_many(pool, owner, &jobs, &seqs).try_collect().await?))
}

/// Every stored event after the given seq of each of these jobs (owned by
/// `owner`; other users' jobs look like unknown ones), in one query whose
/// rows stream as they are read: job by job, in seq order.
pub fn history_many<'a>(
    pool: &'a PgPool,
    owner: Uuid,
    jobs: &'a [String],
    after: &'a [i64],
) -> impl futures::Stream<Item = Result<ProgressEvent, sqlx::Error>> + Send + 'a {
    use futures::StreamExt;
    sqlx::query(
        "SELECT h.job_id, h.seq, h.attempt, h.event_type, h.stage, h.progress, h.message, h.details, h.error, \
                h.timestamp, j.document_id, j.batch_id, d.name \
         FROM unnest($2::text[], $3::int8[]) AS a(job_id, after) \
         JOIN job_progress j ON j.job_id = a.job_id AND j.user_id = $1 \
         LEFT JOIN documents d ON d.id = j.document_id \
         JOIN job_progress_history h ON h.job_id = a.job_id AND h.seq > a.after \
         ORDER BY h.job_id, h.seq",
    )
    .bind(owner)
    .bind(jobs)
    .bind(after)
    .fetch(pool)
    .map(|row| {
        let r = row?;
        let kind: String = r.try_get("event_type")?;
        let stage: String = r.try_get("stage")?;
        Ok(ProgressEvent {
            kind: EventType::parse(&kind).unwrap_or(EventType::JobProgress),
            job_id: r.try_get("job_id")?,
            document_id: r.try_get("document_id")?,
            batch_id: r.try_get("batch_id")?,
            stage: Stage::parse(&stage).unwrap_or(Stage::Queued),
            progress: r.try_get("progress")?,
            message: r.try_get::<Option<String>, _>("message")?.unwrap_or_default(),
            details: r
                .try_get::<Option<Json<serde_json::Value>>, _>("details")?
                .map(|j| j.0)
                .unwrap_or(serde_json::Value::Null),
            error: r.try_get("error")?,
            seq: r.try_get("seq")?,
            attempt: r.try_get("attempt")?,
            timestamp: r.try_get("timestamp")?,
            document_name: r.try_get("name")?,
        })
    })
}

macro_rules! chunk_copy_columns {
    () => {
        "document_id, chunk_index, content, page, char_start, char_end, model_id, engine_id, embedding"
    };
}

/// The columns of `chunks` that `store::copy_rows` writes, in its order.
pub const CHUNK_COPY_COLUMNS: &str = chunk_copy_columns!();

/// Replaces a document's chunks with `copy` (COPY's binary format, built by
/// the storing stage) and records their count, in the caller's transaction.
pub async fn replace_chunks(
    tx: &mut sqlx::PgConnection,
    document_id: Uuid,
    model_id: i32,
    copy: &[u8],
    count: usize,
    pages: Option<u32>,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM chunks WHERE document_id = $1")
        .bind(document_id)
        .execute(&mut *tx)
        .await?;
    copy_chunk_rows(tx, copy).await?;
    sqlx::query(
        "UPDATE documents SET chunk_count = $2, pages = COALESCE($3, pages), search_model_id = $4, \
         updated_at = now() WHERE id = $1",
    )
    .bind(document_id)
    .bind(count as i32)
    .bind(pages.map(|p| p as i32))
    .bind(model_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sends binary COPY rows into `chunks` in pieces of 1 MiB.
async fn copy_chunk_rows(tx: &mut sqlx::PgConnection, copy: &[u8]) -> Result<(), sqlx::Error> {
    let mut sink = tx
        .copy_in_raw(concat!(
            "COPY chunks (",
            chunk_copy_columns!(),
            ") FROM STDIN (FORMAT binary)"
        ))
        .await?;
    for piece in copy.chunks(1 << 20) {
        sink.send(piece).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// A re-embed's store: the document's vectors of `model_id` are replaced by
/// these; other models' vectors (what search uses until the switch) and the
/// document's row stay as they are.
pub async fn replace_model_chunks(
    tx: &mut sqlx::PgConnection,
    document_id: Uuid,
    model_id: i32,
    copy: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM chunks WHERE document_id = $1 AND model_id = $2")
        .bind(document_id)
        .bind(model_id)
        .execute(&mut *tx)
        .await?;
    copy_chunk_rows(tx, copy).await
}

// ---------------------------------------------------------------- re-embedding

/// The model search uses for a document and its name, if it has vectors.
pub async fn document_search_model(pool: &PgPool, document_id: Uuid) -> Result<Option<(i32, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, m.name FROM documents d JOIN embedding_models m ON m.id = d.search_model_id WHERE d.id = $1",
    )
    .bind(document_id)
    .fetch_optional(pool)
    .await
}

/// A document's stored chunks of one model, in order (text, page, character range).
pub async fn model_chunks(
    pool: &PgPool,
    document_id: Uuid,
    model_id: i32,
) -> Result<Vec<crate::pipeline::chunk::Chunk>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT chunk_index, content, page, char_start, char_end FROM chunks \
         WHERE document_id = $1 AND model_id = $2 ORDER BY chunk_index",
    )
    .bind(document_id)
    .bind(model_id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(crate::pipeline::chunk::Chunk {
                index: r.try_get("chunk_index")?,
                text: r.try_get("content")?,
                page: r.try_get("page")?,
                char_start: r.try_get("char_start")?,
                char_end: r.try_get("char_end")?,
            })
        })
        .collect()
}

/// Every model some document is searched with: (id, name, dimension).
pub async fn search_models_in_use(pool: &PgPool) -> Result<Vec<(i32, String, i32)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, m.name, m.dimension FROM embedding_models m \
         WHERE EXISTS (SELECT 1 FROM documents d WHERE d.search_model_id = m.id) ORDER BY m.id",
    )
    .fetch_all(pool)
    .await
}

/// The models search uses for a user's documents.
pub async fn user_search_models(
    conn: impl Executor<'_, Database = Postgres>,
    user: Uuid,
) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT search_model_id FROM documents WHERE owner_id = $1 AND search_model_id IS NOT NULL ORDER BY 1",
    )
    .bind(user)
    .fetch_all(conn)
    .await
}

/// A document to re-embed, with its job.
#[derive(Debug, sqlx::FromRow)]
pub struct ReembedCandidate {
    pub document_id: Uuid,
    pub owner_id: Uuid,
    pub name: String,
    pub batch_id: Option<Uuid>,
    pub job_id: String,
    pub stage: String,
    pub function: String,
    /// The model search uses for it now.
    pub model: String,
}

/// Documents searched with another model than `model_id` that have no
/// vectors of `model_id` yet (of one user, or everyone's).
pub async fn reembed_candidates(
    pool: &PgPool,
    model_id: i32,
    user: Option<Uuid>,
) -> Result<Vec<ReembedCandidate>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id AS document_id, d.owner_id, d.name, d.batch_id, j.job_id, j.stage, j.function, m.name AS model \
         FROM documents d JOIN job_progress j ON j.document_id = d.id \
         JOIN embedding_models m ON m.id = d.search_model_id \
         WHERE d.search_model_id <> $1 AND ($2::uuid IS NULL OR d.owner_id = $2) \
           AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id AND c.model_id = $1) \
         ORDER BY d.created_at, d.id LIMIT 100000",
    )
    .bind(model_id)
    .bind(user)
    .fetch_all(pool)
    .await
}

/// Users with documents still searched with another model than `model_id`.
pub async fn users_off_model(pool: &PgPool, model_id: i32, user: Option<Uuid>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT owner_id FROM documents WHERE search_model_id <> $1 AND ($2::uuid IS NULL OR owner_id = $2)",
    )
    .bind(model_id)
    .bind(user)
    .fetch_all(pool)
    .await
}

/// If every document of the user searched with another model has vectors
/// of `model_id`, moves them all to `model_id` and drops every other
/// model's vectors of the user's documents, in one transaction (serialised
/// per user). Returns (documents moved, vectors dropped).
pub async fn switch_search_model(pool: &PgPool, user: Uuid, model_id: i32) -> Result<Option<(u64, u64)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('doculearn:switch:' || $1::text, 0))")
        .bind(user)
        .execute(&mut *tx)
        .await?;
    let remaining: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM documents d WHERE d.owner_id = $1 AND d.search_model_id <> $2 \
         AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.document_id = d.id AND c.model_id = $2)",
    )
    .bind(user)
    .bind(model_id)
    .fetch_one(&mut *tx)
    .await?;
    if remaining > 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let moved = sqlx::query(
        "UPDATE documents SET search_model_id = $2, updated_at = now() WHERE owner_id = $1 AND search_model_id <> $2",
    )
    .bind(user)
    .bind(model_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    let dropped = sqlx::query(
        "DELETE FROM chunks c USING documents d WHERE c.document_id = d.id AND d.owner_id = $1 AND c.model_id <> $2",
    )
    .bind(user)
    .bind(model_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(Some((moved, dropped)))
}

pub struct ReembedStatus {
    /// (model name, documents searched with it)
    pub by_model: Vec<(String, i64)>,
    pub on_model: i64,
    /// Documents still searched with another model.
    pub remaining: i64,
    /// Re-embed jobs queued or running.
    pub pending: i64,
    /// Re-embed jobs that failed (a new start re-runs them).
    pub failed: i64,
}

pub async fn reembed_status(pool: &PgPool, model_id: i32, user: Option<Uuid>) -> Result<ReembedStatus, sqlx::Error> {
    let by_model: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT m.id, m.name, count(*) FROM documents d JOIN embedding_models m ON m.id = d.search_model_id \
         WHERE ($1::uuid IS NULL OR d.owner_id = $1) GROUP BY m.id, m.name ORDER BY m.id",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    let (pending, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE stage NOT IN ('completed', 'failed')), count(*) FILTER (WHERE stage = 'failed') \
         FROM job_progress WHERE function = 'reembed_document' AND ($1::uuid IS NULL OR user_id = $1)",
    )
    .bind(user)
    .fetch_one(pool)
    .await?;
    let on_model = by_model
        .iter()
        .filter(|(id, ..)| *id == model_id)
        .map(|(.., n)| n)
        .sum();
    let remaining = by_model
        .iter()
        .filter(|(id, ..)| *id != model_id)
        .map(|(.., n)| n)
        .sum();
    Ok(ReembedStatus {
        by_model: by_model.into_iter().map(|(_, name, n)| (name, n)).collect(),
        on_model,
        remaining,
        pending,
        failed,
    })
}

/// Replaces a document's stored text (NUL-free) and the character offset
/// of each page's start, in the caller's transaction.
pub async fn replace_document_text(
    tx: &mut sqlx::PgConnection,
    document_id: Uuid,
    text: &str,
    page_starts: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO document_texts (document_id, text, page_starts) VALUES ($1, $2, $3) \
         ON CONFLICT (document_id) DO UPDATE SET text = EXCLUDED.text, page_starts = EXCLUDED.page_starts",
    )
    .bind(document_id)
    .bind(text)
    .bind(page_starts)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One page of a document's stored text (or all of it, `page` None).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PageText {
    pub document_id: Uuid,
    /// The page asked for; null when the whole text was asked for.
    pub page: Option<i32>,
    /// Pages in the stored text (1 for formats without pages).
    pub pages: i32,
    /// Character offset of `text` in the document's text.
    pub char_start: i32,
    /// Character offset just past `text`.
    pub char_end: i32,
    pub text: String,
}

/// What the text route found.
pub enum PageLookup {
    /// No such document of this owner.
    NoDocument,
    /// The document exists but its text is not stored (job not completed).
    NotStored,
    /// The page number is outside 1..=pages.
    NoPage {
        pages: i32,
    },
    Found(PageText),
}

/// Page `page` (1-based) of the owner's document's stored text, cut on the
/// database side (a 300-page manual does not travel for one page).
pub async fn page_text(pool: &PgPool, owner: Uuid, id: Uuid, page: Option<i32>) -> Result<PageLookup, sqlx::Error> {
    let row = sqlx::query(
        "SELECT t.document_id IS NOT NULL AS stored, \
                GREATEST(COALESCE(cardinality(t.page_starts), 0), 1) AS pages, \
                t.page_starts, char_length(t.text) AS len \
         FROM documents d LEFT JOIN document_texts t ON t.document_id = d.id \
         WHERE d.id = $1 AND d.owner_id = $2",
    )
    .bind(id)
    .bind(owner)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(PageLookup::NoDocument);
    };
    if !row.try_get::<bool, _>("stored")? {
        return Ok(PageLookup::NotStored);
    }
    let pages: i32 = row.try_get("pages")?;
    let starts: Vec<i32> = row.try_get("page_starts")?;
    let len: i32 = row.try_get("len")?;
    let (start, end) = match page {
        None => (0, len),
        Some(p) if p < 1 || p > pages => return Ok(PageLookup::NoPage { pages }),
        Some(p) => {
            let at = |i: usize| starts.get(i).copied().unwrap_or(len).clamp(0, len);
            let start = if starts.is_empty() { 0 } else { at(p as usize - 1) };
            (start, at(p as usize).max(start))
        }
    };
    // substr counts characters from 1.
    let text: String = sqlx::query_scalar("SELECT substr(text, $2 + 1, $3) FROM document_texts WHERE document_id = $1")
        .bind(id)
        .bind(start)
        .bind(end - start)
        .fetch_one(pool)
        .await?;
    Ok(PageLookup::Found(PageText {
        document_id: id,
        page,
        pages,
        char_start: start,
        char_end: end,
        text,
    }))
}

/// Answers when the database does.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Is `attempt` still the job's current attempt? Locks the job row until the
/// transaction ends, so a new attempt cannot start in between.
pub async fn lock_attempt(conn: &mut sqlx::PgConnection, job_id: &str, attempt: i32) -> Result<bool, sqlx::Error> {
    let current: Option<i32> = sqlx::query_scalar("SELECT attempt FROM job_progress WHERE job_id = $1 FOR UPDATE")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(current == Some(attempt))
}

/// Puts a failed or completed job back to `queued` for a re-run, held until
/// admission lets it into the queue (we enqueue it now, whoever did before);
/// `function` changes what it runs (`None`: what it ran before, as a retry
/// does). Returns the job's attempt (the `queued` event is written with it).
pub async fn requeue<'e, E>(
    exec: E,
    owner: Uuid,
    job_id: &str,
    function: Option<&str>,
) -> Result<Option<i32>, sqlx::Error>
where
    E: Executor<'e, Database = Postgres>,
{
    sqlx::query_scalar(
        "UPDATE job_progress SET stage = 'queued', progress = 0, error = NULL, failed_stage = NULL, \
         completed_at = NULL, last_update = now(), enqueued_at = NULL, managed = true, \
         function = COALESCE($3, function) \
         WHERE job_id = $1 AND user_id = $2 AND stage IN ('failed', 'completed') RETURNING attempt",
    )
    .bind(job_id)
    .bind(owner)
    .bind(function)
    .fetch_optional(exec)
    .await
}

// ---------------------------------------------------------------- stage cache

/// Cached output of a stage for these bytes of this owner, if any (a JSON
/// value). The cache is per owner: one user never gets another's work back.
pub async fn cached_extraction(
    pool: &PgPool,
    owner: Uuid,
    sha256: &str,
    extractor: &str,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let v: Option<Json<serde_json::Value>> = sqlx::query_scalar(
        "SELECT extracted FROM extraction_cache WHERE owner_id = $1 AND sha256 = $2 AND extractor = $3",
    )
    .bind(owner)
    .bind(sha256)
    .bind(extractor)
    .fetch_optional(pool)
    .await?;
    Ok(v.map(|j| j.0))
}

pub async fn cache_extraction(
    pool: &PgPool,
    owner: Uuid,
    sha256: &str,
    extractor: &str,
    value: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO extraction_cache (owner_id, sha256, extractor, extracted) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(owner)
    .bind(sha256)
    .bind(extractor)
    .bind(Json(value))
    .execute(pool)
    .await?;
    Ok(())
}

/// Where a cached chunking is kept: whose, which bytes, which extractor, which settings.
pub struct ChunkKey<'a> {
    pub owner: Uuid,
    pub sha256: &'a str,
    pub extractor: &'a str,
    pub size: usize,
    pub overlap: usize,
}

pub async fn cached_chunks(pool: &PgPool, key: &ChunkKey<'_>) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let v: Option<Json<serde_json::Value>> = sqlx::query_scalar(
        "SELECT chunks FROM chunk_cache WHERE owner_id = $1 AND sha256 = $2 AND extractor = $3 \
         AND chunk_size = $4 AND chunk_overlap = $5",
    )
    .bind(key.owner)
    .bind(key.sha256)
    .bind(key.extractor)
    .bind(key.size as i32)
    .bind(key.overlap as i32)
    .fetch_optional(pool)
    .await?;
    Ok(v.map(|j| j.0))
}

pub async fn cache_chunks(pool: &PgPool, key: &ChunkKey<'_>, value: &serde_json::Value) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chunk_cache (owner_id, sha256, extractor, chunk_size, chunk_overlap, chunks) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(key.owner)
    .bind(key.sha256)
    .bind(key.extractor)
    .bind(key.size as i32)
    .bind(key.overlap as i32)
    .bind(Json(value))
    .execute(pool)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- admission

/// Serialises admission decisions for one user across instances (until the
/// transaction ends).
/// Serialises admission decisions across instances (until the transaction ends).
pub async fn lock_admission(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('doculearn:admission', 7))")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Every user with unfinished managed jobs: how many are in the queue or
/// running, and how many are held (weights are filled in by the caller).
pub async fn admission_demands(
    tx: &mut sqlx::PgConnection,
) -> Result<Vec<crate::jobs::admission::Demand>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, i64)> = sqlx::query_as(
        "SELECT user_id, count(*) FILTER (WHERE enqueued_at IS NOT NULL), \
                count(*) FILTER (WHERE enqueued_at IS NULL AND stage = 'queued') \
         FROM job_progress WHERE managed AND document_id IS NOT NULL AND stage NOT IN ('completed', 'failed') \
         GROUP BY user_id ORDER BY user_id",
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user, active, held)| crate::jobs::admission::Demand {
            user,
            active,
            held,
            weight: 1.0,
        })
        .collect())
}

/// The user's managed jobs in the queue or running.
pub async fn active_managed_jobs(tx: &mut sqlx::PgConnection, user: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM job_progress WHERE user_id = $1 AND managed AND enqueued_at IS NOT NULL \
         AND stage NOT IN ('completed', 'failed') AND document_id IS NOT NULL",
    )
    .bind(user)
    .fetch_one(&mut *tx)
    .await
}

/// Up to `limit` of the user's held jobs, oldest first, locked: (job id,
/// document id, function).
pub async fn held_jobs(
    tx: &mut sqlx::PgConnection,
    user: Uuid,
    limit: i64,
) -> Result<Vec<(String, Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, document_id, function FROM job_progress WHERE user_id = $1 AND managed AND enqueued_at IS NULL \
         AND stage = 'queued' AND document_id IS NOT NULL ORDER BY created_at, job_id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await
}

/// The arq function a job row runs (`process_document` for a row that does not exist).
pub async fn job_function(conn: &mut sqlx::PgConnection, job_id: &str) -> Result<String, sqlx::Error> {
    let f: Option<String> = sqlx::query_scalar("SELECT function FROM job_progress WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(f.unwrap_or_else(|| crate::jobs::PROCESS_DOCUMENT.to_string()))
}

pub async fn mark_enqueued(tx: &mut sqlx::PgConnection, job_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE job_progress SET enqueued_at = now() WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Users who have held jobs.
pub async fn users_with_held_jobs(pool: impl Executor<'_, Database = Postgres>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT user_id FROM job_progress WHERE managed AND enqueued_at IS NULL AND stage = 'queued' \
         AND document_id IS NOT NULL LIMIT 10000",
    )
    .fetch_all(pool)
    .await
}

/// (document, owner) of a managed job that has not ended: one we may rebuild.
pub async fn unfinished_managed_job(pool: &PgPool, job_id: &str) -> Result<Option<(Uuid, Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT document_id, user_id, function FROM job_progress WHERE job_id = $1 AND managed \
         AND document_id IS NOT NULL AND stage NOT IN ('completed', 'failed')",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await
}

// ---------------------------------------------------------------- dedup

/// Serialises submissions of the same bytes by the same owner (until the
/// transaction ends), so two simultaneous uploads make one document. The
/// lock is on the owner and a bucket of hashes (the first hex digit of the
/// sha256), so a submission of a thousand files takes at most 16 locks
/// (advisory locks share Postgres's lock table); two uploads of different
/// files by the same user meet in a bucket now and then, and then one waits
/// for the other's commit. Keyed by owner: one user's upload never waits on
/// another's.
pub async fn lock_owner_hash_bucket(tx: &mut sqlx::PgConnection, owner: Uuid, bucket: char) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 11))")
        .bind(format!("{owner}:{bucket}"))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The owner's document with these bytes that has not failed (queued,
/// running or completed), the oldest if several.
#[derive(Debug, Clone)]
pub struct Duplicate {
    pub document_id: Uuid,
    pub job_id: String,
    pub stage: String,
}

pub async fn find_duplicate(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    sha256: &str,
) -> Result<Option<Duplicate>, sqlx::Error> {
    let row: Option<(Uuid, String, String)> = sqlx::query_as(
        "SELECT d.id, j.job_id, j.stage FROM documents d JOIN job_progress j ON j.document_id = d.id \
         WHERE d.owner_id = $1 AND d.sha256 = $2 AND j.stage <> 'failed' ORDER BY d.created_at, d.id LIMIT 1",
    )
    .bind(owner)
    .bind(sha256)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(row.map(|(document_id, job_id, stage)| Duplicate {
        document_id,
        job_id,
        stage,
    }))
}

/// Gives a document the name of the upload that replaces it.
pub async fn rename_document(tx: &mut sqlx::PgConnection, id: Uuid, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE documents SET name = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------- idempotency

/// Takes the key for this request inside the caller's transaction; when
/// another request holds it, returns that request's (fingerprint, response).
/// A concurrent request with the same key makes this wait until it commits
/// (then its answer is returned) or rolls back (then the key is ours).
pub async fn claim_idempotency_key(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    key: &str,
    fingerprint: &str,
) -> Result<Option<(String, serde_json::Value)>, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (user_id, key, fingerprint, response) VALUES ($1, $2, $3, 'null') \
         ON CONFLICT (user_id, key) DO NOTHING",
    )
    .bind(owner)
    .bind(key)
    .bind(fingerprint)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    let (print, response): (String, Json<serde_json::Value>) =
        sqlx::query_as("SELECT fingerprint, response FROM idempotency_keys WHERE user_id = $1 AND key = $2")
            .bind(owner)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
    Ok(Some((print, response.0)))
}

pub async fn store_idempotent_response(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    key: &str,
    response: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET response = $3 WHERE user_id = $1 AND key = $2")
        .bind(owner)
        .bind(key)
        .bind(Json(response))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn expire_idempotency_keys(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

// ---------------------------------------------------------------- embeddings

/// Id of the (name, dimension) model, registering it on first use.
pub async fn ensure_model(pool: &PgPool, name: &str, dimension: usize) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO embedding_models (name, dimension) VALUES ($1, $2) \
         ON CONFLICT (name, dimension) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    )
    .bind(name)
    .bind(dimension as i32)
    .fetch_one(pool)
    .await
}

/// Id of the engine label (see `embedding_engines`), registering it on first use.
pub async fn ensure_engine(pool: &PgPool, label: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO embedding_engines (label) VALUES ($1) \
         ON CONFLICT (label) DO UPDATE SET label = EXCLUDED.label RETURNING id",
    )
    .bind(label)
    .fetch_one(pool)
    .await
}

/// Creates the model's partial HNSW index (indexed rows only) when it is missing.
pub async fn ensure_vector_index(pool: &PgPool, model_id: i32, dimension: usize) -> Result<(), sqlx::Error> {
    let sql = format!(
        "CREATE INDEX IF NOT EXISTS chunks_embedding_m{model_id}_hnsw ON chunks \
         USING hnsw ((embedding::vector({dimension})) vector_cosine_ops) WHERE model_id = {model_id} AND indexed"
    );
    // Integers only: model_id comes from the database, dimension from typed config.
    sqlx::query(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

/// What the indexer found to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IndexBacklog {
    /// Rows waiting to enter the ANN index.
    pub rows: i64,
    /// Age of the oldest of them, in seconds.
    pub oldest_secs: f64,
    /// Whether any job is between downloading and storing, on any instance.
    pub busy: bool,
}

pub async fn index_backlog(pool: &PgPool) -> Result<IndexBacklog, sqlx::Error> {
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM chunks WHERE NOT indexed) AS rows, \
                COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(d.updated_at) FROM documents d \
                    WHERE d.id IN (SELECT document_id FROM chunks WHERE NOT indexed))), 0)::float8 AS oldest, \
                EXISTS (SELECT 1 FROM job_progress WHERE stage IN \
                    ('downloading', 'extracting', 'chunking', 'embedding', 'storing')) AS busy",
    )
    .fetch_one(pool)
    .await?;
    Ok(IndexBacklog {
        rows: row.try_get("rows")?,
        oldest_secs: row.try_get("oldest")?,
        busy: row.try_get("busy")?,
    })
}

/// Moves up to `limit` not-yet-indexed rows (whole documents at a time, as
/// the partial index orders them) into the ANN
/// index (one short transaction; rows another instance is indexing are
/// skipped). Returns how many moved.
pub async fn index_some(pool: &PgPool, limit: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE chunks SET indexed = true WHERE id IN ( \
             SELECT id FROM chunks WHERE NOT indexed ORDER BY document_id LIMIT $1 FOR UPDATE SKIP LOCKED)",
    )
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Whether every one of these documents is the owner's.
pub async fn owns_all(pool: &PgPool, owner: Uuid, ids: &[Uuid]) -> Result<bool, sqlx::Error> {
    let mine: i64 = sqlx::query_scalar("SELECT count(DISTINCT id) FROM documents WHERE owner_id = $1 AND id = ANY($2)")
        .bind(owner)
        .bind(ids)
        .fetch_one(pool)
        .await?;
    let distinct = ids.iter().collect::<std::collections::HashSet<_>>().len();
    Ok(mine as usize == distinct)
}

/// One chunk found by one side of search (semantic or keyword), in that
/// side's order.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    pub document_id: Uuid,
    pub document_name: String,
    pub chunk_index: i32,
    pub page: Option<i32>,
    pub char_start: Option<i32>,
    pub char_end: Option<i32>,
    pub content: String,
    /// Cosine similarity (semantic) or the keyword score (see [`keyword_search`]).
    pub score: f64,
}

fn chunk_hit(r: &sqlx::postgres::PgRow) -> Result<ChunkHit, sqlx::Error> {
    Ok(ChunkHit {
        document_id: r.try_get("document_id")?,
        document_name: r.try_get("name")?,
        chunk_index: r.try_get("chunk_index")?,
        page: r.try_get("page")?,
        char_start: r.try_get("char_start")?,
        char_end: r.try_get("char_end")?,
        content: r.try_get("content")?,
        score: r.try_get("score")?,
    })
}

/// The caller's best chunks by cosine similarity: the model's HNSW index
/// (with pgvector's iterative scan, so the owner filter cannot starve it)
/// for indexed rows, an exact scan for the caller's rows still waiting for
/// the indexer, merged by distance.
/// A search's transaction: one snapshot (REPEATABLE READ) for the lookup
/// of the user's models and every query, so a model switch committing in
/// between is seen wholly or not at all; pgvector's iterative scan on.
pub async fn begin_search(pool: &PgPool) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL hnsw.ef_search = 100").execute(&mut *tx).await?;
    Ok(tx)
}

/// The best chunks of the owner's documents searched with `model_id`
/// (`documents.search_model_id`), inside [`begin_search`]'s transaction.
/// That filter applies after the nearest-neighbour scans (inside them it
/// steers the planner away from the HNSW index); each side fetches 2·k
/// for the documents of a re-embed that have both models' vectors.
#[allow(clippy::too_many_arguments)]
pub async fn search(
    tx: &mut sqlx::PgConnection,
    owner: Uuid,
    model_id: i32,
    dimension: usize,
    query: &pgvector::Vector,
    k: i64,
    document_ids: Option<&[Uuid]>,
) -> Result<Vec<ChunkHit>, sqlx::Error> {
    // model_id and dimension are integers written into the text (from the
    // database and from typed config), so the planner can match the
    // partial indexes, whose predicates name them.
    let sql = format!(
        "WITH indexed AS ( \
           SELECT c.document_id, d.name, c.chunk_index, c.page, c.char_start, c.char_end, c.content, d.search_model_id, \
                  c.embedding::vector({dimension}) <=> $1::vector({dimension}) AS distance \
           FROM chunks c JOIN documents d ON d.id = c.document_id \
           WHERE c.model_id = {model_id} AND c.indexed AND d.owner_id = $2 \
             AND ($4::uuid[] IS NULL OR c.document_id = ANY($4)) \
           ORDER BY c.embedding::vector({dimension}) <=> $1::vector({dimension}) LIMIT $3 * 2), \
         recent AS ( \
           SELECT c.document_id, d.name, c.chunk_index, c.page, c.char_start, c.char_end, c.content, d.search_model_id, \
                  c.embedding::vector({dimension}) <=> $1::vector({dimension}) AS distance \
           FROM documents d JOIN chunks c ON c.document_id = d.id AND NOT c.indexed \
           WHERE c.model_id = {model_id} AND d.owner_id = $2 \
             AND ($4::uuid[] IS NULL OR c.document_id = ANY($4)) \
           ORDER BY distance LIMIT $3 * 2) \
         SELECT document_id, name, chunk_index, page, char_start, char_end, content, 1 - distance AS score \
         FROM (SELECT * FROM indexed UNION ALL SELECT * FROM recent) hits \
         WHERE search_model_id = {model_id} \
         ORDER BY distance, document_id, chunk_index LIMIT $3"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(query)
        .bind(owner)
        .bind(k)
        .bind(document_ids)
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(chunk_hit).collect()
}

/// Keyword search's SQL (see [`keyword_search`]). Each query lexeme
/// becomes a one-word tsquery (quoted for tsquery input: `'` doubled, `\`
/// escaped); the candidates and the weights are materialised once, so each
/// candidate is scored by a binary search per query word in its tsvector.
const KEYWORD_SQL: &str = r#"
WITH terms AS MATERIALIZED (
  SELECT t, ('''' || replace(replace(t, '\', '\\'), '''', '''''') || '''')::tsquery AS tq
  FROM (SELECT DISTINCT t FROM unnest(tsvector_to_array(to_tsvector('simple', doculearn_search_text($1)))) t) words),
q AS MATERIALIZED (
  SELECT (SELECT string_agg(tq::text, ' | ') FROM terms)::tsquery AS any_term,
         (SELECT count(*) FROM terms) AS words,
         phraseto_tsquery('simple', doculearn_search_text($1)) AS phrase),
cand AS MATERIALIZED (
  SELECT c.document_id, d.name, c.chunk_index, c.page, c.char_start, c.char_end, c.content, c.content_tsv
  FROM q, chunks c JOIN documents d ON d.id = c.document_id
  WHERE c.content_tsv @@ q.any_term AND c.model_id = d.search_model_id AND d.owner_id = $2
    AND ($4::uuid[] IS NULL OR c.document_id = ANY($4))),
weights AS MATERIALIZED (
  SELECT terms.tq, ln(1 + (SELECT count(*) FROM cand)::float8 / count(*)) AS w
  FROM terms JOIN cand ON cand.content_tsv @@ terms.tq GROUP BY terms.tq),
scored AS (
  SELECT cand.*,
         (SELECT COALESCE(sum(w), 0) FROM weights WHERE cand.content_tsv @@ weights.tq)
           * CASE WHEN q.words > 1 AND cand.content_tsv @@ q.phrase THEN 2 ELSE 1 END AS score,
         ts_rank_cd(cand.content_tsv, q.any_term) AS rank_cd
  FROM cand, q)
SELECT document_id, name, chunk_index, page, char_start, char_end, content, score::float8 AS score
FROM scored ORDER BY score DESC, rank_cd DESC, document_id, chunk_index LIMIT $3
"#;

/// The caller's best chunks by the words of `query`, through the GIN index
/// on `chunks.content_tsv` (the 'simple' configuration: lower-cased words,
/// no stemming, no stop words, any language; each Han and kana character a
/// word, see `doculearn_search_text` in the migration `hybrid_search`). A chunk matches when it holds
/// any of the query's words; its score is the sum, over the query's words it
/// holds, of their inverse document frequency among the caller's matching
/// chunks (`ln(1 + n / df)`: a rare identifier outweighs "the"), doubled when
/// it holds the whole query as a phrase; ties by `ts_rank_cd`, then document
/// and chunk. Needs no vector index, so a chunk is found the moment its job
/// has stored it. Only chunks of the current model, as semantic search.
pub async fn keyword_search(
    pool: &PgPool,
    owner: Uuid,
    query: &str,
    k: i64,
    document_ids: Option<&[Uuid]>,
) -> Result<Vec<ChunkHit>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The planner's estimates for text search are pessimistic enough to
    // trigger JIT compilation, which costs more than the query itself.
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let rows = sqlx::query(KEYWORD_SQL)
        .bind(query)
        .bind(owner)
        .bind(k)
        .bind(document_ids)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.iter().map(chunk_hit).collect()
}
