//! Batches (seed plan 4.1): documents uploaded together, with one
//! aggregated progress. A batch's progress is a job row of its own,
//! `batch:{id}`, in stage `batch_processing`, so its `batch_progress` events
//! are numbered, stored, published and resumable like any job's. The
//! fraction is weighted by document size (an ended document, completed or
//! failed, counts as done) and never goes back; the batch ends, once, when
//! every document has ended, saying how many failed.

use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::domain::{EventType, ProgressEvent, Stage};

pub fn batch_job_id(id: Uuid) -> String {
    format!("batch:{id}")
}

/// Creates the batch and its progress row (inside the caller's transaction).
pub async fn create(conn: &mut sqlx::PgConnection, id: Uuid, owner: Uuid, total: usize) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO batches (id, owner_id, total) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(owner)
        .bind(total as i32)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO job_progress (job_id, user_id, batch_id, stage, progress, message, managed, enqueued_at) \
         VALUES ($1, $2, $3, 'batch_processing', 0, 'Batch queued', false, now())",
    )
    .bind(batch_job_id(id))
    .bind(owner)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The batch as its owner sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchView {
    pub batch_id: Uuid,
    pub job_id: String,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    pub running: i64,
    /// Size-weighted fraction of the work done, 0..1.
    pub progress: f64,
    /// `running`, `completed` or `completed_with_failures`.
    pub status: String,
    pub documents: Vec<BatchDocument>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchDocument {
    pub document_id: Uuid,
    pub job_id: String,
    pub name: String,
    pub size_bytes: i64,
    pub stage: String,
    pub progress: f64,
    pub error: Option<String>,
}

struct Totals {
    owner: Uuid,
    total: i64,
    completed: i64,
    failed: i64,
    fraction: f64,
}

async fn totals(db: &PgPool, id: Uuid) -> Result<Option<Totals>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT b.owner_id, count(j.job_id) AS total, \
                count(j.job_id) FILTER (WHERE j.stage = 'completed') AS completed, \
                count(j.job_id) FILTER (WHERE j.stage = 'failed') AS failed, \
                COALESCE(sum(GREATEST(d.size_bytes, 1) * CASE WHEN j.stage IN ('completed', 'failed') THEN 1.0 ELSE j.progress END) \
                         / NULLIF(sum(GREATEST(d.size_bytes, 1)), 0), 0)::float8 AS fraction \
         FROM batches b LEFT JOIN documents d ON d.batch_id = b.id LEFT JOIN job_progress j ON j.document_id = d.id \
         WHERE b.id = $1 GROUP BY b.owner_id",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(Totals {
            owner: r.try_get("owner_id")?,
            total: r.try_get("total")?,
            completed: r.try_get("completed")?,
            failed: r.try_get("failed")?,
            fraction: r.try_get("fraction")?,
        })
    })
    .transpose()
}

/// Recomputes the batch and records a `batch_progress` event (the final one
/// only once, however many documents end at the same moment); returns it
/// with its owner, for the event sink to send.
pub async fn refresh(db: &PgPool, id: Uuid) -> Result<Option<(Uuid, ProgressEvent)>, sqlx::Error> {
    let Some(t) = totals(db, id).await? else {
        return Ok(None);
    };
    let ended = t.completed + t.failed;
    let done = t.total > 0 && ended == t.total;
    let stage = if done { Stage::Completed } else { Stage::BatchProcessing };
    let message = if done {
        if t.failed > 0 {
            format!(
                "Batch finished: {} of {} documents completed, {} failed",
                t.completed, t.total, t.failed
            )
        } else {
            format!("Batch finished: all {} documents completed", t.total)
        }
    } else {
        format!("{ended} of {} documents done ({} failed)", t.total, t.failed)
    };
    let details = json!({
        "completed": t.completed, "failed": t.failed, "total": t.total, "running": t.total - ended,
    });
    let job_id = batch_job_id(id);
    let timestamp = Utc::now();
    let progress = if done {
        1.0
    } else {
        (t.fraction * 10_000.0).round() / 10_000.0
    };
    let row = sqlx::query(
        "WITH upd AS ( \
           UPDATE job_progress SET stage = $2, progress = GREATEST(progress, $3), message = $4, details = $5, \
             seq = seq + 1, last_update = $6, completed_at = CASE WHEN $2 = 'completed' THEN $6 END \
           WHERE job_id = $1 AND stage <> 'completed' RETURNING seq, progress, attempt) \
         INSERT INTO job_progress_history (job_id, seq, attempt, event_type, stage, progress, message, details, timestamp) \
         SELECT $1, seq, attempt, 'batch_progress', $2, progress, $4, $5, $6 FROM upd RETURNING seq, progress",
    )
    .bind(&job_id)
    .bind(stage.as_str())
    .bind(progress)
    .bind(&message)
    .bind(Json(&details))
    .bind(timestamp)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let event = ProgressEvent {
        kind: EventType::BatchProgress,
        job_id,
        document_id: None,
        batch_id: Some(id),
        stage,
        progress: row.try_get("progress")?,
        message,
        details,
        error: None,
        seq: row.try_get("seq")?,
        attempt: 0,
        timestamp,
        document_name: None,
    };
    Ok(Some((t.owner, event)))
}

/// The batch, if `owner` owns it.
pub async fn view(db: &PgPool, owner: Uuid, id: Uuid) -> Result<Option<BatchView>, sqlx::Error> {
    let Some(t) = totals(db, id).await? else {
        return Ok(None);
    };
    if t.owner != owner {
        return Ok(None);
    }
    let batch_progress: f64 = sqlx::query_scalar("SELECT progress FROM job_progress WHERE job_id = $1")
        .bind(batch_job_id(id))
        .fetch_optional(db)
        .await?
        .unwrap_or(t.fraction);
    let rows = sqlx::query(
        "SELECT d.id, j.job_id, d.name, d.size_bytes, j.stage, j.progress, j.error \
         FROM documents d JOIN job_progress j ON j.document_id = d.id WHERE d.batch_id = $1 ORDER BY d.created_at, d.id",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    let documents = rows
        .iter()
        .map(|r| {
            Ok(BatchDocument {
                document_id: r.try_get("id")?,
                job_id: r.try_get("job_id")?,
                name: r.try_get("name")?,
                size_bytes: r.try_get("size_bytes")?,
                stage: r.try_get("stage")?,
                progress: r.try_get("progress")?,
                error: r.try_get("error")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let ended = t.completed + t.failed;
    let status = if t.total > 0 && ended == t.total {
        if t.failed > 0 {
            "completed_with_failures"
        } else {
            "completed"
        }
    } else {
        "running"
    };
    Ok(Some(BatchView {
        batch_id: id,
        job_id: batch_job_id(id),
        total: t.total,
        completed: t.completed,
        failed: t.failed,
        running: t.total - ended,
        progress: batch_progress.max(t.fraction.min(1.0)),
        status: status.into(),
        documents,
    }))
}
