//! Emitting progress: each event is numbered and stored in Postgres
//! (`job_progress` + `job_progress_history`, fenced by attempt), then
//! published on the Redis channel every instance listens to. Postgres is the
//! record; pub/sub is the fast path, and `resume` replays what it dropped.

use std::time::{Duration, Instant};

use chrono::Utc;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{self, EventRecord};
use crate::domain::{Envelope, EventType, ProgressEvent, Stage};

#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// Another attempt owns the job now; this worker must stop writing.
    #[error("attempt {0} was superseded by a newer attempt")]
    Fenced(i32),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Publishes events on the shared channel.
#[derive(Clone)]
pub struct Publisher {
    redis: ConnectionManager,
    channel: String,
}

impl Publisher {
    pub fn new(redis: ConnectionManager, channel: impl Into<String>) -> Self {
        Publisher {
            redis,
            channel: channel.into(),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Best effort: the event is already stored, so a Redis outage only
    /// delays it until the client's `resume`.
    pub async fn publish(&self, user_id: Uuid, event: &ProgressEvent) {
        let envelope = Envelope {
            user_id,
            event: event.clone(),
        };
        let payload = match serde_json::to_string(&envelope) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(job_id = %event.job_id, error = %e, "cannot encode progress event");
                return;
            }
        };
        let mut con = self.redis.clone();
        if let Err(e) = con.publish::<_, _, ()>(&self.channel, payload).await {
            tracing::warn!(job_id = %event.job_id, seq = event.seq, error = %e, "progress not published; clients will catch up on resume");
        }
    }
}

/// Records and publishes the events of one job attempt. Keeps progress
/// monotonic within the attempt and throttles the per-chunk events.
pub struct Reporter {
    db: PgPool,
    publisher: Publisher,
    pub job_id: String,
    pub user_id: Uuid,
    pub document_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub document_name: Option<String>,
    pub attempt: i32,
    last_progress: f64,
    last_stage: Stage,
    last_emit: Option<Instant>,
    /// When the current stage's first event went out (stage durations).
    stage_started: Instant,
    min_interval: Duration,
}

