//! Keeping every job alive when things break. Postgres is the record of what
//! must happen; Redis is the work list. This module compares the two:
//!
//! - **stalled**: a running job (its arq lease held) whose stage has reported
//!   nothing within the stage's budget is handed to another worker as a new
//!   attempt (the stuck attempt is fenced off and told to stop), up to
//!   `queue.max_tries`, then failed with "stalled in <stage>";
//! - **lost**: a job Postgres calls queued or running that Redis does not know
//!   at all (Redis restarted without persistence, a key evicted) is enqueued
//!   again;
//! - a job waiting in the queue behind others is neither.
//!
//! Every action is conditional on the attempt number it saw, so several
//! instances running this at once act once per job.

use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;
use serde_json::json;

use crate::arq::queue::{IN_PROGRESS_PREFIX, JOB_PREFIX, RESULT_PREFIX, RETRY_PREFIX};
use crate::arq::wire::job_execution_failed;
use crate::arq::{now_ms, Claimed, JobDef};
use crate::db::{self, EventRecord};
use crate::domain::{document_id_of, EventType, ProgressEvent, Stage};
use crate::jobs;
use crate::services::Services;

/// What recovery did (or, in a dry run, would do) to one job.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Action {
    pub job_id: String,
    pub stage: String,
    /// `requeue` (stalled, handed to another worker), `fail` (stalled too
    /// often), `reenqueue` (Redis lost it).
    pub action: &'static str,
    pub reason: String,
    pub idle_secs: f64,
    /// Dry run, or another instance acted first: nothing was changed.
    pub applied: bool,
}

/// Control message telling every instance to stop one stuck attempt.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StopAttempt {
    pub job_id: String,
    /// The arq try number of the stuck claim (a newer claim is not touched).
    pub job_try: i64,
}

pub fn control_channel(progress_channel: &str) -> String {
    format!("{progress_channel}:control")
}

struct RedisView {
    queued: bool,
    running: bool,
    has_result: bool,
    job_bytes: Option<Vec<u8>>,
    job_try: i64,
}

async fn redis_view(services: &Services, job_id: &str) -> Result<RedisView, redis::RedisError> {
    let mut con = services.redis.clone();
    let mut pipe = redis::pipe();
    pipe.zscore(&services.queue.name, job_id)
        .exists(format!("{IN_PROGRESS_PREFIX}{job_id}"))
        .exists(format!("{RESULT_PREFIX}{job_id}"))
        .get(format!("{JOB_PREFIX}{job_id}"))
        .get(format!("{RETRY_PREFIX}{job_id}"));
    let (score, running, has_result, job_bytes, job_try): (Option<f64>, bool, bool, Option<Vec<u8>>, Option<i64>) =
        pipe.query_async(&mut con).await?;
    Ok(RedisView {
        queued: score.is_some(),
        running,
        has_result,
        job_bytes,
        job_try: job_try.unwrap_or(0),
    })
}

/// Finds stalled and lost jobs and, unless `dry_run`, acts on them. Listed
/// longest-idle first.
pub async fn recover(services: &Services, dry_run: bool) -> anyhow::Result<Vec<Action>> {
    let w = &services.settings.watchdog;
    let grace = Duration::from_secs(w.reconcile_after_secs);
    let min_idle = Stage::PIPELINE
        .iter()
        .filter_map(|s| w.budget(*s))
        .chain([grace])
        .min()
        .unwrap_or(grace);
    let candidates = db::idle_jobs(&services.db, min_idle).await?;
    let mut actions = Vec::new();
    for job in candidates {
        let stage = Stage::parse(&job.stage).unwrap_or(Stage::Queued);
        let idle = Duration::from_secs_f64(job.idle_secs.max(0.0));
        let view = redis_view(services, &job.job_id).await?;
        // Held jobs (fairness) and jobs a caller has yet to enqueue were never in Redis.
        let lost = job.enqueued && !view.queued && !view.running && !view.has_result;
        let planned = match stage.is_terminal() {
            true => None,
            false if view.running => match w.budget(stage) {
                Some(budget) if idle > budget => {
                    if view.job_try >= services.settings.queue.max_tries as i64 {
                        Some(("fail", format!("stalled in {stage}")))
                    } else {
                        Some((
                            "requeue",
                            format!(
                                "stalled in {stage}: no progress for {} s (budget {} s)",
                                idle.as_secs(),
                                budget.as_secs()
                            ),
                        ))
                    }
                }
                _ => None,
            },
            // Waiting in the queue (perhaps deferred after a retry): not stalled.
            false if view.queued => None,
            false if lost && idle > grace => Some((
                "reenqueue",
                "the queue lost this job (Redis restarted or evicted it)".to_string(),
            )),
            false => None,
        };
        let Some((action, reason)) = planned else { continue };
        let applied = if dry_run {
            false
        } else {
            match action {
                "requeue" => requeue(services, &job, stage, &view, &reason).await?,
                "fail" => fail_stalled(services, &job, stage, &view, &reason).await?,
                _ => reenqueue(services, &job).await?,
            }
        };
        if applied {
            tracing::warn!(job_id = %job.job_id, %stage, action, reason = %reason, "recovered job");
        }
        actions.push(Action {
            job_id: job.job_id.clone(),
            stage: job.stage.clone(),
            action,
            reason,
            idle_secs: idle.as_secs_f64(),
            applied,
        });
    }
    Ok(actions)
}

