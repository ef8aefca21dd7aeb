//! What a job's owner can do to it: retry a failed job (through admission,
//! like any upload; an upload's `on_duplicate=replace` re-runs a completed
//! one the same way, see [`release`]) and cancel a queued or running one
//! (wherever it runs).

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::admission::{self, Admission};
use super::{record_failure, CANCELLED, PROCESS_DOCUMENT};
use crate::arq::queue::CancelOutcome;
use crate::arq::wire::{cancelled_error, JobResult};
use crate::arq::{now_ms, PyValue};
use crate::db;
use crate::domain::{document_id_of, ProgressEvent};
use crate::events::{JobMeta, NewEvent};
use crate::services::Services;

/// What cancel needs from the process it runs in (the actor tree provides it).
pub trait RunningJobs: Send + Sync {
    /// Stops the job now if it runs in this process; whether it did.
    fn stop_here<'a>(&'a self, job_id: &'a str) -> BoxFuture<'a, bool>;
    /// Resolves with the job's final event, from whichever instance runs it.
    fn watch_end(&self, job_id: &str) -> Option<oneshot::Receiver<ProgressEvent>>;
}

/// How long a cancel waits for the worker to confirm.
const CANCEL_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no such job")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("queue: {0}")]
    Queue(#[from] crate::arq::QueueError),
}

/// A failed document job runs again as a new attempt; stages whose output
/// is still valid for the same bytes are reused. It enters the queue through
/// admission, so a user at their share waits like any upload.
pub async fn retry(s: &Services, owner: Uuid, job_id: &str) -> Result<Value, ControlError> {
    let job = db::get_job(&s.db, owner, job_id).await?.ok_or(ControlError::NotFound)?;
    let document_id = document_id_of(job_id)
        .filter(|_| job.document_id.is_some())
        .ok_or(ControlError::NotFound)?;
    if job.stage != "failed" {
        return Err(ControlError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            job.stage
        )));
    }
    let changed = || ControlError::Conflict("the job changed meanwhile; reload and try again".into());
    let attempt = db::requeue(&s.db, owner, job_id, None).await?.ok_or_else(changed)?;
    let meta = JobMeta {
        job_id: job_id.to_string(),
        user_id: owner,
        document_id: Some(document_id),
        batch_id: job.batch_id,
        document_name: job.document_name.clone(),
    };
    s.events
        .emit(
            &meta,
            NewEvent::queued(attempt, "Retry queued", json!({ "retry": true })),
            true,
        )
        .await?
        .ok_or_else(changed)?;
    release(s, owner, job_id, document_id).await?;
    Ok(json!({ "job_id": job_id, "document_id": document_id, "status": "queued" }))
}

/// Lets a requeued job (a retry, or an upload's `on_duplicate=replace`) run
/// as its next attempt: its earlier run's arq result is removed (arq would
/// refuse the same job id while it exists), then the job enters the queue
/// through admission, like any upload.
pub async fn release(s: &Services, owner: Uuid, job_id: &str, document_id: Uuid) -> Result<(), ControlError> {
    s.queue.forget_result(job_id).await?;
    match admission::admit(s, owner, job_id, document_id).await {
        Ok(Admission::Enqueued) => {}
        Ok(Admission::Held) => tracing::info!(job_id, user_id = %owner, "re-run held back for fairness"),
        Err(e) => tracing::warn!(job_id, error = %e, "cannot enqueue the re-run now; it waits in Postgres"),
    }
    Ok(())
}

/// Where a cancel got to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The job has ended; `status` is `cancelled`, or what it ended as when
    /// it finished before the cancel reached it.
    Ended { status: String },
    /// The worker has not confirmed within the wait.
    Cancelling,
}

/// Stops a queued or running job, wherever it runs: a waiting job is
/// removed from the queue and failed here; a running one is flagged in
/// `arq:abort` (its worker, on any instance, stops it within half a second)
/// and stopped at once if it runs in this process. Waits (briefly) for the
/// job's final event instead of polling the database.
pub async fn cancel(
    s: &Services,
    here: &dyn RunningJobs,
    owner: Uuid,
    job_id: &str,
) -> Result<Cancelled, ControlError> {
    let job = db::get_job(&s.db, owner, job_id).await?.ok_or(ControlError::NotFound)?;
    if job.stage == "completed" || job.stage == "failed" {
        return Err(ControlError::Conflict(format!("the job has already {}", job.stage)));
    }
    // Watch for the job's end before asking anyone to end it.
    let watch = here.watch_end(job_id);
    let document_id = job.document_id.map(|d| d.to_string()).unwrap_or_default();
    let result = JobResult {
        job_try: 0,
        function: PROCESS_DOCUMENT.into(),
        args: vec![PyValue::Str(document_id), PyValue::Str(owner.to_string())],
        kwargs: vec![],
        enqueue_time_ms: job.created_at.timestamp_millis(),
        success: false,
        result: cancelled_error(),
        start_ms: now_ms(),
        finish_ms: now_ms(),
        queue: s.queue.name.clone(),
        job_id: job_id.to_string(),
    };
    let keep_ms = (s.settings.queue.keep_result_secs * 1000) as i64;
    match s.queue.cancel(job_id, &result, keep_ms).await? {
        CancelOutcome::Queued | CancelOutcome::Unknown => {
            record_failure(s, job_id, CANCELLED).await;
        }
        CancelOutcome::Running => {
            // Running here? Then stop it now rather than at the poller's next abort check.
            here.stop_here(job_id).await;
            if let Some(rx) = watch {
                if let Ok(Ok(event)) = tokio::time::timeout(CANCEL_WAIT, rx).await {
                    return Ok(Cancelled::Ended {
                        status: status_of(event.stage.as_str()),
                    });
                }
            }
        }
    }
    let now = db::get_job(&s.db, owner, job_id).await?.ok_or(ControlError::NotFound)?;
    Ok(match now.stage.as_str() {
        "failed" | "completed" => Cancelled::Ended {
            status: status_of(&now.stage),
        },
        _ => Cancelled::Cancelling,
    })
}

fn status_of(stage: &str) -> String {
    if stage == "failed" {
        "cancelled".into()
    } else {
        stage.to_string()
    }
}
