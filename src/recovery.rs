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

use crate::arq::queue::QueueView;
use crate::arq::wire::job_execution_failed;
use crate::arq::{now_ms, Claimed, JobDef};
use crate::config::WatchdogSettings;
use crate::db;
use crate::domain::{document_id_of, Stage};
use crate::events::{JobMeta, NewEvent};
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

/// What to do with one idle job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Stalled: hand it to another worker as a new attempt.
    Requeue(String),
    /// Stalled on every try it had.
    Fail(String),
    /// Redis lost it: enqueue it again.
    Reenqueue(String),
}

/// The decision, from the job's stage and idle time and what Redis knows
/// (`enqueued`: the job was ever put into Redis). Pure: no I/O.
pub fn plan(
    stage: Stage,
    idle: Duration,
    enqueued: bool,
    view: &QueueView,
    budgets: &WatchdogSettings,
    max_tries: u32,
) -> Option<Plan> {
    if stage.is_terminal() {
        return None;
    }
    if view.running {
        let budget = budgets.budget(stage)?;
        if idle <= budget {
            return None;
        }
        return Some(if view.job_try >= max_tries as i64 {
            Plan::Fail(format!("stalled in {stage}"))
        } else {
            Plan::Requeue(format!(
                "stalled in {stage}: no progress for {} s (budget {} s)",
                idle.as_secs(),
                budget.as_secs()
            ))
        });
    }
    // Waiting in the queue (perhaps deferred after a retry): not stalled.
    if view.queued {
        return None;
    }
    // Held jobs (fairness) and jobs a caller has yet to enqueue were never in Redis.
    let lost = enqueued && !view.has_result;
    let grace = Duration::from_secs(budgets.reconcile_after_secs);
    (lost && idle > grace).then(|| Plan::Reenqueue("the queue lost this job (Redis restarted or evicted it)".into()))
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
        let view = services.queue.inspect(&job.job_id).await?;
        let Some(planned) = plan(stage, idle, job.enqueued, &view, w, services.settings.queue.max_tries) else {
            continue;
        };
        let (action, reason) = match &planned {
            Plan::Requeue(r) => ("requeue", r.clone()),
            Plan::Fail(r) => ("fail", r.clone()),
            Plan::Reenqueue(r) => ("reenqueue", r.clone()),
        };
        let applied = if dry_run {
            false
        } else {
            match planned {
                Plan::Requeue(reason) => requeue(services, &job, &view, &reason).await?,
                Plan::Fail(reason) => fail_stalled(services, &job, stage, &view, &reason).await?,
                Plan::Reenqueue(_) => reenqueue(services, &job).await?,
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
    let channel = control_channel(services.events.publisher().channel());
    if let Err(e) = con.publish::<_, _, ()>(channel, msg).await {
        tracing::warn!(job_id, error = %e, "cannot tell instances to stop a stuck attempt");
    }
}

fn meta(job: &db::IdleJob) -> JobMeta {
    JobMeta {
        job_id: job.job_id.clone(),
        user_id: job.user_id,
        document_id: job.document_id,
        batch_id: job.batch_id,
        document_name: job.document_name.clone(),
    }
}

/// Hands a stalled job to another worker: a new attempt fences the stuck
/// one, the lease is dropped so any worker claims it at once, and the stuck
/// attempt's instance is told to stop it.
async fn requeue(services: &Services, job: &db::IdleJob, view: &QueueView, reason: &str) -> anyhow::Result<bool> {
    let Some(attempt) = db::bump_attempt_if(&services.db, &job.job_id, job.attempt).await? else {
        return Ok(false);
    };
    services.queue.requeue_now(&job.job_id).await?;
    publish_stop(services, &job.job_id, view.job_try).await;
    let message = format!(
        "{reason}; handed to another worker (try {} of {})",
        view.job_try + 1,
        services.settings.queue.max_tries
    );
    services
        .events
        .emit(
            &meta(job),
            NewEvent::queued(attempt, message, json!({ "recovered": true })),
            true,
        )
        .await?;
    Ok(true)
}

/// Fails a job that stalled on every try it had.
async fn fail_stalled(
    services: &Services,
    job: &db::IdleJob,
    stage: Stage,
    view: &QueueView,
    reason: &str,
) -> anyhow::Result<bool> {
    let Some(attempt) = db::bump_attempt_if(&services.db, &job.job_id, job.attempt).await? else {
        return Ok(false);
    };
    publish_stop(services, &job.job_id, view.job_try).await;
    crate::metrics::job_error(stage, "stalled");
    let details = json!({ "failed_stage": stage.as_str(), "recovered": true });
    services
        .events
        .emit(
            &meta(job),
            NewEvent::failed(attempt, stage, job.progress, reason, details),
            true,
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
    let def = jobs::job_def(&job.function, document_id, job.user_id);
    let expires_ms = (services.settings.queue.job_expires_secs * 1000) as i64;
    Ok(services.queue.enqueue(&job.job_id, &def, 0, Some(expires_ms)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> WatchdogSettings {
        WatchdogSettings {
            interval_secs: 15,
            reconcile_after_secs: 60,
            downloading_secs: 120,
            extracting_secs: 360,
            chunking_secs: 120,
            embedding_secs: 300,
            storing_secs: 600,
        }
    }

    fn running(job_try: i64) -> QueueView {
        QueueView {
            running: true,
            job_try,
            ..QueueView::default()
        }
    }

    #[test]
    fn a_running_job_is_stalled_only_past_its_stage_budget() {
        let b = budgets();
        assert_eq!(
            plan(Stage::Embedding, Duration::from_secs(299), true, &running(1), &b, 5),
            None
        );
        assert!(matches!(
            plan(Stage::Embedding, Duration::from_secs(301), true, &running(1), &b, 5),
            Some(Plan::Requeue(r)) if r.contains("stalled in embedding")
        ));
        assert_eq!(
            plan(Stage::Embedding, Duration::from_secs(301), true, &running(5), &b, 5),
            Some(Plan::Fail("stalled in embedding".into()))
        );
    }

    #[test]
    fn waiting_held_and_finished_jobs_are_left_alone() {
        let b = budgets();
        let queued = QueueView {
            queued: true,
            ..QueueView::default()
        };
        let gone = QueueView::default();
        let long = Duration::from_secs(3600);
        assert_eq!(
            plan(Stage::Queued, long, true, &queued, &b, 5),
            None,
            "waiting in the queue"
        );
        assert_eq!(
            plan(Stage::Queued, long, false, &gone, &b, 5),
            None,
            "held, never in Redis"
        );
        assert_eq!(plan(Stage::Completed, long, true, &gone, &b, 5), None);
        let with_result = QueueView {
            has_result: true,
            ..QueueView::default()
        };
        assert_eq!(
            plan(Stage::Embedding, long, true, &with_result, &b, 5),
            None,
            "ended in Redis"
        );
    }

    #[test]
    fn a_job_redis_lost_is_enqueued_again_after_the_grace() {
        let b = budgets();
        let gone = QueueView::default();
        assert_eq!(plan(Stage::Queued, Duration::from_secs(59), true, &gone, &b, 5), None);
        assert!(matches!(
            plan(Stage::Extracting, Duration::from_secs(61), true, &gone, &b, 5),
            Some(Plan::Reenqueue(_))
        ));
    }
}