async fn publish_stop(services: &Services, job_id: &str, job_try: i64) {
    let msg = serde_json::to_string(&StopAttempt {
        job_id: job_id.to_string(),
        job_try,
    })
    .expect("serializable");
    let mut con = services.redis.clone();
    let channel = control_channel(services.publisher.channel());
    if let Err(e) = con.publish::<_, _, ()>(channel, msg).await {
        tracing::warn!(job_id, error = %e, "cannot tell instances to stop a stuck attempt");
    }
}

/// Records an event for a job whose attempt this module just bumped.
async fn record(
    services: &Services,
    job: &db::IdleJob,
    attempt: i32,
    ev: (EventType, Stage, Option<Stage>, f64, String, Option<String>),
) -> anyhow::Result<()> {
    let (kind, stage, failed_stage, progress, message, error) = ev;
    let details = match failed_stage {
        Some(s) => json!({ "failed_stage": s.as_str(), "recovered": true }),
        None => json!({ "recovered": true }),
    };
    let timestamp = chrono::Utc::now();
    let Some(seq) = db::record_event(
        &services.db,
        &EventRecord {
            job_id: &job.job_id,
            attempt,
            kind,
            stage,
            failed_stage,
            progress,
            message: &message,
            details: &details,
            error: error.as_deref(),
            timestamp,
        },
    )
    .await?
    else {
        return Ok(());
    };
    let event = ProgressEvent {
        kind,
        job_id: job.job_id.clone(),
        document_id: job.document_id,
        batch_id: job.batch_id,
        stage,
        progress,
        message,
        details,
        error,
        seq,
        attempt,
        timestamp,
        document_name: job.document_name.clone(),
    };
    services.publisher.publish(job.user_id, &event).await;
    if let Some(batch) = job.batch_id {
        crate::batches::refresh(&services.db, &services.publisher, batch).await?;
    }
    Ok(())
}

/// Hands a stalled job to another worker: a new attempt fences the stuck
/// one, the lease is dropped so any worker claims it at once, and the stuck
/// attempt's instance is told to stop it.
async fn requeue(
    services: &Services,
    job: &db::IdleJob,
    stage: Stage,
    view: &RedisView,
    reason: &str,
) -> anyhow::Result<bool> {
    let Some(attempt) = db::bump_attempt_if(&services.db, &job.job_id, job.attempt).await? else {
        return Ok(false);
    };
    let mut con = services.redis.clone();
    let mut pipe = redis::pipe();
    pipe.atomic()
        .del(format!("{IN_PROGRESS_PREFIX}{}", job.job_id))
        .ignore()
        .cmd("ZADD")
        .arg(&services.queue.name)
        .arg("XX")
        .arg(now_ms())
        .arg(&job.job_id)
        .ignore();
    pipe.query_async::<()>(&mut con).await?;
    publish_stop(services, &job.job_id, view.job_try).await;
    let message = format!(
        "{reason}; handed to another worker (try {} of {})",
        view.job_try + 1,
        services.settings.queue.max_tries
    );
    record(
        services,
        job,
        attempt,
        (EventType::JobQueued, Stage::Queued, None, 0.0, message, None),
    )
    .await?;
    let _ = stage;
    Ok(true)
}

/// Fails a job that stalled on every try it had.
async fn fail_stalled(
    services: &Services,
    job: &db::IdleJob,
    stage: Stage,
    view: &RedisView,
    reason: &str,
) -> anyhow::Result<bool> {
    let Some(attempt) = db::bump_attempt_if(&services.db, &job.job_id, job.attempt).await? else {
        return Ok(false);
    };
    publish_stop(services, &job.job_id, view.job_try).await;
    crate::metrics::job_error(stage, "stalled");
    let message = format!("Processing failed in {stage}: {reason}");
    record(
        services,
        job,
        attempt,
        (
            EventType::JobFailed,
            Stage::Failed,
            Some(stage),
            job.progress,
            message,
            Some(reason.to_string()),
        ),
    )
    .await?;
    let def = view
        .job_bytes
        .as_deref()
        .and_then(|b| JobDef::decode(b, services.queue.serializer).ok());
    let claimed = Claimed {
        job_id: job.job_id.clone(),
        job_bytes: view.job_bytes.clone(),
        job_try: view.job_try,
        abort_requested: false,
        score: 0,
    };
    jobs::arq_finish(
        services,
        &claimed,
        def.as_ref(),
        now_ms(),
        false,
        job_execution_failed(reason),
    )
    .await;
    Ok(true)
}

/// Enqueues a document job again after Redis lost it.
async fn reenqueue(services: &Services, job: &db::IdleJob) -> anyhow::Result<bool> {
    let Some(document_id) = document_id_of(&job.job_id).or(job.document_id) else {
        return Ok(false);
    };
    let def = crate::fairness::job_def(document_id, job.user_id);
    let expires_ms = (services.settings.queue.job_expires_secs * 1000) as i64;
    Ok(services.queue.enqueue(&job.job_id, &def, 0, Some(expires_ms)).await?)
}
