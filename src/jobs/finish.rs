//! Ending a job on both records: the arq result in Redis (what arq's client
//! reads) and, for document jobs, the `failed` event in Postgres (what users
//! see). Used by the document actor (also for jobs its pre-run checks
//! reject: expired, undecodable, unknown function, too many tries), by the
//! supervisor for jobs whose actor crashed too often, and by recovery.

use rand::Rng;
use std::time::Duration;

use super::PROCESS_DOCUMENT;
use crate::arq::wire::{job_execution_failed, JobResult};
use crate::arq::{now_ms, Claimed, JobDef, PyValue};
use crate::db;
use crate::domain::{document_id_of, Stage};
use crate::events::{JobMeta, NewEvent};
use crate::services::Services;

/// Writes the arq result of a claimed job and removes it from the queue.
pub async fn arq_finish(
    services: &Services,
    claimed: &Claimed,
    job: Option<&JobDef>,
    start_ms: i64,
    success: bool,
    r: PyValue,
) {
    let result = JobResult {
        job_try: claimed.job_try,
        function: job.map(|j| j.function.clone()).unwrap_or_else(|| "<unknown>".into()),
        args: job.map(|j| j.args.clone()).unwrap_or_default(),
        kwargs: job.map(|j| j.kwargs.clone()).unwrap_or_default(),
        enqueue_time_ms: job.map(|j| j.enqueue_time_ms).unwrap_or(0),
        success,
        result: r,
        start_ms,
        finish_ms: now_ms(),
        queue: services.queue.name.clone(),
        job_id: claimed.job_id.clone(),
    };
    let counter = if success {
        &services.stats.complete
    } else {
        &services.stats.failed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::metrics::job_outcome(if success { "completed" } else { "failed" });
    let keep_ms = (services.settings.queue.keep_result_secs * 1000) as i64;
    let finished = services.queue.finish(&claimed.job_id, &result, keep_ms).await;
    release_held(services, job);
    if let Err(e) = finished {
        // The lease runs out and the job is claimed again; the re-run sees the
        // terminal state in Postgres and only writes this result.
        tracing::error!(job_id = %claimed.job_id, error = %e, "cannot store the job result in redis");
    }
}

/// A document job ended: its slot may go to a held job (of its user or,
/// as shares move, of another).
fn release_held(services: &Services, job: Option<&JobDef>) {
    let q = &services.settings.queue;
    if !q.fair_share && q.per_user_active_jobs == 0 {
        return;
    }
    if !job.is_some_and(|j| j.function == PROCESS_DOCUMENT || j.function == super::REEMBED_DOCUMENT) {
        return;
    }
    let Some(services) = services.myself() else { return };
    let tasks = services.tasks.clone();
    tasks.spawn(async move {
        if let Err(e) = super::admission::feed_all(&services).await {
            tracing::warn!(error = %e, "cannot release held jobs; the watchdog will");
        }
    });
}

/// Hands a job back to the queue for a later try, `defer` from now.
pub async fn arq_retry(services: &Services, claimed: &Claimed, defer: Duration) {
    services
        .stats
        .retried
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    crate::metrics::job_outcome("retried");
    if let Err(e) = services.queue.retry(&claimed.job_id, defer.as_millis() as i64).await {
        tracing::error!(job_id = %claimed.job_id, error = %e, "cannot hand the job back; its lease will expire instead");
    }
}

/// Exponential backoff with full jitter: 1 s, 2 s, 4 s ... capped at 60 s.
pub fn backoff(job_try: i64) -> Duration {
    let exp = (job_try.clamp(1, 7) - 1) as u32;
    let cap_ms = (1000u64 << exp).min(60_000);
    let jitter = rand::rng().random_range(cap_ms / 2..=cap_ms);
    Duration::from_millis(jitter)
}

/// Records a failure in Postgres for a job no actor runs: a new attempt
/// (fencing off whatever older worker might still run it) and a `failed`
/// event in the stage the job had reached.
pub async fn record_failure(services: &Services, job_id: &str, reason: &str) {
    if document_id_of(job_id).is_none() {
        return;
    }
    match db::begin_attempt(&services.db, job_id).await {
        Ok(Some(start)) => {
            let failed_in = if start.stage.is_terminal() {
                Stage::Queued
            } else {
                start.stage
            };
            let meta = JobMeta::of_attempt(job_id, &start);
            let details = serde_json::json!({ "failed_stage": failed_in.as_str() });
            let ev = NewEvent::failed(start.attempt, failed_in, start.progress, reason, details);
            if let Err(e) = services.events.emit(&meta, ev, true).await {
                tracing::error!(job_id, error = %e, "cannot record the failure");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(job_id, error = %e, "cannot record the failure"),
    }
}

/// A job of ours (uploaded through our API, `managed`) whose Redis job key
/// expired while it waited in the queue, for example behind a long backlog
/// or while every worker was down. arq would fail it with "job expired", but
/// Postgres knows what the job is, so it is rebuilt and runs: no upload is
/// lost to a TTL. Returns the restored job bytes, or `None` for a job that
/// is not ours to rebuild (a caller's own `enqueue_job` keeps arq's rule).
pub async fn restore_expired(services: &Services, job_id: &str) -> Option<Vec<u8>> {
    let row = match db::unfinished_managed_job(&services.db, job_id).await {
        Ok(row) => row,
        Err(e) => {
            tracing::warn!(job_id, error = %e, "cannot look up an expired job; failing it as arq would");
            None
        }
    };
    let (document_id, user, function) = row?;
    let def = super::job_def(&function, document_id, user);
    let expires_ms = (services.settings.queue.job_expires_secs * 1000) as i64;
    match services.queue.restore_job(job_id, &def, expires_ms).await {
        Ok(bytes) => {
            tracing::warn!(
                job_id,
                "the job's key expired in Redis while it waited; rebuilt from Postgres"
            );
            Some(bytes)
        }
        Err(e) => {
            tracing::warn!(job_id, error = %e, "cannot restore an expired job's key");
            None
        }
    }
}

/// Fails a job no actor runs: arq gets `exception`, and a document job's row
/// gets a `failed` event ([`record_failure`]).
pub async fn fail_without_actor(
    services: &Services,
    claimed: &Claimed,
    job: Option<&JobDef>,
    reason: &str,
    exception: PyValue,
) {
    let start_ms = now_ms();
    crate::metrics::job_error(Stage::Queued, "rejected");
    record_failure(services, &claimed.job_id, reason).await;
    tracing::warn!(job_id = %claimed.job_id, reason, "job failed before it ran");
    // The result names the job's function and arguments when its dict can be read.
    let decoded = match job {
        Some(_) => None,
        None => claimed
            .job_bytes
            .as_deref()
            .and_then(|b| JobDef::decode(b, services.queue.serializer).ok()),
    };
    arq_finish(services, claimed, job.or(decoded.as_ref()), start_ms, false, exception).await;
}

/// arq's message for an exhausted retry budget.
pub fn max_tries_exceeded(max_tries: u32) -> PyValue {
    job_execution_failed(format!("max {max_tries} retries exceeded"))
}