impl Reporter {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: PgPool,
        publisher: Publisher,
        job_id: String,
        user_id: Uuid,
        document_id: Option<Uuid>,
        batch_id: Option<Uuid>,
        document_name: Option<String>,
        attempt: i32,
        min_interval: Duration,
    ) -> Self {
        Reporter {
            db,
            publisher,
            job_id,
            user_id,
            document_id,
            batch_id,
            document_name,
            attempt,
            last_progress: 0.0,
            last_stage: Stage::Queued,
            last_emit: None,
            stage_started: Instant::now(),
            min_interval,
        }
    }

    pub fn last_progress(&self) -> f64 {
        self.last_progress
    }

    pub fn last_stage(&self) -> Stage {
        self.last_stage
    }

    /// A `job_progress` event.
    pub async fn progress(
        &mut self,
        stage: Stage,
        progress: f64,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<(), ProgressError> {
        self.emit(
            EventType::JobProgress,
            stage,
            None,
            progress,
            message.into(),
            details,
            None,
        )
        .await
        .map(|_| ())
    }

    /// A per-item event (embedding chunk i of n): skipped when the previous
    /// event of the same stage was less than `min_interval` ago.
    pub async fn throttled(
        &mut self,
        stage: Stage,
        progress: f64,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<(), ProgressError> {
        if stage == self.last_stage {
            if let Some(t) = self.last_emit {
                if t.elapsed() < self.min_interval {
                    return Ok(());
                }
            }
        }
        self.progress(stage, progress, message, details).await
    }

    pub async fn completed(
        &mut self,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<ProgressEvent, ProgressError> {
        self.emit(
            EventType::JobCompleted,
            Stage::Completed,
            None,
            1.0,
            message.into(),
            details,
            None,
        )
        .await
    }

    /// A `job_failed` event: keeps the progress reached and names the stage.
    pub async fn failed(&mut self, in_stage: Stage, error: &str) -> Result<ProgressEvent, ProgressError> {
        let progress = self.last_progress;
        let message = format!("Processing failed in {in_stage}: {error}");
        let details = serde_json::json!({ "failed_stage": in_stage.as_str() });
        self.emit(
            EventType::JobFailed,
            Stage::Failed,
            Some(in_stage),
            progress,
            message,
            details,
            Some(error),
        )
        .await
    }

    /// A `job_progress` event written inside the caller's transaction, so it
    /// commits with the caller's writes or not at all. Publish it with
    /// [`Reporter::publish`] once the transaction committed.
    pub async fn progress_in(
        &mut self,
        conn: &mut sqlx::PgConnection,
        stage: Stage,
        progress: f64,
        message: impl Into<String>,
        details: serde_json::Value,
    ) -> Result<Recorded, ProgressError> {
        let mut event = self.event(EventType::JobProgress, stage, progress, message.into(), details, None);
        let record = self.record(&event, None);
        event.seq = db::record_event(&mut *conn, &record)
            .await?
            .ok_or(ProgressError::Fenced(self.attempt))?;
        Ok(self.note(event))
    }

    /// Sends an event recorded with [`Reporter::progress_in`] (after its commit).
    pub async fn publish(&mut self, recorded: Recorded) -> ProgressEvent {
        self.after_record(recorded).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn emit(
        &mut self,
        kind: EventType,
        stage: Stage,
        failed_stage: Option<Stage>,
        progress: f64,
        message: String,
        details: serde_json::Value,
        error: Option<&str>,
    ) -> Result<ProgressEvent, ProgressError> {
        let mut event = self.event(kind, stage, progress, message, details, error);
        let record = self.record(&event, failed_stage);
        event.seq = db::record_event(&self.db, &record)
            .await?
            .ok_or(ProgressError::Fenced(self.attempt))?;
        let recorded = self.note(event);
        Ok(self.after_record(recorded).await)
    }

    /// The event as it will be sent (its `seq` comes from the database).
    fn event(
        &self,
        kind: EventType,
        stage: Stage,
        progress: f64,
        message: String,
        details: serde_json::Value,
        error: Option<&str>,
    ) -> ProgressEvent {
        // Four decimals: enough for any bar, and 0.40 + 0.45 stays 0.85.
        let progress = ((progress.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0).max(self.last_progress);
        ProgressEvent {
            kind,
            job_id: self.job_id.clone(),
            document_id: self.document_id,
            batch_id: self.batch_id,
            stage,
            progress,
            message,
            details,
            error: error.map(str::to_string),
            seq: 0,
            attempt: self.attempt,
            timestamp: Utc::now(),
            document_name: self.document_name.clone(),
        }
    }

    fn record<'a>(&'a self, e: &'a ProgressEvent, failed_stage: Option<Stage>) -> EventRecord<'a> {
        EventRecord {
            job_id: &self.job_id,
            attempt: self.attempt,
            kind: e.kind,
            stage: e.stage,
            failed_stage,
            progress: e.progress,
            message: &e.message,
            details: &e.details,
            error: e.error.as_deref(),
            timestamp: e.timestamp,
        }
    }

    /// Moves the attempt's state on past a recorded event.
    fn note(&mut self, event: ProgressEvent) -> Recorded {
        let previous_stage = self.last_stage;
        if event.stage != previous_stage {
            if Stage::PIPELINE.contains(&previous_stage) {
                crate::metrics::stage_duration(previous_stage, self.stage_started.elapsed().as_secs_f64());
            }
            self.stage_started = Instant::now();
        }
        self.last_progress = event.progress;
        self.last_stage = event.stage;
        self.last_emit = Some(Instant::now());
        Recorded { event, previous_stage }
    }

    async fn after_record(&mut self, recorded: Recorded) -> ProgressEvent {
        let Recorded { event, previous_stage } = recorded;
        self.publisher.publish(self.user_id, &event).await;
        // A batch moves when one of its documents changes stage or ends.
        if let Some(batch) = self.batch_id {
            if event.stage != previous_stage || event.stage.is_terminal() {
                if let Err(e) = crate::batches::refresh(&self.db, &self.publisher, batch).await {
                    tracing::warn!(batch_id = %batch, error = %e, "cannot update the batch's progress");
                }
            }
        }
        event
    }
}

/// An event stored but not yet sent.
#[must_use = "publish it once its transaction committed"]
pub struct Recorded {
    event: ProgressEvent,
    previous_stage: Stage,
}
